"""query_log.lua and the host against the probe of issue 17: a link planted after rotation.
Real MariaDB, the real host as DBAs run it."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from tests.support.ports import wait_until
from tests.support.proxy import connect, control, start_proxy


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
