"""The one reader API: every process's stats of the window, merged per view.

Every consumer (CLI, dashboard, JSON API, bookmarklet, terminal view) calls :func:`read_stats`; none
reads memcached itself. A full-window read costs two round trips whatever the traffic: one multi-get
of the ~30 bucket indexes (which processes wrote in the window), one of those processes' window
roll-ups. Per-bucket snapshots are read instead for per-10 s series, narrower windows, and processes
whose roll-up is missing or stale (a process that died mid-window): a third round trip, rarely.
"""

from __future__ import annotations

import gc
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from ..failopen import fail_open, failures
from ..keys import Keys, is_command_process
from ..memcached import Store, ValueTooLarge, get_store, inflate
from ..naming import OTHER_VIEW, work_kind
from . import flusher as flusher_module
from . import histogram, queue
from .rollup import Decoded, RollupMerge, parse_rollup, split_rollup
from .sites import describe as describe_site
from .sites import describe_hint
from .snapshot import ViewTotals, add_series, cap_views, merge_into, section, section_header
from .sql import CONTROL, WRITE, kind_of, write_hint

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
#: Processes one read asks memcached about (a forged index could list millions); the rest are skipped.
MAX_PROCESSES_PER_READ = 2000
#: Percentiles resting on fewer requests than this are shown with their count (nearest rank: p95 of 3 is the max).
FEW_SAMPLES = 20


def _ms(us: float) -> float:
    return round(us / 1000.0, 3)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _p95(encoded: list[str]) -> float:
    dense = histogram.new()
    for part in encoded:
        histogram.merge_encoded(dense, part)
    return histogram.quantiles(dense, (0.95,))[0]


def _view_dict(name: str, m: ViewTotals, top: int, bucket_seconds: int, series: bool) -> dict[str, Any]:
    p50, p95, p99 = histogram.quantiles(m.hist, (0.50, 0.95, 0.99))
    requests = max(m.requests, 1)
    view: dict[str, Any] = {
        "view": name,
        "kind": work_kind(name, m.methods),
        "route": m.route,
        "requests": m.requests,
        "errors": m.errors,
        "status": dict(zip(STATUS_CLASSES, m.status, strict=True)),
        "latency_ms": {
            "mean": _ms(m.lat_sum / requests),
            # Estimates never exceed the exact maximum.
            "p50": _ms(min(p50, m.lat_max)),
            "p95": _ms(min(p95, m.lat_max)),
            "p99": _ms(min(p99, m.lat_max)),
            "max": _ms(m.lat_max),
            # What the percentiles rest on: below FEW_SAMPLES, pages say so beside them.
            "samples": sum(m.hist),
        },
        "queries": {"total": m.queries, "mean": round(m.queries / requests, 2), "max": m.queries_max},
        "db_time_ms": _ms(m.db_us),
        "n_plus_one": m.n_plus_one,
        "top_queries": [
            {"sql": sql, "count": count, "time_ms": _ms(time_us), "n_plus_one": n1}
            for sql, (count, time_us, n1) in m.ranked_templates()[:top]
        ],
        "methods": dict(sorted(m.methods.items())),
        "databases": {
            alias: {"queries": count, "time_ms": _ms(time_us)} for alias, (count, time_us) in sorted(m.aliases.items())
        },
        "exceptions": [
            {"class": cls, "count": count, "last_reference": ref or None, "last_at": _iso(at) if at else None}
            for cls, (count, ref, at) in sorted(m.exceptions.items(), key=lambda item: -item[1][0])
        ],
        "queue": queue.describe(m.queue),
    }
    view.update(findings(m, top))
    if series:
        view["series"] = [
            {
                "t": _iso(bucket * bucket_seconds),
                "requests": requests_,
                "errors": errors_,
                "p95_ms": _ms(_p95(encoded)),
            }
            for bucket, (requests_, errors_, encoded) in sorted(m.series.items())
        ]
        view["histogram"] = [
            {"le_ms": _ms(histogram.bin_value(index)), "count": count} for index, count in enumerate(m.hist) if count
        ]
    return view


def _sites(sites: dict[str, list[Any]]) -> list[dict[str, Any]]:
    ranked = sorted(sites.items(), key=lambda item: item[1][0], reverse=True)
    return [{**describe_site(site), "requests": count, **describe_hint(hint)} for site, (count, hint) in ranked]


