"""query_log.lua as an attacker sees it: floods of control statements, a claimed admin name, the log file's
mode and contents, statements that made the normaliser quadratic. Real MariaDB, the real host."""

from __future__ import annotations

import json
import os
import stat
import threading
import uuid
from pathlib import Path

import pytest

from tests.support.proxy import SCRIPT, ThreadedProxy, connect, control, start_proxy

FLOOD = b"PROXY LOG " + b"x " * 6_000_000  # 12 MB of words: the old script lower-cased and split all of it


def lua_heap_growth(proxy: ThreadedProxy, send) -> int:
    """Bytes the Lua state allocated while ``send()`` ran (garbage collection stopped meanwhile)."""
    lua = proxy.server.lua.runtime
    lua.execute('collectgarbage("collect"); collectgarbage("stop")')
    try:
        before = lua.eval('collectgarbage("count")')
        send()
        return int((lua.eval('collectgarbage("count")') - before) * 1024)
    finally:
        lua.execute('collectgarbage("restart")')


def test_huge_control_statements_are_refused_without_being_read(mariadb, plain_user, tmp_path, monkeypatch):
    import pymysql

    log_file = tmp_path / "flood.jsonl"
    monkeypatch.setenv("PROXY_LOG_ADMINS", "root")
    monkeypatch.setenv("PROXY_LOG_FILE", str(log_file))
    proxy = ThreadedProxy(SCRIPT, io_paths=[str(log_file)])
    try:
        user, password = plain_user
        stranger = connect(proxy.port, user=user, password=password, max_allowed_packet=64 << 20)
        admin = connect(proxy.port, max_allowed_packet=64 << 20)
        refused: list[int] = []

        def flood(conn) -> None:
            with conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
                cur.execute(FLOOD)
            refused.append(info.value.args[0])

        # The packet itself reaches Lua as one string (the 0.8 API); nothing more may be allocated for it.
        growth = lua_heap_growth(proxy, lambda: flood(stranger))
        assert refused == [1227] and growth < len(FLOOD) + (256 << 10), growth
        growth = lua_heap_growth(proxy, lambda: flood(admin))  # a claimed admin: too long, refused unparsed
        assert refused == [1227, 1064] and growth < len(FLOOD) + (256 << 10), growth

        # A sustained flood from the stranger: another client keeps being answered meanwhile.
        flooder = threading.Thread(target=lambda: [flood(stranger) for _ in range(4)])
        other = connect(proxy.port)
        flooder.start()
        answers = 0
        with other.cursor() as cur:
            while flooder.is_alive() or answers == 0:
                cur.execute("SELECT 1")
                assert cur.fetchall() == ((1,),)
                answers += 1
        flooder.join()
        assert refused == [1227, 1064] + [1227] * 4 and answers > 0
        assert control(proxy.port, "PROXY LOG STATUS")[0]["logging"] == "off"
        for conn in (stranger, admin, other):
            conn.close()
    finally:
        proxy.stop()


def test_a_claimed_admin_name_is_checked_against_the_authenticated_account(anonymous_account, proxy_tmp):
    import pymysql

    acct = anonymous_account
    admins = f"{acct['ghost']}, {acct['dba']}@{acct['source']}"
    proxy = start_proxy(proxy_tmp, backends=[acct["relay"]], PROXY_LOG_ADMINS=admins)
    try:
        # The trap is real: the server lets a stranger in under the admin's name, as the anonymous account.
        ghost = connect(proxy.port, user=acct["ghost"], password="", database=None)
        with ghost.cursor() as cur:
            cur.execute("SELECT USER(), CURRENT_USER()")
            assert cur.fetchall() == ((f"{acct['ghost']}@{acct['source']}", f"@{acct['source']}"),)
            for statement in ("PROXY LOG ON 20", "PROXY LOG STATUS"):  # the verdict is kept: refused again
                with pytest.raises(pymysql.err.OperationalError) as info:
                    cur.execute(statement)
                assert info.value.args[0] == 1227 and "authenticated" in info.value.args[1]
            cur.execute("SELECT 'still usable'")
            assert cur.fetchall() == (("still usable",),)
        ghost.close()
        # The configured user@host account, authenticated with its password, is an admin.
        rows = control(proxy.port, "PROXY LOG STATUS", user=acct["dba"], password=acct["password"], database=None)
        assert rows[0]["logging"] == "off"  # the stranger's ON did nothing
        lines = proxy.log_file.read_text().splitlines() if proxy.log_file.exists() else []
        assert not any("CURRENT_USER" in line for line in lines)  # the check leaves nothing in the log
    finally:
        assert proxy.stop() == 0, proxy.stderr()


