"""Who may see stats, tracebacks and the DBA panel: the predicates, the gates as view decorators, and the headers
every such response carries.

A feature's view takes its gate from here, each with its refusal: :func:`stats_page` (login redirect),
:func:`stats_api` (401/403 JSON), :func:`technical` (404, so a reference is never confirmed),
:func:`querylog_control` (login redirect or a 403 page) and :func:`metrics_access` (bearer token or a stats
session; plain-text 401/403). Each works on sync and async views alike (as Django's own decorators do). Every
check answers False rather than raise; every response that shows stats, SQL or tracebacks is private, never
cached, never framed.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.module_loading import import_string

from .conf import get_config
from .failopen import fail_open

logger = logging.getLogger("instrumented")

#: For traceback pages, live and stored: no script runs at all, and the opaque origin has no cookies.
SANDBOX_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


def protect(response: HttpResponseBase, *, sandbox: bool = False) -> HttpResponseBase:
    """Mark ``response`` private and uncacheable, vary it on the cookie, deny framing."""
    add_never_cache_headers(response)
    response["Cache-Control"] = "private, no-store, no-cache, must-revalidate, max-age=0"
    patch_vary_headers(response, ("Cookie",))
    response["X-Frame-Options"] = "DENY"
    response["Referrer-Policy"] = "same-origin"
    response["X-Content-Type-Options"] = "nosniff"
    response.xframe_options_exempt = False
    if sandbox:
        response["Content-Security-Policy"] = SANDBOX_CSP
        response["Referrer-Policy"] = "no-referrer"
    return response


def _callback(path: str | Callable[..., Any] | None) -> Callable[[Any], bool] | None:
    """The configured callback itself (a dotted path is imported), or None."""
    if not path:
        return None
    return path if callable(path) else import_string(path)


def get_user(request: HttpRequest) -> Any:
    """``request.user`` if it can be loaded, else None (no auth middleware, broken session or DB)."""
    try:
        user = getattr(request, "user", None)
        if user is None:
            return None
        user.is_authenticated  # noqa: B018 - forces the lazy user to load here, inside the try
        return user
    except Exception:
        logger.debug("django-instrumented: could not load request.user", exc_info=True)
        return None


def is_technical_user(request: HttpRequest) -> bool:
    """May see tracebacks: an active superuser, or whatever SUPERUSER_CALLBACK(user) says."""
    user = get_user(request)
    if user is None:
        return False
    with fail_open("SUPERUSER_CALLBACK failed"):
        callback = _callback(get_config().superuser_callback)
        if callback is not None:
            return bool(callback(user))
        return bool(user.is_active and user.is_superuser)
    return False


def can_view_stats(request: HttpRequest) -> bool:
    """May see the dashboard and API: active staff, or whatever PERMISSION_CALLBACK(request) says."""
    with fail_open("PERMISSION_CALLBACK failed"):
        callback = _callback(get_config().permission_callback)
        if callback is not None:
            return bool(callback(request))
        user = get_user(request)
        return bool(user is not None and user.is_active and user.is_staff)
    return False


#: The permission (app label + codename) that opens the DBA panel to users who are not superusers.
QUERYLOG_PERMISSION = "instrumented.control_querylog"


def can_control_querylog(user: Any) -> bool:
    """May use the DBA panel: an active superuser, or an active user granted ``instrumented.control_querylog``."""
    with fail_open(f"checking {QUERYLOG_PERMISSION} failed"):  # a broken auth backend must not open (or crash) it
        return bool(user is not None and user.is_active and (user.is_superuser or user.has_perm(QUERYLOG_PERMISSION)))
    return False


#: The permission that lets users who are not superusers explain the statements a view page shows.
EXPLAIN_PERMISSION = "instrumented.explain_sql"


def can_explain(request: HttpRequest) -> bool:
    """May see query plans: whoever may see tracebacks (SUPERUSER_CALLBACK), or an active user granted
    ``instrumented.explain_sql``."""
    if is_technical_user(request):
        return True
    user = get_user(request)
    with fail_open(f"checking {EXPLAIN_PERMISSION} failed"):
        return bool(user is not None and user.is_active and user.has_perm(EXPLAIN_PERMISSION))
    return False


# -- the gates ---------------------------------------------------------------------------------------------------------

View = TypeVar("View", bound=Callable[..., Any])
#: A gate's check: None lets the request through; a response (or Http404 raised) is its refusal.
Check = Callable[[HttpRequest], HttpResponseBase | None]


#: The attribute a gated view carries: its gate's name (``functools.wraps`` keeps it through outer decorators).
GATE_ATTRIBUTE = "instrumented_gate"


def gate(name: str, check: Check) -> Callable[[View], View]:
    """A view decorator from ``check``: the view runs only when the check answers None.

    Async views get an async wrapper whose check (which may load the user from the session and database) runs in
    a thread, as Django's ``user_passes_test`` does; the refusal is the check's own. The wrapper carries
    ``instrumented_gate = name``, so a test can see that every page has its gate.
    """

    def decorator(view: View) -> View:
        if iscoroutinefunction(view):

            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                refusal = await sync_to_async(check)(request)
                if refusal is not None:
                    return refusal
                return await view(request, *args, **kwargs)

            functools.update_wrapper(async_wrapper, view)
            setattr(async_wrapper, GATE_ATTRIBUTE, name)
            return cast(View, async_wrapper)

        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refusal = check(request)
            if refusal is not None:
                return refusal
            return view(request, *args, **kwargs)

        functools.update_wrapper(wrapper, view)
        setattr(wrapper, GATE_ATTRIBUTE, name)
        return cast(View, wrapper)

    return decorator


def _to_login(request: HttpRequest) -> HttpResponseBase:
    """The login page (the admin's if mounted), coming back to this request's URL afterwards."""
    from .pages import login_url  # the frame imports the predicates above; the refusals are drawn by the frame

    return protect(redirect_to_login(request.get_full_path(), login_url()))


def _stats_page_check(request: HttpRequest) -> HttpResponseBase | None:
    """Anyone who may not see stats goes to the login page, which comes back here."""
    return None if can_view_stats(request) else _to_login(request)


def _stats_api_check(request: HttpRequest) -> HttpResponseBase | None:
    """401 (not logged in, with the login URL) or 403 (logged in, not allowed) as JSON."""
    if can_view_stats(request):
        return None
    from .pages import json_response, login_url

    user = get_user(request)
    if user is None or not user.is_authenticated:
        body = {"error": "authentication required: log in as a staff user", "login_url": login_url()}
        return json_response(body, 401)
    return json_response({"error": "permission denied: your account may not see stats"}, 403)


def _technical_check(request: HttpRequest) -> None:
    """404 for anyone who may not read tracebacks, profiles or plans: never confirm that a reference exists."""
    if not is_technical_user(request):
        raise Http404("Not found")


#: The DBA panel's page, on which its refusal is shown too.
QUERYLOG_TEMPLATE = "instrumented/dashboard/dba.html"


def _querylog_check(request: HttpRequest) -> HttpResponseBase | None:
    """The login page for anonymous users, a 403 page (in the panel's look) for users without the permission."""
    user = get_user(request)
    if can_control_querylog(user):
        return None
    if user is None or not user.is_authenticated:
        return _to_login(request)
    from .pages import render_page

    context = {
        "title": "MySQL query log",
        "forbidden": "Permission denied: the DBA panel is for superusers and users with the "
        f"{QUERYLOG_PERMISSION} permission.",
    }
    return render_page(request, QUERYLOG_TEMPLATE, context, status=403)


def metrics_authorised(request: HttpRequest) -> bool:
    """The configured bearer token (compared in constant time), or a user who may see the dashboard."""
    token = get_config().metrics_token
    header = request.headers.get("Authorization", "")
    if token and header[:7].lower() == "bearer ":
        return secrets.compare_digest(header[7:].strip().encode(), token.encode())
    return can_view_stats(request)


def metrics_headers(response: HttpResponseBase) -> HttpResponseBase:
    """What every metrics answer carries, refused or not: varied on the token and the format, private."""
    patch_vary_headers(response, ("Authorization", "Accept"))
    return protect(response)


def _metrics_check(request: HttpRequest) -> HttpResponseBase | None:
    """Plain text for scrapers: 401 (with the Bearer challenge) without token or session, 403 when logged in."""
    if metrics_authorised(request):
        return None
    user = get_user(request)
    logged_in = user is not None and user.is_authenticated
    response = HttpResponse(
        "permission denied\n" if logged_in else "authentication required: a bearer token or a staff session\n",
        status=403 if logged_in else 401,
        content_type="text/plain; charset=utf-8",
    )
    if not logged_in:
        response["WWW-Authenticate"] = 'Bearer realm="instrumented"'
    return metrics_headers(response)


#: Stats pages (dashboard, view page, bookmarklet page): staff or PERMISSION_CALLBACK; else the login page.
stats_page = gate("stats_page", _stats_page_check)
#: The stats JSON API: staff or PERMISSION_CALLBACK; else 401/403 JSON.
stats_api = gate("stats_api", _stats_api_check)
#: Tracebacks, the error list, profiles, plans: superusers or SUPERUSER_CALLBACK; else 404.
technical = gate("technical", _technical_check)
#: The DBA panel: superusers or ``instrumented.control_querylog``; else the login page or a 403 page.
querylog_control = gate("querylog_control", _querylog_check)
#: ``/metrics``: METRICS_TOKEN as a bearer token, or a stats session; else plain-text 401/403.
metrics_access = gate("metrics_access", _metrics_check)


def explain_access(refuse: Callable[[HttpRequest, str], HttpResponseBase]) -> Callable[[View], View]:
    """The view page's Explain: superusers (SUPERUSER_CALLBACK) or ``instrumented.explain_sql``; anyone else is
    logged and answered ``refuse(request, message)``, a 403 in the feature's own look (its page, or JSON on Accept).
    """

    def check(request: HttpRequest) -> HttpResponseBase | None:
        if can_explain(request):
            return None
        user = get_user(request)
        who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
        logger.warning("django-instrumented: user %s was refused Explain (not allowed)", who,
                       extra={"explain_user": who})  # fmt: skip
        return refuse(request, f"Permission denied: Explain is for superusers and users with the {EXPLAIN_PERMISSION} "
                      "permission.")  # fmt: skip

    return gate("explain_access", check)
