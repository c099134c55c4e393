"""Demo views: one of each kind the stats should tell apart."""

import asyncio
import time
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from .models import Author, Book, PageView


def ensure_catalogue() -> None:
    """Create a small catalogue the first time it is needed: in bulk, not a write per row (a finding of its own)."""
    if Author.objects.exists():
        return
    Author.objects.bulk_create(Author(name=f"Author {i}") for i in range(10))
    authors = list(Author.objects.order_by("id"))  # MySQL's bulk_create sets no primary keys
    Book.objects.bulk_create(Book(title=f"Book {i}.{j}", author=a) for i, a in enumerate(authors) for j in range(3))


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


def crunch_numbers(rounds: int) -> int:
    """Pure-Python CPU work: the function a profile of /burn/ shows at the top."""
    total = 0
    for i in range(rounds):
        total += (i * i) % 7
    return total


def burn(request: HttpRequest) -> HttpResponse:
    """A view that burns CPU in one named function (``?rounds=``, capped), for profiles."""
    try:
        rounds = min(max(int(request.GET.get("rounds", "300000")), 0), 5_000_000)
    except ValueError:
        rounds = 300_000
    return HttpResponse(f"burnt {crunch_numbers(rounds)}\n", content_type="text/plain")


async def async_burn(request: HttpRequest) -> HttpResponse:
    """An async view that awaits, runs SQL through the async ORM, then burns CPU in the event loop."""
    await asyncio.sleep(0.03)
    count = await Book.objects.acount()
    return HttpResponse(f"{count} books, burnt {crunch_numbers(300_000)}\n", content_type="text/plain")
