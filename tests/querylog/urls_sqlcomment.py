"""URLs for the SQL comment tests: the dashboard and one view whose statements go through the proxy alias."""

from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def book(request: HttpRequest, book_id: int) -> HttpResponse:
    """Statements with and without parameters, in nested atomic blocks (SAVEPOINT / RELEASE SAVEPOINT)."""
    with transaction.atomic(using="querylog"), transaction.atomic(using="querylog"):
        with connections["querylog"].cursor() as cursor:
            cursor.execute("SELECT %s + 1 AS n", [book_id])
            cursor.execute("SELECT 'no parameters' AS p")
    return HttpResponse("ok")


urlpatterns = [
    path("instrumented/", include("instrumented.urls")),
    path("shop/books/<int:book_id>/", book, name="book"),
]
