"""Settings for the error-reference tests: a base settings module plus the demo's fault injection.

``DJANGO_SETTINGS_MODULE=shop.error_settings`` with ``ERROR_DEMO_BASE_SETTINGS`` naming the base (default
``demo.settings``; the tests use ``tests.settings``). Secrets for the leak tests come from the environment.
"""

import os
from importlib import import_module

_base = import_module(os.environ.get("ERROR_DEMO_BASE_SETTINGS", "demo.settings"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})


def with_fault_injection(middleware: list[str]) -> list[str]:
    """``middleware`` with EarlyFault before SessionMiddleware and LateFault right after AuthenticationMiddleware."""
    result = list(middleware)
    result.insert(
        result.index("django.contrib.sessions.middleware.SessionMiddleware"),
        "shop.error_middleware.EarlyFaultMiddleware",
    )
    result.insert(
        result.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
        "shop.error_middleware.LateFaultMiddleware",
    )
    return result


MIDDLEWARE = with_fault_injection(_base.MIDDLEWARE)
SESSION_ENGINE = "shop.error_sessions"

# Planted secrets, under names Django's own filter does not hide.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
DATABASE_URL = os.environ.get("DATABASE_URL", "")
SLACK_WEBHOOK = os.environ.get("SLACK_WEBHOOK", "")
