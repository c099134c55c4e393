"""URLs of the demo site."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("instrumented/", include("instrumented.urls")),
    path("", include("shop.csp_views")),  # demo-only: a strict-CSP page, static files under DEBUG=False
    path("errors-demo/", include("shop.error_urls")),
    path("", include("shop.urls")),
]

handler500 = "instrumented.views.server_error"
