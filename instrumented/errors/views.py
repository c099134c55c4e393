"""``handler500`` and the error-reference pages.

``server_error`` answers a technical user (``is_technical_user``) with the technical 500 page of the
exception being handled, and everyone else with the site's ``500.html`` (given ``error_reference``).
The lookup views (the grouped list is in :mod:`instrumented.errors.grouped`, in the admin look) show stored
errors to technical users and answer 404 to everyone else (the :func:`instrumented.access.technical` gate), so a
reference's existence is never confirmed to someone who may not read it.
"""

from __future__ import annotations

import sys
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template import TemplateDoesNotExist, loader
from django.utils.cache import add_never_cache_headers

from ..access import SANDBOX_CSP, get_user, is_technical_user, protect, technical
from ..conf import get_config
from ..display import local_time
from ..failopen import fail_open
from ..keys import RATE_LIMIT_SECONDS
from ..memcached import get_store
from ..pages import errors_url
from ..references import new_reference, normalize_reference
from ..stats.probe import paused
from .capture import PAGE_ATTRIBUTE, REQUEST_ATTRIBUTE, capture
from .records import load_meta, load_page
from .reporter import BoundedExceptionReporter

#: The live technical page runs no script at all (the package renders Django's template without it): no
#: ``allow-scripts``, no ``script-src``, so nothing an attacker gets onto the page can run, even as markup.
LIVE_TECHNICAL_CSP = SANDBOX_CSP
HEADER = "X-Error-Reference"


#: The frame over a technical page: which error this is, when, whose, and the way back to the list. Inline
#: styles only (the page's sandbox CSP allows no other); every value escaped by format_html.
FRAME = (
    '<div id="instr-error-frame" style="font:14px system-ui,sans-serif;background:#264b5d;color:#fff;'
    'padding:8px 20px;display:flex;flex-wrap:wrap;gap:6px 18px;align-items:baseline">'
    "<strong>Error reference {}</strong><span>{}</span><span>{}</span>{}</div>"
)


def framed(html: str, ref: str, when: str = "", who: str = "", back: str | None = None) -> str:
    """``html`` (a technical 500 page) with a frame at the top of its body: the reference, when, who, and a
    link back to the error list. Inserted after the page's first ``<body`` tag, which is Django's own: values
    an attacker chose are escaped in the page and cannot contain a ``<``."""
    from django.utils.html import format_html

    link = format_html(' <a href="{}" style="color:#f5dd5d">Back to the error list</a>', back) if back else ""
    banner = format_html(FRAME, ref, when, who, link)
    start = html.find("<body")
    end = html.find(">", start) if start != -1 else -1
    if end == -1:
        return str(banner) + html
    return html[: end + 1] + str(banner) + html[end + 1 :]


def _reference(request: HttpRequest) -> str:
    """The reference the capture receiver gave this request, or a fresh capture when it did not run."""
    try:
        ref = getattr(request, REQUEST_ATTRIBUTE, None)
        if isinstance(ref, str) and ref:
            return ref
        return capture(request)
    except Exception:  # noqa: BLE001 - a reference must exist even if the request object misbehaves
        return new_reference()


def _wants_html(request: HttpRequest) -> bool:
    """HTML unless the client asked for something else (as Django's technical_500_response decides)."""
    try:
        return bool(request.accepts("text/html"))
    except Exception:  # noqa: BLE001 - a malformed Accept header: HTML
        return True


def _technical_response(request: HttpRequest, ref: str) -> HttpResponse | None:
    """The technical 500 page of the exception being handled, with debug headers; None if it cannot be built."""
    exc_type, exc_value, tb = sys.exc_info()
    if exc_type is None or exc_value is None:
        return None
    with fail_open("rendering the live technical page failed"):  # the public page then, not a second error
        reporter = BoundedExceptionReporter(request, exc_type, exc_value, tb)
        if _wants_html(request):
            stored = getattr(request, PAGE_ATTRIBUTE, None)  # rendered once already, when it was stored
            html = stored if isinstance(stored, str) else reporter.get_traceback_html()
            # The live page shows its reference too: the one the user would quote, and that opens it again.
            response = HttpResponse(framed(str(html), ref, "live: this request", ""), status=500)
        else:
            response = HttpResponse(reporter.get_traceback_text(), status=500, content_type="text/plain; charset=utf-8")
        protect(response, sandbox=False)
        response["Content-Security-Policy"] = LIVE_TECHNICAL_CSP
        response["Referrer-Policy"] = "no-referrer"
        response[HEADER] = ref
        return response
    return None


