"""The proxy host for tests: as a subprocess (the way DBAs run it) or in a thread, and a client through it.

Shared by the proxy tests and the DBA panel's tests; the fixtures that start them stay in tests/proxy/conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from tests.support.mysql import ADDRESS, MARIADB, PORT
from tests.support.ports import free_port, wait_for_port
from tests.support.servers import stop_process

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "mysql_proxy_lua" / "query_log.lua"


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
        return stop_process(self.proc, timeout=10)


def start_proxy(tmp: Path, script: Path | None = SCRIPT, backends: list[str] | None = None,
                args: tuple[str, ...] = (), **env_extra: str) -> ProxyProcess:  # fmt: skip
    """Start the host on a free port with the given script, extra command-line ``args`` and environment."""
    port = free_port()
    log_file = tmp / f"query_log-{uuid.uuid4().hex[:6]}.jsonl"
    env = dict(os.environ, PROXY_LOG_FILE=str(log_file), PYTHONPATH=str(ROOT))
    env.update(env_extra)
    argv = [sys.executable, "-m", "instrumented.proxy", "--proxy-address", f"127.0.0.1:{port}", *args]
    for backend in backends or [ADDRESS]:
        argv += ["--proxy-backend-addresses", backend]
    if script is not None:
        argv += ["--proxy-lua-script", str(script)]
    stderr_path = tmp / f"proxy-{port}.log"
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=stderr_path.open("wb"))
    wait_for_port(port, proc=proc)
    return ProxyProcess(port, proc, log_file, stderr_path)


def connect(port: int, **kwargs):
    """A PyMySQL connection through the proxy (or to MariaDB with its port)."""
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

        self.server = ProxyServer(("127.0.0.1", 0), backends or [("127.0.0.1", PORT)],
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
