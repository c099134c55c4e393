"""Fixtures shared by the test suite: a real memcached, real HTTP servers of the demo site."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: Under CI=true, a skipped test fails: CI runs every test (tests/support/ci.py).
pytest_plugins = ["tests.support.ci"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


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
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def memcached() -> Iterator[Memcached]:
    """The memcached that tests.settings points at (INSTRUMENTED_TEST_MEMCACHED_PORT)."""
    from django.conf import settings

    from instrumented.flusher import shutdown

    server = Memcached(int(settings.MEMCACHED_PORT))
    server.start()
    yield server
    shutdown()  # the last flush, while memcached is still there to take it
    server.stop()


@pytest.fixture(autouse=True)
def _isolated_stats(request: pytest.FixtureRequest, settings) -> Iterator[str]:
    """Each test writes under its own key prefix and starts with an empty in-process aggregate."""
    from instrumented.aggregate import reset_aggregator

    if "memcached" not in request.fixturenames and "no_memcached" not in request.keywords:
        request.getfixturevalue("memcached")
    prefix = "t" + uuid.uuid4().hex[:10]
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "KEY_PREFIX": prefix}
    reset_aggregator()
    yield prefix
    reset_aggregator()


def flush_now() -> None:
    """Write this process's pending buckets to memcached without waiting for the flusher."""
    from instrumented.flusher import current_flusher

    flusher = current_flusher()
    if flusher is not None:
        flusher.flush()


@pytest.fixture
def flush() -> Callable[[], None]:
    return flush_now


@pytest.fixture(scope="session")
def site_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated copy of the demo site's databases, for the HTTP servers the tests start."""
    data_dir = tmp_path_factory.mktemp("site-data")
    env = server_env(data_dir, "migrate")
    for database in ("default", "analytics"):
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--database", database, "-v0"],
            cwd=EXAMPLE,
            env=env,
            check=True,
        )
    return data_dir


def server_env(data_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DEMO_DATA_DIR=str(data_dir),
        INSTRUMENTED_KEY_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLE), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def site_server(site_data_dir: Path, _isolated_stats: str) -> Iterator[Callable[..., SiteServer]]:
    """Factory: start the demo site under gunicorn (``kind="wsgi"``) or uvicorn (``kind="asgi"``)."""
    servers: list[SiteServer] = []

    def start(workers: int = 3, kind: str = "wsgi", **env_extra: str) -> SiteServer:
        port = free_port()
        env = server_env(site_data_dir, _isolated_stats, **env_extra)
        if kind == "wsgi":
            cmd = [sys.executable, "-m", "gunicorn", "demo.wsgi:application", "--workers", str(workers)]
            cmd += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "5"]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "demo.asgi:application", "--workers", str(workers)]
            cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, cwd=EXAMPLE, env=env)
        server = SiteServer(proc, port)
        servers.append(server)
        wait_for_port(port, timeout=30, proc=proc)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.1) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


def _logged_in(user) -> object:
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(django_user_model):
    """A test client logged in as active staff (may see the stats, not tracebacks)."""
    return _logged_in(django_user_model.objects.create_user("staff", password="pw", is_staff=True))


@pytest.fixture
def plain_client(django_user_model):
    """A test client logged in as an ordinary user."""
    return _logged_in(django_user_model.objects.create_user("customer", password="pw"))


@pytest.fixture
def superuser_client(django_user_model):
    """A test client logged in as an active superuser."""
    return _logged_in(django_user_model.objects.create_superuser("root", password="pw"))
