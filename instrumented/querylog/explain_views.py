"""``POST /instrumented/explain/``: the plan of one statement a view page shows (issue 22, the app side).

For superusers (the traceback gate, SUPERUSER_CALLBACK) and users with ``instrumented.explain_sql``. The statement
must be one the stats read from memcached show for that view, exactly; the values of its placeholders come from
the form (or ``params``, a JSON list) and go to the driver as parameters. What runs and how: :mod:`.explain`.
Every answer is private and never cached; ``Accept: application/json`` gives the same as JSON.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.csrf import csrf_protect

from .. import plans
from ..access import explain_access, get_user
from ..conf import get_config
from ..display import pretty_sql
from ..pages import detail_url, json_response, render_page
from ..stats.reading import read
from . import explain

logger = logging.getLogger("instrumented")

TEMPLATE = "instrumented/explain/explain.html"
#: The statements read for a view: as many as its page shows (top SQL, N+1 suspects, slow, duplicates).
TOP_QUERIES = 20
MAX_NAME = 2048


def view_statements(view: dict[str, Any]) -> set[str]:
    """Every statement the stats document shows for the view (its page's rows)."""
    found: set[str] = set()
    for section in ("top_queries", "n_plus_one_suspects", "slow_queries", "duplicate_queries"):
        for row in view.get(section) or ():
            if isinstance(row, dict) and isinstance(row.get("sql"), str):
                found.add(row["sql"])
    return found


def default_alias(view: dict[str, Any] | None) -> str:
    """EXPLAIN_DATABASE, else the alias the stats recorded most queries on for the view, else ``default``."""
    configured = get_config().explain_database
    if configured:
        return configured
    databases = (view or {}).get("databases") or {}
    if isinstance(databases, dict) and databases:
        return str(max(databases.items(), key=lambda item: (item[1] or {}).get("queries", 0))[0])
    return "default"


def allowed_aliases(view: dict[str, Any] | None) -> list[str]:
    """The aliases a plan may run on: the view's recorded ones and EXPLAIN_DATABASE, if they are DATABASES."""
    recorded = list(((view or {}).get("databases") or {}).keys())
    configured = get_config().explain_database
    names = ([configured] if configured else []) + [str(a) for a in recorded]
    return [a for a in dict.fromkeys(names) if a in settings.DATABASES]


#: Why a statement as long as MAX_SQL_LENGTH is not explained.
CUT = (
    "The stats keep statements up to MAX_SQL_LENGTH characters and this one reaches it: it was probably cut, "
    "so its plan would be another statement's. Raise MAX_SQL_LENGTH to explain it."
)


def is_cut(sql: str) -> bool:
    """Whether the stats probably cut the statement (it is as long as they keep)."""
    return len(sql) >= get_config().max_sql_length


def form_value(text: str) -> Any:
    """One form input: JSON when it reads as JSON (42, "42", null, [1, 2]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _answer(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponseBase:
    """The page or its JSON (``error`` and the plan's tables in both)."""
    if _wants_json(request):
        keys = ("view", "sql", "alias", "params", "engine", "analyze", "error", "raw_plan")
        body = {k: context.get(k) for k in keys}
        body["timed_out"] = context.get("timed_out", False)
        plan = context.get("plan")
        body["plan"] = plan.as_dict() if plan is not None else None
        body["plan_text"] = plan.text() if plan is not None else None
        body["tables"] = [t.as_dict() for t in context.get("tables") or []]
        return json_response({k: v for k, v in body.items() if v is not None or k in ("plan", "error")}, status)
    title = f"Explain · {context['view']}" if context.get("view") else "Explain"
    return render_page(request, TEMPLATE, {"title": title, **context}, status=status)


def _checked(request: HttpRequest, name: str, sql: str) -> tuple[str, list[Any], str]:
    """The statement (the stats' text), values and alias of an Explain the rules allow (see the module), or
    :class:`explain.Refused`."""
    stats = read(view=name, top_queries=TOP_QUERIES)
    view = next((v for v in stats.get("views", []) if isinstance(v, dict) and v.get("view") == name), None)
    if "error" in stats:
        raise explain.Refused(
            f"The stats could not be read ({stats['error']}): nothing to check the statement against."
        )
    shown = view_statements(view) if view is not None else set()
    if sql not in shown:
        # A form sends line breaks as CRLF (HTML's form encoding): the stats' own text is what runs.
        sql = next((s for s in shown if s.replace("\r\n", "\n") == sql.replace("\r\n", "\n")), sql)
    if sql not in shown:
        raise explain.Refused(
            f"This is not a statement the stats show for this view (in the last {stats.get('window_seconds')} s):"
            " only those can be explained, exactly as shown."
        )
    if is_cut(sql):
        raise explain.Refused(CUT)
    explain.check_select(sql)
    kinds = explain.placeholders(sql)
    raw = request.POST.get("params")
    if raw is None:
        raw = [form_value(text) for text in request.POST.getlist("param")]
    values = explain.read_params(raw, kinds)
    alias = request.POST.get("alias") or default_alias(view)
    configured = get_config().explain_database
    if configured and configured not in settings.DATABASES:
        raise explain.Refused(f"EXPLAIN_DATABASE is {configured!r}, which is not a DATABASES alias.")
    if alias not in allowed_aliases(view):
        raise explain.Refused("Unknown database alias: use the view's own aliases or EXPLAIN_DATABASE.")
    return sql, values, alias


def _refused(request: HttpRequest, message: str) -> HttpResponseBase:
    """The gate's refusal, in this page's look: 403 with the reason (JSON on Accept)."""
    return _answer(request, {"error": message}, 403)


def _post_only(view: Callable[[HttpRequest], HttpResponseBase]) -> Callable[[HttpRequest], HttpResponseBase]:
    """405 with the reason for anything but a POST, before anyone is asked who they are (as ``require_POST``,
    in this page's look)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponseBase:
        if request.method != "POST":
            message = "Explain is a POST (with the CSRF token) from the Explain form of a view page."
            return _answer(request, {"error": message}, 405)
        return view(request)

    return wrapper


@csrf_protect
@_post_only
@explain_access(_refused)
def explain_view(request: HttpRequest) -> HttpResponseBase:
    """Check what is asked, run the EXPLAIN, show the plan with the models and indexes of its tables."""
    user = get_user(request)
    who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    name = request.POST.get("view", "")
    sql = request.POST.get("sql", "")
    context: dict[str, Any] = {"view": name, "sql": sql, "view_url": detail_url(name) if name else None}
    if not name or len(name) > MAX_NAME or len(sql) > explain.MAX_SQL:
        return _answer(request, {**context, "error": "Give the view's name and one of its statements."}, 400)
    extra = {"explain_user": who, "explain_view": name, "explain_sql": sql[:2000]}
    try:
        sql, values, alias = _checked(request, name, sql)
    except explain.Refused as exc:
        logger.warning("django-instrumented: user %s: Explain of a statement of %s refused: %s", who, name, exc,
                       extra=extra)  # fmt: skip
        return _answer(request, {**context, "error": str(exc)}, 400)
    config = get_config()
    bound, flat = explain.bind(sql, values)
    context.update(sql=sql, alias=alias, params=values, analyze=config.explain_analyze, pretty=pretty_sql(sql))
    extra.update(explain_alias=alias)
    logger.info("django-instrumented: user %s: Explain of a statement of %s on %s", who, name, alias, extra=extra)
    try:
        raw_plan, engine = explain.run(alias, bound, flat, timeout=config.explain_timeout,
                                       analyze=config.explain_analyze)  # fmt: skip
    except explain.Failed as exc:
        logger.warning("django-instrumented: user %s: Explain on %s failed: %s", who, alias, exc, extra=extra)
        return _answer(
            request, {**context, "error": str(exc), "timed_out": exc.timed_out}, 504 if exc.timed_out else 422
        )
    except explain.Refused as exc:
        return _answer(request, {**context, "error": str(exc)}, 400)
    context["engine"] = engine
    context["raw_plan"] = raw_plan if isinstance(raw_plan, str) else json.dumps(raw_plan)
    try:
        plan = plans.parse(raw_plan, engine)
    except plans.PlanError as exc:
        return _answer(request, {**context, "error": f"The plan could not be read: {exc}"}, 422)
    context.update(plan=plan, tables=explain.describe_tables(alias, plan, bound))
    return _answer(request, context)
