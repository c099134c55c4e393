"""System checks: bad settings, a missing or ill-placed middleware, memcached unreachable.

Ids: instrumented.E001 (bad setting), instrumented.W001 (middleware missing), instrumented.W002
(middleware not first), instrumented.W003 (memcached unreachable), instrumented.W004 (DEBUG off and the
dashboard's static files not collected), instrumented.W005 (the URLs mounted, the app not installed: run
through Django's URL check, as no check of an app that is not installed is registered), instrumented.W006
(the dashboard's URL answered by another view: a catch-all pattern before it, as a CMS has), instrumented.W007
(the middleware listed more than once).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from .conf import get_config

MIDDLEWARE_PATH = "instrumented.middleware.InstrumentedMiddleware"
NOT_INSTALLED_PROBLEM = (
    "'instrumented' is not in INSTALLED_APPS: its pages have no templates, and no SQL, cache or outgoing HTTP "
    "is counted, no error gets a reference."
)
NOT_INSTALLED_HINT = 'Add it in settings.py: INSTALLED_APPS += ["instrumented"]'


def not_installed() -> list[CheckMessage]:
    """W005 when the app's URLs are mounted (this runs from their URL check) but the app is not installed."""
    from django.apps import apps

    if apps.is_installed("instrumented"):
        return []
    return [Warning(NOT_INSTALLED_PROBLEM, hint=NOT_INSTALLED_HINT, id="instrumented.W005")]


@register("instrumented")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every INSTRUMENTED value has the right type and range."""
    return [
        Error(problem, hint="See the settings table in django-instrumented's README.", id="instrumented.E001")
        for problem in get_config().problems
    ]


@register("instrumented")
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The middleware is installed, and first, so its timing covers every other middleware."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        return [
            Warning(
                "InstrumentedMiddleware is not in MIDDLEWARE: no per-view stats will be recorded.",
                hint=f'Add "{MIDDLEWARE_PATH}" as the first entry of MIDDLEWARE.',
                id="instrumented.W001",
            )
        ]
    if middleware.count(MIDDLEWARE_PATH) > 1:
        return [
            Warning(
                f"InstrumentedMiddleware is in MIDDLEWARE {middleware.count(MIDDLEWARE_PATH)} times: every request "
                "would be counted once per entry, the outer entries timing the inner ones.",
                hint=f'Keep one "{MIDDLEWARE_PATH}", the first entry of MIDDLEWARE.',
                id="instrumented.W007",
            )
        ]
    if middleware[0] != MIDDLEWARE_PATH:
        return [
            Warning(
                "InstrumentedMiddleware is not the first entry of MIDDLEWARE: time spent in the middleware "
                "above it, and exceptions raised there, are not counted.",
                hint=f'Move "{MIDDLEWARE_PATH}" to the top of MIDDLEWARE.',
                id="instrumented.W002",
            )
        ]
    return []


@register("instrumented")
def check_memcached(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """memcached answers (a warning only: the site runs fine without it, the stats do not)."""
    config = get_config()
    if config.problems or not config.enabled:
        return []
    from .memcached import Store

    store = Store(config)
    try:
        reason = store.ping(config.keys.ping())
    finally:
        store.close()
    if reason is None:
        return []
    from .failopen import failures
    from .recording import LONG_RUNNING_COMMANDS, command_line

    if command_line is not None and command_line not in LONG_RUNNING_COMMANDS:
        # A one-off command (check, migrate): this warning says it all; its own recording's failed writes, at
        # exit, would only repeat it as "memcached get failed" lines.
        failures.quiet = ("memcached ",)
    return [
        Warning(
            f"memcached at {', '.join(config.server_names)} is not answering ({reason}).",
            hint="Start memcached or fix INSTRUMENTED['SERVERS']; the site keeps working but records nothing.",
            id="instrumented.W003",
        )
    ]


#: A file of the dashboard's own, looked for in STATIC_ROOT.
STATIC_PROBE = "instrumented/dashboard.js"


def static_files_problem() -> str | None:
    """Why the dashboard's CSS and JavaScript cannot be served from STATIC_ROOT, or None when they are there.

    Only a local storage is looked into; a remote one (S3 and the like) is trusted to have been uploaded.
    """
    from django.apps import apps

    if not apps.is_installed("django.contrib.staticfiles"):
        return "django.contrib.staticfiles is not in INSTALLED_APPS"
    from django.contrib.staticfiles.storage import staticfiles_storage
    from django.core.files.storage import FileSystemStorage

    if not isinstance(staticfiles_storage, FileSystemStorage) or _urlconf_serves(STATIC_PROBE):
        return None
    if not getattr(settings, "STATIC_ROOT", None):
        return "STATIC_ROOT is not set"
    if not staticfiles_storage.exists(STATIC_PROBE):
        return f"{STATIC_PROBE} is not in STATIC_ROOT ({settings.STATIC_ROOT})"
    return None


def _urlconf_serves(name: str) -> bool:
    """The site's own URLconf answers for the file under STATIC_URL (as the demo's static view does)."""
    from urllib.parse import urlsplit

    from django.urls import Resolver404, resolve

    static_url = str(getattr(settings, "STATIC_URL", "") or "")
    if urlsplit(static_url).netloc:
        return False  # served by another host: nothing here to look at
    try:
        resolve("/" + static_url.lstrip("/") + name)
    except Resolver404:
        return False
    return True


@register("instrumented")
def check_static_files(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With DEBUG off, Django serves no static files: the dashboard's must have been collected for a server to.
    Not in ``manage.py test`` runs: tests serve no static files (and Django runs them with DEBUG off)."""
    from .recording import command_line

    if settings.DEBUG or command_line == "test":
        return []
    problem = static_files_problem()
    if problem is None:
        return []
    return [
        Warning(
            f"DEBUG is False and {problem}: the dashboard would have no CSS and its JavaScript would not run "
            "(no refresh, no sorting); the page says so.",
            hint="Set STATIC_ROOT, run `python manage.py collectstatic`, and serve STATIC_URL with WhiteNoise "
            "(whitenoise.middleware.WhiteNoiseMiddleware) or your web server.",
            id="instrumented.W004",
        )
    ]


@register("instrumented", "urls")
def check_dashboard_reachable(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The dashboard's URL leads to the dashboard: a catch-all pattern listed before the package's URLs (Wagtail's
    ``wagtail_serve``, most CMSs) answers ``/instrumented/`` itself, while ``/instrumented/api/views`` still works."""
    from django.urls import NoReverseMatch, Resolver404, resolve, reverse

    from .dashboard.views import dashboard

    try:
        url = reverse("instrumented:dashboard")
    except NoReverseMatch:
        return []  # not mounted: the site wants the stats without the pages
    try:
        match = resolve(url)
    except Resolver404:
        return []
    if match.func is dashboard:
        return []
    other = f"{match.view_name or match._func_path} (route {match.route!r})"
    return [
        Warning(
            f"{url} is answered by {other}, not by the dashboard: a pattern listed before the package's URLs "
            "catches it (a CMS's catch-all, such as Wagtail's).",
            hint='Put the package\'s URLs first: urlpatterns = [path("instrumented/", include("instrumented.urls")), '
            "*urlpatterns]",
            id="instrumented.W006",
        )
    ]
