"""A minimal in-process Django site for the overhead benchmark: trivial, n-query, N+1 and cache views."""

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
INSTALLED_APPS = ["instrumented"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
MIDDLEWARE = ["instrumented.middleware.InstrumentedMiddleware"]
USE_TZ = True
INSTRUMENTED: dict = {}


def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def queries(request: HttpRequest, n: int) -> HttpResponse:
    with connection.cursor() as cursor:
        for i in range(n):
            cursor.execute("SELECT %s", [i])
            cursor.fetchone()
    return HttpResponse("ok")


def distinct_queries(request: HttpRequest, n: int) -> HttpResponse:
    """``n`` queries, each its own template: below the N+1 threshold, no call site is looked up."""
    with connection.cursor() as cursor:
        for i in range(n):
            cursor.execute(f"SELECT %s AS c{i}", [i])
            cursor.fetchone()
    return HttpResponse("ok")


def n_plus_one(request: HttpRequest, n: int) -> HttpResponse:
    """One template, ``n`` runs with different parameters: crosses the N+1 threshold, so a call site is looked up."""
    with connection.cursor() as cursor:
        for i in range(n):
            cursor.execute("SELECT %s", [i])  # one template
            cursor.fetchone()
    return HttpResponse("ok")


def cache_calls(request: HttpRequest, n: int) -> HttpResponse:
    """``n`` cache reads (LocMem), half hits."""
    cache.set("bench", 1)
    for i in range(n):
        cache.get("bench" if i % 2 else "absent")
    return HttpResponse("ok")


urlpatterns = [
    path("trivial/", trivial, name="trivial"),
    path("queries/<int:n>/", queries, name="queries"),
    path("distinct/<int:n>/", distinct_queries, name="distinct"),
    path("n-plus-one/<int:n>/", n_plus_one, name="n_plus_one"),
    path("cache/<int:n>/", cache_calls, name="cache"),
]
