"""instrumented.plans: real plans of MariaDB, SQLite and PostgreSQL read into one tree (issue 22).

An unindexed filter shows the full scan and the keys the table has not; an indexed one shows the key it uses.
Forged and malformed plans are refused with PlanError, never another exception.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from instrumented import plans
from tests.support.mysql import MARIADB


@pytest.fixture(autouse=True)
def _isolated_stats() -> None:
    """Replaces the suite's autouse fixture: nothing of memcached's is needed."""


@pytest.fixture(scope="module")
def mariadb_plans():
    """EXPLAIN FORMAT=JSON of a few statements on real MariaDB."""
    import pymysql

    conn = pymysql.connect(**MARIADB, autocommit=True)  # the suite runs with a MariaDB (bin/with-mariadb)
    statements = {
        "scan": "SELECT * FROM instr_pl_book WHERE title = 'x'",
        "ref": "SELECT * FROM instr_pl_book WHERE author_id = 3",
        "join": "SELECT b.title, a.name FROM instr_pl_book b JOIN instr_pl_author a ON a.id = b.author_id "
        "WHERE a.name = 'n' ORDER BY b.title",
        "union": "SELECT id FROM instr_pl_book WHERE id < 3 UNION SELECT id FROM instr_pl_author",
        "derived": "SELECT n FROM (SELECT author_id, COUNT(*) AS n FROM instr_pl_book GROUP BY author_id) d "
        "WHERE n > 1",
        "subquery": "SELECT title FROM instr_pl_book WHERE author_id IN (SELECT id FROM instr_pl_author "
        "WHERE name LIKE 'a%') AND id > (SELECT MIN(id) FROM instr_pl_author)",
        "none": "SELECT 1",
        "quote": "SELECT * FROM instr_pl_book WHERE title = 'it''s'",  # MariaDB writes it\\'s: not JSON
    }
    with conn.cursor() as cur:
        cur.execute("CREATE OR REPLACE TABLE instr_pl_author (id INT PRIMARY KEY, name VARCHAR(40))")
        cur.execute("CREATE OR REPLACE TABLE instr_pl_book (id INT PRIMARY KEY, author_id INT, title VARCHAR(80), "
                    "KEY author (author_id))")  # fmt: skip
        cur.execute("INSERT INTO instr_pl_author SELECT seq, CONCAT('a', seq) FROM seq_1_to_100")
        cur.execute("INSERT INTO instr_pl_book SELECT seq, seq % 100 + 1, CONCAT('t', seq) FROM seq_1_to_3000")
        cur.execute("ANALYZE TABLE instr_pl_author, instr_pl_book")
        cur.fetchall()
        found = {}
        for name, sql in statements.items():
            cur.execute("EXPLAIN FORMAT=JSON " + sql)
            found[name] = cur.fetchone()[0]
        cur.execute("DROP TABLE instr_pl_book, instr_pl_author")
    conn.close()
    return found


def test_mariadb_unindexed_filter_is_a_full_scan(mariadb_plans):
    plan = plans.from_mysql(mariadb_plans["scan"])
    (table,) = plan.tables()
    assert table.table == "instr_pl_book" and table.access == "ALL" and table.full_scan == "full table scan"
    assert table.key is None and table.rows and table.rows > 1000 and table.condition == "instr_pl_book.title = 'x'"
    assert plan.full_scans() == [table]
    assert plan.text().splitlines()[1].startswith("  - table instr_pl_book · access ALL · FULL TABLE SCAN · no key")
    assert plan.as_dict()["full_scans"] == ["instr_pl_book"]
    json.dumps(plan.as_dict())


def test_mariadb_plans_with_a_quote_in_a_condition_are_read(mariadb_plans):
    (table,) = plans.from_mysql(mariadb_plans["quote"]).tables()
    assert table.full_scan == "full table scan" and "it's" in (table.condition or ""), table.condition


def test_mariadb_indexed_filter_shows_its_key(mariadb_plans):
    (table,) = plans.from_mysql(mariadb_plans["ref"]).tables()
    assert table.access == "ref" and table.key == "author" and table.possible_keys == ("author",)
    assert table.used_key_parts == ("author_id",) and table.full_scan is None
    assert "key author (author_id)" in table.summary() and "possible keys author" in table.summary()


def test_mariadb_joins_sorts_unions_and_subqueries_keep_every_table(mariadb_plans):
    join = plans.from_mysql(mariadb_plans["join"])
    assert {t.table for t in join.tables()} == {"a", "b"}
    assert any(node.operation in ("sort", "order by") for _, node in join.lines())
    union = plans.from_mysql(mariadb_plans["union"])
    assert {t.table for t in union.tables()} >= {"instr_pl_book", "instr_pl_author"}
    assert any(node.operation == "union" for _, node in union.lines())
    derived = plans.from_mysql(mariadb_plans["derived"])
    assert "instr_pl_book" in {t.table for t in derived.tables()}
    subquery = plans.from_mysql(mariadb_plans["subquery"])
    assert {t.table for t in subquery.tables()} >= {"instr_pl_book", "instr_pl_author"}
    none = plans.from_mysql(mariadb_plans["none"])
    assert none.tables() == [] and "No tables used" in none.text()


def test_mysql_57_shape():
    """MySQL's own attribute names (rows_examined_per_scan, cost_info, ordering_operation, using_join_buffer)."""
    doc = {
        "query_block": {
            "select_id": 1,
            "cost_info": {"query_cost": "1210.40"},
            "ordering_operation": {
                "using_filesort": True,
                "nested_loop": [
                    {"table": {"table_name": "b", "access_type": "ALL", "possible_keys": ["author"],
                               "rows_examined_per_scan": 3000, "filtered": "10.00", "cost_info": {"read_cost": "5"}}},
                    {"table": {"table_name": "a", "access_type": "eq_ref", "possible_keys": ["PRIMARY"],
                               "key": "PRIMARY", "used_key_parts": ["id"], "rows_examined_per_scan": 1,
                               "using_join_buffer": "Block Nested Loop"}},
                ],
            },
        }
    }  # fmt: skip
    plan = plans.from_mysql(json.dumps(doc))
    assert plan.root.operation == "select #1" and plan.root.cost == 1210.4
    (order,) = plan.root.children
    assert order.operation == "order by" and order.notes == ["using filesort"]
    (join,) = order.children
    assert join.operation == "nested loop join" and [t.table for t in join.children] == ["b", "a"]
    b, a = join.children
    assert b.rows == 3000 and b.filtered == 10 and b.full_scan and b.possible_keys == ("author",) and b.key is None
    assert a.key == "PRIMARY" and "join buffer (Block Nested Loop)" in a.notes and not a.full_scan


