"""The Lua runtime of the host against the MySQL Proxy 0.8 API reference, without a network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("lupa")

from instrumented.proxy.lua.api import PROXY_SEND_QUERY, PROXY_SEND_RESULT, Injection, ResultStats
from instrumented.proxy.lua.host import LuaHost, ScriptLoadError


def host_for(tmp_path, source: str, io_paths=()) -> LuaHost:
    script = tmp_path / "s.lua"
    script.write_text(source)
    return LuaHost(script, io_paths=io_paths)


def test_hooks_found_and_return_values(tmp_path):
    host = host_for(
        tmp_path,
        """
        function read_query(packet)
          if packet:byte(1) == proxy.COM_QUERY and packet:sub(2) == "a" then
            proxy.queries:append(7, packet, {resultset_is_needed = true})
            proxy.queries:prepend(6, string.char(proxy.COM_QUERY) .. "first")
            proxy.queries:append(8, "x")
            return proxy.PROXY_SEND_QUERY
          end
          if packet:sub(2) == "b" then return "not a number" end
          proxy.queries:append(1, packet)
        end
        function disconnect_client() end
    """,
    )
    conn = host.new_connection()
    assert conn.hooks == {"read_query", "disconnect_client"}
    res = conn.read_query(b"\x03a")
    assert res.ok and res.ret == PROXY_SEND_QUERY
    assert (res.injection.id, res.injection.packet, res.injection.resultset_is_needed) == (6, b"\x03first", False)
    assert res.remaining == 2
    second = conn.pop()
    assert (second.id, second.resultset_is_needed) == (7, True)
    assert conn.pop().id == 8 and conn.pop() is None
    # A non-number return is "no decision"; the queue is cleared at the start of every read_query.
    res = conn.read_query(b"\x03b")
    assert res.ok and res.ret is None and res.injection is None
    res = conn.read_query(b"\x03c")
    assert res.ret is None and res.injection is not None  # queued but not PROXY_SEND_QUERY: host discards it


def test_queries_length_and_reset(tmp_path):
    host = host_for(
        tmp_path,
        """
        function read_query(packet)
          proxy.queries:append(1, packet)
          proxy.queries:append(2, packet)
          local n = #proxy.queries
          proxy.queries:reset()
          proxy.queries:append(3, packet)
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = {{name = "before"}, {name = "after", type = proxy.MYSQL_TYPE_LONGLONG}},
            rows = {{n, #proxy.queries}, {nil, 0}}}}
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )
    conn = host.new_connection()
    res = conn.read_query(b"\x03q")
    assert res.ret == PROXY_SEND_RESULT
    resp = conn.response()
    assert resp.fields == [(b"before", 254), (b"after", 8)]
    assert resp.rows == [[b"2", b"1"], [None, b"0"]]


def test_response_err_defaults_and_invalid_type(tmp_path):
    host = host_for(
        tmp_path,
        """
        function read_query(packet)
          local q = packet:sub(2)
          if q == "err" then proxy.response = {type = proxy.MYSQLD_PACKET_ERR} end
          if q == "custom" then proxy.response = {type = proxy.MYSQLD_PACKET_ERR, errmsg = "no", errcode = 1045,
                                                  sqlstate = "28000"} end
          if q == "bad" then proxy.response = {} end
          if q == "raw" then proxy.response = {type = proxy.MYSQLD_PACKET_RAW, packets = {"\\255\\001\\000#HY000x"}} end
          if q == "ok" then proxy.response = {type = proxy.MYSQLD_PACKET_OK, affected_rows = 3, insert_id = 4} end
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )
    conn = host.new_connection()
    conn.read_query(b"\x03err")
    r = conn.response()
    assert (r.type, r.errmsg, r.errcode, r.sqlstate) == (0xFF, b"(lua) proxy.response.errmsg is nil", 1105, b"07000")
    conn.read_query(b"\x03custom")
    r = conn.response()
    assert (r.errmsg, r.errcode, r.sqlstate) == (b"no", 1045, b"28000")
    conn.read_query(b"\x03bad")
    assert conn.response().errmsg == b"(lua) handling proxy.response failed, check error-log"
    conn.read_query(b"\x03raw")
    assert conn.response().packets == [b"\xff\x01\x00#HY000x"]
    conn.read_query(b"\x03ok")
    r = conn.response()
    assert (r.type, r.affected_rows, r.insert_id, r.fields) == (0, 3, 4, None)


def test_globals_per_connection_and_proxy_global_shared(tmp_path):
    host = host_for(
        tmp_path,
        """
        local calls = 0
        counter = 0
        proxy.global.total = proxy.global.total or 0
        function read_query(packet)
          calls = calls + 1
          counter = counter + 1
          proxy.global.total = proxy.global.total + 1
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "c"}, {name = "g"},
            {name = "t"}}, rows = {{calls, counter, proxy.global.total}}}}
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )
    a, b = host.new_connection(), host.new_connection()
    for _ in range(3):
        a.read_query(b"\x03x")
    b.read_query(b"\x03x")
    assert b.response().rows == [[b"1", b"1", b"4"]]
    a.read_query(b"\x03x")
    assert a.response().rows == [[b"4", b"4", b"5"]]


