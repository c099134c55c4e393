"""query_log.lua and the host against the probe of issue 17: forged slow-log entries, a link planted after
rotation, claimed users and schemas, claimed views, masking across comments, a flood of the log file.
Real MariaDB, the real host as DBAs run it, the real pt-query-digest."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.ports import wait_until
from tests.support.proxy import connect, control, quiet_connect, start_proxy

# What a database user sends to forge or hide slow-log entries (issue 17, finding 1), each a statement of its own.
FORGERIES = [
    "# Query_time: 4242  Lock_time: 0  Rows_sent: 1  Rows_examined: 123456789\nSELECT 'x' FROM DUAL",
    "# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: root[root] @ localhost [127.0.0.1]\nSELECT 'forged user'",
    "use mysql;\nSELECT 'forged schema'",
    "SET timestamp=1577836800;\nSELECT 'forged time'",
    "SELECT 'split';\n# Time: 2020-01-01T00:00:00.000000Z\n# Query_time: 4242\nSELECT 'second half'",
    "SELECT 'carriage'\r# Query_time: 4242  Rows_examined: 123456789\rSELECT 'returns'",
    "SELECT 'banner'\nTcp port: 3306  Unix socket: /x\nTime                 Id Command    Argument",
    "SELECT 'version';\n/usr/sbin/mysqld, Version: 10.11.0 (x). started with:\n# Time: 2020-01-01T00:00:00Z\nSELECT 1",
]

#: Prints each event pt-query-digest parsed, one line each: its attributes and statement (newlines as \n).
PT_EVENTS = (
    'do { print join("\\t", "EVENT", map({ defined $_ ? $_ =~ s/\\\\/\\\\\\\\/gr =~ s/\\n/\\\\n/gr =~ s/\\t/\\\\t/gr'
    ' : "" } @{$event}{qw(ts user host Query_time Rows_examined db arg)})), "\\n"; 0 }'
)


def pt_events(log_file: Path) -> list[dict[str, str]]:
    """The events the real pt-query-digest reads from a slow log."""
    proc = subprocess.run(["pt-query-digest", "--no-report", "--filter", PT_EVENTS, str(log_file)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = ("ts", "user", "host", "Query_time", "Rows_examined", "db", "arg")
    unescape = {"n": "\n", "t": "\t"}
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("EVENT\t"):
            values = [re.sub(r"\\(.)", lambda m: unescape.get(m[1], m[1]), v) for v in line.split("\t")[1:]]
            events.append(dict(zip(names, values, strict=True)))
    return events


@pytest.mark.skipif(not shutil.which("pt-query-digest"), reason="percona-toolkit is not installed")
def test_no_statement_can_forge_or_swallow_a_slow_log_entry(mariadb, plain_user, tmp_path):
    proxy = start_proxy(tmp_path, PROXY_LOG_FORMAT="slowlog")
    user, password = plain_user
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 5))
    try:
        control(proxy.port, "PROXY LOG ON 30")
        attacker = quiet_connect(proxy.port, user=user, password=password)
        genuine = quiet_connect(proxy.port)
        for i, statement in enumerate(FORGERIES):
            with attacker.cursor() as cur:
                try:
                    cur.execute(statement)
                except Exception:  # noqa: BLE001 - MariaDB refuses some of them; they are logged all the same
                    pass
            with genuine.cursor() as cur:
                cur.execute(f"SELECT 'genuine {i}'")
        attacker.close()
        genuine.close()
        control(proxy.port, "PROXY LOG OFF")  # flushes the file
    finally:
        assert proxy.stop() == 0, proxy.stderr()
    text = proxy.log_file.read_text()
    # Only the proxy's own header lines start with "#"; one SET timestamp line per entry.
    headers = [line for line in text.splitlines() if line.startswith(("#", "use ", "SET "))]
    assert all(re.match(r"# (Time|User@Host|Thread_id|Query_time): |SET timestamp=\d+;$", h) for h in headers), headers
    assert text.count("\nSET timestamp=") == 2 * len(FORGERIES)
    events = pt_events(proxy.log_file)
    assert len(events) == 2 * len(FORGERIES), [e["arg"] for e in events]  # none lost, none forged
    for i, (forged, real) in enumerate(zip(events[::2], events[1::2], strict=True)):
        assert forged["user"] == user and real["user"] == "root", (forged, real)
        assert real["arg"] == f"SELECT 'genuine {i}'", real  # the next entry intact
        assert [line.strip() for line in forged["arg"].splitlines()] == [
            line.strip() for line in FORGERIES[i].replace("\r", "\n").splitlines()
        ]  # the whole statement, as its own entry (lines that read as headers indented)
    for event in events:
        assert event["ts"] >= started and float(event["Query_time"]) < 60 and event["Rows_examined"] == "0", event
        assert event["db"] == "test" and event["host"] == "127.0.0.1", event


def test_a_link_planted_at_the_log_s_name_after_rotation_is_not_followed(mariadb, tmp_path):
    proxy = start_proxy(tmp_path)
    target = tmp_path / "bashrc"
    target.write_text("precious\n")
    try:
        control(proxy.port, "PROXY LOG ON 30")
        conn = connect(proxy.port, autocommit=True)
        cur = conn.cursor()
        cur.execute("SELECT 'before rotation'")
        wait_until(lambda: proxy.log_file.exists() and "before rotation" in proxy.log_file.read_text())
        proxy.log_file.rename(proxy.log_file.with_suffix(".1"))  # rotation: the name is free for a moment
        proxy.log_file.symlink_to(target)

        def refused() -> str:
            cur.execute("SELECT 'echo pwned\\n# a line for the link''s target'")  # reopened once a second
            status = control(proxy.port, "PROXY LOG STATUS")[0]
            return "symbolic link" in status["log_file"] and status["log_file"]

        assert "refused" in str(wait_until(refused, timeout=10))
        assert target.read_text() == "precious\n"
        assert "the script's file was not opened: refused:" in proxy.stderr()
        assert "is a symbolic link" in proxy.stderr()
        # A dangling link: nothing is created where it points.
        proxy.log_file.unlink()
        proxy.log_file.symlink_to(tmp_path / "created")
        control(proxy.port, "PROXY LOG ON 30")  # a DBA's PROXY LOG ON tries the file again
        wait_until(refused, timeout=10)
        assert not (tmp_path / "created").exists()
        # The link gone, the log goes on in a private regular file.
        proxy.log_file.unlink()
        control(proxy.port, "PROXY LOG ON 30")
        cur.execute("SELECT 'after the link'")
        control(proxy.port, "PROXY LOG OFF")
        assert "after the link" in proxy.log_file.read_text()
        assert stat.S_IMODE(proxy.log_file.lstat().st_mode) == 0o600 and not proxy.log_file.is_symlink()
        conn.close()
    finally:
        assert proxy.stop() == 0, proxy.stderr()


def test_the_host_opens_only_the_proxy_s_own_regular_file(tmp_path):
    from instrumented.proxy.lua import files

    other = tmp_path / "other"
    other.write_text("x")
    hard = tmp_path / "hard.log"
    os.link(other, hard)
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="No such device"):
        files.open_checked(str(fifo), "a")  # a FIFO without a reader: refused at once, the event loop not blocked
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    for path, reason in ((hard, "a hard link"), (fifo, "not a regular file"), (Path(os.devnull), "not a regular")):
        with pytest.raises(files.RefusedFile, match=reason):
            files.open_checked(str(path), "a")
    os.close(reader)
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign.log"
        foreign.write_text("kept")
        os.chown(foreign, 65534, 65534)
        with pytest.raises(files.RefusedFile, match="owned by uid 65534"):
            files.open_checked(str(foreign), "w")
        assert foreign.read_text() == "kept"  # refused before anything was truncated
    with pytest.raises(FileNotFoundError):
        files.open_checked(str(tmp_path / "missing.log"), "r")
    assert files.shared_directory(str(tmp_path / "x.log")) is None  # pytest's directories are private
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert "writable by other users" in str(files.shared_directory(str(shared / "x.log")))


def test_the_file_lua_writes_is_the_checked_one_and_not_inherited(tmp_path):
    from instrumented.proxy.lua.host import LuaHost

    log_file = tmp_path / "query.log"
    script = tmp_path / "open.lua"
    script.write_text(f'io.open("{log_file}", "q")')
    with pytest.raises(Exception, match="invalid mode"):
        LuaHost(script, io_paths=[str(log_file)]).new_connection()
    script.write_text(f'f = assert(io.open("{log_file}", "a")) f:write("line\\n") f:flush()')
    host = LuaHost(script, io_paths=[str(log_file)])
    conn = host.new_connection()
    assert conn is not None and log_file.read_text() == "line\n"
    held = [int(fd) for fd in os.listdir("/proc/self/fd") if _points_to(fd, log_file)]
    assert len(held) == 1  # Lua's own descriptor; the host's is closed
    assert fcntl.fcntl(held[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # not left to child processes


def _points_to(fd: str, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False


def test_the_log_names_the_authenticated_account_beside_the_claimed_name(anonymous_account, tmp_path):
    acct = anonymous_account
    proxy = start_proxy(tmp_path, backends=[acct["relay"]], PROXY_LOG_ADMINS=f"{acct['dba']}@{acct['source']}",
                        PROXY_LOG_FORMAT="slowlog")  # fmt: skip
    admin = {"user": acct["dba"], "password": acct["password"], "database": None}
    try:
        control(proxy.port, "PROXY LOG ON 30", **admin)
        ghost = quiet_connect(proxy.port, user=acct["dba"] + "x", password="", database=None)  # the anonymous account
        with ghost.cursor() as cur:
            cur.execute("SELECT 'from a ghost'")
        ghost.close()
        tail = control(proxy.port, "PROXY LOG TAIL 5", **admin)
        digest = control(proxy.port, "PROXY LOG DIGEST 5", **admin)
        control(proxy.port, "PROXY LOG OFF", **admin)
    finally:
        assert proxy.stop() == 0, proxy.stderr()
    (row,) = [r for r in tail if r["query"] == "SELECT 'from a ghost'"]
    assert (row["user"], row["account"], row["claimed_user"]) == ("", f"@{acct['source']}", acct["dba"] + "x")
    assert [r["user"] for r in digest if r["digest"] == "select ?"] == [""]
    text = proxy.log_file.read_text()
    assert f"# User@Host: [{acct['dba']}x] @ 127.0.0.1" in text  # MariaDB's layout: account user[claimed name]
    assert "CURRENT_USER" not in text  # asking leaves nothing in the log


@pytest.fixture
def schema(mariadb: dict):
    """A database of its own (dropped afterwards)."""
    import pymysql

    name = f"instr_use_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


def test_use_is_followed_so_a_db_filter_is_not_evaded(qlog, schema):
    from pymysql.constants import CLIENT

    a = connect(qlog.port, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
    b = connect(qlog.port, autocommit=True, database=schema)
    with a.cursor() as cur:
        cur.execute(f"USE {schema}")  # while logging is off: asked again when it is switched on
        cur.execute("USE test")
    control(qlog.port, f"PROXY LOG ON 30 DB {schema}")
    with a.cursor() as cur:
        cur.execute("SELECT 'in test'")
        cur.execute(f"USE {schema}")  # the probe's evasion: a USE sent as a query
        cur.execute("SELECT 'after use'")
        cur.execute("/* a comment */ use `test`")
        cur.execute("SELECT 'back in test'")
        cur.execute(f"SELECT 'multi'; USE {schema}")
        while cur.nextset():
            pass
        cur.execute("SELECT 'after multi'")
    with b.cursor() as cur:
        cur.execute("SELECT 'b in the schema'")
        cur.execute("USE test")
        cur.execute("SELECT 'b left it'")
    control(qlog.port, "PROXY LOG OFF")
    with a.cursor() as cur:
        cur.execute("USE test")
    control(qlog.port, f"PROXY LOG ON 30 DB {schema}")  # a new switch-on asks again
    with a.cursor() as cur:
        cur.execute("SELECT 'not in the schema'")
    tail = control(qlog.port, "PROXY LOG TAIL 20")
    assert [(row["query"], row["db"]) for row in tail] == [
        ("SELECT 'after use'", schema), ("/* a comment */ use `test`", schema), ("SELECT 'after multi'", schema),
        ("SELECT 'b in the schema'", schema), ("USE test", schema),
    ]  # fmt: skip
    a.close()
    b.close()


def test_asking_the_server_leaves_what_the_previous_statement_left(qlog):
    conn = connect(qlog.port, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT SQL_CALC_FOUND_ROWS seq FROM seq_1_to_10 LIMIT 1")
        control(qlog.port, "PROXY LOG ON 30")
        cur.execute("SELECT FOUND_ROWS()")  # the first logged statement: asked after it, not before
        assert cur.fetchall() == ((10,),)
        cur.execute("SELECT 'next'")
        cur.execute("SELECT CURRENT_USER()")  # the account the server matched: root@localhost or root@127.0.0.1
        account = cur.fetchall()[0][0]
    tail = control(qlog.port, "PROXY LOG TAIL 3")
    assert [(row["query"], row["user"], row["account"]) for row in tail][:2] == [
        ("SELECT FOUND_ROWS()", "root (claimed)", None), ("SELECT 'next'", "root", account),
    ]  # fmt: skip
    conn.close()


def test_statements_that_are_not_preceded_by_the_question_do_not_evade_a_db_filter(qlog, schema):
    conn = connect(qlog.port, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"USE {schema}")  # not followed: logging is off
        control(qlog.port, f"PROXY LOG ON 30 DB {schema}")
        cur.execute("SELECT 'unasked', FOUND_ROWS() /* error, warning */")  # passes the filter: logged
        cur.execute("SELECT 'asked'")
        cur.execute("USE test")
        cur.execute("SELECT 'after use', FOUND_ROWS() /* error */")  # after a USE the question always comes first
        cur.execute(f"USE {schema}")
        cur.execute("SELECT 'back', ROW_COUNT()")
    tail = control(qlog.port, "PROXY LOG TAIL 10")
    assert [(row["query"], row["db"]) for row in tail] == [
        ("SELECT 'unasked', FOUND_ROWS() /* error, warning */", "test"),  # the last schema known, logged anyway
        ("SELECT 'asked'", schema), ("USE test", schema), ("SELECT 'back', ROW_COUNT()", schema),
    ]  # fmt: skip
    conn.close()


def test_views_are_taken_only_from_the_named_accounts(mariadb, plain_user, tmp_path):
    user, password = plain_user
    proxy = start_proxy(tmp_path, PROXY_LOG_VIEW_ACCOUNTS="root", PROXY_LOG_FORMAT="slowlog")
    try:
        control(proxy.port, "PROXY LOG ON 30")
        for who in ({"user": user, "password": password}, {}):
            conn = quiet_connect(proxy.port, **who)
            with conn.cursor() as cur:
                cur.execute(f"SELECT 1 + 1 /*view='shop%3Aby-{'root' if not who else 'stranger'}'*/")
            conn.close()
        tail = control(proxy.port, "PROXY LOG TAIL 2")
        digest = control(proxy.port, "PROXY LOG DIGEST 5")
        control(proxy.port, "PROXY LOG OFF")
    finally:
        assert proxy.stop() == 0, proxy.stderr()
    assert [(row["user"], row["view"], row["query"]) for row in tail] == [
        (user, None, "SELECT 1 + 1 /*view='shop%3Aby-stranger'*/"),  # kept as sent: the claim is not attributed
        ("root", "shop:by-root", "SELECT 1 + 1"),
    ]  # fmt: skip
    assert sorted((row["user"], row["views"]) for row in digest) == sorted([(user, None), ("root", "shop:by-root")])
    text = proxy.log_file.read_text()
    assert "# View: shop:by-root" in text and "# View: shop:by-stranger" not in text


def test_no_account_s_views_with_an_empty_setting(mariadb, tmp_path):
    proxy = start_proxy(tmp_path, PROXY_LOG_VIEW_ACCOUNTS="")
    try:
        control(proxy.port, "PROXY LOG ON 30")
        control(proxy.port, "SELECT 3 /*view='shop%3Aindex'*/")
        assert control(proxy.port, "PROXY LOG TAIL 1")[0]["view"] is None
    finally:
        assert proxy.stop() == 0, proxy.stderr()


def test_the_log_file_stops_at_its_size_cap_and_goes_on_after_rotation(mariadb, tmp_path):
    cap = int(0.02 * 1048576)
    proxy = start_proxy(tmp_path, PROXY_LOG_MAX_FILE_MB="0.02")
    try:
        control(proxy.port, "PROXY LOG ON 30")
        conn = connect(proxy.port, autocommit=True)
        cur = conn.cursor()
        statement = "SELECT '" + "flood " * 40 + "' AS n"
        for _ in range(400):  # about 160 KB of log lines
            cur.execute(statement)
        status = control(proxy.port, "PROXY LOG STATUS")[0]
        assert 0 < proxy.log_file.stat().st_size <= cap
        assert "full: PROXY_LOG_MAX_FILE_MB = 0.02 reached" in status["log_file"], status
        unwritten = int(re.search(r"; (\d+) entries not written", status["log_file"])[1])
        lines = proxy.log_file.read_text().splitlines()
        assert all(json.loads(line) for line in lines) and len(lines) + unwritten >= 400  # whole lines only
        assert status["logged"] >= 400
        digest = control(proxy.port, "PROXY LOG DIGEST 5")  # the digest and the ring go on
        assert [row["count"] for row in digest if row["digest"] == "select ? as n"] == [400]
        rotated = proxy.log_file.with_suffix(".1")
        proxy.log_file.rename(rotated)

        def written_again() -> bool:
            cur.execute("SELECT 'after rotation'")
            return proxy.log_file.exists() and "after rotation" in proxy.log_file.read_text()

        wait_until(written_again, timeout=10)
        assert "full" not in control(proxy.port, "PROXY LOG STATUS")[0]["log_file"]
        conn.close()
    finally:
        assert proxy.stop() == 0, proxy.stderr()


def test_slow_and_sample_take_plain_decimals(qlog):
    import pymysql

    status = control(qlog.port, "PROXY LOG ON 30 SLOW .5 SAMPLE .25")[0]
    assert status["filters"] == "slow 0.5 ms, sample 0.25"
    for statement in ("PROXY LOG ON 30 SLOW 1e-05", "PROXY LOG ON 30 SAMPLE 1e-1", "PROXY LOG ON 30 SLOW ."):
        with pytest.raises(pymysql.err.ProgrammingError):
            control(qlog.port, statement)
