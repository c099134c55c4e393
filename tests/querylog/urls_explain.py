"""Views whose statements the Explain tests read back from the stats: a filter without an index, one with, a
locking read and writes; each on the alias given as ``?alias=``."""

from django.db import connections, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from shop.models import Book


def _alias(request: HttpRequest) -> str:
    return request.GET.get("alias", "default")


def by_title(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"n": len(Book.objects.using(_alias(request)).filter(title="t7"))})


def by_author(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"n": len(Book.objects.using(_alias(request)).filter(author_id=3))})


def by_authors(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"n": len(Book.objects.using(_alias(request)).filter(author_id__in=[3, 4, 5]))})


def multiline(request: HttpRequest) -> JsonResponse:
    with connections[_alias(request)].cursor() as cursor:
        cursor.execute("SELECT id\nFROM shop_book\nWHERE title = %s", ["t7"])
        return JsonResponse({"n": len(cursor.fetchall())})


def locking(request: HttpRequest) -> JsonResponse:
    alias = _alias(request)
    with transaction.atomic(using=alias):
        return JsonResponse({"n": len(Book.objects.using(alias).select_for_update().filter(title="t7"))})


def writes(request: HttpRequest) -> JsonResponse:
    alias = _alias(request)
    Book.objects.using(alias).filter(title="no such title").update(price=1)
    Book.objects.using(alias).filter(title="no such title").delete()
    return JsonResponse({})


urlpatterns = [
    path("instrumented/", include("instrumented.urls")),
    path("by-title/", by_title, name="explain_by_title"),
    path("by-author/", by_author, name="explain_by_author"),
    path("by-authors/", by_authors, name="explain_by_authors"),
    path("multiline/", multiline, name="explain_multiline"),
    path("locking/", locking, name="explain_locking"),
    path("writes/", writes, name="explain_writes"),
]
