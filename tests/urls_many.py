"""A URLconf with thousands of distinct named views, and names of every size and alphabet."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def ok(request: HttpRequest, **kwargs: object) -> HttpResponse:
    return HttpResponse("ok")


UNICODE_NAME = "vue-détail_視圖_🚀_\u200b_" + "ü" * 50
LONG_NAME = "long-" + "x" * 10_000

# 50 groups of 100, so resolving stays fast: 5 000 distinct view names.
urlpatterns = [
    path(f"v/{g}/", include(([path(f"{i}/", ok, name=f"view_{g}_{i}") for i in range(100)], f"g{g}")))
    for g in range(50)
]
urlpatterns += [
    path("unicode/", ok, name=UNICODE_NAME),
    path("long/", ok, name=LONG_NAME),
    path("unnamed/", ok),
]
