"""Headers for every response that shows stats, SQL or tracebacks: private, never cached, never framed."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpResponseBase
from django.utils.cache import add_never_cache_headers, patch_vary_headers

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
    response.xframe_options_exempt = False  # type: ignore[attr-defined]
    if sandbox:
        response["Content-Security-Policy"] = SANDBOX_CSP
        response["Referrer-Policy"] = "no-referrer"
    return response


def protected(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Decorator form of :func:`protect` for views."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> HttpResponseBase:
        return protect(view(*args, **kwargs))

    return wrapper
