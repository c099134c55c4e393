"""Hook semantics of the host with small MySQL Proxy scripts, against real MariaDB through PyMySQL."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.mysql import ADDRESS
from tests.support.proxy import connect

pymysql = pytest.importorskip("pymysql")
pytest.importorskip("lupa")


def query(port: int, sql: str, **kwargs) -> tuple:
    conn = connect(port, **kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def test_no_script_is_a_plain_relay(lua_proxy):
    proxy = lua_proxy(None)
    assert query(proxy.port, "SELECT 1, 'a', NULL") == ((1, "a", None),)


def test_read_query_answers_with_a_result_set_and_errors(lua_proxy):
    proxy = lua_proxy("""
        function read_query(packet)
          if packet:byte(1) ~= proxy.COM_QUERY then return end
          local q = packet:sub(2)
          if q == "SHOW fake" then
            proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {
              fields = {{name = "n", type = proxy.MYSQL_TYPE_LONGLONG}, {name = "s"}},
              rows = {{1, "one"}, {2, nil}}}}
            return proxy.PROXY_SEND_RESULT
          elseif q == "SHOW myerror" then
            proxy.response = {type = proxy.MYSQLD_PACKET_ERR, errmsg = "my first error", errcode = 1045,
                              sqlstate = "28000"}
            return proxy.PROXY_SEND_RESULT
          elseif q == "SHOW ok" then
            proxy.response = {type = proxy.MYSQLD_PACKET_OK, affected_rows = 5, insert_id = 6}
            return proxy.PROXY_SEND_RESULT
          end
        end
    """)
    conn = connect(proxy.port)
    with conn.cursor() as cur:
        cur.execute("SHOW fake")
        assert cur.fetchall() == ((1, "one"), (2, None))
        assert [d[0] for d in cur.description] == ["n", "s"]
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SHOW myerror")
        assert info.value.args == (1045, "my first error")
        assert cur.execute("SHOW ok") == 5 and cur.lastrowid == 6
        cur.execute("SELECT 'real'")  # everything else reaches the server
        assert cur.fetchall() == (("real",),)
    conn.close()


def test_injected_queries_timings_and_buffered_results(lua_proxy):
    proxy = lua_proxy("""
        function read_query(packet)
          if packet:byte(1) ~= proxy.COM_QUERY then return end
          local q = packet:sub(2)
          if q == "SHOW last" then
            local g = proxy.global
            proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "k"}, {name = "v"}},
              rows = {{"query_time", g.qt}, {"response_time", g.rt}, {"rows", g.rows}, {"hidden", g.hidden},
                      {"field", g.field}, {"order", g.order}}}}
            return proxy.PROXY_SEND_RESULT
          end
          proxy.global.order = ""
          proxy.queries:append(1, packet)
          proxy.queries:append(2, string.char(proxy.COM_QUERY) .. "SELECT 42 AS answer", {resultset_is_needed = true})
          proxy.queries:prepend(3, string.char(proxy.COM_QUERY) .. "SELECT 'first'", {resultset_is_needed = true})
          return proxy.PROXY_SEND_QUERY
        end
        function read_query_result(inj)
          local g = proxy.global
          g.order = g.order .. inj.id
          if inj.id == 1 then
            g.qt, g.rt, g.rows = inj.query_time, inj.response_time, inj.resultset.row_count
          elseif inj.id == 2 then
            g.field = inj.resultset.fields[1].name
            for row in inj.resultset.rows do g.hidden = row[1] end
            return proxy.PROXY_IGNORE_RESULT
          else
            return proxy.PROXY_IGNORE_RESULT
          end
        end
    """)
    conn = connect(proxy.port)
    with conn.cursor() as cur:
        cur.execute("SELECT seq, SLEEP(0.01) FROM seq_1_to_3")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
        cur.execute("SHOW last")
        facts = dict(cur.fetchall())
    conn.close()
    assert facts["order"] == "312"
    assert facts["rows"] == "3" and facts["hidden"] == "42" and facts["field"] == "answer"
    query_time, response_time = int(facts["query_time"]), int(facts["response_time"])
    assert 25_000 <= query_time <= response_time < 5_000_000  # µs, three sleeps of 10 ms


def test_read_query_result_can_replace_a_buffered_result(lua_proxy):
    proxy = lua_proxy("""
        function read_query(packet)
          if packet:byte(1) == proxy.COM_QUERY and packet:find("secret", 1, true) then
            proxy.queries:append(1, packet, {resultset_is_needed = true})
            return proxy.PROXY_SEND_QUERY
          end
        end
        function read_query_result(inj)
          local n = 0
          for row in inj.resultset.rows do n = n + 1 end
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "redacted_rows"}},
                            rows = {{n}}}}
          return proxy.PROXY_SEND_RESULT
        end
    """)
    assert query(proxy.port, "SELECT 'secret', seq FROM seq_1_to_4") == (("4",),)
    assert query(proxy.port, "SELECT 'public'") == (("public",),)


def test_globals_per_connection_proxy_global_shared_and_hooks_see_the_connection(lua_proxy):
    proxy = lua_proxy("""
        local mine = 0
        function connect_server() proxy.global.connects = (proxy.global.connects or 0) + 1 end
        function read_handshake() proxy.global.handshake_thread = proxy.connection.server.thread_id end
        function read_auth() proxy.global.auth_user = proxy.connection.client.username end
        function read_auth_result(auth) proxy.global.auth_byte = auth.packet:byte(1) end
        function disconnect_client() proxy.global.disconnects = (proxy.global.disconnects or 0) + 1 end
        function read_query(packet)
          if packet:sub(2) ~= "SHOW state" then return end
          mine = mine + 1
          local g, c = proxy.global, proxy.connection
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "k"}, {name = "v"}}, rows = {
            {"mine", mine}, {"connects", g.connects}, {"disconnects", g.disconnects or 0},
            {"handshake_thread", g.handshake_thread}, {"thread", c.server.thread_id}, {"auth_user", g.auth_user},
            {"auth_byte", g.auth_byte}, {"db", c.client.default_db}, {"backend", c.backend_ndx},
            {"dst", c.server.dst.name}}}}
          return proxy.PROXY_SEND_RESULT
        end
    """)
    first = connect(proxy.port)
    with first.cursor() as cur:
        cur.execute("SHOW state")
        cur.execute("SHOW state")
        state = dict(cur.fetchall())
        cur.execute("SELECT CONNECTION_ID()")
        thread_id = cur.fetchone()[0]
    assert state["mine"] == "2" and state["connects"] == "1" and state["auth_user"] == "root"
    assert state["thread"] == str(thread_id) == state["handshake_thread"]
    assert state["auth_byte"] == "0" and state["db"] == "test" and state["backend"] == "1"
    assert state["dst"] == ADDRESS
    first.select_db("mysql")  # COM_INIT_DB updates client.default_db
    with first.cursor() as cur:
        cur.execute("SHOW state")
        assert dict(cur.fetchall())["db"] == "mysql"
    first.close()
    deadline = time.monotonic() + 5
    while True:
        state = dict(query(proxy.port, "SHOW state"))
        if state["disconnects"] == "1" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert state["mine"] == "1" and state["connects"] == "2" and state["disconnects"] == "1"


def test_connect_server_can_deny(lua_proxy):
    proxy = lua_proxy("""
        function connect_server()
          proxy.response = {type = proxy.MYSQLD_PACKET_ERR, errmsg = "go away", errcode = 1130}
          return proxy.PROXY_SEND_RESULT
        end
    """)
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proxy.port)
    assert info.value.args[0] == 1130 and "go away" in info.value.args[1]


def test_lua_errors_never_drop_a_query(lua_proxy):
    proxy = lua_proxy("""
        function read_query(packet)
          if packet:find("inject", 1, true) then
            proxy.queries:append(1, packet)
            return proxy.PROXY_SEND_QUERY
          end
          error("boom in read_query")
        end
        function read_query_result(inj) local x = nil; return x.field end
    """)
    conn = connect(proxy.port)
    with conn.cursor() as cur:
        for i in range(3):
            cur.execute(f"SELECT {i}")
            assert cur.fetchall() == ((i,),)
        cur.execute("SELECT 'inject', seq FROM seq_1_to_3")
        assert len(cur.fetchall()) == 3
    conn.close()


def test_script_that_fails_to_load_gives_a_clean_error(lua_proxy):
    proxy = lua_proxy("this is not lua at all")
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proxy.port)
    assert "Lua script failed to load" in info.value.args[1]


def test_script_reloads_for_new_connections_only(lua_proxy):
    source = """
        function read_query(packet)
          if packet:sub(2) ~= "SHOW version" then return end
          proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "v"}}, rows = {{"VERSION"}}}}
          return proxy.PROXY_SEND_RESULT
        end
    """
    proxy = lua_proxy(source.replace("VERSION", "one"))
    old = connect(proxy.port)
    with old.cursor() as cur:
        cur.execute("SHOW version")
        assert cur.fetchall() == (("one",),)
    proxy.script.write_text(source.replace("VERSION", "two!"))
    stat = proxy.script.stat()
    os.utime(proxy.script, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert query(proxy.port, "SHOW version") == (("two!",),)
    with old.cursor() as cur:
        cur.execute("SHOW version")
        assert cur.fetchall() == (("one",),)
    old.close()


def test_connection_close_after_result(lua_proxy):
    proxy = lua_proxy("""
        function read_query(packet)
          if packet:sub(2) == "SHOW bye" then
            proxy.connection.connection_close = true
            proxy.response = {type = proxy.MYSQLD_PACKET_OK, resultset = {fields = {{name = "v"}}, rows = {{"bye"}}}}
            return proxy.PROXY_SEND_RESULT
          end
        end
    """)
    conn = connect(proxy.port)
    with conn.cursor() as cur:
        cur.execute("SHOW bye")
        assert cur.fetchall() == (("bye",),)
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("SELECT 1")
