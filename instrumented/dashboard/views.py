"""Dashboard pages, the JSON API and the bookmarklet page; every response is private and never cached.

All numbers come from :func:`instrumented.reader.read_stats`; these views only check who is asking,
validate input, and present the reader's document.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, get_script_prefix, resolve, reverse
from django.views.decorators.http import require_safe

from ..access import can_view_stats, get_user, is_technical_user, protect
from ..conf import get_config
from ..display import pretty_sql
from ..naming import shorten, view_name
from ..stats.reader import STATUS_CLASSES, read_stats
from . import bookmarklet, charts

logger = logging.getLogger("instrumented")

#: How often the dashboard table refreshes itself (milliseconds).
REFRESH_MS = 3000
#: Longest ``?path=`` / ``?name=`` accepted: far above any real path or view name, far below abuse.
MAX_PARAM_LENGTH = 2048


# -- helpers ------------------------------------------------------------------------------------
def page_csp() -> str:
    """The dashboard's own Content-Security-Policy: only same-origin (or STATIC_URL-origin) files, nothing inline.

    The pages show strings chosen by others (view names, SQL, exception classes), so script injection
    must be impossible even if escaping were ever missed.
    """
    static = ""
    parts = urlsplit(str(getattr(settings, "STATIC_URL", "") or ""))
    if parts.scheme in ("http", "https") and parts.netloc:
        static = f" {parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'self'; script-src 'self'{static}; style-src 'self'{static}; img-src 'self' data:{static}; "
        f"font-src 'self'{static}; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _json(data: dict[str, Any], status: int = 200) -> HttpResponseBase:
    """A protected JSON response (unicode kept readable)."""
    return protect(JsonResponse(data, status=status, json_dumps_params={"ensure_ascii": False}))


def _page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponseBase:
    """Render a dashboard page inside the admin's look, with the strict CSP and the stats headers."""
    base = _base_context(request)
    base.update(context)
    response = render(request, template, base, status=status)
    response["Content-Security-Policy"] = page_csp()
    return protect(response)


def _base_context(request: HttpRequest) -> dict[str, Any]:
    """Extend the admin's ``base_site.html`` when the admin is mounted, else a standalone base with the same look."""
    context: dict[str, Any] = {
        "base_template": "instrumented/dashboard/standalone_base.html",
        "dashboard_url": reverse("instrumented:dashboard"),
        "bookmarklet_page_url": reverse("instrumented:bookmarklet"),
        "admin_index_url": None,
    }
    try:
        admin_index_url = reverse("admin:index")
    except NoReverseMatch:
        return context
    from django.contrib import admin

    context.update(admin.site.each_context(request))
    # The wide table needs the width the admin's app sidebar would take.
    context.update(base_template="admin/base_site.html", admin_index_url=admin_index_url, is_nav_sidebar_enabled=False)
    return context


def _login_url() -> str:
    """The admin's login page if the admin is mounted, else ``settings.LOGIN_URL``."""
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        return str(settings.LOGIN_URL)


def _page_denied(request: HttpRequest) -> HttpResponseBase | None:
    """None when the user may see stats; else a redirect to the login page that comes back here."""
    if can_view_stats(request):
        return None
    return protect(redirect_to_login(request.get_full_path(), _login_url()))


def _api_denied(request: HttpRequest) -> HttpResponseBase | None:
    """None when the user may see stats; else 401 (not logged in) or 403 (logged in, not allowed) as JSON."""
    if can_view_stats(request):
        return None
    user = get_user(request)
    if user is None or not user.is_authenticated:
        return _json({"error": "authentication required: log in as a staff user", "login_url": _login_url()}, 401)
    return _json({"error": "permission denied: your account may not see stats"}, 403)


