"""instrumented-proxy --workers 2 through real sockets: one switch for every worker, answers merged, one log file.

Which worker serves a connection is read from /proc (the worker process holding the accepted socket), so each
test knows it has connections on both workers rather than hoping for it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxy import ProxyProcess, connect, control, start_proxy


@pytest.fixture(scope="module", params=["one socket", "--reuseport"])
def workers_proxy(request, mariadb: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """The host with query_log.lua in two worker processes (on one socket, or one each), writing the slow log."""
    tmp = tmp_path_factory.mktemp("workers")
    tmp.chmod(0o700)
    args = ("--workers", "2", *(["--reuseport"] if request.param == "--reuseport" else []))
    proxy = start_proxy(tmp, args=args, PROXY_LOG_ADMINS="root", PROXY_LOG_FORMAT="slowlog",
                        PROXY_LOG_MAX_SECONDS="60")  # fmt: skip
    yield proxy
    assert proxy.stop() == 0, proxy.stderr()
    assert "Traceback" not in proxy.stderr(), proxy.stderr()


@pytest.fixture
def wlog(workers_proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    """Logging off, ring and digest empty, the log file gone, before and after."""
    control(workers_proxy.port, "PROXY LOG OFF")
    control(workers_proxy.port, "PROXY LOG RESET")
    workers_proxy.log_file.unlink(missing_ok=True)
    yield workers_proxy
    control(workers_proxy.port, "PROXY LOG OFF")
    control(workers_proxy.port, "PROXY LOG RESET")


def _children(pid: int) -> list[int]:
    """The worker processes of the host."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def _workers(pid: int, count: int = 2) -> list[int]:
    """The host's workers once all ``count`` are forked (the port answers as soon as the parent listens)."""
    found: list[int] = []
    for _ in range(1200):  # polled, up to a minute on a loaded machine
        found = _children(pid)
        if len(found) == count:
            break
        time.sleep(0.05)
    return found


def _socket_inode(proxy_port: int, client_port: int) -> str:
    """The inode of the proxy's accepted socket for the client connection from ``client_port``."""
    want_local, want_remote = f"{proxy_port:04X}", f"{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(":" + want_local) and fields[2].endswith(":" + want_remote):
            return fields[9]
    raise AssertionError(f"no accepted socket for client port {client_port}")


def worker_of(proxy: ProxyProcess, conn) -> int:
    """The pid of the worker that serves a PyMySQL connection."""
    inode = _socket_inode(proxy.port, conn._sock.getsockname()[1])
    for pid in _children(proxy.proc.pid):
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


def one_per_worker(proxy: ProxyProcess, **kwargs) -> dict[int, object]:
    """A connection on each worker (connections are opened until both have one; the others closed)."""
    workers = _workers(proxy.proc.pid)
    assert len(workers) == 2, workers
    found: dict[int, object] = {}
    spare = []
    for _ in range(60):
        conn = connect(proxy.port, **kwargs)
        pid = worker_of(proxy, conn)
        if pid in found:
            spare.append(conn)
        else:
            found[pid] = conn
        if len(found) == 2:
            break
    for conn in spare:
        conn.close()
    assert len(found) == 2, "the connections all went to one worker"
    return found