def test_log_file_is_created_private(mariadb, proxy_tmp):
    old = os.umask(0o022)  # a usual umask: the host must not rely on the DBA's
    try:
        proxy = start_proxy(proxy_tmp)
    finally:
        os.umask(old)
    try:
        control(proxy.port, "PROXY LOG ON 20")
        control(proxy.port, "SELECT 'written'")
        control(proxy.port, "PROXY LOG OFF")
        assert "SELECT 'written'" in proxy.log_file.read_text()
        assert stat.S_IMODE(proxy.log_file.stat().st_mode) == 0o600
    finally:
        assert proxy.stop() == 0


SECRETS = {
    "IDENTIFIED BY '{s}'": "CREATE USER '{u}'@'%' IDENTIFIED BY '{s}'",
    'IDENTIFIED BY "{s}"': "ALTER USER '{u}'@'%' IDENTIFIED BY \"{s}\"",
    "USING PASSWORD('{s}')": "ALTER USER '{u}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{s}')",
    "USING '{s}'": "ALTER USER '{u}'@'%' IDENTIFIED VIA no_such_plugin USING '{s}'",
    "= PASSWORD('{s}')": "SET PASSWORD FOR '{u}'@'%' = PASSWORD('{s}')",
    "= '{s}'": "SET PASSWORD FOR '{u}'@'%' = '{s}'",
    "SELECT PASSWORD('{s}')": "SELECT PASSWORD('{s}') IS NOT NULL",
    # Comments between the words and the literal (issue 17), one with a quote in it:
    "IDENTIFIED BY /*x*/ '{s}'": "ALTER USER '{u}'@'%' IDENTIFIED BY /*x*/ '{s}'",
    "IDENTIFIED /*it's*/ BY '{s}'": "ALTER USER '{u}'@'%' IDENTIFIED /*it's*/ BY '{s}'",
    "IDENTIFIED BY -- it's\n'{s}'": "ALTER USER '{u}'@'%' IDENTIFIED BY -- it's\n'{s}'",
}


def test_passwords_are_masked_in_the_log_file_tail_and_digest(qlog, mariadb):
    import pymysql

    user = f"instr_mask_{uuid.uuid4().hex[:8]}"
    secrets = {form: f"S3cret-{i}-{uuid.uuid4().hex[:6]}" for i, form in enumerate(SECRETS)}
    control(qlog.port, "PROXY LOG ON 20")
    conn = connect(qlog.port, autocommit=True)
    try:
        with conn.cursor() as cur:
            for form, statement in SECRETS.items():
                try:
                    cur.execute(statement.format(u=user, s=secrets[form]))
                except pymysql.err.MySQLError:
                    pass  # refused by the server (unknown plugin, bad hash): logged all the same
            cur.execute("SELECT 'not-a-secret' AS password_hint")
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        conn.close()
    tail = [row["query"] for row in control(qlog.port, "PROXY LOG TAIL 100")]
    digest = [row["digest"] for row in control(qlog.port, "PROXY LOG DIGEST 100")]
    text = qlog.log_file.read_text()
    logged = [json.loads(line)["query"] for line in text.splitlines()]
    for form, secret in secrets.items():
        masked = form.format(s="***")
        assert any(masked in q for q in tail) and any(masked in q for q in logged), (form, tail)
        for shown in (text, "\n".join(tail), "\n".join(digest)):
            assert secret not in shown, (form, shown)
    assert "SELECT 'not-a-secret' AS password_hint" in tail  # other literals are kept


