"""Real servers for the tests: a memcached of the run's own, and the demo site under gunicorn or uvicorn."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example"


class Memcached:
    """A memcached process of the test run's own, which tests may stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.binary = shutil.which("memcached") or "/usr/bin/memcached"

    def start(self) -> None:
        if not Path(self.binary).exists():
            pytest.exit("memcached is not installed: run the README's test command (it installs it).", returncode=2)
        args = [self.binary, "-p", str(self.port), "-l", "127.0.0.1", "-U", "0", "-m", "64", "-t", "2"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.proc.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":  # the signal is delivered asynchronously
            time.sleep(0.01)

    def thaw(self) -> None:
        """SIGCONT after freeze(): the server answers again, with everything it held."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def flush_all(self) -> None:
        """Empty the server (``flush_all``), as an operator or a memory-pressure restart would."""
        from pymemcache.client.base import Client

        client = Client(("127.0.0.1", self.port), connect_timeout=1, timeout=1)
        try:
            client.flush_all(noreply=False)
        finally:
            client.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def server_env(data_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a demo-site subprocess: test settings, its data directory, its key prefix."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DEMO_DATA_DIR": str(data_dir),
            "INSTRUMENTED_KEY_PREFIX": prefix,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLE), env.get("PYTHONPATH", "")]),
            **extra,
        }
    )
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def start_site(env: dict[str, str], kind: str = "wsgi", workers: int = 3, quiet: bool = False) -> SiteServer:
    """The demo site under gunicorn (``kind="wsgi"``) or uvicorn (``"asgi"``), listening; ``quiet`` drops stderr."""
    port = free_port()
    if kind == "wsgi":
        cmd = [sys.executable, "-m", "gunicorn", "demo.wsgi:application", "--workers", str(workers)]
        cmd += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "5"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "demo.asgi:application", "--workers", str(workers)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=EXAMPLE, env=env, stderr=subprocess.DEVNULL if quiet else None)
    server = SiteServer(proc, port)
    wait_for_port(port, timeout=30, proc=proc)
    return server


class SiteServer:
    """A real multi-process HTTP server (gunicorn, or uvicorn for ASGI) running the demo site."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self) -> None:
        stop_process(self.proc)
