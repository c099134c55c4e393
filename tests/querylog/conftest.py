"""The DBA panel tests' fixtures (a proxy, the "querylog" alias, logged-in clients), for every querylog test."""

from tests.querylog.test_dba_panel import admin_client, login, mariadb_up, proxy, qlog, url  # noqa: F401
