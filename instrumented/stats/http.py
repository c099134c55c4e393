"""The outgoing-HTTP probe: requests a view makes to other services, per origin (count, time, errors, slowest).

``http.client.HTTPConnection`` is wrapped once (so urllib, urllib3 and ``requests`` are seen, HTTPS
included), and httpx's transports when httpx is installed. A call is timed from the request line to
the response's headers (the body is the caller's to read); connection failures, timeouts and 5xx
answers are errors. Only the scheme and host (and a non-default port) are kept: never a path, a
query string or credentials. Fail-open: the site's call runs as it would without the probe.
"""

from __future__ import annotations

import functools
import http.client
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from ..failopen import fail_open, failures
from . import events
from .probe import Probe, current_probe

#: The attribute an ``HTTPConnection`` carries while a recorded request is in flight: (probe, origin, start).
IN_FLIGHT = "_instrumented_http"
#: Distinct origins kept per request; the rest are counted under OTHER_ORIGIN.
MAX_ORIGINS = 20
OTHER_ORIGIN = "(other hosts)"
MARK = "_instrumented_wrapped"
#: Set on a connection error once it has been counted.
COUNTED = "_instrumented_counted"


def origin(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host[:port]`` (the port only when it is not the scheme's default)."""
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def _connection_origin(conn: Any) -> str:
    """Where an ``HTTPConnection`` goes: the tunnelled host behind a proxy, else its own host."""
    scheme = "https" if getattr(conn, "default_port", 80) == 443 else "http"
    host = getattr(conn, "_tunnel_host", None) or conn.host
    port = getattr(conn, "_tunnel_port", None) if getattr(conn, "_tunnel_host", None) else conn.port
    return origin(scheme, str(host), port)


def record(probe: Probe, where: str, elapsed: int, error: bool) -> None:
    """Count one outgoing call on the request's probe (and add it to its timeline: it ended just now)."""
    if probe.timeline is not None:
        events.add(probe, perf_counter_ns() - elapsed, elapsed, events.HTTP, where, error)
    calls = probe.http
    if calls is None:
        probe.http = {where: [1, elapsed, int(error), elapsed]}
        return
    entry = calls.get(where)
    if entry is None:
        if len(calls) >= MAX_ORIGINS:
            where = OTHER_ORIGIN
            entry = calls.get(where)
        if entry is None:
            calls[where] = [1, elapsed, int(error), elapsed]
            return
    entry[0] += 1
    entry[1] += elapsed
    entry[2] += int(error)
    if elapsed > entry[3]:
        entry[3] = elapsed


def _finish(conn: Any, error: bool) -> None:
    state = conn.__dict__.pop(IN_FLIGHT, None)
    if state is not None:
        probe, where, start = state
        with fail_open("the HTTP probe failed"):
            record(probe, where, perf_counter_ns() - start, error)


def _wrap_putrequest(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def putrequest(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is not None and probe.active:
            with fail_open("the HTTP probe failed"):
                self.__dict__[IN_FLIGHT] = (probe, _connection_origin(self), perf_counter_ns())
        return method(self, *args, **kwargs)

    return putrequest


def _wrap_failure_point(method: Callable[..., Any]) -> Callable[..., Any]:
    """``endheaders`` (sends the request, connecting first): an exception ends the call as an error."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            _finish(self, True)
            raise

    return wrapper


def _wrap_getresponse(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(self, *args, **kwargs)
        except BaseException:
            _finish(self, True)
            raise
        if IN_FLIGHT in self.__dict__:
            _finish(self, getattr(response, "status", 0) >= 500)
        return response

    return getresponse


def _wrap_connect(method: Callable[..., Any]) -> Callable[..., Any]:
    """A connection that fails before any request line (urllib3 connects HTTPS first) is an error too."""

    @functools.wraps(method)
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = perf_counter_ns()
        try:
            return method(self, *args, **kwargs)
        except BaseException as exc:
            probe = current_probe.get()
            if probe is not None and probe.active and IN_FLIGHT not in self.__dict__:
                with fail_open("the HTTP probe failed"):
                    if not getattr(exc, COUNTED, False):  # an override that calls the base: count once
                        setattr(exc, COUNTED, True)
                        record(probe, _connection_origin(self), perf_counter_ns() - start, True)
            raise

    return connect


def _wrap_httpx(method: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    def where(request: Any) -> str:
        url = request.url
        return origin(str(url.scheme), str(url.host), url.port)

    if is_async:

        @functools.wraps(method)
        async def handle_async_request(self: Any, request: Any) -> Any:
            probe = current_probe.get()
            if probe is None or not probe.active:
                return await method(self, request)
            start = perf_counter_ns()
            error = True
            try:
                response = await method(self, request)
                error = response.status_code >= 500
                return response
            finally:
                with fail_open("the HTTP probe failed"):
                    record(probe, where(request), perf_counter_ns() - start, error)

        setattr(handle_async_request, MARK, True)
        return handle_async_request

    @functools.wraps(method)
    def handle_request(self: Any, request: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active:
            return method(self, request)
        start = perf_counter_ns()
        error = True
        try:
            response = method(self, request)
            error = response.status_code >= 500
            return response
        finally:
            with fail_open("the HTTP probe failed"):
                record(probe, where(request), perf_counter_ns() - start, error)

    setattr(handle_request, MARK, True)
    return handle_request


def install() -> None:
    """Wrap ``http.client`` once, and httpx's transports when httpx is installed."""
    try:
        cls = http.client.HTTPConnection
        if not cls.__dict__.get(MARK):
            cls.putrequest = _wrap_putrequest(cls.putrequest)  # type: ignore[method-assign]
            cls.endheaders = _wrap_failure_point(cls.endheaders)  # type: ignore[method-assign]
            cls.getresponse = _wrap_getresponse(cls.getresponse)  # type: ignore[method-assign]
            cls.connect = _wrap_connect(cls.connect)  # type: ignore[method-assign]
            setattr(cls, MARK, True)
    except Exception as exc:  # noqa: BLE001 - fail open: the site runs without HTTP numbers
        failures.record("installing the HTTP probe failed", exc)
    try:
        import urllib3.connection

        for urllib3_cls in (urllib3.connection.HTTPConnection, urllib3.connection.HTTPSConnection):
            connect = urllib3_cls.__dict__.get("connect")
            if connect is not None and not getattr(connect, MARK, False):
                wrapped = _wrap_connect(connect)  # urllib3 connects HTTPS before the request line
                setattr(wrapped, MARK, True)
                setattr(urllib3_cls, "connect", wrapped)  # noqa: B010 - a method, replaced once
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - fail open
        failures.record("installing the HTTP probe failed", exc)
    try:
        import httpx
    except ImportError:
        return
    try:
        if not getattr(httpx.HTTPTransport.handle_request, MARK, False):
            httpx.HTTPTransport.handle_request = _wrap_httpx(  # type: ignore[method-assign]
                httpx.HTTPTransport.handle_request, False
            )
        if not getattr(httpx.AsyncHTTPTransport.handle_async_request, MARK, False):
            handler = _wrap_httpx(httpx.AsyncHTTPTransport.handle_async_request, True)
            httpx.AsyncHTTPTransport.handle_async_request = handler  # type: ignore[method-assign]
    except Exception as exc:  # noqa: BLE001 - fail open
        failures.record("installing the HTTP probe failed", exc)
