"""Demo-only fault injection: middleware that raise when a request asks for it (header ``X-Demo-Fault``).

``early`` raises before the session and auth middleware ran; ``late`` raises after them; ``session``
breaks this request's session store (see ``shop.error_sessions``) and then touches ``request.user``.
Installed by ``shop.error_settings`` only, never by the demo's own settings.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEADER = "HTTP_X_DEMO_FAULT"


class DemoFault(RuntimeError):
    """The exception the fault-injecting middleware raise."""


class EarlyFaultMiddleware:
    """Raises before SessionMiddleware when asked for ``early``: ``request.user`` does not exist yet."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.META.get(HEADER) == "early":
            raise DemoFault("fault injected before the session and auth middleware")
        return self.get_response(request)


class LateFaultMiddleware:
    """After AuthenticationMiddleware: ``late`` raises; ``session`` breaks the session store, then loads the user."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        fault = request.META.get(HEADER)
        if fault == "late":
            raise DemoFault("fault injected after the auth middleware")
        if fault == "session":
            request.session.broken = True
            request.user.is_authenticated  # noqa: B018 - loads the session: raises from the session backend
        return self.get_response(request)
