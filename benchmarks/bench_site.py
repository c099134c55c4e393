"""A minimal in-process Django site for the overhead benchmark: trivial, n-query, N+1 and cache views."""

import functools
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import path

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
# contenttypes and auth: their tables (migrated when the benchmark starts) give the ORM N+1 views real relations.
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "instrumented"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": False}]
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


def orm_loop_in_view(request: HttpRequest, n: int) -> HttpResponse:
    """An ORM N+1 whose loop is in the view: each permission's content type read in Python."""
    from django.contrib.auth.models import Permission

    names = [p.content_type.app_label for p in Permission.objects.order_by("id")[:n]]  # the loop
    return HttpResponse(_template("{% for name in names %}{{ name }} {% endfor %}").render({"names": names}))


def orm_loop_in_template(request: HttpRequest, n: int) -> HttpResponse:
    """The same N+1 with its loop in a template: the call site is the template's line, found at the threshold."""
    from django.contrib.auth.models import Permission

    loop = _template("{% for p in permissions %}{{ p.content_type.app_label }} {% endfor %}")
    return HttpResponse(loop.render({"permissions": Permission.objects.order_by("id")[:n]}))


def template_renders(request: HttpRequest, n: int) -> HttpResponse:
    """``n`` renders of a small template (a variable and a loop of three): what a render costs."""
    small = _template("<p>{{ title }}</p>{% for i in items %}{{ i }}{% endfor %}")
    return HttpResponse("".join(small.render({"title": "t", "items": (1, 2, 3)}) for _ in range(n)))


@functools.cache
def _template(source: str) -> Any:
    """A template compiled once (this module is the settings too: engines exist only after setup)."""
    return engines["django"].from_string(source)


urlpatterns = [
    path("trivial/", trivial, name="trivial"),
    path("queries/<int:n>/", queries, name="queries"),
    path("distinct/<int:n>/", distinct_queries, name="distinct"),
    path("n-plus-one/<int:n>/", n_plus_one, name="n_plus_one"),
    path("cache/<int:n>/", cache_calls, name="cache"),
    path("orm/view/<int:n>/", orm_loop_in_view, name="orm_view"),
    path("orm/template/<int:n>/", orm_loop_in_template, name="orm_template"),
    path("templates/<int:n>/", template_renders, name="templates"),
]
