"""URLs of benchmarks/http_read.py's site: the dashboard and 300 named views."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from http_site import VIEWS


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("instrumented/", include("instrumented.urls")),
    *(path(f"v/{i}/", ok, name=f"view_{i}") for i in range(VIEWS)),
]