def _public_response(request: HttpRequest, ref: str) -> HttpResponse:
    """The site's 500.html, else the shipped one, else plain text; all with the reference."""
    context = {"error_reference": ref, "request": request}
    for name in ("500.html", "instrumented/500.html"):
        with fail_open(f"rendering {name} failed"):  # a broken template (or a context processor): try the next one
            try:
                body = loader.get_template(name).render(context)
            except TemplateDoesNotExist:
                continue
            response = HttpResponse(body, status=500)
            break
    else:
        response = HttpResponse(
            f"Server Error (500)\nError reference: {ref}\n", status=500, content_type="text/plain; charset=utf-8"
        )
    add_never_cache_headers(response)
    response[HEADER] = ref
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: the technical page for a technical user, the site's 500 page with a reference otherwise."""
    ref = _reference(request)
    with paused():  # the session and user queries of this check are ours, not the failing view's
        technical = is_technical_user(request)
    if technical:
        response = _technical_response(request, ref)
        if response is not None:
            return response
    try:
        return _public_response(request, ref)
    except Exception:  # noqa: BLE001 - the last resort must not raise
        response = HttpResponse(f"Server Error (500)\nError reference: {ref}\n", status=500, content_type="text/plain")
        response[HEADER] = ref
        return response


# -- lookup ------------------------------------------------------------------------------------------------------------


def rate_limited(request: HttpRequest) -> bool:
    """More than ERROR_LOOKUPS_PER_MINUTE lookups by this user this minute (memcached counter; fails open)."""
    config = get_config()
    user = get_user(request)
    count = get_store().incr(config.keys.error_lookups(getattr(user, "pk", "")), 1, ttl=RATE_LIMIT_SECONDS)
    limit = config.error_lookups_per_minute
    return count is not None and count > limit


def _page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """Render one of the package's error pages with sandboxing headers."""
    response = HttpResponse(loader.render_to_string(template, context), status=status)
    return protect(response, sandbox=True)


def _when(meta: dict[str, Any]) -> str:
    """When the error happened, in the site's TIME_ZONE."""
    return local_time(meta.get("time"))


def _lookup(request: HttpRequest, ref: str) -> tuple[str | None, HttpResponseBase | None]:
    """Validate and rate-limit one lookup (the view's gate has run): (canonical ref, None) or (None, the response)."""
    canonical = normalize_reference(ref)
    if canonical is None:
        return None, _page(request, "instrumented/errors/missing.html", {"ref": ""}, status=404)
    if rate_limited(request):
        response = _page(request, "instrumented/errors/missing.html", {"ref": canonical, "limited": True}, status=429)
        response["Retry-After"] = "60"
        return None, response
    return canonical, None


@technical
def error_detail(request: HttpRequest, ref: str) -> HttpResponseBase:
    """The stored technical page; the metadata and text traceback when no page was stored."""
    canonical, response = _lookup(request, ref)
    if response is not None:
        return response
    assert canonical is not None
    page = load_page(canonical)
    if page is not None:
        about = load_meta(canonical) or {}
        who = f"user {about.get('user', '?')}" + (f" (id {about['user_id']})" if about.get("user_id") else "")
        response = HttpResponse(
            framed(page, canonical, _when(about) if about else "", who if about else "", errors_url())
        )
        response[HEADER] = canonical
        return protect(response, sandbox=True)
    meta = load_meta(canonical)
    if meta is None:
        return _page(request, "instrumented/errors/missing.html", {"ref": canonical}, status=404)
    meta["when"] = _when(meta)
    return _page(request, "instrumented/errors/detail.html", {"error": meta})


@technical
def error_text(request: HttpRequest, ref: str) -> HttpResponseBase:
    """The stored plain-text traceback with its metadata."""
    canonical, response = _lookup(request, ref)
    if response is not None:
        return response
    assert canonical is not None
    meta = load_meta(canonical)
    if meta is None:
        return _page(request, "instrumented/errors/missing.html", {"ref": canonical}, status=404)
    header = [
        f"Error reference: {canonical}",
        f"Time: {_when(meta)}",
        f"Request: {meta.get('method', '')} {meta.get('path', '')}",
        f"View: {meta.get('view', '')} ({meta.get('route', '')})",
        f"User: {meta.get('user', '')}" + (f" (id {meta['user_id']})" if meta.get("user_id") else ""),
    ]
    if meta.get("masked_fields"):
        header.append(f"Masked: ******************** is the value of {', '.join(meta['masked_fields'])}")
    header.append("")
    response = HttpResponse("\n".join(header) + str(meta.get("text", "")), content_type="text/plain; charset=utf-8")
    return protect(response, sandbox=True)
