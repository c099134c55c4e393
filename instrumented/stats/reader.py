"""The one reader API: every process's stats of the window, merged per view.

Every consumer (CLI, dashboard, JSON API, bookmarklet, terminal view) calls :func:`read_stats`; none
reads memcached itself. A full-window read costs two round trips whatever the traffic: one multi-get
of the ~30 bucket indexes (which processes wrote in the window), one of those processes' window
roll-ups. Per-bucket snapshots are read instead for per-10 s series, narrower windows, and processes
whose roll-up is missing or stale (a process that died mid-window): a third round trip, rarely.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ..keys import Keys
from ..memcached import Store, get_store, unpack
from ..naming import OTHER_VIEW
from . import histogram
from .snapshot import ViewTotals, cap_views, merge_views

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


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
    }
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


def _writers(indexes: dict[str, bytes], buckets: list[int], keys: Keys) -> dict[str, list[int]]:
    """Which processes wrote which of ``buckets``, from the bucket indexes."""
    wanted: dict[str, list[int]] = {}
    for bucket in buckets:
        raw = indexes.get(keys.bucket_index(bucket))
        if raw:
            for process_id in raw.decode("ascii", "replace").split():
                process_buckets = wanted.setdefault(process_id, [])
                if bucket not in process_buckets:
                    process_buckets.append(bucket)
    return wanted


def _read_buckets(
    store: Store,
    keys: Keys,
    per_bucket: list[tuple[int, str]],
    snapshots: list[tuple[int | None, dict[str, Any]]],
    processes: set[str],
) -> bool:
    """Add the per-bucket snapshots of ``per_bucket`` (bucket, process) to ``snapshots``; False when unreadable."""
    raw_snapshots = store.get_many([keys.bucket(b, p) for b, p in per_bucket])
    if raw_snapshots is None:
        return False
    for bucket, process_id in per_bucket:
        with _no_gc_pauses():
            snapshot = unpack(raw_snapshots.get(keys.bucket(bucket, process_id)))
        if isinstance(snapshot, dict):
            snapshots.append((bucket, snapshot))
            processes.add(process_id)
    return True


def read_stats(
    window_seconds: int | None = None,
    *,
    view: str | None = None,
    series: bool = False,
    top_queries: int = 5,
    now: float | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """Merged stats of the last ``window_seconds`` (default: the configured window), every process.

    ``view`` limits the result to one view name; ``series`` adds per-10 s points and the latency
    histogram (for charts). When memcached cannot be read the result has no views and ``error``
    says why: readers show "no data" with the reason, never fail.
    """
    store = store or get_store()
    config = store.config
    keys = config.keys
    bucket_seconds = config.bucket_seconds
    full_window = config.window_seconds
    window = full_window if window_seconds is None else max(bucket_seconds, min(int(window_seconds), full_window))
    now = time.time() if now is None else now
    current = int(now // bucket_seconds)
    buckets = list(range(current - math.ceil(window / bucket_seconds) + 1, current + 1))
    result: dict[str, Any] = {"window_seconds": window, "generated_at": _iso(now), "processes": 0, "views": []}

    def unavailable() -> dict[str, Any]:
        result["error"] = f"memcached unavailable: {store.last_error or 'circuit breaker open'}"
        return result

    indexes = store.get_many([keys.bucket_index(b) for b in buckets])
    if indexes is None:
        return unavailable()
    wanted = _writers(indexes, buckets, keys)

    snapshots: list[tuple[int | None, dict[str, Any]]] = []
    processes: set[str] = set()
    per_bucket: list[tuple[int, str]] = []
    if not series and window == full_window and wanted:
        rollups = store.get_many([keys.rollup(p) for p in wanted])
        if rollups is None:
            return unavailable()
        for process_id, process_buckets in wanted.items():
            with _no_gc_pauses():
                rollup = unpack(rollups.get(keys.rollup(process_id)))
            if isinstance(rollup, dict) and isinstance(rollup.get("as_of"), int) and rollup["as_of"] >= current:
                snapshots.append((None, rollup))
                processes.add(process_id)
            else:
                per_bucket.extend((b, process_id) for b in process_buckets)
    else:
        per_bucket = [(b, p) for p, process_buckets in wanted.items() for b in process_buckets]
    if per_bucket and not _read_buckets(store, keys, per_bucket, snapshots, processes):
        return unavailable()

    with _no_gc_pauses():
        merged = merge_views(snapshots, view)
    cap_views(merged, config.max_views, OTHER_VIEW)
    result["processes"] = len(processes)
    if any(snapshot.get("truncated") for _, snapshot in snapshots):
        result["truncated"] = True
    views = [_view_dict(name, m, top_queries, bucket_seconds, series) for name, m in merged.items()]
    views.sort(key=lambda v: (-v["requests"], v["view"]))
    result["views"] = views
    return result
