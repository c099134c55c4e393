"""The DBA panel: the MySQL proxy's query log (status, digest, recent statements) and its on/off switch.

Reading is a GET; switching is a POST through Django's CSRF protection, answered with a redirect back
(post/redirect/get), so a link or a reload never changes anything. Only active superusers and users
with ``instrumented.control_querylog`` get in: the page shows other people's SQL and changes what the
proxy writes to disk. It talks to the proxy through :mod:`instrumented.querylog`, whose errors are shown
on the page instead of becoming a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from ..access import QUERYLOG_PERMISSION, can_control_querylog, get_user, protect
from ..dashboard.pages import login_url, render_page
from ..display import count_of, duration_us, pretty_sql, proxy_sql
from . import client as querylog

logger = logging.getLogger("instrumented")

#: Rows of the digest and of the recent-statements table.
DIGEST_ROWS = 50
TAIL_ROWS = 50
#: What the form proposes; the proxy's own default for ``PROXY LOG ON``.
DEFAULT_SECONDS = 300
#: Longest number accepted before asking the proxy (which caps the value at its PROXY_LOG_MAX_SECONDS).
MAX_SECONDS_DIGITS = 10
TEMPLATE = "instrumented/dashboard/dba.html"


def parse_seconds(raw: str | None) -> int:
    """The form's seconds as a positive whole number; ValueError with a message for the user otherwise."""
    text = (raw or "").strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"Seconds must be a whole number of 1 or more, not {text[:20]!r}.")
    if len(text) > MAX_SECONDS_DIGITS:
        raise ValueError(f"Seconds must have at most {MAX_SECONDS_DIGITS} digits (the proxy caps the time anyway).")
    return int(text)


def _denied(request: HttpRequest) -> HttpResponseBase | None:
    """None when the user may use the panel; else the login redirect (anonymous) or a 403 page."""
    user = get_user(request)
    if can_control_querylog(user):
        return None
    if user is None or not user.is_authenticated:
        return protect(redirect_to_login(request.get_full_path(), login_url()))
    context = {
        "title": "MySQL query log",
        "forbidden": "Permission denied: the DBA panel is for superusers and users with the "
        f"{QUERYLOG_PERMISSION} permission.",
    }
    return render_page(request, TEMPLATE, context, status=403)


def _flash(request: HttpRequest, level: int, text: str) -> None:
    """A message for the page after the redirect (silently dropped when the messages app is not installed)."""
    messages.add_message(request, level, text, fail_silently=True)


def _view_data(view: str | None = None, order: str = "sum") -> dict[str, Any]:
    """Status, digest and recent statements of every proxy (only ``view``'s when given), or why not."""
    try:
        status = querylog.status()
        digest = querylog.digest(DIGEST_ROWS, order=order, view=view)
        tail = querylog.tail(TAIL_ROWS if view is None else 1000, view=view)[-TAIL_ROWS:]
    except querylog.QueryLogError as exc:
        return {"error": str(exc)}
    digest_rows = [
        {
            **row,
            "pretty": pretty_sql(proxy_sql(str(row.get("digest") or ""))),
            "total": duration_us(row.get("sum_us")),
            "avg": duration_us(row.get("avg_us")),
            "min": duration_us(row.get("min_us")),
            "max": duration_us(row.get("max_us")),
            "p95": duration_us(row.get("p95_us")),
            "view_list": [v for v in str(row.get("views") or "").split(", ") if v],
        }
        for row in digest
    ]
    tail_rows = [
        {
            **row,
            "query_time": duration_us(row.get("query_time_us")),
            "response_time": duration_us(row.get("response_time_us")),
        }
        for row in reversed(tail)
    ]
    return {"status": status, "on": status.get("logging") != "off", "digest": digest_rows, "tail": tail_rows}


