"""Control the proxy's query log from Django: PROXY LOG statements over database aliases through the proxies.

The aliases are ``INSTRUMENTED["QUERYLOG_DATABASES"]`` (default: ``[QUERYLOG_DATABASE]``, ``"querylog"``):
MySQL/MariaDB entries in ``DATABASES`` whose HOST/PORT point at an ``instrumented-proxy`` each and whose
USER is listed in the proxy's ``PROXY_LOG_ADMINS``. Every function works on all of them (or the one given
as ``using``) and merges what they answer: one status, one tail, one digest. Each statement goes on a
connection of its own that sends nothing but the statement (no ``SET NAMES``, no ``SET autocommit``, no
``init_command``), so the log shows no trace of the panel or the command. Every function returns plain
dicts/lists; every failure is a ``QueryLogError`` with a message fit for a human.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.db import connections
from django.utils.connection import ConnectionDoesNotExist

from .. import plans
from ..conf import get_config
from ..proxy.merge import merge_digests, merge_status, merge_tail, top_digests

#: Orders of ``digest()`` (``PROXY LOG DIGEST ... ORDER BY``).
ORDERS = ("sum", "count", "max", "rows", "errors")


class QueryLogError(RuntimeError):
    """The query log could not be reached or refused the statement (reason in the message)."""


def querylog_alias() -> str:
    """The first configured database alias that goes through a proxy."""
    return querylog_aliases()[0]


def querylog_aliases(using: str | None = None) -> tuple[str, ...]:
    """``(using,)``, or every configured alias through a proxy."""
    return (using,) if using else get_config().querylog_databases


def _settings(alias: str) -> dict[str, Any]:
    """The alias's DATABASES entry, checked to be MySQL/MariaDB."""
    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:
        raise QueryLogError(
            f"No database alias {alias!r}: add one to DATABASES that connects through instrumented-proxy "
            f"(or set INSTRUMENTED['QUERYLOG_DATABASES'])."
        ) from None
    if connection.vendor != "mysql":
        raise QueryLogError(f"Database alias {alias!r} is {connection.vendor}, not MySQL/MariaDB through the proxy.")
    return connection.settings_dict


def _params(settings: dict[str, Any]) -> dict[str, Any]:
    """Connection parameters from a DATABASES entry (only what reaches the proxy; OPTIONS' SQL is not run)."""
    options = settings.get("OPTIONS") or {}
    host = str(settings.get("HOST") or options.get("host") or "localhost")
    params: dict[str, Any] = {
        "user": str(settings.get("USER") or options.get("user") or ""),
        "password": str(settings.get("PASSWORD") or options.get("password") or options.get("passwd") or ""),
        "connect_timeout": int(options.get("connect_timeout") or 5),
        "charset": "utf8mb4",  # in the handshake: no SET NAMES
    }
    if settings.get("NAME"):
        params["database"] = str(settings["NAME"])
    if host.startswith("/"):
        params["unix_socket"] = host
    else:
        params["host"] = host
        params["port"] = int(settings.get("PORT") or options.get("port") or 3306)
    return params


