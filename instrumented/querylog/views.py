"""The DBA panel: the MySQL proxy's query log (status, digest, recent statements), its on/off switch, and the
plan of a digest row's statement (``PROXY LOG EXPLAIN``).

Reading is a GET; switching is a POST through Django's CSRF protection, answered with a redirect back
(post/redirect/get), so a link or a reload never changes anything. Explain is a POST too (it runs a statement
on the database with the alias's privileges), answered with the page and the plan. Only active superusers and users
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
from ..proxy import merge
from . import client as querylog

#: The distribution's decades, as pt-query-digest labels them.
DECADES = ("1us", "10us", "100us", "1ms", "10ms", "100ms", "1s", "10s+")
#: Height of the tallest bar of a distribution, in SVG units (pixels).
BAR_HEIGHT = 16

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


def bars(value: Any) -> list[dict[str, Any]]:
    """A digest row's distribution as SVG bars: per decade its x, height (the tallest ``BAR_HEIGHT``) and label."""
    counts = merge.histogram(value)
    top = max(counts) or 1
    return [
        {"x": i * 6, "y": BAR_HEIGHT - h, "height": h, "label": f"{label}: {count}"}
        for i, (label, count) in enumerate(zip(DECADES, counts, strict=True))
        for h in [max(1, round(BAR_HEIGHT * count / top)) if count else 0]
    ]


def _explainable(row: dict[str, Any]) -> bool:
    """Whether the row's proxy keeps a statement to explain (and says which row it is)."""
    return row.get("explain") == "yes" and str(row.get("id") or "").isdigit()


def _view_data(view: str | None = None, order: str = "sum", host: str | None = None) -> dict[str, Any]:
    """Status, digest and recent statements of every proxy (only ``view``'s or client ``host``'s when given), or
    why not."""
    try:
        status = querylog.status()
        digest = querylog.digest(DIGEST_ROWS, order=order, view=view, host=host)
        tail = querylog.tail(TAIL_ROWS if view is None and host is None else 1000, view=view, host=host)[-TAIL_ROWS:]
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
            "p50": duration_us(row.get("p50_us")),
            "p99": duration_us(row.get("p99_us")),
            "load_text": f"{row.get('load') or 0:.3f}",
            "share_text": f"{row.get('share_pct') or 0:.1f} %",
            "bars": bars(row.get("histogram")),
            "host_list": [{"name": h, "count": c} for h, c in merge.hosts(row.get("hosts")).items()],
            "explainable": _explainable(row),
            "view_list": [v for v in str(row.get("views") or "").split(", ") if v],
        }
        for row in digest
    ]
    tail_rows = [
        {
            **row,
            "query_time": duration_us(row.get("query_time_us")),
            "response_time": duration_us(row.get("response_time_us")),
            "explainable": str(row.get("digest_id") or "").isdigit(),
        }
        for row in reversed(tail)
    ]
    status["load_text"] = f"{status.get('load') or 0:.3f}"
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


def _explain(request: HttpRequest, who: str) -> HttpResponseBase:
    """``PROXY LOG EXPLAIN ID id`` on the posted alias's proxy: the page with the plan, or with why not (400 for bad
    input, the proxy's refusal shown as it gave it)."""
    alias = request.POST.get("alias", "")
    raw_id = (request.POST.get("id") or "").strip()
    if alias not in querylog.querylog_aliases():
        return _render(request, form_error="Explain: unknown database alias; use the buttons on this page.", status=400)
    if not (raw_id.isascii() and raw_id.isdigit()) or not 0 < len(raw_id) <= 12 or int(raw_id) < 1:
        return _render(request, form_error="Explain: the digest row id must be a whole number.", status=400)
    extra = {"querylog_user": who, "querylog_action": "explain", "querylog_alias": alias, "querylog_id": int(raw_id)}
    try:
        explained = querylog.explain(digest_id=int(raw_id), using=alias)
    except querylog.QueryLogError as exc:
        logger.warning("django-instrumented: user %s: explain of digest row %s on %s failed: %s", who, raw_id, alias,
                       exc, extra=extra)  # fmt: skip
        return _render(request, explain_error=str(exc))
    logger.info("django-instrumented: user %s: explain of digest row %s on %s", who, raw_id, alias, extra=extra)
    explained["pretty"] = pretty_sql(str(explained.get("statement") or ""))
    return _render(request, explained=explained)


def _act(request: HttpRequest) -> HttpResponseBase:
    """Run the posted action, log who did it, and redirect back with what happened (bad input: 400 page)."""
    action = request.POST.get("action", "")
    user = get_user(request)
    who = user.get_username() if user is not None else "?"
    if action == "explain":
        return _explain(request, who)
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
    host = (request.GET.get("host") or "").strip()[:80] or None
    if host and any(c.isspace() or c in "'`\";" or not c.isprintable() for c in host):
        host = None  # one word, as the proxy takes it (querylog._word)
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
        "host": host,
        "order": order,
        "orders": querylog.ORDERS,
    }
    context.update(_view_data(view, order, host))
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
