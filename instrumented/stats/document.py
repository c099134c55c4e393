"""The stats document: what :func:`instrumented.stats.reader.read_stats` returns and every face reads (dashboard,
JSON API, metrics, terminal view, Explain), built here from the merged ViewTotals; the reader only reads memcached.

Its shape: :class:`StatsDocument` (the whole window), :class:`SeriesPoint` (a view's per-bucket point, with its
bucket number), a view's entry (:func:`view_dict`) with its findings (:func:`findings`, :func:`template_time`);
and the rates derived from it, once (:func:`rate_seconds`, :func:`per_second`, :func:`per_minute`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from ..naming import work_kind
from . import histogram, queue
from .sites import describe as describe_site
from .sites import describe_hint
from .snapshot import ViewTotals
from .sql import CONTROL, WRITE, kind_of, write_hint

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
#: Percentiles resting on fewer requests than this are shown with their count (nearest rank: p95 of 3 is the max).
FEW_SAMPLES = 20


def ms(us: float) -> float:
    """Microseconds as the document's milliseconds (3 decimals)."""
    return round(us / 1000.0, 3)


def iso(ts: float) -> str:
    """A unix time as the document's ISO 8601 (UTC, seconds)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class SeriesPoint(TypedDict):
    """One bucket of a view's ``series``: ``bucket`` (unix time // BUCKET_SECONDS) and its start ``t`` (ISO)."""

    bucket: int
    t: str
    requests: int
    errors: int
    p95_ms: float


def _p95(encoded: list[str]) -> float:
    dense = histogram.new()
    for part in encoded:
        histogram.merge_encoded(dense, part)
    return histogram.quantiles(dense, (0.95,))[0]


def view_dict(name: str, m: ViewTotals, top: int, bucket_seconds: int, series: bool) -> dict[str, Any]:
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
            "mean": ms(m.lat_sum / requests),
            # Estimates never exceed the exact maximum.
            "p50": ms(min(p50, m.lat_max)),
            "p95": ms(min(p95, m.lat_max)),
            "p99": ms(min(p99, m.lat_max)),
            "max": ms(m.lat_max),
            # What the percentiles rest on: below FEW_SAMPLES, pages say so beside them.
            "samples": sum(m.hist),
        },
        "queries": {"total": m.queries, "mean": round(m.queries / requests, 2), "max": m.queries_max},
        "db_time_ms": ms(m.db_us),
        "n_plus_one": m.n_plus_one,
        "top_queries": [
            {"sql": sql, "count": count, "time_ms": ms(time_us), "n_plus_one": n1}
            for sql, (count, time_us, n1) in m.ranked_templates()[:top]
        ],
        "methods": dict(sorted(m.methods.items())),
        "databases": {
            alias: {"queries": count, "time_ms": ms(time_us)} for alias, (count, time_us) in sorted(m.aliases.items())
        },
        "exceptions": [
            {"class": cls, "count": count, "last_reference": ref or None, "last_at": iso(at) if at else None}
            for cls, (count, ref, at) in sorted(m.exceptions.items(), key=lambda item: -item[1][0])
        ],
        "queue": queue.describe(m.queue),
    }
    view.update(findings(m, top))
    if series:
        view["series"] = [
            {
                "bucket": bucket,
                "t": iso(bucket * bucket_seconds),
                "requests": requests_,
                "errors": errors_,
                "p95_ms": ms(_p95(encoded)),
            }
            for bucket, (requests_, errors_, encoded) in sorted(m.series.items())
        ]
        view["histogram"] = [
            {"le_ms": ms(histogram.bin_value(index)), "count": count} for index, count in enumerate(m.hist) if count
        ]
    return view


def _sites(sites: dict[str, list[Any]]) -> list[dict[str, Any]]:
    ranked = sorted(sites.items(), key=lambda item: item[1][0], reverse=True)
    return [{**describe_site(site), "requests": count, **describe_hint(hint)} for site, (count, hint) in ranked]


def _cache_entry(calls: int, time_us: float, hits: int, misses: int) -> dict[str, Any]:
    reads = hits + misses
    hit_rate = round(hits / reads, 4) if reads else None
    return {"calls": calls, "time_ms": ms(time_us), "hits": hits, "misses": misses, "hit_rate": hit_rate}


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
        return no_findings()  # most views: the same answer, without sorting and summing empty tables
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
            "time_ms": ms(time_us),
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
        {"sql": sql, "slow": s, "max_ms": ms(slowest), "call_sites": _sites(slow_sites)}
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
        "time_ms": ms(http_totals[1]),
        "errors": http_totals[2],
        "origins": [
            {"origin": where, "calls": n, "time_ms": ms(us), "errors": errors, "max_ms": ms(mx)}
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
        "time_ms": ms(total_us),
        "sql_ms": ms(sql_us),
        "mean_ms": ms(total_us / m.requests) if m.requests else 0.0,
        "renders": sum(entry[0] for entry in m.renders.values()),
        "names": [
            {"name": name, "renders": n, "time_ms": ms(us), "sql_ms": ms(sql), "per_render_ms": ms(us / max(n, 1))}
            for name, (n, us, sql) in ranked
        ],
    }


def no_findings() -> dict[str, Any]:
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


def rate_seconds(stats: dict[str, Any]) -> float:
    """What a document's rates divide by: the covered span, else the window (at least 1 s).

    Rates are over the span the data covers, not the whole window: a site that started 40 s ago has 40 s of
    data, and dividing its requests by 300 s showed a seventh of its real rate."""
    return max(float(stats.get("covered_seconds") or stats["window_seconds"]), 1.0)


def per_second(count: float, span_seconds: float) -> float:
    """``count`` (requests, errors…) of a document spanning ``span_seconds`` (:func:`rate_seconds`) a second."""
    return count / max(span_seconds, 1.0)


def per_minute(count: float, span_seconds: float) -> float:
    """``count`` a minute, as :func:`per_second` (the dashboard's column; dashboard.js computes the same)."""
    return count * 60.0 / max(span_seconds, 1.0)


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


def empty_document(window_seconds: int, now: float) -> StatsDocument:
    """A document with no views yet (what a read starts from, and "no data" with its ``error``)."""
    return {
        "window_seconds": window_seconds,
        "generated_at": iso(now),
        "processes": 0,
        "processes_live": 0,
        "command_processes": 0,
        "views": [],
        "queue": queue_document({}, set()),
    }


def queue_document(waits: dict[str, list[Any]], live: set[str]) -> dict[str, Any]:
    """The window's request queue time, every process together and each process apart (slowest p95 first)."""
    total = queue.new()
    for entry in waits.values():
        queue.merge(total, entry)
    per_process = [{"process": p, "live": p in live, **queue.describe(e)} for p, e in waits.items()]
    per_process.sort(key=lambda item: (-item["p95_ms"], item["process"]))
    return {**queue.describe(total), "processes": per_process[: queue.MAX_PROCESSES]}
