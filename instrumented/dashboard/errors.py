"""The window's errors in the admin look: one row per exception class and raising location, filters by view
and class, and every single occurrence one click away. For technical users only (404 for everyone else).

The errors come from :mod:`instrumented.errors.records`; the traceback pages themselves stay in
:mod:`instrumented.errors.views` (sandboxed, no script).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from ..conf import get_config
from ..display import local_time
from ..errors.records import GROUPED_ERRORS, group_errors, group_key, recent_errors
from ..errors.views import rate_limited, require_technical
from .pages import detail_url, render_page

TEMPLATE = "instrumented/errors/list.html"
#: Filters accepted from the query string (longer values cannot be a view name or a class).
FILTERS = ("view", "exception", "location")
MAX_FILTER_CHARS = 500


def _filters(request: HttpRequest) -> dict[str, str]:
    """The filters of the query string that are set (cut to a sane length)."""
    return {name: value[:MAX_FILTER_CHARS] for name in FILTERS if (value := request.GET.get(name, ""))}


def _matches(meta: dict[str, Any], filters: dict[str, str]) -> bool:
    exception, location = group_key(meta)
    found = {"view": str(meta.get("view") or ""), "exception": exception, "location": location}
    return all(found[name] == value for name, value in filters.items())


def _query(filters: dict[str, str], **changes: str) -> str:
    """This page's URL with ``filters`` changed (an empty value drops a filter)."""
    params = {k: v for k, v in {**filters, **changes}.items() if v}
    return reverse("instrumented:error_list") + ("?" + urlencode(params) if params else "")


def _occurrence(meta: dict[str, Any]) -> dict[str, Any]:
    """One stored error as a row of the occurrence list."""
    ref = meta["ref"]
    view = str(meta.get("view") or "")
    return {
        **meta,
        "when": local_time(meta.get("time")),
        "url": reverse("instrumented:error_detail", args=[ref]),
        "text_url": reverse("instrumented:error_text", args=[ref]),
        "view_url": detail_url(view) if view else None,
        # The request's timeline, when it was among the view's slowest (the view page says so when not).
        "sample_url": f"{detail_url(view)}&error={ref}#samples" if view else None,
    }


def _group(group: dict[str, Any], filters: dict[str, str]) -> dict[str, Any]:
    """One group as a row: times in the site's zone, links to its views, references and occurrences."""
    return {
        **group,
        "first_seen": local_time(group["first"]),
        "last_seen": local_time(group["last"]),
        "views": [{"name": v, "count": n, "url": detail_url(v) if v else None} for v, n in group["views"]],
        "references": [
            {"ref": ref, "url": reverse("instrumented:error_detail", args=[ref])} for ref in group["references"]
        ],
        "occurrences_url": _query(filters, exception=group["exception"], location=group["location"] or "", show="all"),
    }


@require_safe
def error_list(request: HttpRequest) -> HttpResponseBase:
    """Grouped by exception class and raising location (``?show=all``: every occurrence), newest first."""
    require_technical(request)
    if rate_limited(request):
        response = render_page(request, TEMPLATE, {"title": "Too many lookups", "limited": True}, status=429)
        response["Retry-After"] = "60"
        return response
    errors, problem = recent_errors(GROUPED_ERRORS)
    filters = _filters(request)
    chosen = [meta for meta in errors if _matches(meta, filters)]
    show_all = request.GET.get("show") == "all"
    context: dict[str, Any] = {
        "title": "Recent errors",
        "problem": problem,
        "window": get_config().window_seconds,
        "filters": filters,
        "show_all": show_all,
        "stored": len(errors),
        "shown": len(chosen),
        "view_choices": sorted({str(m.get("view") or "") for m in errors} - {""}),
        "exception_choices": sorted({group_key(m)[0] for m in errors} - {""}),
        "grouped_url": _query(filters, show=""),
        "all_url": _query(filters, show="all"),
        "clear_url": _query({}, show="all" if show_all else ""),
    }
    if show_all:
        context["occurrences"] = [_occurrence(meta) for meta in chosen]
    else:
        context["groups"] = [_group(group, filters) for group in group_errors(chosen)]
    return render_page(request, TEMPLATE, context)
