"""Fixtures shared by the test suite: a real memcached, real HTTP servers of the demo site, logged-in clients.

The helpers behind them live in :mod:`tests.support`; tests import from there, never from this file.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import EXAMPLE, Memcached, SiteServer, server_env, start_site

#: Under CI=true, a skipped test fails: CI runs every test (tests/support/ci.py).
pytest_plugins = ["tests.support.ci"]


@pytest.fixture(scope="session")
def memcached() -> Iterator[Memcached]:
    """The memcached that tests.settings points at (INSTRUMENTED_TEST_MEMCACHED_PORT)."""
    from django.conf import settings

    from instrumented.stats.flusher import shutdown

    server = Memcached(int(settings.MEMCACHED_PORT))
    server.start()
    yield server
    shutdown()  # the last flush, while memcached is still there to take it
    server.stop()


@pytest.fixture(autouse=True)
def _isolated_stats(request: pytest.FixtureRequest, settings) -> Iterator[str]:
    """Each test writes under its own key prefix and starts with an empty in-process aggregate."""
    from instrumented.stats.aggregate import reset_aggregator

    if "memcached" not in request.fixturenames and "no_memcached" not in request.keywords:
        request.getfixturevalue("memcached")
    prefix = "t" + uuid.uuid4().hex[:10]
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "KEY_PREFIX": prefix}
    reset_aggregator()
    yield prefix
    reset_aggregator()


def flush_now() -> None:
    """Write this process's pending buckets to memcached without waiting for the flusher."""
    from instrumented.stats.flusher import current_flusher

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


@pytest.fixture
def site_server(site_data_dir: Path, _isolated_stats: str) -> Iterator[Callable[..., SiteServer]]:
    """Factory: start the demo site under gunicorn (``kind="wsgi"``) or uvicorn (``kind="asgi"``)."""
    servers: list[SiteServer] = []

    def start(workers: int = 3, kind: str = "wsgi", **env_extra: str) -> SiteServer:
        server = start_site(server_env(site_data_dir, _isolated_stats, **env_extra), kind, workers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


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


@pytest.fixture
def key_prefix(_isolated_stats: str) -> str:
    """This test's memcached key prefix (for subprocesses that must write where the test reads)."""
    return _isolated_stats
