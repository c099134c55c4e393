"""Fixtures for the proxy tests: real MariaDB on 127.0.0.1:3306, the host as a subprocess or in a thread.

These tests depend on nothing in tests/settings.py: the suite-wide autouse fixture is replaced by a
no-op here, and Django-side tests run a Django process of their own (tests/proxy/django_project.py).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mysql import ADDRESS, MARIADB
from tests.support.ports import free_port, wait_for_port
from tests.support.proxy import ProxyProcess, ThreadedProxy, control, start_proxy


@pytest.fixture(autouse=True)
def _isolated_stats() -> None:
    """Replaces the suite's autouse fixture: the proxy tests need neither memcached nor Django settings."""


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


@pytest.fixture
def plain_user(mariadb: dict) -> Iterator[tuple[str, str]]:
    """A MariaDB account that is not a PROXY LOG admin (unique name, dropped afterwards)."""
    import pymysql

    name, password = f"instr_plain_{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex[:8]
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT SELECT ON test.* TO '{name}'@'%'")
    yield name, password
    with conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
    conn.close()


@pytest.fixture
def anonymous_account(mariadb: dict) -> Iterator[dict]:
    """MariaDB's anonymous-account trap, confined to one loopback source address nobody else uses.

    ``''@'127.0.0.N'`` (like the ``''@'localhost'`` of ``mariadb-install-db``) takes any claimed user name
    that has no account of its own there; a socat relay connects to MariaDB from 127.0.0.N. Also a real
    admin account ``instr_dba_…@127.0.0.N`` with a password.
    """
    import pymysql

    if not shutil.which("socat"):
        pytest.skip("socat is needed to reach MariaDB from a dedicated loopback address")
    source = f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"
    tag = uuid.uuid4().hex[:8]
    dba, password = f"instr_dba_{tag}", f"pw-{tag}"
    conn = pymysql.connect(**mariadb, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER ''@'{source}'")
        cur.execute(f"CREATE USER '{dba}'@'{source}' IDENTIFIED BY '{password}'")
    port = free_port()
    relay = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                              f"TCP:{ADDRESS},bind={source}"])  # fmt: skip
    try:
        wait_for_port(port, proc=relay)
        yield {"source": source, "relay": f"127.0.0.1:{port}", "ghost": f"instr_ghost_{tag}", "dba": dba,
               "password": password}  # fmt: skip
    finally:
        relay.terminate()
        relay.wait(10)
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS ''@'{source}'")
            cur.execute(f"DROP USER IF EXISTS '{dba}'@'{source}'")
        conn.close()
