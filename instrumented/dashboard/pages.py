"""What every page of the package shares: the admin look, the strict CSP, the access gates, the reader call.

The dashboard, the API and the DBA panel render through :func:`render_page` / :func:`json_response`, so
each response carries the stats headers (:func:`instrumented.access.protect`) and the page CSP.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from django.apps import apps
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from ..access import can_view_stats, get_user, is_technical_user, protect
from ..conf import get_config
from ..display import zone_name
from ..failopen import fail_open
from ..stats.reader import read_stats


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


def json_response(data: dict[str, Any], status: int = 200) -> HttpResponseBase:
    """A protected JSON response (unicode kept readable)."""
    return protect(JsonResponse(data, status=status, json_dumps_params={"ensure_ascii": False}))


def render_page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponseBase:
    """Render a dashboard page inside the admin's look, with the strict CSP and the stats headers."""
    if not apps.is_installed("instrumented"):
        return not_installed_response()
    base = _base_context(request)
    base.update(context)
    response = render(request, template, base, status=status)
    response["Content-Security-Policy"] = page_csp()
    return protect(response)


def not_installed_response() -> HttpResponseBase:
    """What a page says when its URLs are mounted but the app is not in INSTALLED_APPS (its templates are not
    found): the fix, in plain text, rather than a bare 500 of ``TemplateDoesNotExist``."""
    from ..checks import NOT_INSTALLED_HINT, NOT_INSTALLED_PROBLEM

    text = f"django-instrumented: {NOT_INSTALLED_PROBLEM}\n\n{NOT_INSTALLED_HINT}\n"
    response = HttpResponse(text, status=503, content_type="text/plain; charset=utf-8")
    return protect(response)


def _base_context(request: HttpRequest) -> dict[str, Any]:
    """Extend the admin's ``base_site.html`` when the admin is mounted, else a standalone base with the same look."""
    context: dict[str, Any] = {
        "base_template": "instrumented/dashboard/standalone_base.html",
        "dashboard_url": reverse("instrumented:dashboard"),
        "bookmarklet_page_url": reverse("instrumented:bookmarklet"),
        "admin_index_url": None,
        "time_zone": zone_name(),
        "errors_url": errors_url() if is_technical_user(request) else None,
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


def errors_url() -> str | None:
    """The grouped error list, when the error pages are mounted (``instrumented.urls`` mounts both)."""
    try:
        reverse("instrumented:error_detail", args=["0" * 14])
        return reverse("instrumented:error_list")
    except NoReverseMatch:
        return None


def login_url() -> str:
    """The admin's login page if the admin is mounted, else ``settings.LOGIN_URL``."""
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        return str(settings.LOGIN_URL)


def page_denied(request: HttpRequest) -> HttpResponseBase | None:
    """None when the user may see stats; else a redirect to the login page that comes back here."""
    if can_view_stats(request):
        return None
    return protect(redirect_to_login(request.get_full_path(), login_url()))


def api_denied(request: HttpRequest) -> HttpResponseBase | None:
    """None when the user may see stats; else 401 (not logged in) or 403 (logged in, not allowed) as JSON."""
    if can_view_stats(request):
        return None
    user = get_user(request)
    if user is None or not user.is_authenticated:
        body = {"error": "authentication required: log in as a staff user", "login_url": login_url()}
        return json_response(body, 401)
    return json_response({"error": "permission denied: your account may not see stats"}, 403)


def read(window: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """``read_stats()``; should the reader itself fail, "no data" with the reason (failure counted), never a 500."""
    with fail_open("reading stats failed") as failed:
        return dict(read_stats(window, **kwargs))
    return {
        "window_seconds": window or get_config().window_seconds,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "processes": 0,
        "processes_live": 0,
        "command_processes": 0,
        "views": [],
        "error": f"reading stats failed: {type(failed.error).__name__}",
    }


def detail_url(name: str) -> str:
    """The per-view page of ``name`` (view names contain ':' and any unicode, so they travel as a query value)."""
    return reverse("instrumented:view_detail") + "?name=" + quote(name, safe="")
