"""query_log.lua's digest, filters, log formats and files through the host against real MariaDB (issue 12)."""

from __future__ import annotations

import calendar
import json
import re
import shutil
import subprocess
import time

import pytest

from tests.support.proxy import connect, control, quiet_connect, start_proxy

from .rawclient import RawClient

VIEW = "/*view='shop%3Abook',route='books%2F%3Cint%3Abook_id%3E%2F'*/"


def wait_for(check, timeout: float = 10.0):
    """Poll until ``check()`` is truthy (not a timing assertion: a generous limit for a slow machine)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def digest_rows(port: int, statement: str = "PROXY LOG DIGEST 1000") -> dict[str, dict]:
    return {row["digest"]: row for row in control(port, statement)}


def test_view_comment_is_cut_kept_and_grouped(qlog):
    conn = quiet_connect(qlog.port)
    control(qlog.port, "PROXY LOG ON 20")
    with conn.cursor() as cur:
        for i in range(3):
            cur.execute(f"SELECT {i} + 1 AS n {VIEW}")
        cur.execute("SELECT 7 + 1 AS n /*view='shop%3Aindex'*/")
        cur.execute("SELECT 8 + 1 AS n")
        cur.execute("SELECT 9 /* not sqlcommenter */")
    conn.close()
    tail = control(qlog.port, "PROXY LOG TAIL 6")
    assert [(row["query"], row["view"]) for row in tail] == [
        ("SELECT 0 + 1 AS n", "shop:book"), ("SELECT 1 + 1 AS n", "shop:book"), ("SELECT 2 + 1 AS n", "shop:book"),
        ("SELECT 7 + 1 AS n", "shop:index"), ("SELECT 8 + 1 AS n", None), ("SELECT 9 /* not sqlcommenter */", None),
    ]  # fmt: skip
    row = digest_rows(qlog.port)["select ? + ? as n"]
    assert row["count"] == 5 and row["views"] == "shop:book, shop:index"  # busiest first
    control(qlog.port, "PROXY LOG STATUS")  # flushes the file
    lines = [json.loads(line) for line in qlog.log_file.read_text().splitlines()]
    first = [line for line in lines if line["query"] == "SELECT 0 + 1 AS n"][-1]
    assert first["view"] == "shop:book" and first["route"] == "books/<int:book_id>/"


def test_every_digest_column(qlog):
    import pymysql

    table = "instr_dg_columns"
    conn = connect(qlog.port, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY, v INT)")
        before = int(time.time())
        control(qlog.port, "PROXY LOG ON 20")
        for i in range(4):
            cur.execute(f"INSERT INTO {table} VALUES ({i}, {i}), ({i + 10}, {i})")
        cur.execute(f"UPDATE {table} SET v = v + 1 WHERE id IN (1)")  # IN lists of any length: one row
        cur.execute(f"UPDATE {table} SET v = v + 1 WHERE id IN (2, 3, -4, 11)")
        for sleep in ("0.01", "0.05", "0.1"):
            cur.execute(f"SELECT SLEEP({sleep}), id FROM {table} WHERE id < 2")
        cur.execute("SELECT CAST('12abc' AS SIGNED) AS x")  # a warning (truncated value)
        for _ in range(2):
            with pytest.raises(pymysql.err.IntegrityError):
                cur.execute(f"INSERT INTO {table} VALUES (1, 1)")  # duplicate key: an error
        after = int(time.time())
        cur.execute(f"DROP TABLE {table}")
    conn.close()
    rows = digest_rows(qlog.port)
    insert = rows[f"insert into {table} values (?+)"]
    assert insert["count"] == 6 and insert["rows_affected"] == 8 and insert["errors"] == 2
    assert insert["db"] == "test" and insert["user"] == "root" and insert["rows_sent"] == 0
    update = rows[f"update {table} set v = v + ? where id in (?+)"]
    assert update["count"] == 2 and update["rows_affected"] == 4
    sleep = rows[f"select sleep(?), id from {table} where id < ?"]
    assert sleep["count"] == 3 and sleep["rows_sent"] == 6 and sleep["errors"] == 0
    assert 10_000 <= sleep["min_us"] < sleep["avg_us"] < sleep["max_us"] and sleep["max_us"] >= 100_000
    assert sleep["sum_us"] >= 160_000 and abs(sleep["avg_us"] - sleep["sum_us"] / 3) <= 1
    assert sleep["min_us"] <= sleep["p95_us"] <= sleep["max_us"] and sleep["p95_us"] >= 0.8 * sleep["max_us"]
    first, last = (calendar.timegm(time.strptime(sleep[k], "%Y-%m-%dT%H:%M:%SZ")) for k in ("first_seen", "last_seen"))
    assert before <= first <= last <= after
    assert rows["select cast(? as signed) as x"]["warnings"] == 1
    expected = {"digest", "db", "user", "count", "first_seen", "last_seen", "sum_us", "min_us", "max_us", "avg_us",
                "p95_us", "rows_sent", "rows_affected", "errors", "warnings", "views", "p50_us", "p99_us", "load",
                "share_pct", "histogram", "hosts", "id", "explain"}  # fmt: skip
    assert all(set(row) == expected for row in rows.values())
    assert sleep["min_us"] <= sleep["p50_us"] <= sleep["p95_us"] <= sleep["p99_us"] <= sleep["max_us"]
    assert sleep["hosts"] == "127.0.0.1 (3)" and sleep["explain"] == "yes" and insert["explain"] == "yes"
    decades = [int(c) for c in sleep["histogram"].split()]  # 1 us, 10 us, ... 1 s, 10 s and more
    assert len(decades) == 8 and decades[4] + decades[5] == 3  # 10 ms .. 1 s
    assert len({row["id"] for row in rows.values()}) == len(rows)
    by = {order: [row["digest"] for row in control(qlog.port, f"PROXY LOG DIGEST 3 ORDER BY {order}")]
          for order in ("sum", "count", "max", "rows", "errors")}  # fmt: skip
    assert by["count"][0] == insert["digest"] and by["errors"][0] == insert["digest"]
    assert by["sum"][0] == sleep["digest"] and by["max"][0] == sleep["digest"] and by["rows"][0] == sleep["digest"]
    assert len(control(qlog.port, "proxy log digest order by count")) == len(rows)
    failed = [row for row in control(qlog.port, "PROXY LOG TAIL 100") if row["status"] == "error"]
    assert failed and all(row["affected_rows"] is None and row["error_code"] == 1062 for row in failed)

    for bad in ("PROXY LOG DIGEST ORDER BY time", "PROXY LOG DIGEST 5 ORDER sum", "PROXY LOG DIGEST 5 ORDER BY"):
        with pytest.raises(pymysql.err.ProgrammingError):
            control(qlog.port, bad)


def test_savepoint_names_are_normalised(qlog):
    control(qlog.port, "PROXY LOG ON 20")
    conn = connect(qlog.port)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        for i in range(3):
            cur.execute(f"SAVEPOINT `s1402_x{i}`")
            cur.execute(f"RELEASE SAVEPOINT `s1402_x{i}` {VIEW}")
        cur.execute("SAVEPOINT `s1402_x9`")
        cur.execute("ROLLBACK TO SAVEPOINT `s1402_x9`")
        cur.execute("ROLLBACK")
    conn.close()
    rows = digest_rows(qlog.port)
    assert rows["savepoint ?"]["count"] == 4 and rows["release savepoint ?"]["count"] == 3
    assert rows["release savepoint ?"]["views"] == "shop:book" and rows["rollback to savepoint ?"]["count"] == 1


@pytest.fixture(scope="module")
def digest_users(mariadb):
    import pymysql

    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS instr_dg_other")
        cur.execute("DROP USER IF EXISTS 'instr_dg_app'@'%'")
        cur.execute("CREATE USER 'instr_dg_app'@'%' IDENTIFIED BY 'pw-dg'")
        cur.execute("GRANT SELECT ON *.* TO 'instr_dg_app'@'%'")
    yield {"user": "instr_dg_app", "password": "pw-dg"}
    with conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS 'instr_dg_app'@'%'")
        cur.execute("DROP DATABASE IF EXISTS instr_dg_other")
    conn.close()


def test_filters_user_db_errors_slow_are_shown_and_applied(qlog, digest_users):
    import pymysql

    app = connect(qlog.port, **digest_users)  # connected first: PyMySQL's own SET AUTOCOMMIT is not logged
    other_db = connect(qlog.port, database="instr_dg_other", **digest_users)
    root = connect(qlog.port)
    status = control(qlog.port, "PROXY LOG ON 20 USER instr_dg_app DB test")[0]
    assert status["filters"] == "user instr_dg_app, db test"
    for conn, tag in ((app, "app"), (other_db, "other_db"), (root, "root")):
        with conn.cursor() as cur:
            cur.execute(f"SELECT '{tag}'")
    assert [row["query"] for row in control(qlog.port, "PROXY LOG TAIL 10")] == ["SELECT 'app'"]
    assert list(digest_rows(qlog.port)) == ["select ?"]
    control(qlog.port, "PROXY LOG RESET")

    status = control(qlog.port, "proxy log on 20 errors slow 20")[0]
    assert status["filters"] == "slow 20 ms, errors"
    with root.cursor() as cur:
        cur.execute("SELECT SLEEP(0.03), 'slow ok'")
        cur.execute("SELECT 'fast ok'")
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("SELECT no_such_column_fast")
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("SELECT IF(SLEEP(0.03) = 0, (SELECT seq FROM seq_1_to_3), 1)")  # fails after 30 ms
    tail = [row["query"] for row in control(qlog.port, "PROXY LOG TAIL 10")]
    assert tail == ["SELECT IF(SLEEP(0.03) = 0, (SELECT seq FROM seq_1_to_3), 1)"]
    assert len(digest_rows(qlog.port)) == 4  # the digest still counts every statement
    control(qlog.port, "PROXY LOG ON 20 SLOW 20")
    with root.cursor() as cur:
        cur.execute("SELECT SLEEP(0.03), 'slow ok'")
        cur.execute("SELECT 'fast ok'")
    assert [row["query"] for row in control(qlog.port, "PROXY LOG TAIL 1")] == ["SELECT SLEEP(0.03), 'slow ok'"]
    assert control(qlog.port, "PROXY LOG ON 20")[0]["filters"] == ""  # a new switch replaces the filters
    for bad in ("PROXY LOG ON 20 SAMPLE 0", "PROXY LOG ON 20 SAMPLE 1.5", "PROXY LOG ON SLOW", "PROXY LOG ON 5 USER",
                "PROXY LOG ON 5 SLOW fast", "PROXY LOG ON 5 EVERYTHING"):  # fmt: skip
        with pytest.raises(pymysql.err.ProgrammingError) as info:
            control(qlog.port, bad)
        assert info.value.args[0] == 1064, bad
    for conn in (app, other_db, root):
        conn.close()


def test_sampling_logs_about_that_fraction(qlog):
    assert control(qlog.port, "PROXY LOG ON 20 SAMPLE 0.25")[0]["filters"] == "sample 0.25"
    client = RawClient(qlog.port)
    for i in range(800):
        client.query(b"SELECT %d" % i)
    client.close()
    logged = control(qlog.port, "PROXY LOG STATUS")[0]["logged"]
    assert 100 < logged < 300  # binomial(800, 0.25): mean 200, sd 12
    assert digest_rows(qlog.port)["select ?"]["count"] == logged


def pipelined(port: int, statements: list[bytes], batch: int = 500) -> None:
    """Send COM_QUERY statements many at a time (the protocol allows a client to pipeline) and read every answer."""
    client = RawClient(port)
    try:
        for start in range(0, len(statements), batch):
            chunk = statements[start : start + batch]
            client.sock.sendall(b"".join(len(s).to_bytes(3, "little") + b"\x00" + s for s in chunk))
            for _ in chunk:
                assert client.count_rows() == 1
    finally:
        client.close()


def test_digest_and_ring_caps_hold_under_100000_distinct_statements(mariadb, proxy_tmp):
    proxy = start_proxy(proxy_tmp, PROXY_LOG_MAX_DIGESTS="500", PROXY_LOG_RING="200")
    try:
        assert control(proxy.port, "PROXY LOG ON 600")[0]["logging"] == "on"
        pipelined(proxy.port, [b"\x03SELECT 1 AS warm_%d" % i for i in range(5000)])
        warm = proxy.rss_kb("VmRSS")
        pipelined(proxy.port, [b"\x03SELECT 1 AS c%d /*view='v%d'*/" % (i, i % 50) for i in range(100_000)])
        status = control(proxy.port, "PROXY LOG STATUS")[0]
        assert status["logged"] == 105_000 and status["digests"] <= 500
        assert status["evicted"] >= 105_000 - 500
        digest = control(proxy.port, "PROXY LOG DIGEST 1000 ORDER BY count")
        assert len(digest) == status["digests"]
        assert "select ? as c99999" in {row["digest"] for row in digest}  # the most recent stays
        assert len(control(proxy.port, "PROXY LOG TAIL 1000")) == 200
        assert proxy.rss_kb("VmRSS") - warm < 64 * 1024  # 100 000 distinct statements did not grow the proxy
    finally:
        assert proxy.stop() == 0


@pytest.mark.skipif(not shutil.which("pt-query-digest"), reason="percona-toolkit is not installed")
def test_slow_log_format_is_read_by_pt_query_digest(mariadb, proxy_tmp):
    proxy = start_proxy(proxy_tmp, PROXY_LOG_FORMAT="slowlog")
    try:
        conn = connect(proxy.port)
        with conn.cursor() as cur:
            cur.execute("PROXY LOG ON 20")
            for i in range(5):
                cur.execute(f"SELECT SLEEP(0.02), {i} AS n {VIEW}")
            for i in range(3):
                cur.execute(f"SELECT seq FROM seq_1_to_10 WHERE seq > {i}")
            cur.execute("SELECT 'two\n# Time: lines'")
            cur.execute("PROXY LOG OFF")
        conn.close()
    finally:
        assert proxy.stop() == 0
    text = proxy.log_file.read_text()
    assert text.count("# User@Host: root[root] @ 127.0.0.1 [127.0.0.1]") == 9 and "# View: shop:book" in text
    report = subprocess.run(["pt-query-digest", "--limit", "100%", str(proxy.log_file)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert re.search(r"Overall: 9 total, 3 unique", report.stdout), report.stdout
    assert re.search(r"SELECT SLEEP\(0\.02\), \d AS n\\G", report.stdout), report.stdout  # the comment cut off
    assert re.search(r"# Count\s+\d+\s+5\n", report.stdout) and re.search(r"# Count\s+\d+\s+3\n", report.stdout)
    assert re.search(r"# Databases\s+test", report.stdout) and re.search(r"# View\s+shop:book", report.stdout)
    assert re.search(r"# Rows sent\s+\d+\s+27\s", report.stdout), report.stdout  # 10 + 9 + 8
    by_view = subprocess.run(["pt-query-digest", "--group-by", "View", "--limit", "100%", str(proxy.log_file)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert by_view.returncode == 0 and "shop:book" in by_view.stdout, by_view.stdout


@pytest.mark.parametrize("driver", ["pymysql", "MySQLdb"])
def test_invalid_utf8_is_shown_replaced_through_tail_and_digest(qlog, driver):
    module = pytest.importorskip(driver)
    control(qlog.port, "PROXY LOG ON 20")
    statement = b"SELECT 'caf\xe9 \xf0\x9f\x8d\xb0' AS `col\xff`"
    if driver == "pymysql":
        conn = connect(qlog.port, charset="utf8mb4")
    else:
        conn = module.connect(host="127.0.0.1", port=qlog.port, user="root", passwd="", db="test", charset="utf8mb4")
    try:
        conn.query(statement)
        if driver == "MySQLdb":
            conn.store_result()
    except module.MySQLError:
        pass  # the server may refuse the bytes; the statement is logged either way
    cur = conn.cursor()
    cur.execute("PROXY LOG TAIL 1")
    names = [d[0] for d in cur.description]
    row = dict(zip(names, cur.fetchone(), strict=True))
    assert row["query"] == "SELECT 'caf\ufffd \U0001f370' AS `col\ufffd`"  # valid 4-byte UTF-8 kept
    cur.execute("PROXY LOG DIGEST 5")
    assert "select ? as `col\ufffd`" in [r[0] for r in cur.fetchall()]
    cur.close()
    conn.close()


def test_control_results_declare_utf8mb4(qlog):
    conn = connect(qlog.port)
    with conn.cursor() as cur:
        cur.execute("PROXY LOG STATUS")
        fields = {f.name: f.charsetnr for f in cur._result.fields}
    conn.close()
    assert fields["logging"] == 45 and fields["logged"] == 63  # utf8mb4_general_ci; numbers are binary


def test_last_line_is_flushed_when_traffic_stops(qlog):
    control(qlog.port, "PROXY LOG ON 20")
    conn = connect(qlog.port)
    with conn.cursor() as cur:
        cur.execute("SELECT 'the last one'")
    # Nothing more goes through the proxy: the host's once-a-second flush must write the buffered line.
    assert wait_for(lambda: qlog.log_file.exists() and "the last one" in qlog.log_file.read_text())
    conn.close()


def test_log_file_is_followed_after_rotation(qlog):
    control(qlog.port, "PROXY LOG ON 20")
    conn = connect(qlog.port)
    cur = conn.cursor()
    cur.execute("SELECT 'before rotation'")
    assert wait_for(lambda: "before rotation" in qlog.log_file.read_text())
    rotated = qlog.log_file.with_suffix(".1")
    qlog.log_file.rename(rotated)  # logrotate's default: move, then the program writes a new file

    def moved_and_followed() -> bool:
        cur.execute("SELECT 'after move'")
        return qlog.log_file.exists() and "after move" in qlog.log_file.read_text()

    assert wait_for(moved_and_followed)
    assert "before rotation" in rotated.read_text()
    with qlog.log_file.open("r+") as f:  # copytruncate: the file is copied, then cut to nothing in place
        f.truncate(0)
    cur.execute("SELECT 'after truncate'")
    assert wait_for(lambda: "after truncate" in qlog.log_file.read_text())
    data = qlog.log_file.read_bytes()
    assert b"\x00" not in data and data.startswith(b'{"ts"')  # appended at the new end, no hole of zeros
    cur.close()
    conn.close()
    rotated.unlink()


@pytest.mark.skipif(not shutil.which("pt-query-digest"), reason="percona-toolkit is not installed")
def test_load_and_share_add_up_and_match_pt_query_digest(mariadb, proxy_tmp):
    """Load (time ÷ the span the digest covers) and share of the total time: they add up to STATUS's totals, and
    pt-query-digest reads the same figures from the slow log the proxy wrote of the same statements."""
    proxy = start_proxy(proxy_tmp, PROXY_LOG_FORMAT="slowlog")
    try:
        control(proxy.port, "PROXY LOG ON 60")
        conn = quiet_connect(proxy.port)
        with conn.cursor() as cur:
            start = int(time.time())
            for i in range(4):
                cur.execute(f"SELECT SLEEP(0.01), {i} AS n")
            cur.execute("SELECT seq FROM seq_1_to_200")
            while int(time.time()) < start + 2:  # a span of two seconds or more (timestamps are whole seconds)
                time.sleep(0.05)
            for i in range(2):
                cur.execute(f"SELECT SLEEP(0.02), {i} AS n")
            cur.execute("SELECT COUNT(*) FROM seq_1_to_1000")
        conn.close()
        status = control(proxy.port, "PROXY LOG STATUS")[0]
        rows = control(proxy.port, "PROXY LOG DIGEST 100")
        control(proxy.port, "PROXY LOG OFF")  # flushes the file
    finally:
        assert proxy.stop() == 0
    assert status["span_seconds"] >= 2 and status["total_us"] == sum(row["sum_us"] for row in rows)
    assert abs(sum(row["share_pct"] for row in rows) - 100) < 0.001 * len(rows)
    assert abs(sum(row["load"] for row in rows) - status["load"]) < 1e-6 * len(rows) + 1e-9
    assert abs(status["load"] - status["total_us"] / 1e6 / status["span_seconds"]) < 1e-6

    text = proxy.log_file.read_text()
    assert re.search(r"Rows_affected: 0  Bytes_sent: \d+\n", text)
    digest = ["pt-query-digest", "--limit", "100%", str(proxy.log_file)]
    report = subprocess.run([*digest, "--output", "json"], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    classes = json.loads(report.stdout[report.stdout.index("{") :])["classes"]
    assert len(classes) == len(rows) == 3
    seconds = [calendar.timegm(time.strptime(c[k], "%Y-%m-%dT%H:%M:%S")) for c in classes for k in ("ts_min", "ts_max")]
    span = max(seconds) - min(seconds)
    assert span == status["span_seconds"]
    total = sum(float(c["metrics"]["Query_time"]["sum"]) for c in classes)
    assert abs(total - status["total_us"] / 1e6) < 1e-5
    text_report = subprocess.run(digest, capture_output=True, text=True, timeout=120).stdout
    concurrency = float(re.search(r"# Overall: .* ([\d.]+)x concurrency", text_report).group(1))
    assert abs(concurrency - status["load"]) <= 0.006, text_report  # pt prints it to two decimals
    profile = {m.group(1).lower(): float(m.group(2))
               for m in re.finditer(r"^#\s+\d+ 0x([0-9A-F]+)\s+[\d.]+\s+([\d.]+)%", text_report, re.M)}  # fmt: skip
    for cls in classes:
        pt_sum = float(cls["metrics"]["Query_time"]["sum"])
        row = min(rows, key=lambda r: abs(r["sum_us"] / 1e6 - pt_sum))  # pt's fingerprints are not the proxy's
        assert abs(pt_sum - row["sum_us"] / 1e6) < 1e-5 and int(cls["query_count"]) == row["count"]
        assert abs(pt_sum * 100 / total - row["share_pct"]) < 1e-3
        assert abs(profile[cls["checksum"].lower()] - row["share_pct"]) <= 0.051  # "Response time" %, one decimal
        assert abs(pt_sum / span - row["load"]) < 1e-5  # pt's concurrency of the class, over the whole span
        assert int(cls["metrics"]["Bytes_sent"]["sum"]) > 0


def test_rows_per_client_host_merged_when_read_and_filtered_exactly(qlog):
    import pymysql

    control(qlog.port, "PROXY LOG ON 20")
    for host, times in (("127.0.0.1", 2), ("127.0.0.2", 3)):  # a second loopback address: another client host
        conn = quiet_connect(qlog.port, bind_address=host)
        with conn.cursor() as cur:
            for i in range(times):
                cur.execute(f"SELECT {i} AS instr_hosts")
        conn.close()
    (merged,) = [r for r in control(qlog.port, "PROXY LOG DIGEST 100") if "instr_hosts" in r["digest"]]
    assert merged["count"] == 5 and merged["hosts"] == "127.0.0.2 (3), 127.0.0.1 (2)"
    (one,) = [r for r in control(qlog.port, "PROXY LOG DIGEST 100 HOST 127.0.0.2") if "instr_hosts" in r["digest"]]
    assert one["count"] == 3 and one["hosts"] == "127.0.0.2 (3)" and one["sum_us"] < merged["sum_us"]
    assert control(qlog.port, "PROXY LOG DIGEST HOST '10.9.9.9' ORDER BY count") == []
    tail = [r for r in control(qlog.port, "PROXY LOG TAIL 10") if "instr_hosts" in r["query"]]
    assert [r["client"] for r in tail] == ["127.0.0.1"] * 2 + ["127.0.0.2"] * 3
    assert len({r["digest_id"] for r in tail}) == 2  # one row per host
    for bad in ("PROXY LOG DIGEST HOST", "PROXY LOG DIGEST 5 HOST a HOST b", "PROXY LOG DIGEST 5 HOST a extra"):
        with pytest.raises(pymysql.err.ProgrammingError):
            control(qlog.port, bad)
