"""Test-only fault injection: middleware that raise when a request asks for it, and a session engine that breaks.

Header ``X-Test-Fault``: ``early`` raises before the session and auth middleware ran; ``late`` raises after
them; ``session`` breaks this request's session store and then touches ``request.user``. Switched on by
:func:`with_fault_injection` (in-process tests) or :mod:`tests.support.fault_settings` (server tests); the
demo site never installs it (it keeps its own failing pages under ``errors-demo/``).
"""

from collections.abc import Callable
from typing import Any

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.http import HttpRequest, HttpResponse

HEADER = "HTTP_X_TEST_FAULT"
#: This module is also the session engine (``SESSION_ENGINE``): Django takes its ``SessionStore``.
SESSION_ENGINE = __name__


class InjectedFault(RuntimeError):
    """The exception the fault-injecting middleware raise."""


class SessionBackendDown(ConnectionError):
    """What a session backend raises when its server is unreachable."""


class SessionStore(DatabaseSessionStore):
    """Database sessions; ``broken = True`` (set by ``LateFaultMiddleware``) makes every load fail."""

    broken = False

    def load(self) -> dict[str, Any]:
        if self.broken:
            raise SessionBackendDown("session backend unavailable (injected fault)")
        return super().load()


class EarlyFaultMiddleware:
    """Raises before SessionMiddleware when asked for ``early``: ``request.user`` does not exist yet."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.META.get(HEADER) == "early":
            raise InjectedFault("fault injected before the session and auth middleware")
        return self.get_response(request)


class LateFaultMiddleware:
    """After AuthenticationMiddleware: ``late`` raises; ``session`` breaks the session store, then loads the user."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        fault = request.META.get(HEADER)
        if fault == "late":
            raise InjectedFault("fault injected after the auth middleware")
        if fault == "session":
            request.session.broken = True
            request.user.is_authenticated  # noqa: B018 - loads the session: raises from the session backend
        return self.get_response(request)


def with_fault_injection(middleware: list[str]) -> list[str]:
    """``middleware`` with EarlyFault before SessionMiddleware and LateFault right after AuthenticationMiddleware."""
    result = list(middleware)
    result.insert(
        result.index("django.contrib.sessions.middleware.SessionMiddleware"), f"{__name__}.EarlyFaultMiddleware"
    )
    result.insert(
        result.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1, f"{__name__}.LateFaultMiddleware"
    )
    return result
