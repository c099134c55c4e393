"""lib/explain.lua's refusals on its own (plain Lua 5.1, as mysql-proxy 0.8.5 loads it): which sampled statements
PROXY LOG EXPLAIN runs EXPLAIN FORMAT=JSON of, and the reason it gives for the others (issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def explain():
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime()
    lua.execute(f'package.path = "{ROOT}/mysql_proxy_lua/?.lua;" .. package.path')
    return lua.eval('require("lib.explain")')


ALLOWED = [
    "SELECT * FROM book WHERE title = 'x'",
    "select id from book where author_id = 3;",
    "  /* a comment */ SELECT 1 -- trailing\n",
    "SELECT 1; ",
    "(SELECT 1) UNION (SELECT 2)",
    "WITH a AS (SELECT 1 AS n) SELECT n FROM a",
    "SELECT REPLACE(title, 'a', 'b'), INSERT(title, 1, 2, 'x') FROM book",
    "SELECT 'for update', \"delete\", `into` FROM book",
    "SELECT SUBSTRING(title FROM 1 FOR 3) FROM book",
    "SELECT * FROM t FOR SYSTEM_TIME ALL",
    "SELECT 'it''s; DROP TABLE x' AS s",
    "SELECT 'C:\\\\temp' AS path",
    "SELECT 1 /*view='shop%3Abook'*/",
]

NO_BACKSLASH = " when read without backslash escapes (as under NO_BACKSLASH_ESCAPES)"
REFUSED = [
    ("UPDATE book SET title = 'x'", "it is not a SELECT (it starts with update)"),
    ("DELETE FROM book", "it is not a SELECT (it starts with delete)"),
    ("INSERT INTO book VALUES (1)", "it is not a SELECT (it starts with insert)"),
    ("DROP TABLE book", "it is not a SELECT (it starts with drop)"),
    ("SHOW TABLES", "it is not a SELECT (it starts with show)"),
    ("SELECT * FROM book FOR UPDATE", "it has a locking clause (FOR UPDATE)"),
    ("SELECT * FROM book FOR SHARE", "it has a locking clause (FOR SHARE)"),
    ("select * from book for update skip locked", "it has a locking clause (FOR UPDATE)"),
    ("SELECT * FROM book LOCK IN SHARE MODE", "it has a locking clause (LOCK IN SHARE MODE)"),
    ("SELECT id INTO @x FROM book", "SELECT ... INTO writes"),
    ("SELECT * FROM book INTO OUTFILE '/tmp/x'", "SELECT ... INTO writes"),
    ("SELECT 1; DROP TABLE book", "it is more than one statement"),
    ("SELECT 1 ; SELECT 2", "it is more than one statement"),
    ("WITH a AS (SELECT 1) UPDATE book SET x = 1", "it writes (UPDATE)"),
    ("WITH a AS (SELECT 1) DELETE FROM book", "it writes (DELETE)"),
    ("SELECT /*!50000 1 */ FROM book", "it holds an executable comment (/*! ... */), which is code"),
    ("SELECT /*M!100000 1 */", "it holds an executable comment (/*! ... */), which is code"),
    ("SELECT 'unterminated", "it holds an unterminated literal"),
    ("SELECT 1 /* open", "it holds an unterminated comment"),
    ("SELECT * FROM t PROCEDURE ANALYSE()", "SELECT ... PROCEDURE runs a procedure"),
    ("SELECT 'a\\'; DROP TABLE x; -- '", "it is more than one statement" + NO_BACKSLASH),  # the app's escaping
    ("SELECT 'it\\'s'", "it holds an unterminated literal" + NO_BACKSLASH),
    ("  ", "it is empty"),
    ("-- only a comment", "it is empty"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_one_plain_select_is_explained(explain, sql):
    assert explain.refusal(sql) is None


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_anything_else_is_refused_with_its_reason(explain, sql, reason):
    assert explain.refusal(sql) == reason


def test_the_injected_statements(explain):
    timed = "\x03SET STATEMENT max_statement_time=2 FOR EXPLAIN FORMAT=JSON SELECT 1"  # MariaDB
    assert explain.packet("SELECT 1 ;  ", True, 2) == timed
    assert explain.packet("SELECT 1", False, 2) == "\x03EXPLAIN FORMAT=JSON SELECT 1"  # MySQL: no SET STATEMENT
    assert explain.packet("SELECT 1", True, 0) == "\x03EXPLAIN FORMAT=JSON SELECT 1"  # 0: no timeout
    assert explain.use("we`ird") == "\x03USE `we``ird`"
