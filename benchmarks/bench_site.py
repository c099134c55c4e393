"""A minimal in-process Django site for the overhead benchmark: a trivial view and a 10-query view."""

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


urlpatterns = [path("trivial/", trivial, name="trivial"), path("queries/<int:n>/", queries, name="queries")]
