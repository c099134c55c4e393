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
    ("SELECT 1; /*!50000 DROP TABLE book */", "it holds an executable comment (/*! ... */), which is code"),
    ("SELECT 1; 'x'", "it is more than one statement"),
    ("SELECT 1; -- c\nDROP TABLE book", "it is more than one statement"),
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
    assert explain.refusal(sql)[0] is None


@pytest.mark.parametrize(
    ("sql", "explained"),
    [
        ("SELECT 1; -- done", "SELECT 1"),
        ("SELECT 1 ;; /* and */ ;", "SELECT 1"),
        ("SELECT ';' AS s;  ", "SELECT ';' AS s"),
        ("SELECT 1 -- done", "SELECT 1 -- done"),
        ("  SELECT 1\n", "  SELECT 1"),
    ],
)
def test_nothing_after_the_statement_is_sent(explain, sql, explained):
    assert explain.refusal(sql) == (None, explained)


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_anything_else_is_refused_with_its_reason(explain, sql, reason):
    assert explain.refusal(sql)[0] == reason


def test_the_injected_statements(explain):
    timed = "\x03SET STATEMENT max_statement_time=2 FOR EXPLAIN FORMAT=JSON SELECT 1"  # MariaDB
    assert explain.packet("SELECT 1 ;  ", True, 2) == timed
    assert explain.packet("SELECT 1", False, 2) == "\x03EXPLAIN FORMAT=JSON SELECT 1"  # MySQL: no SET STATEMENT
    assert explain.packet("SELECT 1", True, 0) == "\x03EXPLAIN FORMAT=JSON SELECT 1"  # 0: no timeout
    assert explain.use("we`ird") == "\x03USE `we``ird`"


def test_explain_runs_on_a_mysql_proxy_085_style_api(tmp_path):
    """PROXY LOG EXPLAIN's injections, step by step, as mysql-proxy 0.8.5 runs them: standard require, only 0.8.5's
    resultset fields (a failure's message read from the raw ERR packet), rows as an iterator."""
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime()
    run = lua.eval("""function(root, log_file)
      package.path = root .. "/mysql_proxy_lua/?.lua;" .. package.path
      local getenv = os.getenv
      os.getenv = function(name) if name == "PROXY_LOG_FILE" then return log_file end return getenv(name) end
      local queue = {}
      proxy = {global = {}, PROXY_SEND_QUERY = 1, PROXY_SEND_RESULT = 2, PROXY_IGNORE_RESULT = 4,
               MYSQLD_PACKET_OK = 0, MYSQLD_PACKET_ERR = 255, COM_QUERY = 3, COM_INIT_DB = 2, COM_STMT_PREPARE = 22,
               COM_STMT_EXECUTE = 23, COM_STMT_CLOSE = 25, MYSQL_TYPE_STRING = 254, MYSQL_TYPE_LONGLONG = 8,
               MYSQL_TYPE_DOUBLE = 5,
               connection = {client = {username = "root", default_db = "shop", src = {name = "10.1.1.1:1"}},
                             server = {thread_id = 77}},
               queries = {append = function(self, id, packet, opts) queue[#queue + 1] = {id, packet, opts} end}}
      dofile(root .. "/mysql_proxy_lua/query_log.lua")
      local known = {bytes = true, warning_count = true, affected_rows = true, insert_id = true, flags = true,
                     rows = true, raw = true}
      local function strict(fields)
        return setmetatable(fields, {__index = function(_, k)
          if not known[k] then error("proxy.resultset." .. k .. " is not known") end
        end})
      end
      local function rows_of(list)
        local i = 0
        return function() i = i + 1 return list[i] end
      end
      -- The next injection answered: OK with rows, or ERR (0.8.5: the message only in the raw packet).
      local function answer(rows, err)
        local inj = table.remove(queue, 1)
        assert(inj[3].resultset_is_needed == true, "every EXPLAIN injection is buffered")
        local res
        if err then
          res = strict({query_status = 255, row_count = 0, raw = string.char(255, 0x7a, 0x04) .. "#42000" .. err})
        else
          res = strict({query_status = 0, row_count = #rows, rows = rows_of(rows)})
        end
        return read_query_result({id = inj[1], query = inj[2], query_time = 1, response_time = 2, resultset = res}),
          inj[2]
      end
      local out = {}
      assert(read_query(string.char(3) .. "PROXY LOG ON 10") == 1)
      assert(answer({{"root@localhost", "shop"}}) == 2)
      -- The application's statement, logged (asked who and where first).
      assert(read_query(string.char(3) .. "SELECT * FROM book WHERE title = 'x'") == 1)
      assert(answer({{"root@localhost", "shop"}}) == 4)
      local inj = table.remove(queue, 1)
      read_query_result({id = inj[1], query = inj[2], query_time = 5, response_time = 9,
                         resultset = strict({query_status = 0, row_count = 0})})
      -- An admin's EXPLAIN from another schema: where, USE shop, EXPLAIN, USE back; the answer replaces the last.
      proxy.connection.client.default_db = "other"
      assert(read_query(string.char(3) .. "PROXY LOG EXPLAIN 1") == 1)
      local decision, sent = answer({{"other", "10.11.6-MariaDB"}})
      assert(decision == 4 and sent == string.char(3) .. "SELECT DATABASE(), VERSION()")
      decision, sent = answer({})
      assert(decision == 4 and sent == string.char(3) .. "USE `shop`")
      decision, sent = answer({{'{"query_block": {}}'}})
      assert(decision == 4)
      out.explain = sent
      decision, sent = answer({})
      assert(decision == 2 and sent == string.char(3) .. "USE `other`")
      local row = proxy.response.resultset.rows[1]
      out.answer = table.concat({row[1], row[2], row[3], row[5], row[7]}, "|")
      -- The server refuses: its message from the raw packet, the schema given back first.
      assert(read_query(string.char(3) .. "PROXY LOG EXPLAIN") == 1)
      answer({{"other", "10.11.6-MariaDB"}})
      answer({})
      assert(answer(nil, "SELECT command denied") == 4)
      assert(answer({}) == 2)
      out.refused = proxy.response.errmsg
      return out.explain .. "\\n" .. out.answer .. "\\n" .. out.refused
    end""")
    explain, answer, refused = run(str(ROOT), str(tmp_path / "plain.jsonl")).split("\n")
    sample = "SELECT * FROM book WHERE title = 'x'"
    assert explain == "\x03SET STATEMENT max_statement_time=2 FOR EXPLAIN FORMAT=JSON " + sample
    assert answer == "1|1|shop|SELECT * FROM book WHERE title = 'x'|{\"query_block\": {}}"
    assert refused == "PROXY LOG EXPLAIN: the server refused the EXPLAIN: SELECT command denied"
