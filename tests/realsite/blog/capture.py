"""Ground truth for the tests: every request's statements, counted by Django's own CaptureQueriesContext and
noted as run (placeholders, no values; a COMMIT that Django logs without a cursor is not counted) by an execute_wrapper of the request's own, one JSON line per request
in ``$REALSITE_DATA_DIR/capture-<pid>.jsonl``."""

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

        with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(note):
            response = self.get_response(request)  # a TemplateResponse is rendered by then (in Django's handler)
        match = getattr(request, "resolver_match", None)
        # Django logs a transaction's COMMIT/ROLLBACK in the capture without running it through a cursor.
        ends = sum(1 for q in captured.captured_queries if q["sql"] in ("COMMIT", "ROLLBACK"))
        line = {"view": view_name(match) if match else "", "count": len(captured) - ends, "sql": statements}
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")
        return response
