"""Demo views for the slowest requests: a planted latency, statements in a known order, a template, a cache call."""

from typing import Any

from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.template.loader import render_to_string

from .models import Book
from .views import ensure_catalogue


def planted(request: HttpRequest) -> JsonResponse:
    """``?ms=N``: 1-7 book lookups (N % 7 + 1, so some requests are N+1), one statement that sleeps N ms,
    a cache read and a template render. Answers with the statements it ran, in order, as its own wrapper saw
    them: the test's per-request capture to check a sample against."""
    raw = request.GET.get("ms", "0")
    ms = min(int(raw), 2000) if raw.isdigit() and len(raw) < 6 else 0
    captured: list[str] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        ensure_catalogue()
        titles = [book.title for i in range(ms % 7 + 1) if (book := Book.objects.filter(pk=i + 1).first())]
        with connection.cursor() as cursor:
            cursor.execute("SELECT demo_sleep(%s)", [ms / 1000])
        caches["default"].get("shop:planted")
        html = render_to_string("shop/planted.html", {"titles": titles, "ms": ms})
    return JsonResponse({"ms": ms, "sql": captured, "html": len(html)})


def many_statements(request: HttpRequest) -> JsonResponse:
    """``?n=N`` statements (up to 100 000) and, with ``?big=1``, one statement of 1 MB: a flood for the bounds."""
    raw = request.GET.get("n", "0")
    n = min(int(raw), 100_000) if raw.isdigit() and len(raw) < 7 else 0
    with connection.cursor() as cursor:
        for i in range(n):
            cursor.execute("SELECT %s", [i])
        if request.GET.get("big"):
            cursor.execute("SELECT '" + "x" * 1_000_000 + "' AS big")
    return JsonResponse({"n": n})
