"""Who may see stats, tracebacks and the DBA panel, and the headers every such response carries.

Every check answers False rather than raise; every response that shows stats, SQL or tracebacks is
private, never cached, never framed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
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
