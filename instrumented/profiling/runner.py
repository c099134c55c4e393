"""The request side: whether a request is profiled, and running it under a profiler.

The middleware calls :func:`profile_sync` / :func:`profile_async` only when ``watch.armed`` is set (this
process learnt an arm at its last flush) or the request carries ``X-Instrumented-Profile``; every other
request pays one attribute test and one dict lookup. A header without a session cookie is ignored at
once (no session or user query for anonymous requests, as for Server-Timing); with a cookie the request
is profiled and the user is checked once it has been loaded, when the view returned: the profile of
anyone but a superuser (SUPERUSER_CALLBACK) is thrown away, and nothing tells them it existed.

Everything fails open: a profiler that cannot start, stop or be stored leaves the response as it was.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, get_resolver

from ..access import is_technical_user
from ..conf import Config, get_config
from ..failopen import fail_open, failures
from ..memcached import get_store
from ..stats.probe import Probe
from . import engines
from .store import LocalArm, new_reference, queue, save_profile, watch
from .tree import MAX_TEXT, encode

#: The request header (as in ``request.META``) that asks for a profile, and the response headers.
REQUEST_META = "HTTP_X_INSTRUMENTED_PROFILE"
REFERENCE_HEADER = "X-Instrumented-Profile"
REFUSED_HEADER = "X-Instrumented-Profile-Refused"
PROCESS = f"{socket.gethostname()[:40]}.{os.getpid()}"


@dataclass(slots=True)
class Plan:
    """Why and how one request is profiled."""

    asked: bool  # the header, with a session cookie: kept only for a superuser
    arm: LocalArm | None
    view: str
    route: str
    is_async_view: bool
    refused: str | None = None


def _has_session_cookie(request: HttpRequest) -> bool:
    """A session cookie is present (a substring test before parsing, as for Server-Timing)."""
    cookies = request.META.get("HTTP_COOKIE")
    if not cookies:
        return False
    name = settings.SESSION_COOKIE_NAME
    return name in cookies and name in request.COOKIES


def _resolve(request: HttpRequest) -> tuple[str, str, bool] | None:
    """(view name, route, async view?) of the request's path, resolved as Django will; None when unresolved."""
    try:
        match = get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
    except Resolver404:
        return None
    return match.view_name or match._func_path, match.route or "", iscoroutinefunction(match.func)


def plan(request: HttpRequest, in_loop: bool) -> Plan | None:
    """The profile this request gets, if any (cheap for requests that get none)."""
    asked = request.META.get(REQUEST_META) == "1" and _has_session_cookie(request)
    if (not asked and not watch.armed) or not get_config().enabled:
        return None
    resolved = _resolve(request)
    if resolved is None:
        return None
    view, route, is_async = resolved
    arm = watch.take(view) if watch.armed else None
    if not asked and arm is None:
        return None
    found = Plan(asked, arm, view, route, is_async)
    if in_loop and not is_async:
        found.refused = "a sync view under ASGI runs in asgiref's thread pool, shared by every request: not profiled"
    return found


def _engine(config: Config, plan: Plan, in_loop: bool) -> str:
    """pyinstrument when chosen, installed and able (it samples only its own thread), else the built-in sampler."""
    if config.profile_engine != "pyinstrument" or not engines.pyinstrument_available():
        return "builtin"
    if plan.is_async_view and not in_loop:
        return "builtin"  # the view runs in asgiref's loop thread: only the built-in sampler follows it there
    return "pyinstrument"


def _start(plan: Plan, anchor: FrameType, in_loop: bool) -> Any:
    """A running profiler, or None (refused, or it failed to start: fail open)."""
    if plan.refused:
        return None
    with fail_open("starting a profiler failed"):
        config = get_config()
        engine = _engine(config, plan, in_loop)
        return engines.start(engine, anchor, config.profile_interval_ms / 1000, config.profile_max_seconds, in_loop)
    return None


def profile_sync(get_response: Callable[[HttpRequest], Any], request: HttpRequest, probe: Probe | None) -> Any:
    """``get_response(request)``, profiled when :func:`plan` says so."""
    found = None
    try:
        found = plan(request, in_loop=False)
    except Exception as exc:  # noqa: BLE001 - fail open: not profiled
        failures.record("planning a profile failed", exc)
    if found is None:
        return get_response(request)
    started = time.time()
    session = _start(found, sys._getframe(), in_loop=False)
    try:
        response = get_response(request)
    except BaseException:
        _stop(session)
        raise
    streaming = getattr(response, "streaming", False)
    if streaming and session is not None:
        with fail_open("profiling a streamed body failed"):
            session.follow_body(sys._getframe())
    # The user check (and its queries) is not the request's: stop first, unless the body is still to come.
    result = None if streaming else _stop(session)
    allowed = _allowed(found, request, probe)
    if streaming:
        return _finish_streaming(found, session, request, response, probe, started, allowed)
    return _finish(found, session, result, request, response, probe, started, allowed, None)


