"""The view page's Explain form: ``{% load instrumented_explain %}``, then ``{% explain_form q.sql %}`` on a row.

Shown on plain SELECTs only, to those who may explain (:func:`instrumented.access.can_explain`, checked once per
request): one input per placeholder of the statement (templates hold no literals), the alias, the CSRF token.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

from ..access import can_explain
from ..conf import get_config
from ..querylog import explain
from ..querylog.explain_views import allowed_aliases, default_alias, is_cut

register = template.Library()


@register.inclusion_tag("instrumented/explain/_form.html", takes_context=True)
def explain_form(context: template.Context, sql: Any) -> dict[str, Any]:
    """The form for one statement of the page's view (empty for users who may not explain)."""
    request = context.get("request")
    if request is None or not isinstance(sql, str):
        return {"show": False}
    allowed = getattr(request, "_instrumented_can_explain", None)
    if allowed is None:
        allowed = can_explain(request)
        request._instrumented_can_explain = allowed
    if not allowed:
        return {"show": False}
    try:
        explain.check_select(sql)  # BEGIN, INSERT, a locking read: nothing to offer
    except explain.Refused:
        return {"show": False}
    if is_cut(sql):
        return {"show": False, "note": "Explain: not for this statement, cut at MAX_SQL_LENGTH."}
    try:
        url = reverse("instrumented:explain")
    except NoReverseMatch:
        return {"show": False}
    view = context.get("view")
    kinds = explain.placeholders(sql)
    return {
        "show": True,
        "url": url,
        "csrf_token": context.get("csrf_token"),
        "name": context.get("name"),
        "sql": sql,
        "inputs": [{"number": i, "list": kind == "list"} for i, kind in enumerate(kinds, 1)],
        "alias": default_alias(view),
        "aliases": allowed_aliases(view),
        "analyze": get_config().explain_analyze,
    }