def _query(params: dict[str, Any], statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Connect, run one statement, close: with mysqlclient's C layer (which sends nothing of its own), or
    PyMySQL with its connect-time SET NAMES left out."""
    try:
        from MySQLdb import _mysql  # mysqlclient; PyMySQL's install_as_MySQLdb() has no _mysql
        from MySQLdb.constants import FIELD_TYPE
    except ImportError:
        _mysql = None
    if _mysql is not None:
        conn = _mysql.connect(**params, conv={FIELD_TYPE.LONGLONG: int, FIELD_TYPE.LONG: int})
        try:
            conn.query(statement.encode())
            result = conn.store_result()
            if result is None:
                return [], []
            columns = [d[0].decode() if isinstance(d[0], bytes) else d[0] for d in result.describe()]
            return columns, list(result.fetch_row(maxrows=0))
        finally:
            conn.close()
    import pymysql

    conn = pymysql.connections.Connection(**params, autocommit=None, defer_connect=True)
    conn.set_character_set = lambda *args, **kwargs: None  # only connect() calls it
    conn.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
            return [d[0] for d in cursor.description or ()], list(cursor.fetchall())
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _run_one(alias: str, statement: str) -> list[dict[str, Any]]:
    """One control statement on one alias; rows as dicts with text values."""
    params = _params(_settings(alias))
    try:
        columns, rows = _query(params, statement)
    except Exception as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code == 1064 and "error in your SQL syntax" in message:
            message = "the server does not understand PROXY LOG: is this alias really going through instrumented-proxy?"
        words = statement.split()
        raise QueryLogError(f"{words[2] if len(words) > 2 else statement} ({alias}): {message}") from exc
    return [{name: _plain(value) for name, value in zip(columns, row, strict=False)} for row in rows]


def _run(statement: str, using: str | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    """The statement on every alias (all are tried); ``[(alias, rows)]``, or one error naming the failures."""
    answers, errors = [], []
    for alias in querylog_aliases(using):
        try:
            answers.append((alias, _run_one(alias, statement)))
        except QueryLogError as exc:
            errors.append(str(exc))
    if errors:
        done = f" (done on {', '.join(a for a, _ in answers)})" if answers else ""
        raise QueryLogError("; ".join(errors) + done)
    return answers


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


def _status(statement: str, using: str | None) -> dict[str, Any]:
    """The status rows of every proxy merged into one, with each proxy's own under ``"proxies"``."""
    proxies = []
    for alias, rows in _run(statement, using):
        if not rows:
            raise QueryLogError(f"{statement} ({alias}): the proxy answered with no rows (is query_log.lua running?)")
        proxies.append({**rows[0], "alias": alias})
    return {**merge_status(proxies), "proxies": proxies}


def status(using: str | None = None) -> dict[str, Any]:
    """``{"logging": "on"|"off"|"partly on", "seconds_left", "logged", "digests", "evicted", "total_us",
    "span_seconds", "load", "filters", "log_file", "proxies": [each proxy's status with its "alias"]}`` (loads are
    added up, the span is the longest)."""
    return _status("PROXY LOG STATUS", using)


def _word(name: str, value: str) -> str:
    """A user or schema name for a filter: one word, no quotes or control characters (the proxy splits on blanks)."""
    if not value or len(value) > 80 or any(c.isspace() or c in "'`\";" or not c.isprintable() for c in value):
        raise QueryLogError(f"{name} must be one word (a user or database name), not {value[:40]!r}.")
    return value


def plain_decimal(value: float, places: int) -> str:
    """``value`` as the proxy reads a number: a plain decimal, ``places`` decimals at most, never an exponent
    (``f"{1e-05:g}"`` is ``1e-05``, which the proxy refuses; ``:g`` also cut 123456789 to ``1.23457e+08``)."""
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


#: Decimals sent: the proxy keeps SLOW in whole µs; a SAMPLE finer than a billionth is no sample.
SLOW_PLACES = 3
SAMPLE_PLACES = 9


def switch_on_statement(seconds: int | None = None, slow_ms: float | None = None, user: str | None = None,
                        db: str | None = None, errors: bool = False, sample: float | None = None) -> str:  # fmt: skip
    """``PROXY LOG ON [seconds] [SLOW ms] [USER name] [DB name] [ERRORS] [SAMPLE fraction]``, validated."""
    statement = "PROXY LOG ON" + _count("seconds", seconds)
    if slow_ms is not None:
        if isinstance(slow_ms, bool) or not isinstance(slow_ms, int | float) or not 0 <= slow_ms < 1e9:
            raise QueryLogError(f"slow must be milliseconds >= 0, not {slow_ms!r}.")
        statement += f" SLOW {plain_decimal(slow_ms, SLOW_PLACES)}"
    if user:
        statement += " USER " + _word("user", user)
    if db:
        statement += " DB " + _word("db", db)
    if errors:
        statement += " ERRORS"
    if sample is not None:
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 < sample <= 1:
            raise QueryLogError(f"sample must be a fraction > 0 and <= 1, not {sample!r}.")
        fraction = plain_decimal(sample, SAMPLE_PLACES)
        if fraction == "0":
            raise QueryLogError(f"sample must be at least 0.{'0' * (SAMPLE_PLACES - 1)}1, not {sample!r}.")
        statement += f" SAMPLE {fraction}"
    return statement


def log_on(seconds: int | None = None, using: str | None = None, *, slow_ms: float | None = None,
           user: str | None = None, db: str | None = None, errors: bool = False,
           sample: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Turn logging on for ``seconds`` (proxy default 300, capped by its PROXY_LOG_MAX_SECONDS) with the
    filters (SLOW/USER/DB/ERRORS/SAMPLE) on every proxy; the merged new status."""
    return _status(switch_on_statement(seconds, slow_ms, user, db, errors, sample), using)


def log_off(using: str | None = None) -> dict[str, Any]:
    """Turn logging off everywhere; the merged new status."""
    return _status("PROXY LOG OFF", using)


def reset(using: str | None = None) -> dict[str, Any]:
    """Clear the recent-entries rings and the digests; the merged new status."""
    return _status("PROXY LOG RESET", using)


def tail(n: int | None = None, using: str | None = None, view: str | None = None,
         host: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The ``n`` most recent logged statements of all proxies, oldest first, each with its proxy's ``alias``
    (ts, thread_id, user, db, view, timings, rows, affected_rows, warnings, status, error_code, client, digest_id,
    query); only ``view``'s or client ``host``'s when given."""
    statement = "PROXY LOG TAIL" + _count("n", n)
    rows = merge_tail([{**row, "alias": alias} for row in answer] for alias, answer in _run(statement, using))
    if view:
        rows = [row for row in rows if row.get("view") == view]
    if host:
        rows = [row for row in rows if row.get("client") == host]
    return rows[-n:] if n else rows[-20:]


def digest(n: int | None = None, using: str | None = None, order: str = "sum", view: str | None = None,
           host: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Normalised statements of all proxies merged, the ``n`` top ones by ``order`` (sum, count, max, rows,
    errors): digest, db, user, count, first/last seen, sum/min/max/avg/p50/p95/p99 µs, load, share_pct,
    histogram, hosts, rows sent/affected, errors, warnings, views, and the ``alias`` and ``id`` Explain asks for;
    only those ``view`` sent, or client ``host``'s, when given."""
    if order not in ORDERS:
        raise QueryLogError(f"order must be one of {', '.join(ORDERS)}, not {order!r}.")
    limit = int(_count("n", n) or 20)
    # Each proxy's whole digest when filtering or merging, so that the top n of the union is right.
    fetch = limit if view is None and len(querylog_aliases(using)) == 1 else 100_000
    statement = f"PROXY LOG DIGEST {fetch} ORDER BY {order}" + (f" HOST {_word('host', host)}" if host else "")
    answers = [[{**row, "alias": alias} for row in rows] for alias, rows in _run(statement, using)]
    rows = merge_digests(answers)
    if view:
        rows = [row for row in rows if view in (row.get("views") or "").split(", ")]
    return top_digests(rows, order, limit)


def explain(rank: int | None = None, *, digest_id: int | None = None, using: str | None = None) -> dict[str, Any]:
    """``PROXY LOG EXPLAIN [rank]`` (default 1, the heaviest) or ``PROXY LOG EXPLAIN ID digest_id`` on one proxy
    (``using``, default the first alias): the proxy runs EXPLAIN FORMAT=JSON of the digest row's slowest statement
    on this connection, with this alias's privileges. ``{"alias", "rank", "id", "db", "digest", "statement",
    "sample_us", "note", "plan_json", "plan"}``; ``plan`` is an :class:`instrumented.plans.Plan` (None with
    ``plan_error`` when the proxy's JSON cannot be read)."""
    if digest_id is not None:
        statement = "PROXY LOG EXPLAIN ID" + _count("id", digest_id)
    else:
        statement = "PROXY LOG EXPLAIN" + _count("rank", rank)
    alias = using or querylog_alias()
    if alias not in querylog_aliases():
        raise QueryLogError(f"{alias!r} is not one of the query log's database aliases.")
    rows = _run_one(alias, statement)
    if len(rows) != 1:
        raise QueryLogError(f"{statement} ({alias}): the proxy answered {len(rows)} rows, not one plan")
    answer: dict[str, Any] = {**rows[0], "alias": alias, "plan_json": rows[0].get("plan"), "plan": None}
    try:
        answer["plan"] = plans.from_mysql(str(answer["plan_json"] or ""))
    except plans.PlanError as exc:
        answer["plan_error"] = str(exc)
    return answer
