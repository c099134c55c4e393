"""Demo-only views that fail in the ways the error-reference tests need."""

# ruff: noqa: F841 - the failing views keep locals on purpose: the traceback pages show (or must mask) them

import os
import sys

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.debug import sensitive_variables


@sensitive_variables("card_number")
def secret_fail(request: HttpRequest) -> HttpResponse:
    """Fails with secrets in its locals and message: none of them may reach a page or memcached."""
    api_token = os.environ.get("DEMO_API_TOKEN", "demo-api-token-0123456789")
    # Read from innocently named variables: only the local's name (or the decorator) can hide them.
    password = os.environ.get("DEMO_VALUE_A", "")
    card_number = os.environ.get("DEMO_VALUE_B", "")
    database_url = getattr(settings, "DATABASE_URL", "postgres://shop:demo-db-password@db.internal/shop")
    connection_info = {"url": database_url, "user": "shop"}
    visible_marker = "visible-local-marker"
    raise ConnectionError(f"cannot connect to {database_url} (token {api_token[:4]}...)")


async def async_fail(request: HttpRequest) -> HttpResponse:
    """An async view that fails: under ASGI, handler500 runs in a worker thread and must still see the exception."""
    pending_orders = 3
    raise TimeoutError(f"async demo failure with {pending_orders} pending orders")


def user_fail(request: HttpRequest) -> HttpResponse:
    """Touches request.user, then fails: with a broken session backend, the first line already raises."""
    name = request.user.get_username() if request.user.is_authenticated else "anonymous"
    raise LookupError(f"demo failure for {name}")


def big_fail(request: HttpRequest) -> HttpResponse:
    """Fails deep in a recursion with large locals: the stored page must stay under memcached's item limit."""
    blob = os.urandom(2_000_000).hex()
    rows = [{"id": i, "payload": os.urandom(32).hex()} for i in range(50_000)]

    def dive(depth: int) -> int:
        chunk = os.urandom(4000).hex()
        if depth == 0:
            raise RecursionError(f"gave up at depth 0 with {len(blob)} + {len(rows)} + {len(chunk)}")
        return dive(depth - 1)

    return HttpResponse(str(dive(min(300, sys.getrecursionlimit() // 4))))


def login_fail(request: HttpRequest) -> HttpResponse:
    """A form handler that copies POSTed secrets into innocently named locals, then fails."""
    supplied = request.POST.get("password", "")
    new_password1 = request.POST.get("new_password1", "")
    raise RuntimeError(f"login backend down ({len(supplied) + len(new_password1)} characters received)")


def reset_fail(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    """A password-reset link whose handler fails: the token in the path is a live credential."""
    raise LookupError(f"no user for {uidb64}")


def credentials_fail(request: HttpRequest) -> HttpResponse:
    """Copies the request's own credentials into harmless names and secret-named dict keys, then fails on a
    posted password (``int()`` puts the value in the message): none of them may reach a page or memcached."""
    hdr = request.META.get("HTTP_AUTHORIZATION", "")
    sess = request.session.session_key
    seed = request.POST.get("seed", "")
    options = {key: f"{seed}-{key}-value" for key in ("pw", "pwd", "passwd", "secret", "token", "auth")}
    return HttpResponse(int(request.POST["password"]))


def echo_fail(request: HttpRequest) -> HttpResponse:
    """Echoes a posted comment of any size into the exception message, as careless validation code does."""
    comment = request.POST.get("comment", "")
    raise ValueError(f"cannot store comment {comment!r}")
