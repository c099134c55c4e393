"""The one reader API: merge every process's buckets of the window into per-view stats.

Two memcached round trips whatever the traffic: one multi-get of the bucket indexes, one of the
snapshots. Every consumer (CLI, dashboard, JSON API, bookmarklet, terminal view) calls
:func:`read_stats`; none reads memcached itself.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from . import histogram
from .aggregate import OTHER_VIEW
from .conf import get_config
from .store import Store, get_store, unpack

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


class _Merged:
    """One view's numbers summed over buckets and processes."""

    __slots__ = (
        "aliases",
        "db_us",
        "errors",
        "exceptions",
        "hist",
        "lat_max",
        "lat_sum",
        "methods",
        "n_plus_one",
        "queries",
        "queries_max",
        "requests",
        "route",
        "series",
        "status",
        "templates",
    )

    def __init__(self) -> None:
        self.route = ""
        self.requests = 0
        self.errors = 0
        self.status = [0, 0, 0, 0]
        self.lat_sum = 0.0
        self.lat_max = 0.0
        self.hist: dict[int, int] = {}
        self.queries = 0
        self.queries_max = 0
        self.db_us = 0
        self.n_plus_one = 0
        self.methods: dict[str, int] = {}
        self.templates: dict[str, list[int]] = {}
        self.aliases: dict[str, list[int]] = {}
        self.exceptions: dict[str, list[Any]] = {}
        # bucket -> [requests, errors, histogram]
        self.series: dict[int, list[Any]] = {}

    def absorb(self, other: _Merged) -> None:
        """Fold another view's numbers into this one (for the "(other)" overflow row)."""
        self.requests += other.requests
        self.errors += other.errors
        self.status = [a + b for a, b in zip(self.status, other.status, strict=True)]
        self.lat_sum += other.lat_sum
        self.lat_max = max(self.lat_max, other.lat_max)
        histogram.merge(self.hist, other.hist)
        self.queries += other.queries
        self.queries_max = max(self.queries_max, other.queries_max)
        self.db_us += other.db_us
        self.n_plus_one += other.n_plus_one
        for method, count in other.methods.items():
            self.methods[method] = self.methods.get(method, 0) + count
        for bucket, (requests, errors, bins) in other.series.items():
            point = self.series.setdefault(bucket, [0, 0, {}])
            point[0] += requests
            point[1] += errors
            histogram.merge(point[2], bins)

    def add(self, bucket: int, snap: dict[str, Any]) -> None:
        self.route = self.route or str(snap.get("route", ""))
        n = int(snap.get("n", 0))
        self.requests += n
        self.errors += int(snap.get("e", 0))
        for i, count in enumerate(snap.get("s", [])[:4]):
            self.status[i] += int(count)
        self.lat_sum += float(snap.get("lsum", 0))
        self.lat_max = max(self.lat_max, float(snap.get("lmax", 0)))
        bins = histogram.decode(snap.get("h", []))
        histogram.merge(self.hist, bins)
        self.queries += int(snap.get("qn", 0))
        self.queries_max = max(self.queries_max, int(snap.get("qmax", 0)))
        self.db_us += int(snap.get("db", 0))
        self.n_plus_one += int(snap.get("n1", 0))
        for method, count in snap.get("m", {}).items():
            self.methods[method] = self.methods.get(method, 0) + int(count)
        for sql, count, time_us, n1 in snap.get("q", []):
            entry = self.templates.setdefault(sql, [0, 0, 0])
            entry[0] += int(count)
            entry[1] += int(time_us)
            entry[2] += int(n1)
        for alias, (count, time_us) in snap.get("a", {}).items():
            entry = self.aliases.setdefault(alias, [0, 0])
            entry[0] += int(count)
            entry[1] += int(time_us)
        for cls, (count, ref, at) in snap.get("x", {}).items():
            entry = self.exceptions.setdefault(cls, [0, "", 0.0])
            entry[0] += int(count)
            if float(at) >= entry[2]:
                entry[1], entry[2] = ref or entry[1], float(at)
        point = self.series.setdefault(bucket, [0, 0, {}])
        point[0] += n
        point[1] += int(snap.get("e", 0))
        histogram.merge(point[2], bins)


