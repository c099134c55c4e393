"""Control the proxy's query log from Django: PROXY LOG statements over a database alias through the proxy.

The alias is ``INSTRUMENTED["QUERYLOG_DATABASE"]`` (default ``"querylog"``): a MySQL/MariaDB entry in
``DATABASES`` whose HOST/PORT point at ``instrumented-proxy`` and whose USER is listed in the proxy's
``PROXY_LOG_ADMINS``. Every function returns plain dicts/lists, so the dashboard and the management
command share them; every failure is a ``QueryLogError`` with a message fit for a human.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError, connections
from django.utils.connection import ConnectionDoesNotExist

from ..conf import get_config


class QueryLogError(RuntimeError):
    """The query log could not be reached or refused the statement (reason in the message)."""


def querylog_alias() -> str:
    """The configured database alias that goes through the proxy."""
    return get_config().querylog_database


def _run(statement: str, using: str | None = None) -> list[dict[str, Any]]:
    """Send one control statement on its own short-lived connection; rows as dicts."""
    alias = using or querylog_alias()
    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:
        raise QueryLogError(
            f"No database alias {alias!r}: add one to DATABASES that connects through instrumented-proxy "
            f"(or set INSTRUMENTED['QUERYLOG_DATABASE'])."
        ) from None
    if connection.vendor != "mysql":
        raise QueryLogError(f"Database alias {alias!r} is {connection.vendor}, not MySQL/MariaDB through the proxy.")
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            columns = [col[0] for col in cursor.description or ()]
            rows = cursor.fetchall()
    except DatabaseError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code == 1064 and "error in your SQL syntax" in message:
            message = "the server does not understand PROXY LOG: is this alias really going through instrumented-proxy?"
        raise QueryLogError(f"{statement.split()[2] if len(statement.split()) > 2 else statement}: {message}") from exc
    finally:
        # Control statements are rare: don't keep a connection to the proxy open in every process.
        if not connection.in_atomic_block:
            connection.close()
    return [{name: _plain(value) for name, value in zip(columns, row, strict=False)} for row in rows]


def _plain(value: Any) -> Any:
    """Bytes from the driver to text; numbers as they are."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value


def _count(name: str, n: int | None) -> str:
    """Validate an optional positive count argument."""
    if n is None:
        return ""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise QueryLogError(f"{name} must be a positive integer, not {n!r}.")
    return f" {n}"


def _first(statement: str, using: str | None) -> dict[str, Any]:
    """The one row a status-like statement answers; a clear error when the proxy sent none."""
    rows = _run(statement, using)
    if not rows:
        raise QueryLogError(f"{statement}: the proxy answered with no rows (is query_log.lua the proxy's script?)")
    return rows[0]


def status(using: str | None = None) -> dict[str, Any]:
    """``{"logging": "on"|"off", "seconds_left": int, "logged": int, "log_file": str}``."""
    return _first("PROXY LOG STATUS", using)


def log_on(seconds: int | None = None, using: str | None = None) -> dict[str, Any]:
    """Turn logging on for ``seconds`` (proxy default 300, capped by its PROXY_LOG_MAX_SECONDS); new status."""
    return _first("PROXY LOG ON" + _count("seconds", seconds), using)


def log_off(using: str | None = None) -> dict[str, Any]:
    """Turn logging off; new status."""
    return _first("PROXY LOG OFF", using)


def reset(using: str | None = None) -> dict[str, Any]:
    """Clear the recent-entries ring and the digest; new status."""
    return _first("PROXY LOG RESET", using)


def tail(n: int | None = None, using: str | None = None) -> list[dict[str, Any]]:
    """The most recent logged statements, oldest first (ts, thread_id, user, db, timings, rows, status, query)."""
    return _run("PROXY LOG TAIL" + _count("n", n), using)


def digest(n: int | None = None, using: str | None = None) -> list[dict[str, Any]]:
    """Normalised statements, heaviest total time first (digest, count, total_us, max_us, rows)."""
    return _run("PROXY LOG DIGEST" + _count("n", n), using)