def _read(window: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """``read_stats()``; should the reader itself fail, "no data" with the reason (traceback logged), never a 500."""
    try:
        return read_stats(window, **kwargs)
    except Exception as exc:  # logged with its traceback: the page must say why it has no data, not fail
        logger.exception("django-instrumented: reading stats failed")
        return {
            "window_seconds": window or get_config().window_seconds,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "processes": 0,
            "views": [],
            "error": f"reading stats failed: {type(exc).__name__}",
        }


def _parse_window(raw: str | None) -> int | None:
    """``?window=`` as whole seconds within the configured window; None when absent. Raises ValueError with a reason."""
    if raw is None or raw == "":
        return None
    limit = get_config().window_seconds
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 7 or not 0 < int(raw) <= limit:
        raise ValueError(f"window must be a whole number of seconds from 1 to {limit}")
    return int(raw)


def detail_url(name: str) -> str:
    """The per-view page of ``name`` (view names contain ':' and any unicode, so they travel as a query value)."""
    return reverse("instrumented:view_detail") + "?name=" + quote(name, safe="")


def zero_view(name: str, route: str) -> dict[str, Any]:
    """A view entry of the reader's schema for a view that had no traffic in the window."""
    return {
        "view": name,
        "route": route,
        "requests": 0,
        "errors": 0,
        "status": dict.fromkeys(STATUS_CLASSES, 0),
        "latency_ms": {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0},
        "queries": {"total": 0, "mean": 0.0, "max": 0},
        "db_time_ms": 0.0,
        "n_plus_one": 0,
        "top_queries": [],
        "methods": {},
        "databases": {},
        "exceptions": [],
    }


def derived(view: dict[str, Any], window_seconds: int) -> dict[str, Any]:
    """Numbers the table shows but the reader does not store: rates and shares (the JS computes the same)."""
    requests = view["requests"]
    busy_ms = view["latency_ms"]["mean"] * requests
    return {
        "per_minute": requests * 60.0 / max(window_seconds, 1),
        "error_rate": view["errors"] / requests if requests else 0.0,
        "db_share": min(view["db_time_ms"] / busy_ms, 1.0) if busy_ms > 0 else 0.0,
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


# -- pages --------------------------------------------------------------------------------------
@require_safe
def dashboard(request: HttpRequest) -> HttpResponseBase:
    """All views of the window in one table; ``dashboard.js`` keeps it fresh from the API."""
    denied = _page_denied(request)
    if denied is not None:
        return denied
    stats = _read()
    rows = [{"v": v, "d": derived(v, stats["window_seconds"]), "url": detail_url(v["view"])} for v in stats["views"]]
    context = {
        "title": "Live view stats",
        "stats": stats,
        "rows": rows,
        "api_url": reverse("instrumented:api_views"),
        "detail_base": reverse("instrumented:view_detail") + "?name=",
        "refresh_ms": REFRESH_MS,
        "refresh_seconds": f"{REFRESH_MS / 1000:g}",
        "bookmarklet_href": bookmarklet.href(),
    }
    return _page(request, "instrumented/dashboard/dashboard.html", context)


@require_safe
def view_detail(request: HttpRequest) -> HttpResponseBase:
    """One view: latency distribution, throughput and p95 over time, its SQL, N+1 suspects and errors."""
    denied = _page_denied(request)
    if denied is not None:
        return denied
    name = request.GET.get("name", "")
    if not name or len(name) > MAX_PARAM_LENGTH:
        problem = "Give the view's name as ?name=… (follow a link on the dashboard)."
        context = {"title": "View stats", "problem": problem}
        return _page(request, "instrumented/dashboard/view_detail.html", context, status=400)
    stats = _read(view=name, series=True, top_queries=20)
    view = next((v for v in stats["views"] if v["view"] == name), None)
    context: dict[str, Any] = {"title": name, "name": name, "stats": stats, "view": view}
    if view is not None:
        technical = is_technical_user(request)
        queries = [
            {**q, "pretty": pretty_sql(q["sql"])} for q in view["top_queries"]
        ]
        points = _full_series(view.get("series", []), stats)
        context.update(
            derived=derived(view, stats["window_seconds"]),
            queries=queries[:10],
            suspects=[q for q in queries if q["n_plus_one"]],
            errors=[{**e, "link": _error_link(e["last_reference"]) if technical else None} for e in view["exceptions"]],
            latency_svg=charts.latency_distribution(view["latency_ms"], view["requests"], view.get("histogram")),
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
    return _page(request, "instrumented/dashboard/view_detail.html", context)


def _full_series(series: list[dict[str, Any]], stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bucket of the window, oldest first, with zeros where the view had no traffic."""
    bucket_seconds = get_config().bucket_seconds
    now = datetime.fromisoformat(stats["generated_at"]).timestamp()
    current = int(now // bucket_seconds)
    count = max(1, -(-int(stats["window_seconds"]) // bucket_seconds))
    by_bucket = {int(datetime.fromisoformat(p["t"]).timestamp()) // bucket_seconds: p for p in series}
    empty = {"requests": 0, "errors": 0, "p95_ms": 0.0}
    return [by_bucket.get(b, empty) for b in range(current - count + 1, current + 1)]


@require_safe
def bookmarklet_page(request: HttpRequest) -> HttpResponseBase:
    """The drag-me link and what it does."""
    denied = _page_denied(request)
    if denied is not None:
        return denied
    href = bookmarklet.href()
    context = {"title": "Stats bookmarklet", "bookmarklet_href": href, "bookmarklet_size": len(href)}
    return _page(request, "instrumented/dashboard/bookmarklet.html", context)


# -- JSON API -----------------------------------------------------------------------------------
@require_safe
def api_views(request: HttpRequest) -> HttpResponseBase:
    """Exactly the reader's document; 503 (with its ``error``) when memcached cannot be read."""
    denied = _api_denied(request)
    if denied is not None:
        return denied
    try:
        window = _parse_window(request.GET.get("window"))
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    stats = _read(window)
    return _json(stats, 503 if "error" in stats else 200)


@require_safe
def api_view(request: HttpRequest) -> HttpResponseBase:
    """The stats of the view that serves ``?path=`` (resolved with ``resolve()``, never fetched)."""
    denied = _api_denied(request)
    if denied is not None:
        return denied
    raw = request.GET.get("path")
    if raw is None:
        return _json({"error": "missing ?path=, e.g. ?path=/shop/"}, 400)
    if len(raw) > MAX_PARAM_LENGTH:
        return _json({"error": f"path is longer than {MAX_PARAM_LENGTH} characters"}, 400)
    path = raw.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/") or path.startswith("//") or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return _json({"error": "path must be an absolute path such as /shop/, not a URL"}, 400)
    try:
        path = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return _json({"error": "path is not valid percent-encoded UTF-8"}, 400)
    prefix = get_script_prefix()
    if prefix != "/" and path.startswith(prefix):
        path = "/" + path[len(prefix) :]
    try:
        match = resolve(path)
    except Http404:
        return _json({"error": "no view serves this path", "path": path}, 404)
    # The aggregate stores over-long names shortened (with a hash suffix): look them up the same way.
    name = shorten(view_name(match), get_config().max_name_length)
    route = str(match.route or "")
    stats = _read(view=name)
    view = next((v for v in stats["views"] if v["view"] == name), None)
    body: dict[str, Any] = {
        "path": path,
        "view": name,
        "route": route,
        "window_seconds": stats["window_seconds"],
        "generated_at": stats["generated_at"],
        "processes": stats["processes"],
        "no_data": view is None,
        "detail_url": detail_url(name),
        "stats": view or zero_view(name, route),
    }
    if "error" in stats:
        body["error"] = stats["error"]
        return _json(body, 503)
    return _json(body)