def _cache_entry(calls: int, time_us: float, hits: int, misses: int) -> dict[str, Any]:
    reads = hits + misses
    hit_rate = round(hits / reads, 4) if reads else None
    return {"calls": calls, "time_ms": _ms(time_us), "hits": hits, "misses": misses, "hit_rate": hit_rate}


#: Findings listed per kind and view (N+1 suspects, writes per row, slow queries, duplicates); past it the
#: document says how many more (``…_more``). Every one the merge kept is listed below it.
MAX_LISTED = 50
_TABLE = re.compile(
    r'^\s*(?:INSERT\s+(?:IGNORE\s+)?INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM)\s+[`"\[]?(\w+)', re.IGNORECASE
)
_WRITE_FIXES = {
    "bulk_create": "bulk_create(objs)",
    "bulk_update": "bulk_update(objs, fields)",
    "delete": "filter(pk__in=…).delete()",
}
_models_by_table: dict[str, str] | None = None


def _model_of(sql: str) -> str | None:
    """The model whose table a write goes to (read from the app registry once), or None."""
    global _models_by_table
    match = _TABLE.match(sql)
    if match is None:
        return None
    if _models_by_table is None:
        try:
            from django.apps import apps

            _models_by_table = {model._meta.db_table: model.__name__ for model in apps.get_models()}
        except Exception:  # noqa: BLE001 - no registry (a tool outside Django): no model named
            _models_by_table = {}
    return _models_by_table.get(match.group(1))


