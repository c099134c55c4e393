"""PROXY LOG EXPLAIN through the real host against real MariaDB, with PyMySQL and the mariadb client (issue 22).

The plan of a digest row's sampled statement, run on the asking admin's own connection with their privileges, in
the schema the statement ran in (the admin's schema given back afterwards); refusals with their reason and the
database unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pymysql
import pytest

from tests.support.proxy import connect, control, quiet_connect

BOOK = "instr_ex_book"
OTHER_DB = "instr_ex_other"


@pytest.fixture(scope="module")
def books(mariadb):
    """A table with an indexed and an unindexed column, a schema of another name, and an admin who may not read."""
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE TABLE {BOOK} (id INT PRIMARY KEY, author_id INT, title VARCHAR(80),"
                    " KEY author (author_id))")  # fmt: skip
        cur.execute(f"INSERT INTO {BOOK} SELECT seq, seq % 50, CONCAT('t', seq) FROM seq_1_to_2000")
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {OTHER_DB}")
        cur.execute("DROP USER IF EXISTS 'instr_admin'@'%'")
        cur.execute("CREATE USER 'instr_admin'@'%' IDENTIFIED BY 'pw-ex'")  # in PROXY_LOG_ADMINS, no SELECT grant
        cur.execute("ANALYZE TABLE " + BOOK)
    yield
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {BOOK}")
        cur.execute(f"DROP DATABASE IF EXISTS {OTHER_DB}")
        cur.execute("DROP USER IF EXISTS 'instr_admin'@'%'")
    conn.close()


def run_app(port: int, statements: list[str], **kwargs) -> None:
    """The application's statements through the proxy (errors ignored: a statement is logged either way), on a
    connection that sends nothing else."""
    conn = quiet_connect(port, **kwargs)
    with conn.cursor() as cur:
        for statement in statements:
            try:
                cur.execute(statement)
                cur.fetchall()
            except pymysql.MySQLError:
                pass
    conn.close()


def digest_by_text(port: int) -> dict[str, dict]:
    return {row["digest"]: row for row in control(port, "PROXY LOG DIGEST 1000")}


def count_books(mariadb) -> int:
    conn = pymysql.connect(**mariadb)
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {BOOK}")
        (n,) = cur.fetchone()
    conn.close()
    return n


def table_of(plan: dict, name: str) -> dict:
    """The first "table" object of that name anywhere in a MariaDB JSON plan."""
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("table_name") == name:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise AssertionError(f"no table {name} in {plan}")


def test_explain_the_heaviest_and_by_id(qlog, books):
    control(qlog.port, "PROXY LOG ON 30")
    run_app(qlog.port, [f"SELECT * FROM {BOOK} WHERE title = 't{i}'" for i in range(5)]
            + [f"SELECT * FROM {BOOK} WHERE author_id = {i}" for i in range(3)])  # fmt: skip
    rows = digest_by_text(qlog.port)
    scan = rows[f"select * from {BOOK} where title = ?"]
    ref = rows[f"select * from {BOOK} where author_id = ?"]
    assert scan["explain"] == ref["explain"] == "yes"

    heaviest = control(qlog.port, "PROXY LOG DIGEST 1")[0]
    answer = control(qlog.port, "PROXY LOG EXPLAIN")  # default: row 1, the heaviest
    assert len(answer) == 1 and answer[0]["rank"] == 1 and answer[0]["id"] == heaviest["id"]
    assert set(answer[0]) == {"rank", "id", "db", "digest", "statement", "sample_us", "plan", "note"}

    answer = control(qlog.port, f"PROXY LOG EXPLAIN ID {scan['id']}")[0]
    assert answer["db"] == "test" and answer["digest"] == scan["digest"] and answer["note"] is None
    assert answer["statement"].startswith(f"SELECT * FROM {BOOK} WHERE title = 't")  # the slowest, as it ran
    table = table_of(json.loads(answer["plan"]), BOOK)
    assert table["access_type"] == "ALL" and "key" not in table  # the full scan
    table = table_of(json.loads(control(qlog.port, f"PROXY LOG EXPLAIN ID {ref['id']}")[0]["plan"]), BOOK)
    assert table["access_type"] == "ref" and table["key"] == "author" and table["possible_keys"] == ["author"]

    # The EXPLAINs and what they asked are not logged: the digest holds the application's statements only.
    assert not [text for text in digest_by_text(qlog.port) if "explain" in text or "database()" in text]


def test_explain_runs_in_the_samples_schema_and_gives_the_admins_back(qlog, books):
    control(qlog.port, "PROXY LOG ON 30")
    run_app(qlog.port, [f"SELECT title FROM {BOOK} WHERE id = 7"])
    (row,) = control(qlog.port, "PROXY LOG DIGEST 5")
    admin = quiet_connect(qlog.port, database=OTHER_DB, cursorclass=pymysql.cursors.DictCursor)
    with admin.cursor() as cur:
        cur.execute(f"PROXY LOG EXPLAIN ID {row['id']}")
        answer = cur.fetchone()
        assert table_of(json.loads(answer["plan"]), BOOK)["access_type"] == "const"
        cur.execute("SELECT DATABASE() AS db")
        assert cur.fetchone()["db"] == OTHER_DB  # given back
    admin.close()

    admin = quiet_connect(qlog.port, database=None, cursorclass=pymysql.cursors.DictCursor)
    with admin.cursor() as cur:
        cur.execute(f"PROXY LOG EXPLAIN ID {row['id']}")
        answer = cur.fetchone()
        assert answer["note"] == "this connection had no schema: it is now in test"  # there is no USE of none
        cur.execute("SELECT DATABASE() AS db")
        assert cur.fetchone()["db"] == "test"
    admin.close()


def test_explain_with_the_admins_own_privileges(qlog, books):
    control(qlog.port, "PROXY LOG ON 30")
    run_app(qlog.port, [f"SELECT title FROM {BOOK} WHERE id = 8"])
    (row,) = control(qlog.port, "PROXY LOG DIGEST 5")
    with pytest.raises(pymysql.err.OperationalError) as refused:
        control(qlog.port, f"PROXY LOG EXPLAIN ID {row['id']}", user="instr_admin", password="pw-ex", database=None)
    message = refused.value.args[1]
    assert message.startswith("PROXY LOG EXPLAIN: cannot use the schema test the statement ran in: ")
    assert "denied" in message


REFUSED = {
    f"SELECT * FROM {BOOK} WHERE id = 1 FOR UPDATE": "refused: it has a locking clause (FOR UPDATE)",
    f"SELECT * FROM {BOOK} WHERE id = 1 LOCK IN SHARE MODE": "refused: it has a locking clause (LOCK IN SHARE MODE)",
    f"SELECT id INTO @instr_x FROM {BOOK} WHERE id = 1": "refused: SELECT ... INTO writes",
    f"UPDATE {BOOK} SET title = title WHERE id = 1": "refused: it is not a SELECT (it starts with update)",
    f"DELETE FROM {BOOK} WHERE id = 99999": "refused: it is not a SELECT (it starts with delete)",
    "SELECT 1; SELECT 2": "refused: it is more than one statement",
    "SELECT PASSWORD('a secret')": "no statement of this digest row can be explained",
}


def test_refusal_matrix_leaves_the_database_unchanged(qlog, books, mariadb):
    before = count_books(mariadb)
    control(qlog.port, "PROXY LOG ON 30")
    run_app(qlog.port, list(REFUSED), client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    conn = connect(qlog.port)
    with conn.cursor() as cur:  # a prepared statement: its template has no values to explain with
        cur.execute("PREPARE instr_ps FROM 'SELECT title FROM instr_ex_book WHERE id = ?'")
        cur.execute("SET @instr_id = 3")
        cur.execute("EXECUTE instr_ps USING @instr_id")
    conn.close()
    ids = {row["query"]: row["digest_id"] for row in control(qlog.port, "PROXY LOG TAIL 100")}
    ids["SELECT PASSWORD('a secret')"] = ids["SELECT PASSWORD('***')"]  # the log shows it masked
    for statement, reason in REFUSED.items():
        with pytest.raises(pymysql.err.OperationalError) as refused:
            control(qlog.port, f"PROXY LOG EXPLAIN ID {ids[statement]}")
        assert refused.value.args[0] == 1105
        assert refused.value.args[1].startswith("PROXY LOG EXPLAIN: " + reason), statement
    prepared = [row for row in control(qlog.port, "PROXY LOG TAIL 100") if row["query"].startswith("EXECUTE")]
    with pytest.raises(pymysql.err.OperationalError) as refused:  # EXECUTE: not a SELECT
        control(qlog.port, f"PROXY LOG EXPLAIN ID {prepared[0]['digest_id']}")
    assert "it is not a SELECT (it starts with execute)" in refused.value.args[1]
    by_text = {row["digest"]: row for row in control(qlog.port, "PROXY LOG DIGEST 1000")}
    assert by_text["select password(?)"]["explain"] is None  # no sample kept: it held a password
    assert count_books(mariadb) == before

    for bad, message in (("PROXY LOG EXPLAIN 0", "takes the rank"), ("PROXY LOG EXPLAIN ID", "takes a digest row id"),
                         ("PROXY LOG EXPLAIN 1 2", "too many arguments"), ("PROXY LOG EXPLAIN 999", "has no row 999"),
                         ("PROXY LOG EXPLAIN ID 999999", "no digest row has the id 999999")):  # fmt: skip
        with pytest.raises(pymysql.MySQLError) as refused:
            control(qlog.port, bad)
        assert message in refused.value.args[1], bad


def test_strangers_cannot_explain(qlog, books, mariadb):
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS 'instr_ex_app'@'%'")
        cur.execute("CREATE USER 'instr_ex_app'@'%' IDENTIFIED BY 'pw-app'")
        cur.execute("GRANT SELECT ON test.* TO 'instr_ex_app'@'%'")
    try:
        control(qlog.port, "PROXY LOG ON 30")
        run_app(qlog.port, [f"SELECT title FROM {BOOK} WHERE id = 9"])
        with pytest.raises(pymysql.err.OperationalError) as refused:
            control(qlog.port, "PROXY LOG EXPLAIN 1", user="instr_ex_app", password="pw-app")
        assert refused.value.args[0] == 1227
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS 'instr_ex_app'@'%'")
        conn.close()


@pytest.mark.skipif(not shutil.which("mariadb"), reason="the mariadb command-line client is not installed")
def test_mariadb_client_reads_the_plan(qlog, books):
    control(qlog.port, "PROXY LOG ON 30")
    run_app(qlog.port, [f"SELECT * FROM {BOOK} WHERE title = 'x'"])
    out = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{qlog.port}", "-uroot", "test", "-e", "PROXY LOG EXPLAIN 1\\G"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rank: 1" in out.stdout and '"access_type": "ALL"' in out.stdout
    assert f"statement: SELECT * FROM {BOOK}" in out.stdout
    # The client (multi-statements on, as the mariadb client has them) keeps working on that connection.
    both = "PROXY LOG EXPLAIN 1; SELECT DATABASE() AS db"
    out = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{qlog.port}", "-uroot", "test", "--batch", "-e", both],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["db", "test"]


def test_a_plan_past_the_timeout_is_cut_and_the_schema_given_back(qlog, books, mariadb):
    control(qlog.port, "PROXY LOG ON 30")
    run_app(qlog.port, [f"SELECT title FROM {BOOK} WHERE title = 'late'"])
    (row,) = [r for r in control(qlog.port, "PROXY LOG DIGEST 10") if "late" not in r["digest"] and BOOK in r["digest"]]
    locker = pymysql.connect(**mariadb)  # EXPLAIN waits for the table: MariaDB's max_statement_time (2 s) cuts it
    with locker.cursor() as cur:
        cur.execute(f"LOCK TABLES {BOOK} WRITE")
    try:
        admin = quiet_connect(qlog.port, database=OTHER_DB)
        with admin.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as cut:
                cur.execute(f"PROXY LOG EXPLAIN ID {row['id']}")
            assert cut.value.args[1] == ("PROXY LOG EXPLAIN: the server refused the EXPLAIN: Query execution was"
                                         " interrupted (max_statement_time exceeded)")  # fmt: skip
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == (OTHER_DB,)
        admin.close()
    finally:
        locker.close()


def test_prepared_and_cut_statements_keep_no_sample(mariadb, proxy_tmp, books):
    from tests.support.proxy import start_proxy

    from .rawclient import RawClient

    proxy = start_proxy(proxy_tmp, PROXY_LOG_MAX_QUERY_LEN="64")
    try:
        control(proxy.port, "PROXY LOG ON 30")
        client = RawClient(proxy.port)
        stmt, _, _ = client.prepare(f"SELECT title FROM {BOOK} WHERE id = ?".encode())
        client.execute(stmt, [5])
        client.query(f"SELECT title FROM {BOOK} WHERE title = '{'x' * 80}'".encode())  # longer than 64 bytes
        client.close()
        rows = {row["digest"]: row for row in control(proxy.port, "PROXY LOG DIGEST 10")}
        prepared = rows[f"select title from {BOOK} where id = ?"]
        cut = rows[f"select title from {BOOK} where title = ?"]  # the literal cut, to the end
        assert prepared["explain"] is None and cut["explain"] is None
        for row in (prepared, cut):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                control(proxy.port, f"PROXY LOG EXPLAIN ID {row['id']}")
            assert "no statement of this digest row can be explained" in refused.value.args[1]
    finally:
        assert proxy.stop() == 0
