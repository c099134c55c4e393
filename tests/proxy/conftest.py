"""Fixtures for the proxy tests: real MariaDB on 127.0.0.1:3306, the host as a subprocess or in a thread.

These tests depend on nothing in tests/settings.py: the suite-wide autouse fixture is replaced by a
no-op here, and Django-side tests run a Django process of their own (tests/proxy/django_project.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "mysql_proxy_lua" / "query_log.lua"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}


@pytest.fixture(autouse=True)
def _isolated_stats() -> Iterator[None]:
    """Replaces the suite's autouse fixture: the proxy tests need neither memcached nor Django settings."""
    yield


def free_port() -> int:
    """A free local TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts on the port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"proxy exited early with code {proc.returncode}: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.03)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def mariadb() -> dict:
    """Connection parameters of the real MariaDB; skips the proxy tests when it is not reachable."""
    pymysql = pytest.importorskip("pymysql")
    try:
        conn = pymysql.connect(**MARIADB, connect_timeout=2)
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB is not reachable on 127.0.0.1:3306 as root: {exc}")
    conn.close()
    return dict(MARIADB)


class ProxyProcess:
    """instrumented-proxy running as a subprocess (the way DBAs run it)."""

    def __init__(self, port: int, proc: subprocess.Popen, log_file: Path, stderr_path: Path) -> None:
        self.port = port
        self.proc = proc
        self.log_file = log_file
        self.stderr_path = stderr_path

    def stderr(self) -> str:
        """What the host logged so far."""
        return self.stderr_path.read_text(errors="replace")

    def rss_kb(self, key: str = "VmHWM") -> int:
        """Peak (VmHWM) or current (VmRSS) resident memory of the host process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError("no memory info")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_proxy(tmp: Path, script: Path | None = SCRIPT, backends: list[str] | None = None,
                **env_extra: str) -> ProxyProcess:  # fmt: skip
    """Start the host on a free port with the given script and environment."""
    port = free_port()
    log_file = tmp / f"query_log-{uuid.uuid4().hex[:6]}.jsonl"
    env = dict(os.environ, PROXY_LOG_FILE=str(log_file), PYTHONPATH=str(ROOT))
    env.update(env_extra)
    args = [sys.executable, "-m", "instrumented.proxy", "--proxy-address", f"127.0.0.1:{port}"]
    for backend in backends or ["127.0.0.1:3306"]:
        args += ["--proxy-backend-addresses", backend]
    if script is not None:
        args += ["--proxy-lua-script", str(script)]
    stderr_path = tmp / f"proxy-{port}.log"
    proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=stderr_path.open("wb"))
    wait_for_port(port, proc=proc)
    return ProxyProcess(port, proc, log_file, stderr_path)


@pytest.fixture(scope="session")
def proxy_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory for proxy subprocesses."""
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="session")
def query_log_proxy(mariadb: dict, proxy_tmp: Path) -> Iterator[ProxyProcess]:
    """The host running mysql_proxy_lua/query_log.lua, shared by the tests of the session."""
    proxy = start_proxy(proxy_tmp, PROXY_LOG_ADMINS="root, instr_admin", PROXY_LOG_MAX_SECONDS="30")
    yield proxy
    assert proxy.stop() == 0, proxy.stderr()
    assert "Traceback" not in proxy.stderr(), proxy.stderr()  # no exception escaped a protocol callback


@pytest.fixture
def qlog(query_log_proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    """The shared query-log proxy with logging off and ring/digest empty before and after the test."""
    control(query_log_proxy.port, "PROXY LOG OFF")
    control(query_log_proxy.port, "PROXY LOG RESET")
    yield query_log_proxy
    control(query_log_proxy.port, "PROXY LOG OFF")
    control(query_log_proxy.port, "PROXY LOG RESET")


def connect(port: int, **kwargs):
    """A PyMySQL connection through the proxy (or to MariaDB with port 3306)."""
    import pymysql

    params = dict(MARIADB, port=port, connect_timeout=5, read_timeout=30)
    params.update(kwargs)
    return pymysql.connect(**params)


def quiet_connect(port: int, **kwargs):
    """A PyMySQL connection that sends no statement of its own (no SET NAMES, no SET AUTOCOMMIT).

    The charset goes in the handshake; PyMySQL's "SET NAMES" on connect would be logged by the proxy.
    """
    import pymysql

    params = dict(MARIADB, port=port, connect_timeout=5, read_timeout=30, autocommit=None, defer_connect=True)
    params.update(kwargs)
    conn = pymysql.connections.Connection(**params)
    conn.set_character_set = lambda *args, **kw: None  # only called by connect()
    conn.connect()
    return conn


def control(port: int, statement: str, **kwargs) -> list[dict]:
    """Run a statement through the proxy on a quiet connection and return its rows as dicts."""
    import pymysql

    conn = quiet_connect(port, cursorclass=pymysql.cursors.DictCursor, **kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())
    finally:
        conn.close()


class ThreadedProxy:
    """The host in a thread of this process: for tests of the scripting API with small custom scripts."""

    def __init__(self, script: Path | None, backends: list[tuple[str, int]] | None = None,
                 io_paths: list[str] | None = None) -> None:  # fmt: skip
        from instrumented.proxy.server import ProxyServer

        self.server = ProxyServer(("127.0.0.1", 0), backends or [("127.0.0.1", 3306)],
                                  str(script) if script else None, io_paths=io_paths or [])  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.port

    def stop(self) -> None:
        """Close the server and its connections, stop the loop."""
        asyncio.run_coroutine_threadsafe(self.server.close(grace=0.5), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def lua_proxy(mariadb: dict, tmp_path: Path) -> Iterator:
    """Factory: ``lua_proxy(source)`` writes a script and runs a threaded host with it."""
    started: list[ThreadedProxy] = []

    def start(source: str | None, **kwargs) -> ThreadedProxy:
        script = None
        if source is not None:
            script = tmp_path / f"script-{len(started)}.lua"
            script.write_text(source)
        proxy = ThreadedProxy(script, **kwargs)
        proxy.script = script
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
