"""Ground truth for the tests: every request's statements, counted by Django's own CaptureQueriesContext and
noted as run (placeholders, no values) by an execute_wrapper of the request's own, one JSON line per request
in ``$REALSITE_DATA_DIR/capture-<pid>.jsonl``. A COMMIT that Django logs without a cursor is not counted."""

import json
import os
from pathlib import Path

from django.db import connection
from django.test.utils import CaptureQueriesContext

from instrumented.naming import view_name


class CaptureMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.path = Path(os.environ.get("REALSITE_DATA_DIR", "/tmp/realsite")) / f"capture-{os.getpid()}.jsonl"

    def __call__(self, request):
        statements = []

        def note(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(note), CaptureQueriesContext(connection) as captured:
            # A new connection's set-up statements (MySQL's) ran as the capture began: noted, not captured.
            setup = len(statements)
            response = self.get_response(request)  # a TemplateResponse is rendered by then (in Django's handler)
        match = getattr(request, "resolver_match", None)
        # Django logs a transaction's BEGIN/COMMIT/ROLLBACK in the capture, through a cursor (SQLite's BEGIN) or
        # not (the driver's own commit): those that did not run as statements are not counted.
        control = ("BEGIN", "COMMIT", "ROLLBACK")
        logged = sum(1 for q in captured.captured_queries if q["sql"] in control)
        run = sum(1 for sql in statements if sql in control)
        line = {
            "view": view_name(match) if match else "",
            "count": setup + len(captured) - logged + run,
            "sql": statements,
        }
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")
        return response