def run(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_on_and_off_on_one_connection_switch_every_worker(wlog):
    conns = one_per_worker(wlog)
    a, b = conns.values()
    tag = uuid.uuid4().hex[:8]
    try:
        status = run(a, "PROXY LOG ON 30")  # on the first worker's connection
        assert status[0][0] == "on"
        run(a, f"SELECT 'a-{tag}'")
        run(b, f"SELECT 'b-{tag}'")  # logged by the second worker: it was switched too
        tail = control(wlog.port, "PROXY LOG TAIL 50")
        queries = [row["query"] for row in tail]
        assert f"SELECT 'a-{tag}'" in queries and f"SELECT 'b-{tag}'" in queries
        status = control(wlog.port, "PROXY LOG STATUS")[0]
        assert status["logging"] == "on" and status["logged"] == len(tail)  # both workers' counts, summed
        assert status["log_file"] == str(wlog.log_file)  # one file, named once
        run(b, "PROXY LOG OFF")  # on the second worker's connection
        run(a, f"SELECT 'after-{tag}'")
        run(b, f"SELECT 'after-{tag}'")
        assert not any("after-" in row["query"] for row in control(wlog.port, "PROXY LOG TAIL 50"))
        assert control(wlog.port, "PROXY LOG STATUS")[0]["logging"] == "off"
    finally:
        for conn in conns.values():
            conn.close()


def test_tail_and_digest_answer_for_all_workers(wlog):
    conns = one_per_worker(wlog)
    tag = uuid.uuid4().hex[:8]
    try:
        control(wlog.port, "PROXY LOG ON 30")
        for i, conn in enumerate(conns.values()):
            for j in range(3 + i):  # 3 on one worker, 4 on the other
                run(conn, f"SELECT {j} AS n_{tag}")
        # TAIL: every worker's entries, oldest first, cut to n after the merge.
        tail = control(wlog.port, "PROXY LOG TAIL 5")
        assert len(tail) == 5 and all(f"n_{tag}" in row["query"] for row in tail)
        assert [row["ts"] for row in tail] == sorted(row["ts"] for row in tail)
        assert len({row["thread_id"] for row in control(wlog.port, "PROXY LOG TAIL 100") if tag in row["query"]}) == 2
        # DIGEST: one row per statement for both workers, counts summed, the top n of the union.
        digest = {row["digest"]: row for row in control(wlog.port, "PROXY LOG DIGEST 100")}
        row = digest[f"select ? as n_{tag}"]
        assert row["count"] == 7
        assert row["avg_us"] == round(row["sum_us"] / 7)
        top = control(wlog.port, "PROXY LOG DIGEST 1 ORDER BY count")
        assert len(top) == 1 and top[0]["count"] == max(r["count"] for r in digest.values())
        assert control(wlog.port, "PROXY LOG STATUS")[0]["digests"] >= 1
        control(wlog.port, "PROXY LOG RESET")  # every worker's ring and digest
        assert control(wlog.port, "PROXY LOG TAIL 100") == []
        assert control(wlog.port, "PROXY LOG DIGEST 100") == []
    finally:
        for conn in conns.values():
            conn.close()


def test_a_non_admin_is_refused_and_switches_nothing(wlog, plain_user):
    name, password = plain_user
    conn = connect(wlog.port, user=name, password=password)
    try:
        with pytest.raises(Exception, match="1227"):
            run(conn, "PROXY LOG ON 30")
    finally:
        conn.close()
    assert control(wlog.port, "PROXY LOG STATUS")[0]["logging"] == "off"


def test_digest_host_filters_every_workers_rows(wlog):
    """DIGEST ... HOST reaches the other worker with its filter: only that client host's rows, summed over both."""
    local = one_per_worker(wlog)  # from 127.0.0.1
    remote = one_per_worker(wlog, bind_address="127.0.0.2")  # another loopback address: another client host
    tag = uuid.uuid4().hex[:8]
    try:
        control(wlog.port, "PROXY LOG ON 30")
        for conn in local.values():
            run(conn, f"SELECT 1 AS here_{tag}")
            run(conn, f"SELECT 2 AS both_{tag}")
        for conn in remote.values():
            for _ in range(2):
                run(conn, f"SELECT 3 AS there_{tag}")
            run(conn, f"SELECT 4 AS both_{tag}")
        for order in ("", " ORDER BY count"):
            rows = {r["digest"]: r for r in control(wlog.port, f"PROXY LOG DIGEST 100{order} HOST 127.0.0.2")}
            mine = {text: row for text, row in rows.items() if tag in text}
            assert set(mine) == {f"select ? as there_{tag}", f"select ? as both_{tag}"}, rows
            assert mine[f"select ? as there_{tag}"]["count"] == 4  # two on each worker
            assert mine[f"select ? as both_{tag}"]["count"] == 2 and mine[f"select ? as both_{tag}"]["hosts"] == \
                "127.0.0.2 (2)"  # fmt: skip
            assert all(row["hosts"] == f"127.0.0.2 ({row['count']})" for row in rows.values())
        both = {r["digest"]: r for r in control(wlog.port, "PROXY LOG DIGEST 100")}[f"select ? as both_{tag}"]
        assert both["count"] == 4 and both["hosts"] == "127.0.0.1 (2), 127.0.0.2 (2)"
        top = control(wlog.port, "PROXY LOG DIGEST 1 ORDER BY count HOST '127.0.0.2'")
        assert len(top) == 1 and top[0]["hosts"].startswith("127.0.0.2 (")
        assert control(wlog.port, "PROXY LOG DIGEST 5 HOST 10.9.9.9") == []
    finally:
        for conn in [*local.values(), *remote.values()]:
            conn.close()


@pytest.fixture
def explain_table(mariadb: dict) -> Iterator[str]:
    """A table with an indexed and an unindexed column."""
    import pymysql

    name = "instr_wk_book"
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE TABLE {name} (id INT PRIMARY KEY, author_id INT, title VARCHAR(80),"
                    " KEY author (author_id))")  # fmt: skip
        cur.execute(f"INSERT INTO {name} SELECT seq, seq % 50, CONCAT('t', seq) FROM seq_1_to_2000")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def _table(plan: dict, name: str) -> dict:
    """The first "table" object of that name in a MariaDB JSON plan."""
    stack: list = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("table_name") == name:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError(f"no table {name} in {plan}")


def test_explain_finds_the_row_whichever_worker_logged_it(wlog, explain_table):
    """EXPLAIN n and EXPLAIN ID id on one worker's connection explain what the other worker logged (its sample,
    fetched from it), ranked as the merged DIGEST ranks them; ids of the two workers never collide."""
    book = explain_table
    a, b = one_per_worker(wlog).values()
    try:
        run(a, "PROXY LOG ON 30")
        for i in range(6):  # only worker A logs the scan: the heaviest row
            run(a, f"SELECT * FROM {book} WHERE title = 't{i}'")
        for i in range(2):  # only worker B logs the index lookup
            run(b, f"SELECT * FROM {book} WHERE author_id = {i}")
        run(a, "SELECT 1 + 1")
        run(b, "SELECT 1 + 1")  # one line of both workers' rows
        run(b, "PROXY LOG OFF")  # the digest stays as it is (its ranks too) while it is explained
        digest = {row["digest"]: row for row in run_dicts(a, "PROXY LOG DIGEST 100")}
        scan, ref = digest[f"select * from {book} where title = ?"], digest[f"select * from {book} where author_id = ?"]
        ids = [row["id"] for row in digest.values()]
        assert len(ids) == len(set(ids)) and digest["select ? + ?"]["count"] == 2
        assert scan["explain"] == ref["explain"] == "yes"
        heaviest = run_dicts(b, "PROXY LOG DIGEST 1")[0]
        for conn in (a, b):  # on either worker's connection, whichever worker keeps the row
            answer = run_dicts(conn, "PROXY LOG EXPLAIN")[0]  # rank 1 of the merged digest
            assert answer["rank"] == 1 and answer["id"] == heaviest["id"] and answer["digest"] == heaviest["digest"]
            answer = run_dicts(conn, f"PROXY LOG EXPLAIN ID {ref['id']}")[0]
            assert answer["digest"] == ref["digest"] and answer["db"] == "test" and answer["note"] is None
            assert answer["statement"].startswith(f"SELECT * FROM {book} WHERE author_id = ")
            assert answer["rank"] == list(digest).index(ref["digest"]) + 1
            assert _table(json.loads(answer["plan"]), book)["access_type"] == "ref"
            answer = run_dicts(conn, f"PROXY LOG EXPLAIN ID {scan['id']}")[0]
            assert _table(json.loads(answer["plan"]), book)["access_type"] == "ALL"
            assert run(conn, "SELECT DATABASE()") == [("test",)]  # the admin's schema given back
        # Refusals still come with their reason, whichever worker answers.
        with pytest.raises(Exception, match="has no row 99"):
            run(b, "PROXY LOG EXPLAIN 99")
        with pytest.raises(Exception, match="no digest row has the id 987654"):
            run(a, "PROXY LOG EXPLAIN ID 987654")
        assert digest_of(wlog) == digest  # the explains asked nothing of the digest
        # The mariadb command-line client, on whichever worker it lands.
        if shutil.which("mariadb"):
            for _ in range(4):
                done = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{wlog.port}", "-uroot", "--batch", "-e",
                                       f"PROXY LOG EXPLAIN ID {ref['id']}"], capture_output=True, text=True,
                                      timeout=60)  # fmt: skip
                assert done.returncode == 0, done.stderr
                assert '"access_type": "ref"' in done.stdout and "WHERE author_id = " in done.stdout
    finally:
        a.close()
        b.close()


