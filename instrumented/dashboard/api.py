"""The JSON API: the reader's document, and the stats of the view that serves a given path."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import get_script_prefix, resolve
from django.views.decorators.http import require_safe

from ..access import stats_api
from ..conf import get_config
from ..naming import shorten, view_name, work_kind
from ..pages import detail_url, json_response
from ..stats import queue
from ..stats.document import STATUS_CLASSES, findings
from ..stats.reading import read
from ..stats.snapshot import ViewTotals
from . import samples

#: Longest ``?path=`` accepted: far above any real path, far below abuse.
MAX_PARAM_LENGTH = 2048


def _parse_window(raw: str | None) -> int | None:
    """``?window=`` as whole seconds within the configured window; None when absent. Raises ValueError with a reason."""
    if raw is None or raw == "":
        return None
    limit = get_config().window_seconds
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 7 or not 0 < int(raw) <= limit:
        raise ValueError(f"window must be a whole number of seconds from 1 to {limit}")
    return int(raw)


def zero_view(name: str, route: str) -> dict[str, Any]:
    """A view entry of the reader's schema for a view that had no traffic in the window."""
    return {
        "view": name,
        "kind": work_kind(name, {}),
        "route": route,
        "requests": 0,
        "errors": 0,
        "status": dict.fromkeys(STATUS_CLASSES, 0),
        "latency_ms": {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "samples": 0},
        "queries": {"total": 0, "mean": 0.0, "max": 0},
        "db_time_ms": 0.0,
        "n_plus_one": 0,
        "top_queries": [],
        "methods": {},
        "databases": {},
        "exceptions": [],
        "queue": queue.describe(None),
        **findings(ViewTotals(route), 0),
    }


@require_safe
@stats_api
def api_views(request: HttpRequest) -> HttpResponseBase:
    """Exactly the reader's document; 503 (with its ``error``) when memcached cannot be read."""
    try:
        window = _parse_window(request.GET.get("window"))
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    stats = read(window)
    return json_response(stats, 503 if "error" in stats else 200)


@require_safe
@stats_api
def api_view(request: HttpRequest) -> HttpResponseBase:
    """The stats of the view that serves ``?path=`` (resolved with ``resolve()``, never fetched)."""
    raw = request.GET.get("path")
    if raw is None:
        return json_response({"error": "missing ?path=, e.g. ?path=/shop/"}, 400)
    if len(raw) > MAX_PARAM_LENGTH:
        return json_response({"error": f"path is longer than {MAX_PARAM_LENGTH} characters"}, 400)
    path = raw.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/") or path.startswith("//") or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return json_response({"error": "path must be an absolute path such as /shop/, not a URL"}, 400)
    try:
        path = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return json_response({"error": "path is not valid percent-encoded UTF-8"}, 400)
    prefix = get_script_prefix()
    if prefix != "/" and path.startswith(prefix):
        path = "/" + path[len(prefix) :]
    try:
        match = resolve(path)
    except Http404:
        return json_response({"error": "no view serves this path", "path": path}, 404)
    # The aggregate stores over-long names shortened (with a hash suffix): look them up the same way.
    name = shorten(view_name(match), get_config().max_name_length)
    route = str(match.route or "")
    stats = read(view=name)
    view = next((v for v in stats["views"] if v["view"] == name), None)
    body: dict[str, Any] = {
        "path": path,
        "view": name,
        "route": route,
        "window_seconds": stats["window_seconds"],
        "generated_at": stats["generated_at"],
        "processes": stats["processes"],
        "processes_live": stats.get("processes_live", 0),
        "no_data": view is None,
        "detail_url": detail_url(name),
        "stats": view or zero_view(name, route),
    }
    if stats.get("partial"):
        body["partial"], body["missing"] = True, stats["missing"]
    if "error" in stats:
        body["error"] = stats["error"]
        return json_response(body, 503)
    return json_response(body)


@require_safe
@stats_api
def api_samples(request: HttpRequest) -> HttpResponseBase:
    """The slowest requests of the view ``?name=`` with their timelines (``?min_ms=&max_ms=&limit=&error=``);
    503 (with its ``error``) when memcached cannot be read. Schema: docs/dashboard.md, "Slowest requests"."""
    name = request.GET.get("name", "")
    if not name or len(name) > MAX_PARAM_LENGTH:
        return json_response({"error": "missing ?name=, the view's name (e.g. shop:catalogue)"}, 400)
    try:
        min_ms, max_ms, limit = samples.parse_range(request)
        error = samples.parse_error(request)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    found = samples.read(name, min_ms, max_ms, limit, error)
    return json_response(found, 503 if "error" in found else 200)
