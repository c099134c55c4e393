"""Dashboard pages: the table of every view, one view's detail with charts, the bookmarklet page.

All numbers come from :func:`instrumented.stats.reader.read_stats` (through :func:`instrumented.stats.reading.read`);
these views only validate input and present the reader's document (who may ask: the gates of
:mod:`instrumented.access`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_safe

from ..access import is_technical_user, stats_page
from ..conf import get_config
from ..display import pretty_sql
from ..naming import REQUEST
from ..pages import detail_url, render_page
from ..stats.document import per_minute, rate_seconds
from ..stats.reading import read
from ..stats.sql import kind_of
from . import bookmarklet, charts, samples
from .waterfall import waterfall

#: How often the dashboard table refreshes itself (milliseconds).
REFRESH_MS = 3000
#: Longest ``?path=`` / ``?name=`` accepted: far above any real path or view name, far below abuse.
MAX_PARAM_LENGTH = 2048


def derived(view: dict[str, Any], span_seconds: float) -> dict[str, Any]:
    """Numbers the table shows but the reader does not store: rates and shares (the JS computes the same).

    ``span_seconds`` is what the data covers (``rate_seconds(stats)``), not the whole window.
    """
    requests = view["requests"]
    busy_ms = view["latency_ms"]["mean"] * requests
    return {
        "per_minute": per_minute(requests, span_seconds),
        "error_rate": view["errors"] / requests if requests else 0.0,
        "db_share": min(view["db_time_ms"] / busy_ms, 1.0) if busy_ms > 0 else 0.0,
        "cache_hit_rate": view["cache"]["hit_rate"],
        "http_ms": view["http"]["time_ms"] / requests if requests else 0.0,
    }


def _error_link(reference: str | None) -> str | None:
    """The traceback page of an error reference, if that page exists (it is another feature's URL)."""
    if not reference:
        return None
    for kwargs in ({"reference": reference}, {"ref": reference}):
        try:
            return reverse("instrumented:error_detail", kwargs=kwargs)
        except NoReverseMatch:
            continue
    try:
        return reverse("instrumented:error_detail", args=[reference])
    except NoReverseMatch:
        return None


def querylog_configured() -> bool:
    """The DBA panel is linked only where a DATABASES alias goes through the MySQL proxy (a site on SQLite or
    PostgreSQL has none: the panel would only say so)."""
    config = get_config()
    return any(alias in settings.DATABASES for alias in config.querylog_databases)


@require_safe
@stats_page
def dashboard(request: HttpRequest) -> HttpResponseBase:
    """All views of the window in one table; ``dashboard.js`` keeps it fresh from the API."""
    stats = read()
    rows = [{"v": v, "d": derived(v, rate_seconds(stats)), "url": detail_url(v["view"])} for v in stats["views"]]
    # Commands, tasks and record() blocks have their own table: a one-off `migrate` is no view's worst p95.
    views = [row for row in rows if row["v"].get("kind", REQUEST) == REQUEST]
    worst = max((row["v"]["latency_ms"]["p95"] for row in views), default=0.0) if len(views) > 1 else 0.0
    context = {
        # Columns shown only when some view has data for them (dashboard.js decides again on each refresh).
        "has_cache": any(row["v"]["cache"]["calls"] for row in views),
        "has_http": any(row["v"]["http"]["calls"] for row in views),
        "has_queue": any(row["v"].get("queue", {}).get("requests") for row in views),
        "has_templates": any(row["v"]["templates"]["renders"] for row in views),
        "title": "Live view stats",
        "stats": stats,
        "rows": views,
        "work_rows": [row for row in rows if row["v"].get("kind", REQUEST) != REQUEST],
        "worst_p95": worst,
        "api_url": reverse("instrumented:api_views"),
        "detail_base": reverse("instrumented:view_detail") + "?name=",
        "refresh_ms": REFRESH_MS,
        "refresh_seconds": f"{REFRESH_MS / 1000:g}",
        "bookmarklet_href": bookmarklet.href(),
        "querylog_configured": querylog_configured(),
    }
    return render_page(request, "instrumented/dashboard/dashboard.html", context)


@require_safe
@stats_page
def view_detail(request: HttpRequest) -> HttpResponseBase:
    """One view: latency distribution, throughput and p95 over time, its SQL, N+1 suspects and errors."""
    name = request.GET.get("name", "")
    if not name or len(name) > MAX_PARAM_LENGTH:
        problem = "Give the view's name as ?name=… (follow a link on the dashboard)."
        return render_page(
            request, "instrumented/dashboard/view_detail.html", {"title": "View stats", "problem": problem}, status=400
        )
    stats = read(view=name, series=True, top_queries=20)
    view = next((v for v in stats["views"] if v["view"] == name), None)
    context: dict[str, Any] = {
        "title": name,
        "name": name,
        "stats": stats,
        "view": view,
        "querylog_configured": querylog_configured(),
    }
    context["profiling"] = _profiling_section(request, name)
    if view is not None:
        technical = is_technical_user(request)
        context.update(slowest_requests(request, name, view, technical))
        queries = [{**q, "pretty": pretty_sql(q["sql"]), "kind": kind_of(q["sql"])} for q in view["top_queries"]]
        points = _full_series(view.get("series", []), stats)
        context.update(
            derived=derived(view, rate_seconds(stats)),
            queries=queries[:10],
            suspects=view["n_plus_one_suspects"],
            writes=view["write_suspects"],
            duplicates=view["duplicate_queries"],
            slow=view["slow_queries"],
            slow_query_ms=get_config().slow_query_ms,
            errors=[{**e, "link": _error_link(e["last_reference"]) if technical else None} for e in view["exceptions"]],
            latency_svg=charts.latency_distribution(
                view["latency_ms"],
                view["requests"],
                view.get("histogram"),
                link=lambda low, high: f"{detail_url(name)}&min_ms={low:.3f}&max_ms={high:.3f}#samples",
            ),
            throughput_svg=charts.bars(
                [p["requests"] for p in points],
                label="requests per 10 s",
                window_seconds=stats["window_seconds"],
                marks=[p["errors"] for p in points],
            ),
            p95_svg=charts.bars(
                [p["p95_ms"] for p in points],
                label="p95 latency (ms) per 10 s",
                window_seconds=stats["window_seconds"],
                unit="ms",
            ),
        )
    return render_page(request, "instrumented/dashboard/view_detail.html", context)


def _profiling_section(request: HttpRequest, name: str) -> dict[str, Any] | None:
    """The profiles part of the view page (superusers only; it lives in the profiling package)."""
    from ..profiling.views import view_section

    return view_section(request, name)


def slowest_requests(request: HttpRequest, name: str, view: dict[str, Any], technical: bool) -> dict[str, Any]:
    """The "Slowest requests" section: the worst samples (of a latency range, ``?min_ms=&max_ms=``), each
    with its waterfall; links to the tail of the distribution (p95 and up, p99 and up)."""
    try:
        min_ms, max_ms, limit = samples.parse_range(request)
        error = samples.parse_error(request)
    except ValueError as exc:
        return {"samples_problem": str(exc)}
    found = samples.read(name, min_ms, max_ms, limit, error)
    shown = [
        {
            **sample,
            "svg": waterfall(sample),
            "error_link": _error_link(sample["error_reference"]) if technical else None,
        }
        for sample in found["samples"]
    ]
    base = detail_url(name)
    latency = view["latency_ms"]
    ranges = [
        ("all", base),
        (f"p95 and up (≥ {latency['p95']:.1f} ms)", f"{base}&min_ms={latency['p95']}"),
        (f"p99 and up (≥ {latency['p99']:.1f} ms)", f"{base}&min_ms={latency['p99']}"),
    ]
    return {
        "samples": shown,
        "samples_doc": found,
        "samples_range": (min_ms, max_ms),
        "samples_error": error,
        "samples_ranges": ranges,
        "samples_per_view": get_config().samples_per_view,
        "p99_samples_url": f"{base}&min_ms={latency['p99']}#samples",
    }


def _full_series(series: list[dict[str, Any]], stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bucket of the window, oldest first, with zeros where the view had no traffic."""
    bucket_seconds = get_config().bucket_seconds
    now = datetime.fromisoformat(stats["generated_at"]).timestamp()
    current = int(now // bucket_seconds)
    count = max(1, -(-int(stats["window_seconds"]) // bucket_seconds))
    by_bucket = {p["bucket"]: p for p in series}
    empty = {"requests": 0, "errors": 0, "p95_ms": 0.0}
    return [by_bucket.get(b, empty) for b in range(current - count + 1, current + 1)]


@require_safe
@stats_page
def bookmarklet_page(request: HttpRequest) -> HttpResponseBase:
    """The drag-me link and what it does."""
    href = bookmarklet.href()
    context = {"title": "Stats bookmarklet", "bookmarklet_href": href, "bookmarklet_size": len(href)}
    return render_page(request, "instrumented/dashboard/bookmarklet.html", context)