def _filters(post: Any) -> dict[str, Any]:
    """The switch form's optional filters (SLOW ms, USER, DB, ERRORS, SAMPLE); ValueError for the user."""
    filters: dict[str, Any] = {"errors": post.get("errors") == "on"}
    for name, field in (("slow_ms", "slow"), ("sample", "sample")):
        text = (post.get(field) or "").strip()
        if text:
            try:
                filters[name] = float(text)
            except ValueError:
                raise ValueError(f"{field} must be a number, not {text[:20]!r}.") from None
    for name in ("user", "db"):
        text = (post.get(name) or "").strip()
        if text:
            filters[name] = text
    return filters


def _act(request: HttpRequest) -> HttpResponseBase:
    """Run the posted action, log who did it, and redirect back with what happened (bad input: 400 page)."""
    action = request.POST.get("action", "")
    user = get_user(request)
    who = user.get_username() if user is not None else "?"
    seconds: int | None = None
    filters: dict[str, Any] = {}
    if action == "on":
        try:
            seconds = parse_seconds(request.POST.get("seconds"))
            filters = _filters(request.POST)
        except ValueError as exc:
            return _render(request, form_error=str(exc), seconds_value=request.POST.get("seconds", "")[:20], status=400)
    # For log handlers that keep fields: who switched what, for how long.
    extra = {"querylog_user": who, "querylog_action": action, "querylog_seconds": seconds, "querylog_filters": filters}
    try:
        if action == "on":
            status = querylog.log_on(seconds, **filters)
            left = status.get("seconds_left")
            capped = f" (asked for {seconds} s; the proxy caps it at {left} s)" if left != seconds else ""
            shown = f", {status.get('filters')}" if status.get("filters") else ""
            text = f"Query log turned on for {left} s{capped}{shown}."
        elif action == "off":
            status = querylog.log_off()
            text = f"Query log turned off; {count_of(status.get('logged'), 'statement')} logged."
        elif action == "reset":
            querylog.reset()
            text = "Recent statements and digest cleared."
        else:
            return _render(request, form_error="Unknown action: use the buttons on this page.", status=400)
    except querylog.QueryLogError as exc:
        logger.warning("django-instrumented: user %s: query log %s failed: %s", who, action, exc, extra=extra)
        _flash(request, messages.ERROR, f"Query log {action} failed: {exc}")
        return protect(HttpResponseRedirect(reverse("instrumented:dba")))
    given = "".join(f", {name}={value}" for name, value in filters.items() if value)
    logger.info("django-instrumented: user %s: query log %s (seconds=%s%s)", who, action, seconds, given, extra=extra)
    _flash(request, messages.SUCCESS, text)
    return protect(HttpResponseRedirect(reverse("instrumented:dba")))


def _render(request: HttpRequest, status: int = 200, **extra: Any) -> HttpResponseBase:
    """The panel page with fresh data from the proxies (``?view=`` one view's statements, ``?order=``)."""
    view = (request.GET.get("view") or "").strip()[:200] or None
    order = request.GET.get("order") or "sum"
    if order not in querylog.ORDERS:
        order = "sum"
    context: dict[str, Any] = {
        "title": "MySQL query log",
        "seconds_value": DEFAULT_SECONDS,
        "digest_rows": DIGEST_ROWS,
        "tail_rows": TAIL_ROWS,
        "dba_messages": list(messages.get_messages(request)),
        "alias": ", ".join(querylog.querylog_aliases()),
        "several": len(querylog.querylog_aliases()) > 1,
        "view": view,
        "order": order,
        "orders": querylog.ORDERS,
    }
    context.update(_view_data(view, order))
    context.update(extra)
    return render_page(request, TEMPLATE, context, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
@csrf_protect
def dba_panel(request: HttpRequest) -> HttpResponseBase:
    """GET shows the query log; POST (CSRF-checked) switches it on/off or clears it, then redirects here."""
    denied = _denied(request)
    if denied is not None:
        return denied
    if request.method == "POST":
        return _act(request)
    return _render(request)
