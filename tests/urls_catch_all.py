"""A CMS's URLconf with the package mounted after its catch-all (Wagtail's ``wagtail_serve`` pattern, as most
CMSs have one): ``/instrumented/`` is the CMS's page, not the dashboard (check instrumented.W006)."""

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import include, path, re_path


def cms_page(request: HttpRequest, path: str) -> HttpResponse:
    return HttpResponseNotFound("no such page in the CMS")


urlpatterns = [
    re_path(r"^((?:[\w\-]+/)*)$", cms_page, name="cms_serve"),  # Wagtail's own pattern
    path("instrumented/", include("instrumented.urls")),
]