def test_connection_fields_and_renamed_flat_names(tmp_path):
    host = host_for(
        tmp_path,
        """
        function read_query(packet)
          if packet:sub(2) == "old" then return proxy.connection.thread_id end
          local c = proxy.connection
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "x"}},
            rows = {{c.server.thread_id}, {c.client.username}, {c.client.default_db}, {c.client.src.name},
                    {c.backend_ndx}}}}
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )
    conn = host.new_connection()
    conn.set("server", "thread_id", 99)
    conn.set("client", "username", b"alice")
    conn.set("client", "default_db", b"shop")
    conn.set_address("client", "src", "10.0.0.1", 5555)
    conn.set("connection", "backend_ndx", 1)
    conn.read_query(b"\x03new")
    assert conn.response().rows == [[b"99"], [b"alice"], [b"shop"], [b"10.0.0.1:5555"], [b"1"]]
    res = conn.read_query(b"\x03old")
    assert not res.ok and "proxy.connection.server.thread_id" in res.error


def test_injection_object_and_resultset_availability(tmp_path):
    host = host_for(
        tmp_path,
        """
        function read_query_result(inj)
          local res = inj.resultset
          local ok_fields = pcall(function() return res.fields end)
          local out = {inj.id, inj.type, inj.query, inj.query_time, inj.response_time, res.row_count,
                       res.query_status, tostring(res.affected_rows), tostring(ok_fields),
                       tostring(res.flags.auto_commit)}
          if ok_fields then
            out[#out + 1] = res.fields[1].name
            for row in res.rows do out[#out + 1] = row[1] .. "/" .. tostring(row[2]) end
          end
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "v"}}, rows = {}}}
          for i, v in ipairs(out) do proxy.response.resultset.rows[i] = {v} end
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )
    conn = host.new_connection()

    stats = ResultStats(10, 25, 2, 100, 0, 0, None, None, 2)
    res = conn.read_query_result(Injection(5, b"\x03select 1", False), stats)
    assert res.ret == PROXY_SEND_RESULT
    values = [r[0] for r in conn.response().rows]
    assert values == [b"5", b"5", b"\x03select 1", b"10", b"25", b"2", b"0", b"nil", b"false", b"true"]
    stats.fields = [{b"name": b"id", b"type": 3}]
    stats.rows = [[b"1", b"a"], [b"2", None]]
    conn.read_query_result(Injection(6, b"\x03select 2", True), stats)
    values = [r[0] for r in conn.response().rows]
    assert values[8:] == [b"true", b"true", b"id", b"1/a", b"2/nil"]


