"""Prove hints: apply each one to the queryset its view wrote and count the queries, before and after.

Run by tests/stats/test_real_site.py as ``python -m tests.realsite.prove`` with the real site's settings and
database; reads ``[{"path", "tweak", "hint", "sql"}, ...]`` (JSON) on stdin, writes one result per case on
stdout: the runs of the N+1's statement (``sql`` as the stats show it) and all statements, without and with
the hint applied through the view's :func:`~tests.realsite.blog.tweaks.tweak`.
"""

import json
import sys

import django


def _runs(path: str, sql: str, vendor: str) -> tuple[int, int, int]:
    """(runs of the statement shown as ``sql``, all statements, status) of one request to ``path``."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from instrumented.stats.literals import strip_literals
    from instrumented.stats.sql import template_of

    statements: list[str] = []

    def note(execute, statement, params, many, context):
        statements.append(statement)
        return execute(statement, params, many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(note):
        status = Client().get(path).status_code
    shown = [template_of(strip_literals(s, vendor)) for s in statements]
    return sum(1 for s in shown if s == sql), len(captured), status


def main() -> None:
    django.setup()
    from django.db import connection
    from django.db.models import Prefetch

    from tests.realsite.blog import models
    from tests.realsite.blog.tweaks import TWEAKS

    names = {"Prefetch": Prefetch, **{n: getattr(models, n) for n in dir(models) if n[:1].isupper()}}

    def applying(code: str):
        """The hint as the developer adds it: ``queryset.<code>``."""
        return lambda queryset: eval(f"queryset.{code}", {**names, "queryset": queryset})

    results = []
    for case in json.load(sys.stdin):
        TWEAKS.clear()
        before = _runs(case["path"], case["sql"], connection.vendor)
        TWEAKS[case["tweak"]] = applying(case["hint"])
        after = _runs(case["path"], case["sql"], connection.vendor)
        TWEAKS.clear()
        results.append({**case, "before": before, "after": after})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