def test_sqlite_plans():
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "CREATE TABLE author (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE book (id INTEGER PRIMARY KEY, author_id INT, title TEXT);"
        "CREATE INDEX book_author ON book (author_id);"
    )
    scan = plans.from_sqlite(conn.execute("EXPLAIN QUERY PLAN SELECT * FROM book WHERE title = 'x'").fetchall())
    (table,) = scan.tables()
    assert table.table == "book" and table.access == "SCAN" and table.full_scan == "full table scan"
    rows = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM book WHERE author_id = 3").fetchall()
    indexed = plans.parse(rows, "sqlite")
    (table,) = indexed.tables()
    assert table.access == "SEARCH" and table.key == "book_author" and table.full_scan is None
    assert table.condition == "author_id=?"
    join = plans.from_sqlite(
        conn.execute(
            "EXPLAIN QUERY PLAN SELECT b.title FROM book b JOIN author a ON a.id = b.author_id ORDER BY b.title"
        ).fetchall()
    )
    assert {t.table for t in join.tables()} == {"a", "b"} and "ORDER BY" in join.text()
    conn.close()


def test_postgresql_plans():
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    with conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE i22d_book (id INT PRIMARY KEY, author_id INT, title TEXT)")
        cur.execute("CREATE INDEX i22d_book_author ON i22d_book (author_id)")
        cur.execute("INSERT INTO i22d_book SELECT g, g % 100, 't' || g FROM generate_series(1, 5000) g")
        cur.execute("ANALYZE i22d_book")
        cur.execute("EXPLAIN (FORMAT JSON) SELECT * FROM i22d_book WHERE title = 'x'")
        scan = plans.from_postgresql(cur.fetchone()[0])
        cur.execute("EXPLAIN (FORMAT JSON) SELECT * FROM i22d_book WHERE author_id = 3")
        indexed = plans.parse(json.dumps(cur.fetchone()[0]), "postgresql")
    conn.close()
    (table,) = scan.tables()
    assert table.table == "i22d_book" and table.access == "Seq Scan" and table.full_scan == "full table scan"
    assert table.condition == "Filter: (title = 'x'::text)" and table.rows is not None
    table = indexed.tables()[0]
    assert table.key == "i22d_book_author" and table.full_scan is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "no query_block"),
        ('{"query_block": 5}', "no query_block"),
        ("x" * (plans.MAX_TEXT + 1), "larger than"),
        ('{"query_block": ' + '{"nested_loop": [{"table": {"table_name": "t", "x": ' * 80 + "1" + "}}]}" * 80 + "}",
         "nested deeper"),
    ],
)  # fmt: skip
def test_forged_mysql_plans_are_refused(raw, message):
    with pytest.raises(plans.PlanError, match=message):
        plans.from_mysql(raw)


def test_wrong_types_are_dropped_not_trusted():
    forged = ('{"query_block": {"select_id": "1", "table": {"table_name": ["x"], "access_type": 7, "rows": "many",'
              ' "possible_keys": [1, "k"], "attached_condition": {"a": 1}}}}')  # fmt: skip
    plan = plans.from_mysql(forged)
    (node,) = plan.root.children
    assert node.table is None and node.access is None and node.rows is None and node.possible_keys == ("k",)
    with pytest.raises(plans.PlanError):
        plans.from_sqlite([("a", 0, 0, "SCAN t")])
    with pytest.raises(plans.PlanError):
        plans.parse("{}", "oracle")
