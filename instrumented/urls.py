"""Mount with ``path("instrumented/", include("instrumented.urls"))``: dashboard, API, error references."""

from django.urls import include, path

app_name = "instrumented"

urlpatterns = [
    path("errors/", include("instrumented.error_urls")),
    path("", include("instrumented.dashboard.urls")),
]
