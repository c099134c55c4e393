"""System checks: bad settings, a missing or ill-placed middleware, memcached unreachable.

Ids: instrumented.E001 (bad setting), instrumented.W001 (middleware missing), instrumented.W002
(middleware not first), instrumented.W003 (memcached unreachable).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from .conf import get_config

MIDDLEWARE_PATH = "instrumented.middleware.InstrumentedMiddleware"


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
    return [
        Warning(
            f"memcached at {', '.join(config.server_names)} is not answering ({reason}).",
            hint="Start memcached or fix INSTRUMENTED['SERVERS']; the site keeps working but records nothing.",
            id="instrumented.W003",
        )
    ]