def test_long_values_lists_are_normalised_in_one_pass(mariadb, proxy_tmp):
    """A 1 MB multi-row INSERT: the old normaliser needed minutes of the proxy's loop (quadratic)."""
    proxy = start_proxy(proxy_tmp, PROXY_LOG_MAX_QUERY_LEN=str(2 << 20))
    try:
        conn = connect(proxy.port, autocommit=True)
        rows = ", ".join(f"({i}, 'v{i}', {i}.5)" for i in range(50_000))
        statement = f"INSERT INTO instr_values VALUES {rows}"
        assert len(statement) > 1 << 20
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE instr_values (a INT, b VARCHAR(10), c DOUBLE)")
            cur.execute("PROXY LOG ON 20")
            cur.execute(statement)
            cur.execute("PROXY LOG DIGEST 5")  # answered once the 1 MB statement was normalised
            digest = {row[0]: row[3] for row in cur.fetchall()}  # digest, db, user, count
            cur.execute("PROXY LOG TAIL 1")
            assert cur.fetchall()[0][-1] == statement
        assert digest["insert into instr_values values (?+)"] == 1
        conn.close()
    finally:
        assert proxy.stop() == 0


def test_normaliser_and_masking_edge_cases():
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime()
    root = Path(__file__).resolve().parents[2] / "mysql_proxy_lua"
    lua.execute(f'package.path = "{root}/?.lua;" .. package.path')
    normalize = lua.eval('require("lib.normalize")')
    norm = lua.eval('function(sql) return (require("lib.normalize").normalize(sql)) end')  # the fingerprint alone
    mask = normalize.mask_secrets
    assert norm("INSERT INTO t VALUES (1, 'a'), (2, 'b') , (3,'c');; ;") == "insert into t values (?+)"
    assert norm("SELECT 1" + ";" * 200_000) == "select ?"  # trailing ; cut once, not one copy per character
    unbalanced = "INSERT INTO t VALUES (1, 2), (3, 4" + ", (5)" * 20_000
    assert norm(unbalanced).startswith("insert into t values (?+), (?, ?, (?), (?)")
    assert norm("SELECT x FROM t WHERE a IN (1, 2, 3) AND b = 'x'") == "select x from t where a in (?+) and b = ?"
    assert mask("CREATE USER u IDENTIFIED BY 'p''w\\'d' PASSWORD EXPIRE") == (
        "CREATE USER u IDENTIFIED BY '***' PASSWORD EXPIRE"
    )
    assert mask("create user u identified via ed25519 using password('a') or unix_socket using 'b'") == (
        "create user u identified via ed25519 using password('***') or unix_socket using '***'"
    )
    assert mask("CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD = 'x'") == (
        "CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD = '***'"
    )
    assert mask("UPDATE t SET `password`='x', note='password' WHERE id = 'password'") == (
        "UPDATE t SET `password`='***', note='password' WHERE id = 'password'"
    )
    assert mask("IDENTIFIED BY 'cut-off") == "IDENTIFIED BY '***"
    assert mask("ALTER USER u /*!IDENTIFIED BY*/ 'pw'") == "ALTER USER u /*!IDENTIFIED BY*/ '***'"  # executed
    assert mask("ALTER USER `it's`@'%' IDENTIFIED BY # x\n 'pw'") == "ALTER USER `it's`@'%' IDENTIFIED BY # x\n '***'"
    assert mask("CREATE USER u IDENTIFIED BY 'p' /**/ 'w', v") == "CREATE USER u IDENTIFIED BY '***' /**/ '***', v"
    assert mask("SELECT 'a--b' -- identified by\n, 'x'") == "SELECT 'a--b' -- identified by\n, 'x'"
    assert mask("SELECT 'plain', 1") == "SELECT 'plain', 1"


def test_the_host_creates_the_log_file_0600_but_leaves_an_existing_one(tmp_path):
    from instrumented.proxy.lua.host import LuaHost

    new, existing = tmp_path / "new.jsonl", tmp_path / "existing.jsonl"
    existing.write_text("")
    existing.chmod(0o640)
    script = tmp_path / "open.lua"
    script.write_text(f'for _, p in ipairs({{"{new}", "{existing}"}}) do assert(io.open(p, "a")):close() end')
    old = os.umask(0)
    try:
        LuaHost(script, io_paths=[str(new), str(existing)]).new_connection()
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # the DBA's choice for a file that was there
