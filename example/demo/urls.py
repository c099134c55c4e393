"""URLs of the demo site."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("instrumented/", include("instrumented.urls")),
    path("", include("shop.urls")),
]
