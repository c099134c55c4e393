"""Per-request state in a ContextVar, and the permanent SQL ``execute_wrapper`` that fills it.

The wrapper is installed once on every connection (all aliases, every thread) and costs one
ContextVar lookup when no request is being recorded. It never reads ``connection.queries``. Per query
it counts and times the statement in two plain dicts of its alias, keyed by the statement as run, or by its
template when only the length of an ``IN (…)`` or ``VALUES`` list tells it from others (sql.request_key, memoised
per process: one dict lookup on a statement's first run in the request, and on every run of a listed one), hashes
the SQL with its parameters (exact duplicates; the hashes stay in memory, on the probe) and, when a statement
reaches the N+1 threshold (transaction control never does) or is slow, asks callsite.py where it came from.
Templates are made later, once per request, by ``summarise`` in the flusher thread.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from ..naming import class_name
from .callsite import locate
from .events import EMPTY, MAX_EVENTS, mark_duplicate
from .snapshot import add_into
from .sql import CONTROL, _keys, kind_of, request_key, template_of

#: ``connection.vendor`` per alias, noted when the wrapper is installed: how the flusher reads literals.
vendors: dict[str, str] = {}
#: Distinct statements kept per alias per request; the rest are counted under OTHER_SQL.
MAX_DISTINCT_SQL = 200
OTHER_SQL = "(other SQL statements)"
#: Per max_sql, per alias: SQL -> (vendor, template cut at max_sql): each statement's template is made once
#: per process, not once per request. Bounded: cleared when full; statements longer than MAX_MEMO_SQL are not kept.
_memo: dict[int, dict[str, dict[Any, tuple[str, str]]]] = {}
MAX_MEMO = 4096
MAX_MEMO_SQL = 4096


#: What a request's probe counts an outgoing call under: cache alias or HTTP origin -> [calls, ns, a, b]
#: (cache: hits, misses; HTTP: errors, slowest ns).
Calls = dict[str, list[int]]
#: One alias's statements in a request: SQL as run -> runs, and SQL -> ns. Plain str/int dicts, so the
#: garbage collector never tracks them while the request waits for the flusher.
Counts = dict[Any, int]


class Probe:
    """What one request did: SQL per alias and statement, cache and HTTP calls, any exception it raised."""

    __slots__ = (
        "active",
        "alias",
        "cache",
        "cache_depth",
        "connection",
        "counts",
        "cut",
        "duplicates",
        "error_reference",
        "exception_class",
        "extras",
        "first",
        "http",
        "others",
        "queue_stamp",
        "renders",
        "request",
        "seen",
        "sites",
        "slow_ns",
        "start_ns",
        "template_depth",
        "threshold",
        "timeline",
        "times",
        "user_kind",
        "view",
    )

    #: The first alias the request used and its statements (set on its first statement, with ``connection``).
    alias: str
    counts: Counts
    times: Counts

    def __init__(
        self, start_ns: int, threshold: int = 5, slow_ms: float = 100.0, request: Any = None, timeline: bool = True
    ) -> None:
        self.start_ns = start_ns
        self.active = True
        self.exception_class: str | None = None
        self.error_reference: str | None = None
        self.threshold = threshold
        self.slow_ns = int(slow_ms * 1_000_000)
        self.request = request
        #: The raw value of the front server's queue header (X-Request-Start), parsed by the flusher thread.
        self.queue_stamp: str | None = None
        #: The view's name once a call site needed it (callsite.py).
        self.view: str | None = None
        # What follows is made when first needed: most requests use little or none of it.
        #: The connection of ``alias`` (None until the first statement): an identity test per statement.
        self.connection: Any = None
        #: Other aliases' (counts, times), rarely more than one alias a request.
        self.others: dict[str, tuple[Counts, Counts]] | None = None
        #: SQL -> parameters of its first run, until it runs again (then hashed) or the request ends.
        self.first: dict[Any, Any] | None = None
        #: Hashes of (SQL, parameters) of the statements run more than once: exact duplicates, only in memory.
        self.seen: dict[int, None] | None = None
        #: (alias, SQL) -> [exact duplicates, slow runs, slowest ns], for statements that had any.
        self.extras: dict[tuple[str, Any], list[int]] | None = None
        #: (alias, SQL) -> (call site, hint) of the statements that crossed the N+1 threshold or were slow.
        self.sites: dict[tuple[str, Any], tuple[str | None, str | None]] | None = None
        self.cache: Calls | None = None
        self.cache_depth = 0
        self.http: Calls | None = None
        #: What the request did, in order (samples.py): one append per statement, cache call, HTTP call and
        #: template render, up to samples.MAX_EVENTS; None when slowest-request samples are off or it was dropped.
        self.timeline: list[tuple[Any, ...]] | None = EMPTY if timeline else None
        #: Start (ns) of the statements that repeated an earlier one exactly; events past the cap, per kind.
        self.duplicates: set[int] | None = None
        self.cut: dict[str, int] | None = None
        #: Template renders in progress; per outermost template, [renders, ns, SQL ns inside] (templates.py).
        self.template_depth = 0
        self.renders: dict[str, list[int]] | None = None
        #: "anonymous", "authenticated", "staff" or "unknown", set only when the request may become a sample.
        self.user_kind: str | None = None

    def end(self) -> None:
        """The request or work is over: nothing more is counted, and what only mattered while it ran is let go."""
        self.active = False
        self.request = self.first = self.seen = None
        if self.connection is not None:
            self.connection = _ENDED  # not the connection itself: a waiting probe keeps no database wrapper alive

    def tables(self, connection: Any) -> tuple[Counts, Counts]:
        """The (counts, times) of ``connection``'s alias; the first one becomes the fast path's."""
        alias = connection.alias
        with _tables_lock:  # rare (a request's first statement per alias), and threads of one request may race
            if self.connection is None:
                self.alias, self.counts, self.times = alias, {}, {}
                self.connection = connection  # last: the wrapper's fast path tests it, then reads the rest
                return self.counts, self.times
            if alias == self.alias:  # the same alias from another thread's connection
                return self.counts, self.times
            others = self.others
            if others is None:
                others = self.others = {}
            found = others.get(alias)
            if found is None:
                found = others[alias] = ({}, {})
            return found

    def add(self, alias: str, sql: Any, runs: int, ns: int) -> None:
        """Count ``runs`` of a statement taking ``ns`` in all, as the wrapper would have (tests, benchmarks)."""
        connection = self.connection if self.connection is not None and alias == self.alias else _Alias(alias)
        counts, times = self.tables(connection)
        counts[sql] = counts.get(sql, 0) + runs
        times[sql] = times.get(sql, 0) + ns

    def statements(self) -> list[tuple[str, Counts, Counts]]:
        """(alias, counts, times) of every alias the request used."""
        if self.connection is None:
            return []
        found = [(self.alias, self.counts, self.times)]
        if self.others:
            found.extend((alias, counts, times) for alias, (counts, times) in self.others.items())
        return found

    def extra(self, alias: str, sql: Any) -> list[int]:
        """The [duplicates, slow runs, slowest ns] of one statement, made when first needed."""
        extras = self.extras
        if extras is None:
            extras = self.extras = {}
        found = extras.get((alias, sql))
        if found is None:
            found = extras[(alias, sql)] = [0, 0, 0]
        return found

    def summarise(
        self, max_sql: int = 16000
    ) -> tuple[dict[str, list[int]], dict[tuple[str, str], list[int]], dict[tuple[str, str], list[Any]]]:
        """Per alias ``{alias: [count, ns]}``, per (vendor, SQL template) ``{(vendor, sql): [count, ns]}``, and
        per template the extras ``[duplicates, slow runs, slowest ns, N+1 call site, hint, slow-query call site]``
        (only where any; a site found at the threshold crossing is the N+1's, one found after a slow run the slow
        query's, both when both; transaction control has no duplicates).

        Once per request, in the flusher thread. Templates are raw (literals are stripped by the flusher),
        cut at ``max_sql`` characters: a literal cut off there still strips, as it runs to the end.
        """
        aliases: dict[str, list[int]] = {}
        templates: dict[tuple[str, str], list[int]] = {}
        extras: dict[tuple[str, str], list[Any]] = {}
        per_alias = _memo.get(max_sql)
        if per_alias is None:
            per_alias = _memo[max_sql] = {}
        for alias, counts, times in self.statements():
            memo = per_alias.get(alias)
            if memo is None or len(memo) >= MAX_MEMO:
                memo = per_alias[alias] = {}
            vendor = vendors.get(alias, "")
            alias_count = alias_ns = 0
            # A copy: a statement that began before the request ended may still be counted from another thread.
            for sql, count in list(counts.items()):
                ns = times.get(sql, 0)
                alias_count += count
                alias_ns += ns
                template = memo.get(sql)
                if template is None:
                    template = _template(memo, vendor, sql, max_sql)
                total = templates.get(template)
                if total is None:
                    templates[template] = [count, ns]
                else:
                    total[0] += count
                    total[1] += ns
            add_into(aliases, alias, [alias_count, alias_ns])
        probe_extras = self.extras or {}
        sites = self.sites or {}
        for key in probe_extras.keys() | sites.keys():
            alias, sql = key
            memo = per_alias.setdefault(alias, {})
            template = memo.get(sql) or _template(memo, vendors.get(alias, ""), sql, max_sql)
            dups, slow, slowest = probe_extras.get(key, (0, 0, 0))
            if dups and kind_of(template[1]) is CONTROL:
                dups = 0  # BEGIN after BEGIN is no cache that is missing
            site, hint = sites.get(key, (None, None))
            n1_site = None
            if site is not None:  # found at the threshold crossing, or only after a slow run?
                counts = self.counts if alias == self.alias else (self.others or {}).get(alias, ({},))[0]
                n1_site = site if counts.get(sql, 0) >= self.threshold else None
            slow_site = site if slow else None
            extra = extras.get(template)
            if extra is None:
                extras[template] = [dups, slow, slowest, n1_site, hint, slow_site]
            else:
                extra[0] += dups
                extra[1] += slow
                extra[2] = max(extra[2], slowest)
                extra[3] = extra[3] or n1_site
                extra[4] = extra[4] or hint
                extra[5] = extra[5] or slow_site
        return aliases, templates, extras

    def totals(self) -> tuple[int, int, int, int, int, int]:
        """(queries, db ns, cache calls, cache ns, HTTP calls, HTTP ns) so far: the Server-Timing header."""
        queries = db_ns = 0
        for _alias, counts, times in self.statements():
            queries += sum(counts.values())
            db_ns += sum(times.values())
        cache = self.cache or {}
        http = self.http or {}
        cache_calls = sum(entry[0] for entry in cache.values())
        cache_ns = sum(entry[1] for entry in cache.values())
        http_calls = sum(entry[0] for entry in http.values())
        http_ns = sum(entry[1] for entry in http.values())
        return queries, db_ns, cache_calls, cache_ns, http_calls, http_ns


class _Alias:
    """Stands for a connection of ``alias`` where there is none (``Probe.add``)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias


def _template(memo: dict[Any, tuple[str, str]], vendor: str, sql: Any, max_sql: int) -> tuple[str, str]:
    """(vendor, template cut at ``max_sql``) of one statement, kept in ``memo`` when it is a plain, short string."""
    template = (vendor, template_of(sql if type(sql) is str else str(sql))[:max_sql])
    if type(sql) is str and len(sql) <= MAX_MEMO_SQL:
        memo[sql] = template
    return template


current_probe: ContextVar[Probe | None] = ContextVar("instrumented_probe", default=None)
#: Marks a statement's first run, whose parameters wait in ``Probe.first`` rather than being hashed.
_FIRST_RUN: Any = object()
_tables_lock = threading.Lock()
#: ``Probe.connection`` of an ended probe that ran SQL.
_ENDED: Any = object()


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
        connection = context["connection"]
        if connection is probe.connection:
            counts = probe.counts
            times = probe.times
        else:
            counts, times = probe.tables(connection)
        timeline = probe.timeline
        if timeline is not None:  # the request's order, for samples.py
            if timeline is EMPTY:
                timeline = probe.timeline = []
            if len(timeline) < MAX_EVENTS:
                timeline.append((start, elapsed, sql, counts))
        statement: Any = sql
        count = counts.get(statement)
        if count is None:
            # Not yet counted as run: its key may be its template (a list's length is all that differs).
            key = _keys.get(sql)
            if key is None:
                key = request_key(sql)
            if key:
                statement = key
                count = counts.get(statement)
            if count is None and len(counts) >= MAX_DISTINCT_SQL:
                statement = OTHER_SQL
                count = counts.get(statement)
        if count is None:
            counts[statement] = 1
            times[statement] = elapsed
            if not many and statement is sql and counts is probe.counts:
                # Most statements run once a request: their parameters are hashed only if they run again
                # (the first alias's statements: ``first`` is keyed by SQL alone; other aliases hash at once).
                first = probe.first
                if first is None:
                    probe.first = {statement: params if type(params) is not list else tuple(params)}
                else:
                    first[statement] = params if type(params) is not list else tuple(params)
                params = _FIRST_RUN
        else:
            count += 1
            counts[statement] = count
            times[statement] += elapsed
            # The overflow bucket has no one site; transaction control is never an N+1.
            if count == probe.threshold and statement is not OTHER_SQL and kind_of(statement) is not CONTROL:
                locate(probe, (connection.alias, statement), sys._getframe(1))
        if not many and params is not _FIRST_RUN:
            # Exact duplicates: the hashes of (SQL, parameters), only in memory. The SQL's hash is cached.
            seen = probe.seen
            if seen is None:
                seen = probe.seen = {}
            first = probe.first
            if first and counts is probe.counts and statement in first:  # its first run, hashed now
                try:
                    seen[hash((sql, first.pop(statement)))] = None
                except TypeError:
                    pass
            try:
                fingerprint = hash((sql, params if type(params) is not list else tuple(params)))
            except TypeError:  # unhashable parameters (a dict, an array): not counted
                pass
            else:
                if fingerprint in seen:
                    probe.extra(connection.alias, statement)[0] += 1
                    if timeline is not None:
                        mark_duplicate(probe, start)
                else:
                    seen[fingerprint] = None
        if elapsed >= probe.slow_ns:
            extra = probe.extra(connection.alias, statement)
            extra[1] += 1
            if elapsed > extra[2]:
                extra[2] = elapsed
            if statement is not OTHER_SQL:
                locate(probe, (connection.alias, statement), sys._getframe(1))


class paused:  # used like a function: ``with paused():``
    """The current probe counts nothing inside (SQL, cache, HTTP): the package's own work in a request, such as
    loading the user to decide who sees a traceback, is not the view's."""

    __slots__ = ("probe",)

    def __enter__(self) -> None:
        probe = current_probe.get()
        self.probe = probe if probe is not None and probe.active else None
        if self.probe is not None:
            self.probe.active = False

    def __exit__(self, *exc: object) -> None:
        if self.probe is not None:
            self.probe.active = True


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
