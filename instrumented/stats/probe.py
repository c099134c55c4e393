"""Per-request state in a ContextVar, and the permanent SQL ``execute_wrapper`` that fills it.

The wrapper is installed once on every connection (all aliases, every thread) and costs one
ContextVar lookup when no request is being recorded. It never reads ``connection.queries``. Per query
it also hashes the SQL with its parameters (exact duplicates; the hashes stay in memory, on the probe)
and, when a statement reaches the N+1 threshold or is slow, asks callsite.py where it came from.
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
from .callsite import locate
from .sql import template_of

#: ``connection.vendor`` per alias, noted when the wrapper is installed: how the flusher reads literals.
vendors: dict[str, str] = {}
#: Distinct (alias, SQL) pairs kept per request; the rest are counted under OTHER_SQL.
MAX_DISTINCT_SQL = 200
OTHER_SQL = "(other SQL statements)"
#: (alias, SQL) -> (vendor, template cut at max_sql), per max_sql: each statement's template is made once per
#: process, not once per request. Bounded: cleared when full; statements longer than MAX_MEMO_SQL are not kept.
_memo: dict[int, dict[tuple[str, Any], tuple[str, str]]] = {}
MAX_MEMO = 4096
MAX_MEMO_SQL = 4096


#: What a request's probe counts an outgoing call under: cache alias or HTTP origin -> [calls, ns, a, b]
#: (cache: hits, misses; HTTP: errors, slowest ns).
Calls = dict[str, list[int]]


class Probe:
    """What one request did: SQL per alias and per template, cache and HTTP calls, any exception it raised."""

    __slots__ = (
        "active",
        "cache",
        "cache_depth",
        "error_reference",
        "exception_class",
        "http",
        "queries",
        "request",
        "seen",
        "sites",
        "slow_ns",
        "start_ns",
        "threshold",
        "view",
    )

    def __init__(self, start_ns: int, threshold: int = 5, slow_ms: float = 100.0, request: Any = None) -> None:
        self.start_ns = start_ns
        self.active = True
        # (alias, SQL as run) -> [count, ns, exact duplicates, slow runs, slowest ns]
        self.queries: dict[tuple[str, str], list[int]] = {}
        self.exception_class: str | None = None
        self.error_reference: str | None = None
        self.threshold = threshold
        self.slow_ns = int(slow_ms * 1_000_000)
        self.request = request
        #: The view's name once a call site needed it (callsite.py).
        self.view: str | None = None
        # The containers below are made when first needed: most requests use few or none of them.
        #: Hashes of (SQL, parameters) run so far: exact duplicates. Only hashes, only in memory.
        self.seen: set[int] | None = None
        #: (alias, SQL) -> (call site, hint) of the statements that crossed the N+1 threshold or were slow.
        self.sites: dict[tuple[str, str], tuple[str | None, str | None]] | None = None
        self.cache: Calls | None = None
        self.cache_depth = 0
        self.http: Calls | None = None

    def summarise(
        self, max_sql: int = 16000
    ) -> tuple[dict[str, list[int]], dict[tuple[str, str], list[int]], dict[tuple[str, str], list[Any]]]:
        """Per alias ``{alias: [count, ns]}``, per (vendor, SQL template) ``{(vendor, sql): [count, ns]}``, and
        per template the extras ``[duplicates, slow runs, slowest ns, call site, hint]`` (only where any).

        Once, when the request ends. Templates are raw (literals are stripped by the flusher), cut at
        ``max_sql`` characters: a literal cut off there still strips, as it runs to the end.
        """
        aliases: dict[str, list[int]] = {}
        templates: dict[tuple[str, str], list[int]] = {}
        extras: dict[tuple[str, str], list[Any]] = {}
        vendor_of = vendors.get
        sites = self.sites
        memo = _memo.get(max_sql)
        if memo is None or len(memo) >= MAX_MEMO:
            memo = _memo[max_sql] = {}
        for key, entry in self.queries.items():
            count = entry[0]
            ns = entry[1]
            alias, sql = key
            total = aliases.get(alias)
            if total is None:
                aliases[alias] = [count, ns]
            else:
                total[0] += count
                total[1] += ns
            template = memo.get(key)
            if template is None:
                template = (vendor_of(alias, ""), template_of(sql if type(sql) is str else str(sql))[:max_sql])
                if type(sql) is str and len(sql) <= MAX_MEMO_SQL:
                    memo[key] = template
            total = templates.get(template)
            if total is None:
                templates[template] = [count, ns]
            else:
                total[0] += count
                total[1] += ns
            if len(entry) > 2 and (entry[2] or entry[3] or (sites and key in sites)):
                site, hint = sites.get(key, (None, None)) if sites else (None, None)
                extra = extras.get(template)
                if extra is None:
                    extras[template] = [entry[2], entry[3], entry[4], site, hint]
                else:
                    extra[0] += entry[2]
                    extra[1] += entry[3]
                    extra[2] = max(extra[2], entry[4])
                    extra[3] = extra[3] or site
                    extra[4] = extra[4] or hint
        return aliases, templates, extras

    def totals(self) -> tuple[int, int, int, int, int, int]:
        """(queries, db ns, cache calls, cache ns, HTTP calls, HTTP ns) so far: the Server-Timing header."""
        queries = db_ns = 0
        for entry in self.queries.values():
            queries += entry[0]
            db_ns += entry[1]
        cache = self.cache or {}
        http = self.http or {}
        cache_calls = sum(entry[0] for entry in cache.values())
        cache_ns = sum(entry[1] for entry in cache.values())
        http_calls = sum(entry[0] for entry in http.values())
        http_ns = sum(entry[1] for entry in http.values())
        return queries, db_ns, cache_calls, cache_ns, http_calls, http_ns


current_probe: ContextVar[Probe | None] = ContextVar("instrumented_probe", default=None)


def sql_wrapper(  # noqa: C901 - the per-query hot path, inlined on purpose (benchmarks/overhead.py)
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
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
        queries = probe.queries
        entry = queries.get(key)
        if entry is None and len(queries) >= MAX_DISTINCT_SQL:
            key = (key[0], OTHER_SQL)
            entry = queries.get(key)
        if entry is None:
            entry = queries[key] = [1, elapsed, 0, 0, 0]
        else:
            entry[0] += 1
            entry[1] += elapsed
            if entry[0] == probe.threshold and key[1] is not OTHER_SQL:  # the overflow bucket has no one site
                locate(probe, key, sys._getframe(1))
        if not many:
            # The SQL's hash is cached by the lookup above; parameters are mostly a tuple already.
            try:
                fingerprint = hash((sql, params if type(params) is not list else tuple(params)))
            except TypeError:  # unhashable parameters (a dict, an array): not counted
                pass
            else:
                seen = probe.seen
                if seen is None:
                    probe.seen = {fingerprint}
                elif fingerprint in seen:
                    entry[2] += 1
                else:
                    seen.add(fingerprint)
        if elapsed >= probe.slow_ns:
            entry[3] += 1
            if elapsed > entry[4]:
                entry[4] = elapsed
            if key[1] is not OTHER_SQL:
                locate(probe, key, sys._getframe(1))


def install_on(connection: BaseDatabaseWrapper) -> None:
    """Put the wrapper first on one connection, once, and note its alias's vendor."""
    if vendors.get(connection.alias) != connection.vendor:
        vendors[connection.alias] = connection.vendor
        _memo.clear()  # templates carry their alias's vendor
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