def _listed(rows: list[dict[str, Any]], key: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The first MAX_LISTED of ``rows``; how many more there are in ``document[key + "_more"]``."""
    document[f"{key}_more"] = max(len(rows) - MAX_LISTED, 0)
    return rows[:MAX_LISTED]


def findings(m: ViewTotals, top: int) -> dict[str, Any]:
    """Where the time went beyond the view's own code: read N+1 suspects, writes per row and slow SQL with their
    call sites, exact duplicates, cache calls per alias, outgoing HTTP per origin (docs/dashboard.md, "JSON").

    The totals (``n_plus_one_runs``, ``duplicates``, ``writes_per_row``…) are counted per request apart from the
    templates each process keeps, so they are exact through the merge; the lists hold every finding the merge
    kept (up to MAX_LISTED, then ``…_more``), and ``…_unlisted_runs`` says how many runs fell outside them."""
    if not (
        m.extras or m.cache or m.http or m.comments or m.duplicates or m.n1_runs or m.writes or m.renders
    ) and not any(entry[2] for entry in m.templates.values()):
        return _no_findings()  # most views: the same answer, without sorting and summing empty tables
    empty: list[Any] = [0, 0, 0, {}, {}]
    document: dict[str, Any] = {}
    reads: list[dict[str, Any]] = []
    writes: list[dict[str, Any]] = []
    for sql, (count, time_us, n1) in m.ranked_templates():
        if not n1:
            break  # suspects rank first
        kind = kind_of(sql)
        if kind is CONTROL:
            continue
        found = {
            "sql": sql,
            "count": count,
            "time_ms": _ms(time_us),
            "requests": n1,
            "call_sites": _sites(m.extras.get(sql, empty)[3]),
        }
        if kind is WRITE:
            fix = write_hint(sql)
            found.update(hint=_WRITE_FIXES.get(fix or ""), hint_model=_model_of(sql))
            writes.append(found)
        else:
            reads.append(found)
    extras = sorted(m.extras.items(), key=lambda item: (item[1][1], item[1][2]), reverse=True)
    slow = [
        {"sql": sql, "slow": s, "max_ms": _ms(slowest), "call_sites": _sites(slow_sites)}
        for sql, (_dups, s, slowest, _sites_n1, slow_sites) in extras
        if s
    ]
    duplicates = [
        {"sql": sql, "duplicates": dups, "count": m.templates.get(sql, [0])[0]}
        for sql, (dups, *_rest) in sorted(m.extras.items(), key=lambda item: item[1][0], reverse=True)
        if dups
    ]
    cache_totals = [sum(entry[i] for entry in m.cache.values()) for i in range(4)]
    http_totals = [sum(entry[i] for entry in m.http.values()) for i in range(3)]
    hosts = sorted(m.http.items(), key=lambda item: item[1][1], reverse=True)
    document["n_plus_one_suspects"] = _listed(reads, "n_plus_one_suspects", document)
    document.update(
        n_plus_one_runs=m.n1_runs,
        n_plus_one_queries=m.n1_queries,
        n_plus_one_unlisted_runs=max(m.n1_runs - sum(found["requests"] for found in reads), 0),
    )
    document["writes_per_row"] = m.writes
    document["writes_per_row_runs"] = m.write_runs
    document["writes_per_row_queries"] = m.write_queries
    document["write_suspects"] = _listed(writes, "write_suspects", document)
    document["write_unlisted_runs"] = max(m.write_runs - sum(found["requests"] for found in writes), 0)
    document["slow_queries"] = _listed(slow, "slow_queries", document)
    document["duplicate_queries"] = _listed(duplicates, "duplicate_queries", document)
    document["duplicates"] = m.duplicates
    document["sql_comments"] = m.comments
    document["cache"] = {
        **_cache_entry(*cache_totals),
        "aliases": {alias: _cache_entry(*entry) for alias, entry in sorted(m.cache.items())},
    }
    document["http"] = {
        "calls": http_totals[0],
        "time_ms": _ms(http_totals[1]),
        "errors": http_totals[2],
        "origins": [
            {"origin": where, "calls": n, "time_ms": _ms(us), "errors": errors, "max_ms": _ms(mx)}
            for where, (n, us, errors, mx) in hosts
        ],
    }
    document["templates"] = template_time(m)
    return document


def template_time(m: ViewTotals) -> dict[str, Any]:
    """Time in the outermost Django and Jinja2 renders (SQL run inside them apart), and per template, heaviest first."""
    ranked = sorted(m.renders.items(), key=lambda item: item[1][1], reverse=True)
    total_us = sum(entry[1] for entry in m.renders.values())
    sql_us = sum(entry[2] for entry in m.renders.values())
    return {
        "time_ms": _ms(total_us),
        "sql_ms": _ms(sql_us),
        "mean_ms": _ms(total_us / m.requests) if m.requests else 0.0,
        "renders": sum(entry[0] for entry in m.renders.values()),
        "names": [
            {"name": name, "renders": n, "time_ms": _ms(us), "sql_ms": _ms(sql), "per_render_ms": _ms(us / max(n, 1))}
            for name, (n, us, sql) in ranked
        ],
    }


def _no_findings() -> dict[str, Any]:
    """What :func:`findings` says of a view without N+1 suspects, duplicates, slow SQL, cache or HTTP calls."""
    return {
        "n_plus_one_suspects": [],
        "n_plus_one_suspects_more": 0,
        "n_plus_one_runs": 0,
        "n_plus_one_queries": 0,
        "n_plus_one_unlisted_runs": 0,
        "writes_per_row": 0,
        "writes_per_row_runs": 0,
        "writes_per_row_queries": 0,
        "write_suspects": [],
        "write_suspects_more": 0,
        "write_unlisted_runs": 0,
        "slow_queries": [],
        "slow_queries_more": 0,
        "duplicate_queries": [],
        "duplicate_queries_more": 0,
        "duplicates": 0,
        "sql_comments": 0,
        "cache": {**_cache_entry(0, 0, 0, 0), "aliases": {}},
        "http": {"calls": 0, "time_ms": 0.0, "errors": 0, "origins": []},
        "templates": {"time_ms": 0.0, "sql_ms": 0.0, "mean_ms": 0.0, "renders": 0, "names": []},
    }


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Parsing thousands of small containers triggers repeated full GC passes in a large heap; none are
    needed (nothing here forms cycles), so collection waits until the parse or merge is done (never
    across memcached I/O)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ReadBudget:
    """What one read may decode and merge: a byte budget, a per-value cap, a view budget; counts the rest."""

    def __init__(self, max_bytes: int, max_views: int) -> None:
        self.bytes_left = max_bytes
        self.value_limit = max(max_bytes // 4, 1)
        self.max_views = max_views
        self.skipped = 0
        #: Parts of stored values left out as malformed (a string count, a time of Infinity, a forged reference).
        self.malformed = 0
        self.folded = 0
        self.processes_skipped = 0

    def inflate(self, data: bytes | None) -> bytes | None:
        """One stored value's JSON bytes, or None: missing, unreadable, or over the cap or what is left (counted)."""
        if not data:
            return None
        try:
            body = inflate(data, min(self.value_limit, self.bytes_left))
        except ValueTooLarge:
            self.skipped += 1
            return None
        if body is not None:
            self.bytes_left -= len(body)
        return body

    def decode_rollup(self, data: bytes | None) -> Decoded | None:
        """A roll-up value parsed and checked (its current points still packed), or None as for decode()."""
        parts = split_rollup(data) if data else None
        body = None if parts is None else self.inflate(parts[0])
        if parts is None or body is None:
            return None
        try:
            with _no_gc_pauses():
                return parse_rollup(body, parts[1])
        except (ValueError, RecursionError):
            return None

    def decode(self, data: bytes | None) -> Any:
        """One stored value, parsed, or None: missing, unreadable, or over the cap or what is left (counted)."""
        body = self.inflate(data)
        if body is None:
            return None
        try:
            with _no_gc_pauses():
                return json.loads(body)
        except (ValueError, RecursionError):
            return None

    def count_skipped(self, parts: int = 1) -> None:
        """More parts of a stored value left out as malformed."""
        self.malformed += parts

    def note(self) -> str | None:
        """Why the answer is incomplete, for people (None when the whole window was read)."""
        parts = []
        if self.skipped:
            parts.append(
                f"{self.skipped} stored value(s) skipped: each may inflate to {self.value_limit // 1024} KiB, "
                f"a read to {self.value_limit * 4 // 1024} KiB (READ_MAX_BYTES)"
            )
        if self.malformed:
            parts.append(f"{self.malformed} malformed part(s) of stored values left out")
        if self.folded:
            parts.append(
                f"{self.folded} view entr(ies) over READ_MAX_VIEWS ({self.max_views}) counted under {OTHER_VIEW}"
            )
        if self.processes_skipped:
            parts.append(f"{self.processes_skipped} process(es) over {MAX_PROCESSES_PER_READ} not read")
        return "; ".join(parts) or None


def _writers(indexes: dict[str, bytes], buckets: list[int], keys: Keys, budget: ReadBudget) -> dict[str, list[int]]:
    """Which processes wrote which of ``buckets``, from the bucket indexes (bounded by ``budget``)."""
    wanted: dict[str, list[int]] = {}
    for bucket in buckets:
        raw = indexes.get(keys.bucket_index(bucket))
        if raw:
            budget.bytes_left -= len(raw)
            for process_id in raw[: max(budget.bytes_left, 0)].decode("ascii", "replace").split():
                if process_id not in wanted and len(wanted) >= MAX_PROCESSES_PER_READ:
                    budget.processes_skipped += 1
                    continue
                process_buckets = wanted.setdefault(process_id, [])
                if bucket not in process_buckets:
                    process_buckets.append(bucket)
    return wanted


def _covered_seconds(wanted: dict[str, list[int]], bucket_seconds: int, window: int, now: float) -> float:
    """Seconds from the start of the oldest bucket any process wrote up to now, at most the window.

    Rates are over this span, not the whole window: a site that started 40 s ago has 40 s of data, and
    dividing its requests by 300 s showed a seventh of its real rate. 0.0 when nothing was written.
    """
    oldest = min((bucket for buckets in wanted.values() for bucket in buckets), default=None)
    if oldest is None:
        return 0.0
    return round(min(float(window), max(now - oldest * bucket_seconds, 1.0)), 1)


def rate_seconds(stats: dict[str, Any]) -> float:
    """What a reader's document's rates divide by: the covered span, else the window (at least 1 s)."""
    return max(float(stats.get("covered_seconds") or stats["window_seconds"]), 1.0)


def _annotate(result: StatsDocument, budget: ReadBudget, truncated: bool) -> None:
    """Say in the document what the read left out: truncated snapshots, skipped values, folded views."""
    if truncated:
        result["truncated"] = True
    if budget.skipped or budget.malformed:
        result["skipped"] = budget.skipped + budget.malformed
    note = budget.note()
    if note:
        result["note"] = note


class StatsDocument(TypedDict):
    """What :func:`read_stats` returns (the JSON API's body): every process's views of the window, merged.

    ``processes`` counts the site's processes whose data is in the window (stopped ones included),
    ``processes_live`` those that flushed in the last two flush intervals; the processes of one-off management
    commands (``manage.py migrate``) are neither, but ``command_processes``. ``partial`` and ``missing``
    (``host:port`` of each server that did not answer) say the document lacks what those servers hold.
    """

    window_seconds: int
    generated_at: str
    processes: int
    processes_live: int
    command_processes: int
    views: list[dict[str, Any]]
    queue: dict[str, Any]
    partial: NotRequired[bool]
    missing: NotRequired[list[str]]
    error: NotRequired[str]
    truncated: NotRequired[bool]
    skipped: NotRequired[int]
    note: NotRequired[str]
    covered_seconds: NotRequired[float]


#: How long one merged document serves the process's other readers (ten open dashboards: one read).
CACHE_SECONDS = 1.0
_cache: dict[tuple[Any, ...], tuple[float, StatsDocument]] = {}
_cache_locks: dict[tuple[Any, ...], threading.Lock] = {}
_cache_lock = threading.Lock()


def read_stats(
    window_seconds: int | None = None,
    *,
    view: str | None = None,
    series: bool = False,
    top_queries: int = 5,
    now: float | None = None,
    store: Store | None = None,
) -> StatsDocument:
    """Merged stats of the last ``window_seconds`` (default: the configured window), every process.

    ``view`` limits the result to one view name; ``series`` adds per-10 s points and the latency
    histogram (for charts). When memcached cannot be read the result has no views and ``error``
    says why: readers show "no data" with the reason, never fail.

    Readers of this process asking the same question within CACHE_SECONDS (and no flush of this
    process in between) share one merge; ``now`` or ``store`` (tests, benchmarks) read afresh.
    """
    if now is not None or store is not None:
        at = time.time() if now is None else now
        return _read_safely(window_seconds, view, series, top_queries, at, store or get_store())
    store = get_store()
    key = (id(store), window_seconds, view, series, top_queries)
    with _cache_lock:
        lock = _cache_locks.get(key)
        if lock is None:
            if len(_cache_locks) > 256:
                _cache_locks.clear()
                _cache.clear()
            lock = _cache_locks[key] = threading.Lock()
    with lock:  # concurrent readers wait for the one merge in flight rather than start their own
        generation = flusher_module.generation
        cached = _cache.get(key)
        clock = time.monotonic()
        if cached is not None and cached[0] > clock and cached[1].get("_generation") == generation:
            document = cached[1]
        else:
            document = _read_safely(window_seconds, view, series, top_queries, time.time(), store)
            expires = clock + min(CACHE_SECONDS, store.config.flush_interval)
            _cache[key] = (expires, {**document, "_generation": generation})  # type: ignore[typeddict-unknown-key]
            return document
    result = dict(document)
    result.pop("_generation", None)
    return result  # type: ignore[return-value]


def _read_safely(
    window_seconds: int | None, view: str | None, series: bool, top_queries: int, now: float, store: Store
) -> StatsDocument:
    """:func:`_read`, which checks every part of what it reads; should it still fail, "no data" with the reason
    (the failure counted and logged), never an exception to the dashboard, API, metrics or terminal."""
    with fail_open("reading stats failed") as failed:
        return _read(window_seconds, view, series, top_queries, now, store)
    return {
        "window_seconds": store.config.window_seconds if window_seconds is None else window_seconds,
        "generated_at": _iso(now),
        "processes": 0,
        "processes_live": 0,
        "command_processes": 0,
        "views": [],
        "queue": _queue_document({}, set()),
        "error": f"reading stats failed: {type(failed.error).__name__}",
    }


def _read(  # noqa: C901 - one read, in the order of its round trips
    window_seconds: int | None, view: str | None, series: bool, top_queries: int, now: float, store: Store
) -> StatsDocument:
    config = store.config
    keys = config.keys
    bucket_seconds = config.bucket_seconds
    full_window = config.window_seconds
    window = full_window if window_seconds is None else max(bucket_seconds, min(int(window_seconds), full_window))
    current = int(now // bucket_seconds)
    buckets = list(range(current - math.ceil(window / bucket_seconds) + 1, current + 1))
    result: StatsDocument = {
        "window_seconds": window,
        "generated_at": _iso(now),
        "processes": 0,
        "processes_live": 0,
        "command_processes": 0,
        "views": [],
        "queue": _queue_document({}, set()),
    }
    missing: set[str] = set()
    waits: dict[str, list[Any]] = {}  # process -> its requests' queue time, summed over its views

    def fetch(wanted_keys: list[str]) -> dict[str, bytes] | None:
        found = store.fetch(wanted_keys)
        missing.update(found.missing)
        return None if len(found.missing) == len(store.servers) else found.values

    def unavailable() -> StatsDocument:
        result["error"] = f"memcached unavailable: {store.last_error or 'circuit breaker open'}"
        return result

    slot = int(now // config.flush_interval)
    live_keys = [keys.live(s) for s in range(slot - 2, slot + 1)]
    indexes = fetch([keys.bucket_index(b) for b in buckets] + live_keys)
    if indexes is None:
        return unavailable()
    budget = ReadBudget(config.read_max_bytes, config.read_max_views)
    wanted = _writers(indexes, buckets, keys, budget)
    result["covered_seconds"] = _covered_seconds(wanted, bucket_seconds, window, now)
    live: set[str] = set()
    for key in live_keys:
        live.update((indexes.get(key) or b"")[:65536].decode("ascii", "replace").split())

    # Parsed and merged one value at a time, smallest first: a forged giant is dropped, not kept, and
    # spends what the budget has left after the genuine values.
    merged: dict[str, ViewTotals] = {}
    processes: set[str] = set()
    truncated = False

    def merge(bucket: int | None, process_id: str, snapshot: dict[str, Any]) -> None:
        nonlocal truncated
        with _no_gc_pauses():
            folded, skipped = merge_into(merged, bucket, snapshot, view, budget.max_views, OTHER_VIEW)
        budget.folded += folded
        budget.count_skipped(skipped)
        processes.add(process_id)
        views = snapshot.get("views")
        if isinstance(views, dict):
            _add_waits(waits, process_id, views.values())
        truncated = truncated or bool(snapshot.get("truncated"))

    per_bucket: list[tuple[int, str]] = []
    if window == full_window and wanted:
        wanted_keys = [keys.rollup(p) for p in wanted] + ([keys.series(p) for p in wanted] if series else [])
        rollups = fetch(wanted_keys)
        if rollups is None:
            return unavailable()
        by_size = sorted(wanted.items(), key=lambda item: len(rollups.get(keys.rollup(item[0])) or b""))
        columns = RollupMerge(view, budget.max_views, OTHER_VIEW)
        points: list[tuple[str, list[list[Any]]]] = []
        for process_id, process_buckets in by_size:
            rollup = budget.decode_rollup(rollups.pop(keys.rollup(process_id), None))
            sections = rollups.pop(keys.series(process_id), None) if series else None
            if _merge_rollup(columns, points, rollup, current, view, series, sections, budget):
                processes.add(process_id)
                assert rollup is not None  # merged
                findings = rollup.doc.get("fx")
                if isinstance(findings, dict):
                    _add_waits(waits, process_id, findings.values())
                truncated = truncated or bool(rollup and rollup.doc.get("truncated"))
            else:
                per_bucket.extend((b, process_id) for b in process_buckets)
            del rollup, sections
        columns.into(merged, budget.count_skipped)
        budget.folded += columns.folded
        for name, view_points in points:
            if name in merged:
                budget.count_skipped(add_series(merged[name], view_points, range(buckets[0], current + 1)))
        del columns, points
    else:
        per_bucket = [(b, p) for p, process_buckets in wanted.items() for b in process_buckets]
    if per_bucket:
        raw_snapshots = fetch([keys.bucket(b, p) for b, p in per_bucket])
        if raw_snapshots is None:
            return unavailable()
        per_bucket.sort(key=lambda item: len(raw_snapshots.get(keys.bucket(*item)) or b""))
        for bucket, process_id in per_bucket:
            snapshot = budget.decode(raw_snapshots.pop(keys.bucket(bucket, process_id), None))
            if isinstance(snapshot, dict):
                merge(bucket, process_id, snapshot)
            elif snapshot is not None:
                budget.count_skipped()
            del snapshot

    for totals in merged.values():
        totals.settle()
    cap_views(merged, config.max_views, OTHER_VIEW)
    views = []
    for name, m in merged.items():
        try:
            views.append(_view_dict(name, m, top_queries, bucket_seconds, series))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError):
            # Every part was checked as it was merged; should one still not read, that view is left out, not the
            # whole document (failures counted and logged).
            failures.record("a merged view could not be shown", None)
            budget.count_skipped()
    views.sort(key=lambda v: (-v["requests"], v["view"]))
    commands = {p for p in processes if is_command_process(p)}
    result["processes"] = len(processes) - len(commands)
    result["processes_live"] = sum(1 for p in live if not is_command_process(p))
    result["command_processes"] = len(commands)
    result["queue"] = _queue_document(waits, live)
    _annotate(result, budget, truncated)
    if missing:
        result["partial"] = True
        result["missing"] = sorted(missing)
        gap = f"no answer from memcached {', '.join(result['missing'])}: what it holds is missing"
        result["note"] = f"{gap}; {result['note']}" if "note" in result else gap
    result["views"] = views
    return result


def _add_waits(waits: dict[str, list[Any]], process_id: str, entries: Any) -> None:
    """Sum the queue time (``qt``) of one process's views (snapshot or roll-up findings) into ``waits``."""
    for entry in entries:
        wire = entry.get("qt") if isinstance(entry, dict) else None
        if wire is None:
            continue
        total = waits.get(process_id) or queue.new()
        try:
            queue.add_wire(total, wire)
        except (TypeError, ValueError):
            continue  # malformed: that view's part is left out (the view's merge skips it too)
        waits[process_id] = total


def _queue_document(waits: dict[str, list[Any]], live: set[str]) -> dict[str, Any]:
    """The window's request queue time, every process together and each process apart (slowest p95 first)."""
    total = queue.new()
    for entry in waits.values():
        queue.merge(total, entry)
    per_process = [{"process": p, "live": p in live, **queue.describe(e)} for p, e in waits.items()]
    per_process.sort(key=lambda item: (-item["p95_ms"], item["process"]))
    return {**queue.describe(total), "processes": per_process[: queue.MAX_PROCESSES]}


def _merge_rollup(
    columns: RollupMerge,
    points: list[tuple[str, list[list[Any]]]],
    rollup: Decoded | None,
    current: int,
    view: str | None,
    series: bool,
    sections: bytes | None,
    budget: ReadBudget,
) -> bool:
    """Add one process's roll-up to ``columns`` (and, for ``series``, its series points to ``points``); False
    when the caller must read that process's buckets instead: missing or malformed, stale (a process that died
    mid-window), or its series value missing or of another version; or malformed (then nothing of it is added)."""
    if rollup is None or not isinstance(rollup.doc.get("as_of"), int) or rollup.doc["as_of"] < current:
        return False
    try:
        found = _series_points(rollup, current, view, sections, budget) if series else {}
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError):
        found = None
    if found is None:
        return False
    with _no_gc_pauses():
        if not columns.add(rollup):
            return False
    points.extend(found.items())
    return True


def _series_points(
    rollup: Decoded, current: int, view: str | None, sections: bytes | None, budget: ReadBudget
) -> dict[str, list[list[Any]]] | None:
    """Per view, the series points of one process: its finished buckets from the series value (only the
    sections of the views asked for are parsed) and the current bucket from the roll-up's second part; None
    when the series value does not go with the roll-up."""
    points: dict[str, list[list[Any]]] = {}
    doc = rollup.doc
    if any(b < current for b in doc["buckets"]):
        parsed = section_header(sections, budget.value_limit) if sections else None
        if parsed is None or parsed[0].get("fin") != doc.get("fin"):
            return None
        header, start = parsed
        with _no_gc_pauses():
            for index, name in enumerate(header["names"]):
                if view is None or name == view:
                    points[name] = list(section(sections, header, start, index, budget.value_limit) or ())  # type: ignore[arg-type]
    body = budget.inflate(rollup.current)
    if body is None:
        return None
    with _no_gc_pauses():
        for name, bucket, requests, errors, encoded in json.loads(body):
            if view is None or name == view:
                points.setdefault(name, []).append([bucket, requests, errors, encoded])
    return points
