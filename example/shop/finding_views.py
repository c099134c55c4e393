"""Demo views for "find the line": an N+1 through a reverse relation, exact duplicates, a slow query,
a cached view and calls to another service (the foreign-key N+1 is views.n_plus_one)."""

import json
import os
import urllib.request

from django.core.cache import caches
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from .models import Author, Book, PageView
from .views import ensure_catalogue


def authors(request: HttpRequest) -> HttpResponse:
    """An N+1 through a reverse relation: one query for the authors, then one per author for their books."""
    ensure_catalogue()
    lines = []
    for author in Author.objects.order_by("id"):
        titles = [book.title for book in author.books.all()]  # N+1: books
        lines.append(f"{author.name}: {', '.join(titles)}")
    return HttpResponse("\n".join(lines), content_type="text/plain")


def author_of_the_day() -> Author | None:
    """A lookup that every part of a page repeats: the same query, the same parameters (a missing cache)."""
    first = Author.objects.order_by("id").values_list("id", flat=True).first()
    return Author.objects.filter(pk=first).first()


def duplicates(request: HttpRequest) -> JsonResponse:
    """Exact duplicates: the same statement with the same parameters, three times in one request."""
    ensure_catalogue()
    header, sidebar, footer = author_of_the_day(), author_of_the_day(), author_of_the_day()
    return JsonResponse({"header": str(header), "sidebar": str(sidebar), "footer": str(footer)})


def slow_query(request: HttpRequest) -> JsonResponse:
    """One slow statement (SQLite has no SLEEP(): apps.py gives each connection a demo_sleep(seconds)), filtered on
    a field without an index (Book.price): Explain on its row shows the full scan and names that field."""
    ensure_catalogue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*), demo_sleep(%s) FROM shop_book WHERE price >= %s", [0.15, 0])  # slow
        (books, _slept) = cursor.fetchone()
    return JsonResponse({"books": books})


def bestsellers() -> list[str]:
    return list(Book.objects.order_by("-price", "id").values_list("title", flat=True)[:5])


def cached(request: HttpRequest) -> JsonResponse:
    """A cached view: this process's memory (LocMem) for the list, the shared memcached for a counter."""
    ensure_catalogue()
    top = caches["default"].get_or_set("shop:bestsellers", bestsellers, 60)
    shared = caches["shared"]
    stock = shared.get("shop:stock")
    if stock is None:
        stock = Book.objects.count()
        shared.set("shop:stock", stock, 60)
    return JsonResponse({"bestsellers": top, "stock": stock})


def upstream_url(request: HttpRequest) -> str:
    """The other service the demo calls: DEMO_UPSTREAM_URL, else this site's own fast page."""
    return os.environ.get("DEMO_UPSTREAM_URL") or request.build_absolute_uri("/fast/")


def outgoing(request: HttpRequest) -> JsonResponse:
    """Calls another service twice, through requests and through urllib (both end in http.client)."""
    import requests

    url = upstream_url(request)
    answers = {}
    try:
        answers["requests"] = requests.get(url, timeout=2).status_code
    except requests.RequestException as error:
        answers["requests"] = type(error).__name__
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            answers["urllib"] = response.status
    except OSError as error:
        answers["urllib"] = type(error).__name__
    return JsonResponse({"upstream": json.dumps(answers)})


def shelves(request: HttpRequest) -> HttpResponse:
    """An N+1 whose statement differs only in the length of its IN list: one query per author for the books of
    some of its titles (1, 2, 3… ids), one per-request key whatever the length."""
    ensure_catalogue()
    lines = []
    for n, author in enumerate(Author.objects.order_by("id")):
        ids = list(author.books.order_by("id").values_list("id", flat=True)[:3])[: n % 3 + 1]  # N+1: values_list
        lines.append(f"{author.name}: {len(Book.objects.filter(id__in=ids))}")  # N+1: IN list
    return HttpResponse("\n".join(lines), content_type="text/plain")


def page_views(request: HttpRequest) -> HttpResponse:
    """A write per row in a loop, each in its own transaction (BEGIN/COMMIT, SAVEPOINT/RELEASE: never an N+1):
    one INSERT per row where one bulk_create would do."""
    with transaction.atomic(using="analytics"):
        for i in range(6):
            with transaction.atomic(using="analytics"):
                PageView.objects.using("analytics").create(path=f"{request.path}{i}")  # write per row
    return HttpResponse("ok\n", content_type="text/plain")


def commented(request: HttpRequest) -> JsonResponse:
    """Raw SQL carrying comments (``/* user 42 */``, ``-- …``): removed from the stats' templates, counted."""
    ensure_catalogue()
    user = request.GET.get("user", "42")[:8]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM shop_book /* user {int(user) if user.isdigit() else 0} */ -- commented")
        (books,) = cursor.fetchone()
    return JsonResponse({"books": books})