async def profile_async(
    get_response: Callable[[HttpRequest], Awaitable[Any]], request: HttpRequest, probe: Probe | None
) -> Any:
    """``profile_sync`` for the async middleware chain (ASGI): async views only; sync ones are refused."""
    found = None
    try:
        found = plan(request, in_loop=True)
    except Exception as exc:  # noqa: BLE001 - fail open: not profiled
        failures.record("planning a profile failed", exc)
    if found is None:
        return await get_response(request)
    started = time.time()
    session = _start(found, sys._getframe(), in_loop=True)
    try:
        response = await get_response(request)
    except BaseException:
        _stop(session)
        raise
    result = _stop(session)
    allowed = await sync_to_async(_allowed)(found, request, probe) if found.asked else False
    note = None
    if getattr(response, "streaming", False):
        note = "under ASGI the streamed body is sent after the view returns, outside this profile"
    return _finish(found, session, result, request, response, probe, started, allowed, note)


def _allowed(found: Plan, request: HttpRequest, probe: Probe | None) -> bool:
    """Whether the user who asked may have the profile; their session and user queries are not the view's."""
    if not found.asked:
        return False
    if probe is not None:
        probe.active = False
    try:
        return is_technical_user(request)
    finally:
        if probe is not None:
            probe.active = True


def _stop(session: Any) -> engines.Result | None:
    """Stop a profiler; None when there was none or it failed (fail open)."""
    if session is None:
        return None
    with fail_open("stopping a profiler failed"):
        return cast(engines.Result, session.stop())
    return None


def _finish_streaming(
    found: Plan,
    session: Any,
    request: HttpRequest,
    response: HttpResponseBase,
    probe: Probe | None,
    started: float,
    allowed: bool,
) -> HttpResponseBase:
    """A streamed body (WSGI): the profile ends when the server closes the response, after the last chunk."""
    if session is None or (not allowed and found.arm is None):
        _stop(session)
        return _finish(found, None, None, request, response, probe, started, allowed, None)
    ref = new_reference()

    def done() -> None:
        _finish(found, session, _stop(session), request, response, probe, started, allowed, None, ref)

    try:
        response._resource_closers.append(done)
    except Exception as exc:  # noqa: BLE001 - an exotic response: profile up to here
        failures.record("profiling a streamed body failed", exc)
        return _finish(found, session, _stop(session), request, response, probe, started, allowed, None)
    if allowed:
        response[REFERENCE_HEADER] = ref
    return response


def _finish(
    found: Plan,
    session: Any,
    result: engines.Result | None,
    request: HttpRequest,
    response: HttpResponseBase,
    probe: Probe | None,
    started: float,
    allowed: bool,
    note: str | None,
    ref: str | None = None,
) -> HttpResponseBase:
    """Store the profile (a superuser's now, an armed one through the flusher) and name it in a response header."""
    if result is None:
        if allowed:
            response[REFUSED_HEADER] = found.refused or "the profiler failed (counted as a failure)"
        return response
    if not allowed and found.arm is None:
        return response
    with fail_open("storing a profile failed"):
        given = ref or new_reference()
        profile = _profile(found, result, request, response, probe, started, given, note, get_config())
        if found.arm is not None:
            queue(found.arm.id, profile)
        if allowed:
            if not save_profile(get_store(), profile):
                if ref is None:  # a streamed body's headers are gone by now
                    response[REFUSED_HEADER] = "memcached did not store the profile"
            elif ref is None:
                response[REFERENCE_HEADER] = given
    return response


def _profile(
    found: Plan,
    result: engines.Result,
    request: HttpRequest,
    response: HttpResponseBase,
    probe: Probe | None,
    started: float,
    ref: str,
    note: str | None,
    config: Config,
) -> dict[str, Any]:
    """The stored value: what was profiled, the tree, and the request's SQL, cache and HTTP totals."""
    queries = db_ns = cache_calls = cache_ns = http_calls = http_ns = 0
    if probe is not None:
        queries, db_ns, cache_calls, cache_ns, http_calls, http_ns = probe.totals()
    path = str(getattr(request, "path", ""))
    return {
        "v": 1,
        "ref": ref,
        "engine": result.engine,
        "view": found.view[: config.max_name_length][:MAX_TEXT],
        "route": found.route[:MAX_TEXT],
        "method": str(request.method or "")[:16],
        "path": path[:MAX_TEXT],
        "status": int(getattr(response, "status_code", 0)) % 1000,
        "process": PROCESS,
        "at": round(started, 3),
        "ms": round((time.time() - started) * 1000, 3),
        "samples": result.samples,
        "interval_ms": config.profile_interval_ms,
        "arm": found.arm.id if found.arm is not None else None,
        "truncated": result.truncated,
        "note": note,
        "sql": {"calls": queries, "ms": round(db_ns / 1e6, 3)},
        "cache": {"calls": cache_calls, "ms": round(cache_ns / 1e6, 3)},
        "http": {"calls": http_calls, "ms": round(http_ns / 1e6, 3)},
        "tree": encode(result.root, config.profile_max_nodes),
    }
