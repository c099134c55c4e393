"""Per-request state in a ContextVar, and the permanent SQL ``execute_wrapper`` that fills it.

The wrapper is installed once on every connection (all aliases, every thread) and costs one
ContextVar lookup when no request is being recorded. It never reads ``connection.queries``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from ..naming import class_name
from .sql import template_of

#: ``connection.vendor`` per alias, noted when the wrapper is installed: how the flusher reads literals.
vendors: dict[str, str] = {}
#: Distinct (alias, SQL) pairs kept per request; the rest are counted under OTHER_SQL.
MAX_DISTINCT_SQL = 200
OTHER_SQL = "(other SQL statements)"


class Probe:
    """What one request did: SQL per alias and per template, and any exception it raised."""

    __slots__ = ("active", "error_reference", "exception_class", "queries", "start_ns")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.active = True
        # (alias, SQL as run) -> [count, nanoseconds]
        self.queries: dict[tuple[str, str], list[int]] = {}
        self.exception_class: str | None = None
        self.error_reference: str | None = None

    def summarise(self, max_sql: int = 16000) -> tuple[dict[str, list[int]], dict[tuple[str, str], list[int]]]:
        """Per alias ``{alias: [count, ns]}`` and per (vendor, SQL template) ``{(vendor, sql): [count, ns]}``.

        Once, when the request ends. Templates are raw (literals are stripped by the flusher), cut at
        ``max_sql`` characters: a literal cut off there still strips, as it runs to the end.
        """
        aliases: dict[str, list[int]] = {}
        templates: dict[tuple[str, str], list[int]] = {}
        vendor_of = vendors.get
        for (alias, sql), (count, ns) in self.queries.items():
            entry = aliases.get(alias)
            if entry is None:
                aliases[alias] = [count, ns]
            else:
                entry[0] += count
                entry[1] += ns
            template = (vendor_of(alias, ""), template_of(sql if type(sql) is str else str(sql))[:max_sql])
            entry = templates.get(template)
            if entry is None:
                templates[template] = [count, ns]
            else:
                entry[0] += count
                entry[1] += ns
        return aliases, templates


current_probe: ContextVar[Probe | None] = ContextVar("instrumented_probe", default=None)


def sql_wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """Time and count one query for the current request's probe; a no-op outside a recorded request."""
    probe = current_probe.get()
    if probe is None or not probe.active:
        return execute(sql, params, many, context)
    start = perf_counter_ns()
    try:
        return execute(sql, params, many, context)
    finally:
        elapsed = perf_counter_ns() - start
        # One dict lookup per query, keyed by (alias, SQL): per-alias totals are summed when the request ends.
        key = (context["connection"].alias, sql)
        entry = probe.queries.get(key)
        if entry is None and len(probe.queries) >= MAX_DISTINCT_SQL:
            key = (key[0], OTHER_SQL)
            entry = probe.queries.get(key)
        if entry is None:
            probe.queries[key] = [1, elapsed]
        else:
            entry[0] += 1
            entry[1] += elapsed


def install_on(connection: BaseDatabaseWrapper) -> None:
    """Put the wrapper first on one connection, once, and note its alias's vendor."""
    vendors[connection.alias] = connection.vendor
    if sql_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, sql_wrapper)


def install_on_existing() -> None:
    """Install on the connections this thread has already created."""
    for connection in connections.all(initialized_only=True):
        install_on(connection)


def on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: every new connection, every thread, every alias."""
    install_on(connection)


def on_request_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: note the exception class on the request's probe."""
    probe = current_probe.get()
    if probe is None:
        return
    exc = sys.exc_info()[1]
    if exc is not None:
        probe.exception_class = class_name(type(exc))