def test_sandbox_blocks_escapes(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed.log"
    host = host_for(
        tmp_path,
        """
        function read_query(packet)
          local checks = {
            os_execute = os.execute == nil, io_popen = io.popen == nil, python = python == nil,
            loadstring = loadstring == nil, getfenv = getfenv == nil, debug = debug == nil,
            dofile = dofile == nil, require_os = not pcall(require, "os"),
            open_other = io.open("/etc/passwd") == nil,
            has_string = string.format("%d", 3) == "3", has_time = type(os.time()) == "number",
            only_proxy_env = os.getenv("PATH") == nil and os.getenv("PROXY_SANDBOX_TEST") == "visible",
          }
          local f = io.open(ALLOWED, "a")
          checks.open_allowed = f ~= nil
          if f then f:write("line\\n") f:close() end
          local rows = {}
          for k, v in pairs(checks) do rows[#rows + 1] = {k, tostring(v)} end
          proxy.response = {type = proxy.MYSQLD_PACKET_OK,
                            resultset = {fields = {{name = "k"}, {name = "v"}}, rows = rows}}
          return proxy.PROXY_SEND_RESULT
        end
    """.replace("ALLOWED", repr(str(allowed))),
        io_paths=[str(allowed)],
    )
    monkeypatch.setenv("PROXY_SANDBOX_TEST", "visible")
    conn = host.new_connection()
    assert conn.read_query(b"\x03x").ok
    checks = {k.decode(): v for k, v in conn.response().rows}
    assert set(checks.values()) == {b"true"}, checks
    assert allowed.read_text() == "line\n"


@pytest.mark.parametrize("runtime", ["luajit", "lua51"])
def test_runaway_hook_is_aborted(tmp_path, runtime):
    script = tmp_path / "runaway.lua"
    script.write_text(
        "local n = 0\nfunction read_query(p) if p == '\\3x' then while true do end end n = n + 1 return n end\n"
    )
    host = LuaHost(script, runtime=runtime)
    assert ("LuaJIT" in host.runtime.eval("jit and jit.version or ''").decode()) is (runtime == "luajit")
    conn = host.new_connection()
    start = time.monotonic()
    res = conn.read_query(b"\x03x")
    assert not res.ok and "instruction limit" in res.error
    assert time.monotonic() - start < 20
    # The call after it starts afresh: hooks that stay under the limit run, many of them, whatever ran before.
    assert [conn.read_query(b"\x03y").ret for _ in range(3)] == [1, 2, 3]


def test_load_errors_and_reload_on_change(tmp_path):
    script = tmp_path / "s.lua"
    script.write_text("function read_query(p) return proxy.PROXY_SEND_RESULT end")
    host = LuaHost(script)
    assert host.new_connection().hooks == {"read_query"}
    time.sleep(0.01)
    script.write_text("function read_query_result(inj) end  function disconnect_client() end")
    os.utime(script, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert host.new_connection().hooks == {"read_query_result", "disconnect_client"}
    script.write_text("this is not lua")
    with pytest.raises(ScriptLoadError):
        host.new_connection()
    script.write_text("error('top level fails')")
    with pytest.raises(ScriptLoadError, match="top level fails"):
        host.new_connection()


def test_a_changed_module_is_read_again_for_new_connections(tmp_path):
    """An upgrade replaces lib/ beside the script: new connections must not run the new script on old modules."""
    (tmp_path / "lib").mkdir()
    module = tmp_path / "lib" / "version.lua"
    module.write_text('return {name = "old"}')
    host = host_for(
        tmp_path,
        """
        local version = require("lib.version")
        function read_query(packet)
          local rows = {{version.name}}
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "v"}}, rows = rows}}
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )

    def answer(conn):
        conn.read_query(b"\x03x")
        return conn.response().rows[0][0]

    before = host.new_connection()
    module.write_text('return {name = "new"}')
    os.utime(module, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = host.new_connection()
    assert answer(after) == b"new"
    assert answer(before) == b"old"  # a running connection keeps what it started with
    assert answer(host.new_connection()) == b"new"


def test_require_finds_the_shipped_library(tmp_path):
    host = host_for(
        tmp_path,
        """
        local json = require("lib.json")
        local normalize = require("lib.normalize")
        function read_query(packet)
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "v"}}, rows = {
            {json.object({"a", "b", "c"}, {a = "x\\"\\n\\255", b = 1.5, c = nil})},
            {normalize.normalize("SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'o''k' -- c\\n")},
            {normalize.normalize("insert into t values (1, 'a'), (2, 'b') /* x */")},
          }}}
          return proxy.PROXY_SEND_RESULT
        end
    """,
    )
    conn = host.new_connection()
    conn.read_query(b"\x03x")
    rows = [r[0] for r in conn.response().rows]
    assert rows[0] == '{"a":"x\\"\\n\ufffd","b":1.5,"c":null}'.encode()
    assert rows[1] == b"select * from t where id in (?+) and name = ?"
    assert rows[2] == b"insert into t values (?+)"


def test_missing_lupa_gives_a_clear_message():
    code = (
        "import sys; sys.modules['lupa'] = None; sys.modules['lupa.lua51'] = None; "
        "from instrumented.proxy.__main__ import main; "
        "sys.exit(main(['--proxy-lua-script', 'mysql_proxy_lua/query_log.lua']))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "needs lupa" in proc.stderr and "Traceback" not in proc.stderr


def test_query_log_script_runs_on_plain_lua51_with_a_mysql_proxy_085_style_api(tmp_path):
    """Like mysql-proxy --lua-path=.../?.lua: standard require, only 0.8.5 fields (no host extensions)."""
    import lupa.lua51

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lua = lupa.lua51.LuaRuntime()
    log_file = tmp_path / "plain.jsonl"
    run = lua.eval("""function(root, log_file)
      package.path = root .. "/mysql_proxy_lua/?.lua;" .. package.path
      local getenv = os.getenv
      os.getenv = function(name) if name == "PROXY_LOG_FILE" then return log_file end return getenv(name) end
      local queue = {}
      proxy = {global = {}, PROXY_SEND_QUERY = 1, PROXY_SEND_RESULT = 2, PROXY_IGNORE_RESULT = 4,
               MYSQLD_PACKET_OK = 0, MYSQLD_PACKET_ERR = 255, COM_QUERY = 3, COM_INIT_DB = 2, COM_STMT_PREPARE = 22,
               COM_STMT_EXECUTE = 23, COM_STMT_CLOSE = 25, MYSQL_TYPE_STRING = 254, MYSQL_TYPE_LONGLONG = 8,
               connection = {client = {username = "root", default_db = "test", src = {name = "10.1.1.1:1"}},
                             server = {thread_id = 77}},
               queries = {append = function(self, id, packet, opts) queue[#queue + 1] = {id, packet, opts} end}}
      dofile(root .. "/mysql_proxy_lua/query_log.lua")
      local out = {}
      -- Who and where: an injected, buffered query, answered here as MariaDB would.
      local function answer(ask)
        assert(ask[2] == string.char(3) .. "SELECT CURRENT_USER(), DATABASE()" and ask[3].resultset_is_needed == true)
        local answered = false
        local function rows() if answered then return nil end answered = true return {"root@localhost", "shop"} end
        return read_query_result({id = ask[1], query = ask[2], query_time = 1, response_time = 2,
                                  resultset = {query_status = 0, row_count = 1, rows = rows}})
      end
      -- The first control statement asks the server for CURRENT_USER() and is answered from its result.
      assert(read_query(string.char(3) .. "PROXY LOG ON 10") == 1)
      assert(answer(table.remove(queue, 1)) == 2)
      out.on = proxy.response.resultset.rows[1][1]
      -- The connection's first statement after PROXY LOG ON asks again, then goes on (the answer is not sent).
      assert(read_query(string.char(3) .. "SELECT 1") == 1)
      assert(answer(table.remove(queue, 1)) == 4 and queue[1][1] == 1 and queue[1][2] == string.char(3) .. "SELECT 1")
      local known = {bytes = true, warning_count = true, affected_rows = true, insert_id = true, flags = true}
      local strict = setmetatable({row_count = 1, query_status = 255}, {__index = function(_, k)
        if not known[k] then error("proxy.resultset." .. k .. " is not known") end  -- 0.8.5: no error_code
      end})
      read_query_result({id = 1, query = queue[1][2], query_time = 5, response_time = 9, resultset = strict})
      assert(read_query(string.char(3) .. "PROXY LOG TAIL") == 2)
      local row = proxy.response.resultset.rows[1]
      out.tail = row[17]
      out.status = row[13] .. "," .. row[6] .. "," .. row[4]
      -- The digest (lib/digest.lua) and a filtered switch-on (lib/control.lua) on the same API.
      assert(read_query(string.char(3) .. "PROXY LOG DIGEST 5 ORDER BY errors") == 2)
      row = proxy.response.resultset.rows[1]
      out.digest = table.concat({row[1], row[2], row[3], row[4], row[7], row[14]}, ",")
      assert(read_query(string.char(3) .. "PROXY LOG ON 60 SLOW 2.5 DB shop") == 2)
      out.filters = proxy.response.resultset.rows[1][5]
      assert(read_query(string.char(3) .. "PROXY LOG OFF") == 2)
      return table.concat({out.on, out.tail, out.status, out.digest, out.filters}, "|")
    end""")
    assert run(root, str(log_file)) == (
        "on|SELECT 1|error,shop,root@localhost|select ?,shop,root,1,9,1|slow 2.5 ms, db shop"
    )

    line = json.loads(log_file.read_text())
    assert line["error_code"] is None and line["status"] == "error" and line["thread_id"] == 77
    who = (line["user"], line["account"], line["claimed_user"], line["db"])
    assert who == ("root", "root@localhost", "root", "shop")  # the server's schema, not the handshake's
    assert line["affected_rows"] is None  # a failed statement affected nothing (not 0 rows)


def test_print_goes_to_the_host_log_not_stdout(tmp_path, caplog, capsys):
    host = host_for(tmp_path, 'function read_query(p) print("seen", p:sub(2), 42, nil) end')
    conn = host.new_connection()
    with caplog.at_level("INFO", logger="instrumented.proxy.lua"):
        assert conn.read_query(b"\x03hello").ok
    assert "seen\thello\t42\tnil" in caplog.text
    assert "seen" not in capsys.readouterr().out


# Pairs of statements with the same shape (numbers as ?): the second is normalised from the first one's answer.
SAME_SHAPE = [
    ("SELECT c FROM sbtest1 WHERE id=5023", "SELECT c FROM sbtest1 WHERE id=17"),
    ("SELECT * FROM t WHERE a IN (1, 2, 3) AND b = 'x 1'", "SELECT * FROM t WHERE a IN (4, 5, 6) AND b = 'x 9'"),
    ("INSERT INTO t2 VALUES (1, 'a'), (2, 'b')", "INSERT INTO t2 VALUES (3, 'a'), (4, 'b')"),
    ("SELECT 1 /* 12 */ FROM t2 LIMIT 10", "SELECT 2 /* 13 */ FROM t2 LIMIT 20"),
    ("SELECT x FROM t WHERE y = 0x1F", "SELECT x FROM t WHERE y = 0x2A"),
    ("select `2024_sales`.a from `2024_sales` where id = 7", "select `2024_sales`.a from `2024_sales` where id = 8"),
    ("SELECT 'it''s 1' FROM t -- note 5\n WHERE a = 1", "SELECT 'it''s 2' FROM t -- note 6\n WHERE a = 2"),
    ('SELECT "a\\"1" FROM t WHERE b=3', 'SELECT "a\\"2" FROM t WHERE b=4'),
    ("SELECT a--1\nFROM t", "SELECT a--2\nFROM t"),
    ("UPDATE t SET v = v + 1 WHERE id IN (10,11)", "UPDATE t SET v = v + 2 WHERE id IN (12,13)"),
]


def test_a_statement_normalised_by_its_shape_gets_its_own_fingerprint():
    """The digest's normaliser finds a statement's fingerprint from an earlier one with other numbers (its shape):
    the answer is the one a normalisation of the statement itself gives, and so is whether the statement is plain JSON
    text (the log line quotes it as it is)."""
    import lupa.lua51

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lua = lupa.lua51.LuaRuntime(encoding=None)
    fresh, shape = lua.eval(
        """function(root)
      package.path = root .. "/mysql_proxy_lua/?.lua;" .. package.path
      local function fresh(sql) -- a module of its own: nothing cached
        package.loaded["lib.normalize"] = nil
        return require("lib.normalize").normalize(sql)
      end
      local function shape(sql) return (string.gsub(sql, "%f[%w_$.]%d[%w.]*", "?")) end
      return fresh, shape
    end"""
    )(root.encode())
    shared = lua.eval('function() package.loaded["lib.normalize"] = nil return require("lib.normalize") end')()
    json = lua.eval('function(root) package.path = root .. "/mysql_proxy_lua/?.lua;" .. package.path'
                    ' return require("lib.json") end')(root.encode())  # fmt: skip
    for first, second in SAME_SHAPE:
        a, b = first.encode(), second.encode()
        assert shape(a) == shape(b), (first, second)
        assert shared.normalize(a) == fresh(a)
        assert shared.normalize(b) == fresh(b), second  # found by its shape
        plain = shared.normalize(b)[1]
        assert plain is (b"\\" not in b and b'"' not in b and b"\n" not in b), second
        assert (json.string(b) == b'"' + b + b'"') is plain  # what the log line writes
    # Statements without numbers, or of other shapes, are normalised on their own.
    assert shared.normalize(b"SELECT now()") == (b"select now()", True)
    assert shared.normalize(b"SELECT c FROM sbtest2 WHERE id=1") == (b"select c from sbtest2 where id=?", True)
    assert shared.normalize(b'SELECT "\xc3\xa9" FROM sbtest2 WHERE id=1') == (
        b"select ? from sbtest2 where id=?",
        False,
    )
    assert shared.normalize(b'SELECT "\xc3\xa9" FROM sbtest2 WHERE id=2') == (
        b"select ? from sbtest2 where id=?",
        False,
    )


WRITER = """
import os, sys, time
from instrumented.proxy.lua.host import LuaHost
script, path, tag, go = sys.argv[1:]
host = LuaHost(script, io_paths=[path])
conn = host.new_connection()
while not os.path.exists(go):  # all start together
    time.sleep(0.001)
res = conn.read_query(b"\\x03" + tag.encode())
assert res.ok, res.error
"""


def test_appending_processes_never_mix_their_lines(tmp_path):
    """--workers: several processes append to one log; each write goes to the file whole (one write(2)), so
    lines longer than a stdio buffer never interleave."""
    log_file = tmp_path / "shared.log"
    script = tmp_path / "writer.lua"
    script.write_text(
        f"""
        function read_query(packet)
          local tag = packet:sub(2)
          local f = assert(io.open({json.dumps(str(log_file))}, "a"))
          for i = 1, 1500 do
            f:write(tag .. string.rep(tag, 2000 + (i % 7) * 300) .. "\\n") -- 4 to 7.6 KB a line
          end
          f:close()
        end
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(script), str(log_file), tag, str(go)], cwd=root)
        for tag in ("ab", "cd", "ef")
    ]
    time.sleep(1)
    go.touch()
    for proc in procs:
        assert proc.wait(60) == 0
    lines = log_file.read_bytes().split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) == 4500
    for line in lines:
        tag = line[:2]
        assert line == tag * (len(line) // 2) and len(line) % 2 == 0, line[:20]
    assert {line[:2] for line in lines} == {b"ab", b"cd", b"ef"}