def run_dicts(conn, sql: str) -> list[dict]:
    """A statement's rows as dicts of column name to value."""
    with conn.cursor() as cur:
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def digest_of(proxy: ProxyProcess) -> dict[str, dict]:
    """The merged digest by statement."""
    return {row["digest"]: row for row in control(proxy.port, "PROXY LOG DIGEST 1000")}


@pytest.mark.skipif(not shutil.which("pt-query-digest"), reason="pt-query-digest (percona-toolkit) is not installed")
def test_both_workers_write_one_slow_log_that_pt_query_digest_reads(wlog):
    conns = one_per_worker(wlog)
    tag = uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))  # pt-query-digest: digits are ?
    long_literal = "y" * 6000  # lines longer than a stdio buffer: each entry must still reach the file whole
    try:
        control(wlog.port, "PROXY LOG ON 30")
        for i in range(20):
            for n, conn in enumerate(conns.values()):
                run(conn, f"SELECT {i} AS w{'ab'[n]}_{tag}")
                if i % 5 == 0:
                    run(conn, f"SELECT '{long_literal}' AS long{'ab'[n]}_{tag}")
        control(wlog.port, "PROXY LOG OFF")  # every worker closes (flushes) the file
    finally:
        for conn in conns.values():
            conn.close()
    done = subprocess.run(["pt-query-digest", "--output", "json", "--limit", "100%", str(wlog.log_file)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{") :])
    by_tag = {c["fingerprint"]: int(c["query_count"]) for c in report["classes"] if tag in c["fingerprint"]}
    assert by_tag == {f"select ? as wa_{tag}": 20, f"select ? as wb_{tag}": 20, f"select ? as longa_{tag}": 4,
                      f"select ? as longb_{tag}": 4}  # fmt: skip
    # Every entry whole: as many "# Time:" headers as statements logged, every query line intact.
    text = wlog.log_file.read_text()
    assert text.count(long_literal) == 8
    assert text.count("# Time: ") == text.count("SET timestamp=")


def test_a_worker_that_dies_is_started_again(mariadb, tmp_path):
    import signal

    tmp_path.chmod(0o700)
    proxy = start_proxy(tmp_path, args=("--workers", "2"), PROXY_LOG_ADMINS="root")
    try:
        before = _workers(proxy.proc.pid)
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        for _ in range(1200):  # polled (up to a minute on a loaded machine): the parent starts it again after a pause
            now = _children(proxy.proc.pid)
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.05)
        assert len(now) == 2 and before[0] not in now and before[1] in now
        for _ in range(1200):  # the new worker answers the others once its loop runs
            if "did not answer" not in control(proxy.port, "PROXY LOG STATUS")[0]["log_file"]:
                break
            time.sleep(0.05)
        status = control(proxy.port, "PROXY LOG ON 10")[0]  # reaches both, the new one included
        assert status["logging"] == "on" and "did not answer" not in status["log_file"], status
    finally:
        assert proxy.stop() == 0, proxy.stderr()
    assert "exited with -9: starting it again" in proxy.stderr()
