"""Demo views: one of each kind the stats should tell apart."""

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Iterator

from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from .models import Author, Book, PageView


def ensure_catalogue() -> None:
    """Create a small catalogue the first time it is needed."""
    if Author.objects.exists():
        return
    for i in range(10):
        author = Author.objects.create(name=f"Author {i}")
        Book.objects.bulk_create(Book(title=f"Book {i}.{j}", author=author) for j in range(3))


def home(request: HttpRequest) -> HttpResponse:
    """A fast page with links to the others."""
    return render(request, "shop/home.html")


def fast(request: HttpRequest) -> HttpResponse:
    """No SQL at all."""
    return HttpResponse("fast\n", content_type="text/plain")


def catalogue(request: HttpRequest) -> HttpResponse:
    """A handful of distinct queries, on two databases."""
    ensure_catalogue()
    authors = Author.objects.count()
    books = list(Book.objects.select_related("author").order_by("id")[:20])
    cheapest = Book.objects.order_by("price").first()
    PageView.objects.create(path=request.path[:200])
    return render(request, "shop/catalogue.html", {"authors": authors, "books": books, "cheapest": cheapest})


def n_plus_one(request: HttpRequest) -> HttpResponse:
    """The classic N+1: one query for the books, then one per book for its author."""
    ensure_catalogue()
    lines = [f"{book.title} by {book.author.name}" for book in Book.objects.order_by("id")[:15]]  # N+1: author
    return HttpResponse("\n".join(lines), content_type="text/plain")


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
    """One slow statement (SQLite has no SLEEP(): apps.py gives each connection a demo_sleep(seconds))."""
    ensure_catalogue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*), demo_sleep(%s) FROM shop_book", [0.15])  # slow
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


def book(request: HttpRequest, book_id: int) -> HttpResponse:
    """A detail page: the route has a parameter, the stats key does not."""
    ensure_catalogue()
    found = Book.objects.filter(pk=book_id).select_related("author").first()
    return JsonResponse({"id": book_id, "title": found.title if found else None})


def slow(request: HttpRequest) -> HttpResponse:
    """A slow page: 150-250 ms of 'work'."""
    time.sleep(0.15 + (time.time_ns() % 100) / 1000)
    return HttpResponse("slow\n", content_type="text/plain")


def fail(request: HttpRequest) -> HttpResponse:
    """Always raises: a 500, counted as an error."""
    order_total = 42
    raise ZeroDivisionError(f"cannot split order total {order_total} between 0 people")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A streaming body of 5 chunks, 40 ms apart: the time counted is to the end of the body."""

    def chunks() -> Iterator[str]:
        for i in range(5):
            time.sleep(0.04)
            yield f"chunk {i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def async_view(request: HttpRequest) -> HttpResponse:
    """An async view that also runs SQL (through the async ORM)."""
    await asyncio.sleep(0.01)
    count = await Book.objects.acount()
    return HttpResponse(f"{count} books\n", content_type="text/plain")
