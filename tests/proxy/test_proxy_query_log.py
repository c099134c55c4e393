"""query_log.lua through the host against real MariaDB: clients, control statements, deadline, admins."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from tests.support.proxy import connect, control

from .rawclient import MySQLError, RawClient

STATUS_COLUMNS = ["logging", "seconds_left", "logged", "log_file", "filters", "digests", "evicted", "total_us",
                  "span_seconds", "load"]  # fmt: skip


def log_lines(proxy) -> list[dict]:
    """The JSON lines of the log file (a PROXY LOG statement first: it flushes the buffered lines)."""
    control(proxy.port, "PROXY LOG STATUS")
    if not proxy.log_file.exists():
        return []
    return [json.loads(line) for line in proxy.log_file.read_text().splitlines()]


def rows_of(conn, statement: str) -> list[dict]:
    """Run a statement on an open PyMySQL connection; rows as dicts."""
    with conn.cursor() as cur:
        cur.execute(statement)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def mariadb_cli(port: int, sql: str, user: str = "root", password: str = "") -> subprocess.CompletedProcess:
    args = ["mariadb", "-h127.0.0.1", f"-P{port}", f"-u{user}", "--batch", "test", "-e", sql]
    if password:
        args.insert(4, f"-p{password}")
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not shutil.which("mariadb"), reason="the mariadb command-line client is not installed")
def test_mariadb_cli_logging_off_then_on(qlog):
    off = mariadb_cli(qlog.port, "SELECT 'cli-off' AS v; SELECT COUNT(*) FROM seq_1_to_5")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["v", "cli-off", "COUNT(*)", "5"]
    stat = subprocess.run(
        ["mariadb-admin", "-h127.0.0.1", f"-P{qlog.port}", "-uroot", "status", "ping"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # COM_STATISTICS, COM_PING
    assert stat.returncode == 0 and "Uptime:" in stat.stdout and "is alive" in stat.stdout, stat.stderr
    assert control(qlog.port, "PROXY LOG TAIL") == []

    status = mariadb_cli(qlog.port, "PROXY LOG ON 20")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0].split("\t") == STATUS_COLUMNS
    assert status.stdout.splitlines()[1].startswith("on\t")
    on = mariadb_cli(qlog.port, "SELECT 'cli-on' AS v; SELECT seq FROM seq_1_to_7 WHERE seq > 2; SELECT nosuchcolumn")
    assert "cli-on" in on.stdout and "ERROR 1054" in on.stderr
    tail = control(qlog.port, "PROXY LOG TAIL 50")
    queries = [row["query"] for row in tail]
    assert "SELECT 'cli-on' AS v" in queries and "SELECT nosuchcolumn" in queries
    assert not any("cli-off" in q for q in queries)
    by_query = {row["query"]: row for row in tail}
    assert by_query["SELECT seq FROM seq_1_to_7 WHERE seq > 2"]["rows"] == 5
    assert by_query["SELECT nosuchcolumn"]["status"] == "error"
    lines = {line["query"]: line for line in log_lines(qlog)}
    err = lines["SELECT nosuchcolumn"]
    assert err["status"] == "error" and err["error_code"] == 1054 and "nosuchcolumn" in err["error_message"]
    ok = lines["SELECT seq FROM seq_1_to_7 WHERE seq > 2"]
    assert set(ok) >= {"ts", "thread_id", "user", "db", "client", "query", "query_time_us", "response_time_us",
                       "rows", "affected_rows", "status"}  # fmt: skip
    assert ok["user"] == "root" and ok["db"] == "test" and ok["client"].startswith("127.0.0.1:")
    assert ok["rows"] == 5 and 0 < ok["query_time_us"] <= ok["response_time_us"] < 5_000_000


@pytest.mark.parametrize("driver", ["pymysql", "MySQLdb"])
def test_drivers_logging_on_records_rows_affected_and_errors(qlog, driver):
    module = pytest.importorskip(driver)
    if driver == "pymysql":
        conn = connect(qlog.port, autocommit=True)
    else:
        conn = module.connect(host="127.0.0.1", port=qlog.port, user="root", passwd="", db="test", autocommit=True)
    table = f"instr_proxy_{driver.lower()}"
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(20))")
    assert control(qlog.port, "PROXY LOG ON 20")[0]["logging"] == "on"
    cur.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert cur.rowcount == 3
    cur.execute(f"SELECT id, v FROM {table} WHERE id >= %s ORDER BY id", (2,))
    assert [tuple(r) for r in cur.fetchall()] == [(2, "b"), (3, "c")]
    with pytest.raises(module.ProgrammingError):
        cur.execute("SELECT * FROM instr_proxy_no_such_table")
    cur.execute(f"SELECT v FROM {table} WHERE id = 3")
    assert cur.fetchall()[0][0] == "c"  # the connection is fine after an error
    entries = {e["query"]: e for e in control(qlog.port, "PROXY LOG TAIL 100")}
    insert = [line for line in log_lines(qlog) if line["query"].startswith(f"INSERT INTO {table}")][-1]
    assert insert["affected_rows"] == 3 and insert["rows"] == 0 and insert["status"] == "ok"
    assert entries[f"SELECT id, v FROM {table} WHERE id >= 2 ORDER BY id"]["rows"] == 2
    assert entries["SELECT * FROM instr_proxy_no_such_table"]["status"] == "error"
    digest = {row["digest"]: row for row in control(qlog.port, "PROXY LOG DIGEST 100")}
    assert digest[f"select id, v from {table} where id >= ? order by id"]["count"] == 1
    assert digest[f"select v from {table} where id = ?"]["rows_sent"] == 1
    cur.execute(f"DROP TABLE {table}")
    conn.close()


def test_control_statement_syntax_and_errors(qlog):
    for statement in ("  proxy log status ; ", "PROXY LOG Status;", "\tPrOxY   LoG\nSTATUS", "proxy log status;;"):
        rows = control(qlog.port, statement)
        assert list(rows[0]) == STATUS_COLUMNS, statement
    assert control(qlog.port, "PROXY LOG STATUS")[0]["log_file"] == str(qlog.log_file)
    import pymysql

    bad = [
        "PROXY LOG ON 0",
        "PROXY LOG ON -5",
        "PROXY LOG ON soon",
        "PROXY LOG ON 10 20",
        "PROXY LOG OFF now",
        "PROXY LOG TAIL x",
        "PROXY LOG DIGEST 0",
        "PROXY LOG FROBNICATE",
        "PROXY LOG",
        "PROXY LOG STATUS; SELECT 1",
    ]
    for statement in bad:
        with pytest.raises(pymysql.err.ProgrammingError) as info:
            control(qlog.port, statement)
        assert info.value.args[0] == 1064, statement
        assert "PROXY LOG" in info.value.args[1], statement
    # Not a control statement: goes to the server, which rejects it with its own message.
    with pytest.raises(pymysql.err.ProgrammingError) as info:
        control(qlog.port, "PROXY LOGGING ON")
    assert "SQL syntax" in info.value.args[1]
    assert control(qlog.port, "PROXY LOG STATUS")[0]["logging"] == "off"


def test_on_off_reset_tail_digest(qlog):
    status = control(qlog.port, "PROXY LOG ON")[0]
    assert status["logging"] == "on" and 25 <= status["seconds_left"] <= 30  # default 300 capped by MAX_SECONDS=30
    status = control(qlog.port, "PROXY LOG ON 99999")[0]
    assert status["seconds_left"] <= 30
    conn = connect(qlog.port)
    with conn.cursor() as cur:
        for i in range(5):
            cur.execute(f"SELECT {i} + 1")
            cur.execute("SELECT SLEEP(0.02)")
    tail = rows_of(conn, "PROXY LOG TAIL 3")
    assert [row["query"] for row in tail] == ["SELECT SLEEP(0.02)", "SELECT 4 + 1", "SELECT SLEEP(0.02)"]
    assert all(set(row) == {"ts", "thread_id", "user", "db", "view", "query_time_us", "response_time_us", "rows",
                            "affected_rows", "warnings", "status", "error_code", "query", "account",
                            "claimed_user", "client", "digest_id"} for row in tail)  # fmt: skip
    assert all(row["client"] == "127.0.0.1" and row["digest_id"] for row in tail)
    assert tail[0]["digest_id"] == tail[2]["digest_id"] != tail[1]["digest_id"]  # the digest row of each
    assert tail[0]["thread_id"] == conn.thread_id()
    digest = rows_of(conn, "PROXY LOG DIGEST")
    assert digest[0]["digest"] == "select sleep(?)" and digest[0]["count"] == 5
    assert digest[0]["sum_us"] >= 5 * 20_000 and digest[0]["max_us"] >= 20_000
    assert {row["digest"]: row["count"] for row in digest}["select ? + ?"] == 5
    assert len(control(qlog.port, "PROXY LOG DIGEST 1")) == 1
    off = control(qlog.port, "PROXY LOG OFF")[0]
    assert off["logging"] == "off" and off["seconds_left"] == 0 and off["logged"] >= 10
    with conn.cursor() as cur:
        cur.execute("SELECT 'after off'")
    assert "SELECT 'after off'" not in [row["query"] for row in control(qlog.port, "PROXY LOG TAIL 100")]
    assert control(qlog.port, "PROXY LOG RESET")[0]["logging"] == "off"
    assert control(qlog.port, "PROXY LOG TAIL") == [] and control(qlog.port, "PROXY LOG DIGEST") == []
    conn.close()


def test_logging_turns_itself_off_after_the_deadline(qlog):
    conn = connect(qlog.port)
    assert control(qlog.port, "PROXY LOG ON 1")[0]["seconds_left"] == 1
    with conn.cursor() as cur:
        cur.execute("SELECT 'inside the window'")
        time.sleep(2.1)
        cur.execute("SELECT 'after the deadline'")
    queries = [row["query"] for row in control(qlog.port, "PROXY LOG TAIL 100")]
    assert "SELECT 'inside the window'" in queries and "SELECT 'after the deadline'" not in queries
    assert control(qlog.port, "PROXY LOG STATUS")[0]["logging"] == "off"
    conn.close()


@pytest.fixture(scope="module")
def mariadb_users(mariadb):
    import pymysql

    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        for user in ("instr_plain", "instr_admin"):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")
            cur.execute(f"GRANT SELECT ON test.* TO '{user}'@'%'")
    yield
    with conn.cursor() as cur:
        for user in ("instr_plain", "instr_admin"):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
    conn.close()


def test_only_admins_may_use_control_statements(qlog, mariadb_users):
    import pymysql

    for statement in ("PROXY LOG STATUS", "PROXY LOG ON 10", "proxy log off", "PROXY LOG RESET"):
        with pytest.raises(pymysql.err.OperationalError) as info:
            control(qlog.port, statement, user="instr_plain", password="pw-instr_plain")
        assert info.value.args[0] == 1227 and "PROXY_LOG_ADMINS" in info.value.args[1]
    assert control(qlog.port, "PROXY LOG STATUS")[0]["logging"] == "off"  # the refused ON did nothing
    rows = control(qlog.port, "PROXY LOG ON 10", user="instr_admin", password="pw-instr_admin")
    assert rows[0]["logging"] == "on"
    # Ordinary queries of non-admins still work and are logged under their name.
    assert control(qlog.port, "SELECT CURRENT_USER() AS u", user="instr_plain", password="pw-instr_plain") == [
        {"u": "instr_plain@%"}
    ]
    users = {row["user"] for row in control(qlog.port, "PROXY LOG TAIL 100")}
    assert "instr_plain" in users
    cli = mariadb_cli(qlog.port, "PROXY LOG STATUS", user="instr_plain", password="pw-instr_plain")
    assert cli.returncode != 0 and "ERROR 1227" in cli.stderr


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_prepared_statements_are_logged_with_their_text(qlog, deprecate_eof):
    client = RawClient(qlog.port, deprecate_eof=deprecate_eof)
    stmt_before, _, _ = client.prepare(b"SELECT seq FROM seq_1_to_100 WHERE seq > ? AND seq <= ?")
    control(qlog.port, "PROXY LOG ON 20")
    assert len(client.execute(stmt_before, [10, 15])) == 5
    stmt_after, columns, params = client.prepare(b"SELECT seq, seq * 2 FROM seq_1_to_10 WHERE seq = ?")
    assert (columns, params) == (2, 1)
    assert len(client.execute(stmt_after, [4])) == 1
    client.close_stmt(stmt_after)
    with pytest.raises(MySQLError):
        client.execute(stmt_after, [4])
    assert client.query(b"SELECT 'still fine'") == [[b"\nstill fine"]]
    client.close()
    entries = [line for line in log_lines(qlog) if line.get("command") == "execute"]
    texts = [(e["query"], e["rows"], e["status"]) for e in entries[-3:]]
    assert texts[0] == ("SELECT seq FROM seq_1_to_100 WHERE seq > ? AND seq <= ?", 5, "ok")
    assert texts[1] == ("SELECT seq, seq * 2 FROM seq_1_to_10 WHERE seq = ?", 1, "ok")
    assert texts[2][2] == "error"


def test_multi_statements_and_multi_results(qlog, mariadb):
    import pymysql
    from pymysql.constants import CLIENT

    direct = pymysql.connect(**mariadb, autocommit=True)
    with direct.cursor() as cur:
        cur.execute("DROP PROCEDURE IF EXISTS instr_proxy_two_sets")
        cur.execute("CREATE PROCEDURE instr_proxy_two_sets() BEGIN SELECT 1 AS a; SELECT seq FROM seq_1_to_3; END")
    control(qlog.port, "PROXY LOG ON 20")
    for deprecate_eof in (False, True):
        raw = RawClient(qlog.port, deprecate_eof=deprecate_eof)
        assert raw.query(b"SELECT 1; SELECT seq FROM seq_1_to_2; DO 0") == [[b"\x011"], [b"\x011", b"\x012"], []]
        raw.close()
    conn = connect(qlog.port, client_flag=CLIENT.MULTI_STATEMENTS)
    with conn.cursor() as cur:
        cur.execute("SELECT 'x'; SELECT seq FROM seq_1_to_4")
        assert cur.fetchall() == (("x",),)
        assert cur.nextset() and len(cur.fetchall()) == 4
        cur.execute("CALL instr_proxy_two_sets()")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == ((1,), (2,), (3,))
        cur.execute("SELECT 'next'")
        assert cur.fetchall() == (("next",),)
    conn.close()
    entries = {e["query"]: e for e in control(qlog.port, "PROXY LOG TAIL 100")}
    assert entries["SELECT 'x'; SELECT seq FROM seq_1_to_4"]["rows"] == 5
    assert entries["CALL instr_proxy_two_sets()"]["status"] == "ok"
    with direct.cursor() as cur:
        cur.execute("DROP PROCEDURE instr_proxy_two_sets")
    direct.close()


def test_local_infile_through_the_proxy(qlog, tmp_path):
    import pymysql

    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},row{i}\n" for i in range(200)))
    control(qlog.port, "PROXY LOG ON 20")
    conn = connect(qlog.port, local_infile=True, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE instr_infile (id INT, v VARCHAR(10))")
        try:
            cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE instr_infile FIELDS TERMINATED BY ','")
        except pymysql.err.OperationalError as exc:  # the server may forbid LOCAL INFILE
            pytest.skip(f"LOCAL INFILE disabled on the server: {exc}")
        cur.execute("SELECT COUNT(*), MAX(id) FROM instr_infile")
        assert cur.fetchall() == ((200, 199),)
    conn.close()
    entry = [e for e in log_lines(qlog) if e["query"].startswith("LOAD DATA LOCAL")][-1]
    assert entry["affected_rows"] == 200 and entry["status"] == "ok"


@pytest.mark.parametrize("logging", [False, True])
def test_cursor_fetch_and_change_user(qlog, mariadb_users, logging):
    if logging:
        control(qlog.port, "PROXY LOG ON 20")
    client = RawClient(qlog.port)
    stmt, _, _ = client.prepare(b"SELECT seq FROM seq_1_to_10")
    assert client.execute_cursor(stmt) & 0x40  # SERVER_STATUS_CURSOR_EXISTS: rows come with COM_STMT_FETCH
    fetched = [client.fetch(stmt, 4) for _ in range(3)]
    assert [len(rows) for rows, _ in fetched] == [4, 4, 2]
    assert fetched[-1][1] & 0x80  # SERVER_STATUS_LAST_ROW_SENT
    client.change_user(b"instr_plain", b"pw-instr_plain", b"test")
    assert client.query(b"SELECT CURRENT_USER()") == [[b"\rinstr_plain@%"]]
    with pytest.raises(MySQLError) as info:
        client.query(b"PROXY LOG STATUS")  # the proxy sees the new user: no longer an admin
    assert info.value.code == 1227
    client.close()
    if logging:
        executes = [e for e in log_lines(qlog) if e.get("command") == "execute"]
        assert executes[-1]["query"] == "SELECT seq FROM seq_1_to_10" and executes[-1]["status"] == "ok"
        assert any(e["user"] == "instr_plain" for e in log_lines(qlog))


def test_slow_threshold_ring_and_digest_bounds(mariadb, proxy_tmp):
    from tests.support.proxy import start_proxy

    proxy = start_proxy(proxy_tmp, PROXY_LOG_SLOW_US="50000", PROXY_LOG_RING="3", PROXY_LOG_MAX_DIGESTS="4")
    try:
        conn = connect(proxy.port)
        assert rows_of(conn, "PROXY LOG ON 20")[0]["logging"] == "on"
        with conn.cursor() as cur:
            for i in range(5):
                cur.execute(f"SELECT SLEEP(0.06), {i} AS slow_{i}")
            for i in range(6):
                cur.execute(f"SELECT {i} AS fast_{i}")
        tail = rows_of(conn, "PROXY LOG TAIL 100")
        assert [row["query"] for row in tail] == [f"SELECT SLEEP(0.06), {i} AS slow_{i}" for i in (2, 3, 4)]
        digest = {row["digest"]: row["count"] for row in rows_of(conn, "PROXY LOG DIGEST 100")}
        # 4 rows at most: the least recently seen went first, fast statements are counted though not logged.
        assert digest == {f"select ? as fast_{i}": 1 for i in (2, 3, 4, 5)}
        status = rows_of(conn, "PROXY LOG STATUS")[0]
        assert status["logged"] == 5 and status["digests"] == 4 and status["evicted"] == 7
        assert status["filters"] == "slow 50 ms"
        lines = [json.loads(line) for line in proxy.log_file.read_text().splitlines()]
        assert len(lines) == 5 and all(line["response_time_us"] >= 50000 for line in lines)
        conn.close()
    finally:
        assert proxy.stop() == 0


def test_unwritable_log_file_is_reported_and_queries_still_work(mariadb, proxy_tmp):
    from tests.support.proxy import start_proxy

    proxy = start_proxy(proxy_tmp, PROXY_LOG_FILE=str(proxy_tmp / "no-such-dir" / "log.jsonl"))
    try:
        conn = connect(proxy.port)
        rows_of(conn, "PROXY LOG ON 20")
        assert rows_of(conn, "SELECT 'works' AS w") == [{"w": "works"}]
        status = rows_of(conn, "PROXY LOG STATUS")[0]
        assert status["logging"] == "on" and "cannot write" in status["log_file"]
        assert rows_of(conn, "PROXY LOG TAIL 1")[0]["query"] == "SELECT 'works' AS w"  # the ring still works
        conn.close()
    finally:
        assert proxy.stop() == 0