def _cap_views(merged: dict[str, _Merged], limit: int) -> None:
    """Keep the ``limit`` busiest views; fold the rest into "(other)" so the document stays bounded."""
    named = [name for name in merged if name != OTHER_VIEW]
    if len(named) <= limit:
        return
    named.sort(key=lambda name: merged[name].requests, reverse=True)
    other = merged.pop(OTHER_VIEW, None) or _Merged()
    for name in named[limit:]:
        other.absorb(merged.pop(name))
    merged[OTHER_VIEW] = other


def _ms(us: float) -> float:
    return round(us / 1000.0, 3)


def _view_dict(name: str, m: _Merged, top: int, bucket_seconds: int, series: bool) -> dict[str, Any]:
    p50, p95, p99 = histogram.quantiles(m.hist, (0.50, 0.95, 0.99))
    requests = max(m.requests, 1)
    ranked = sorted(m.templates.items(), key=lambda item: item[1][1], reverse=True)
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
        "queries": {
            "total": m.queries,
            "mean": round(m.queries / requests, 2),
            "max": m.queries_max,
        },
        "db_time_ms": _ms(m.db_us),
        "n_plus_one": m.n_plus_one,
        "top_queries": [
            {"sql": sql, "count": count, "time_ms": _ms(time_us), "n_plus_one": n1}
            for sql, (count, time_us, n1) in ranked[:top]
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
                "p95_ms": _ms(histogram.quantiles(hist, (0.95,))[0]),
            }
            for bucket, (requests_, errors_, hist) in sorted(m.series.items())
        ]
    return view


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


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

    ``view`` limits the result to one view name; ``series`` adds per-bucket points for charts.
    When memcached cannot be read the result has no views and ``error`` says why.
    """
    config = get_config()
    store = store or get_store()
    bucket_seconds = int(config["BUCKET_SECONDS"])
    window = int(config["WINDOW_SECONDS"])
    if window_seconds is not None:
        window = max(bucket_seconds, min(int(window_seconds), window))
    now = time.time() if now is None else now
    current = int(now // bucket_seconds)
    buckets = list(range(current - math.ceil(window / bucket_seconds) + 1, current + 1))
    result: dict[str, Any] = {
        "window_seconds": window,
        "generated_at": _iso(now),
        "processes": 0,
        "views": [],
    }
    indexes = store.get_many([store.procs_key(b) for b in buckets])
    if indexes is None:
        result["error"] = f"memcached unavailable: {store.last_error or 'circuit breaker open'}"
        return result
    wanted: list[tuple[int, str]] = []
    for bucket in buckets:
        raw = indexes.get(store.procs_key(bucket))
        if raw:
            for process_id in dict.fromkeys(raw.decode("ascii", "replace").split()):
                wanted.append((bucket, process_id))
    snapshots = store.get_many([store.stats_key(b, p) for b, p in wanted]) if wanted else {}
    if snapshots is None:
        result["error"] = f"memcached unavailable: {store.last_error or 'circuit breaker open'}"
        return result
    merged: dict[str, _Merged] = {}
    processes: set[str] = set()
    truncated = False
    for bucket, process_id in wanted:
        snapshot = unpack(snapshots.get(store.stats_key(bucket, process_id)))
        if not isinstance(snapshot, dict):
            continue
        processes.add(process_id)
        truncated = truncated or bool(snapshot.get("truncated"))
        for name, snap in snapshot.get("views", {}).items():
            if view is not None and name != view:
                continue
            try:
                merged.setdefault(name, _Merged()).add(bucket, snap)
            except (TypeError, ValueError, AttributeError):
                continue  # a malformed or foreign value: skip it rather than fail the reader
    _cap_views(merged, int(config["MAX_VIEWS"]))
    result["processes"] = len(processes)
    if truncated:
        result["truncated"] = True
    views = [_view_dict(name, m, top_queries, bucket_seconds, series) for name, m in merged.items()]
    views.sort(key=lambda v: (-v["requests"], v["view"]))
    result["views"] = views
    return result
