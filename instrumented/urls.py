"""Mount with ``path("instrumented/", include("instrumented.urls"))``: dashboard, API, DBA panel, error references."""

from django.urls import include, path

app_name = "instrumented"

urlpatterns = [
    path("errors/", include("instrumented.errors.urls")),
    path("profiles/", include("instrumented.profiling.urls")),
    path("", include("instrumented.querylog.urls")),
    path("", include("instrumented.dashboard.urls")),
]
