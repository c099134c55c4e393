"""Mount with ``path("instrumented/", include("instrumented.urls"))``: dashboard, API, DBA panel, error references."""

from typing import Any

from django.urls import URLResolver, include, path
from django.urls.resolvers import RoutePattern

app_name = "instrumented"


class _CheckedResolver(URLResolver):
    """The dashboard's URLs, which also report (through Django's URL check, ``manage.py check``) an app mounted
    here but missing from INSTALLED_APPS: then none of the app's own checks is registered."""

    def check(self) -> list[Any]:
        from .checks import not_installed

        return [*super().check(), *not_installed()]


urlpatterns = [
    path("errors/", include("instrumented.errors.urls")),
    path("profiles/", include("instrumented.profiling.urls")),
    path("", include("instrumented.querylog.urls")),
    _CheckedResolver(RoutePattern("", is_endpoint=False), "instrumented.dashboard.urls"),
]
