"""InstrumentedMiddleware: the only per-request code. Put it first in ``MIDDLEWARE``.

It starts a probe, lets the request run, and hands the request to the in-process aggregate when the
response is *closed* (after a streaming body has been sent); the flusher thread counts it. It never
talks to memcached and never raises into the request: any failure of its own is counted and the
response goes out as is.
It also adds the ``Server-Timing`` header (app, db, cache, http) for the requests SERVER_TIMING allows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from time import perf_counter_ns
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.functional import LazyObject, empty

from .access import can_view_stats
from .conf import get_config
from .failopen import fail_open, failures
from .naming import static_prefix, unresolved_name
from .profiling.runner import REQUEST_META as PROFILE_META
from .profiling.runner import profile_async, profile_sync
from .profiling.store import watch
from .querylog.sqlcomment import current_comment, enter_view, leave_view
from .stats.intake import hand_over
from .stats.probe import Probe, current_probe
from .stats.samples import thresholds, user_kind


class InstrumentedMiddleware:
    """Records per-view counts, timings, SQL and errors for every request (sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        # Only with SQL_COMMENT on: Django calls every process_view a middleware has, on every request.
        # It adapts a sync process_view to an async chain through a thread: give each mode its own.
        if get_config().sql_comment:
            self.process_view = self._process_view_async if self.is_async else self._process_view
        #: STATIC_URL's path: what WhiteNoise answers before any URL resolves is "(static files)".
        self.static_prefix = static_prefix()

    def _process_view(self, request: HttpRequest, *args: Any) -> None:
        """The view is known: its statements carry the SQL comment that names it (SQL_COMMENT)."""
        enter_view(getattr(request, "resolver_match", None))

    async def _process_view_async(self, request: HttpRequest, *args: Any) -> None:
        """``_process_view`` for the async chain."""
        enter_view(getattr(request, "resolver_match", None))

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        if current_comment.get() is not None:  # leave_view()'s own test first: most requests never set a comment
            leave_view()
        probe = self._begin(request)
        # Profiles (profiling/): one attribute test and one dict lookup for every other request.
        if watch.armed or PROFILE_META in request.META:
            return self._profiled(request, probe)
        if probe is None:
            return self.get_response(request)
        try:
            response = self.get_response(request)
        except BaseException:
            self._finish(request, None, probe)
            raise
        allowed = self._timing_allowed(request)
        if allowed is None:
            allowed = self._timing_user_check(request, probe)
        if allowed:
            self._add_server_timing(response, probe)
        self._defer_finish(request, response, probe)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if current_comment.get() is not None:
            leave_view()
        probe = self._begin(request)
        if watch.armed or PROFILE_META in request.META:
            return await self._profiled_async(request, probe)
        if probe is None:
            return await self.get_response(request)
        try:
            response = await self.get_response(request)
        except BaseException:
            self._finish(request, None, probe)
            raise
        allowed = self._timing_allowed(request)
        if allowed is None:  # loading the user may query the database: not in the event loop
            allowed = await sync_to_async(self._timing_user_check)(request, probe)
        if allowed:
            self._add_server_timing(response, probe)
        self._defer_finish(request, response, probe)
        return response

    def _profiled(self, request: HttpRequest, probe: Probe | None) -> Any:
        """``__call__`` for a request that may be profiled (profiling/runner.py decides and runs it)."""
        if probe is None:
            return profile_sync(self.get_response, request, None)
        try:
            response = profile_sync(self.get_response, request, probe)
        except BaseException:
            self._finish(request, None, probe)
            raise
        self._after(request, response, probe)
        return response

    async def _profiled_async(self, request: HttpRequest, probe: Probe | None) -> Any:
        """``__acall__`` for a request that may be profiled."""
        if probe is None:
            return await profile_async(self.get_response, request, None)
        try:
            response = await profile_async(self.get_response, request, probe)
        except BaseException:
            self._finish(request, None, probe)
            raise
        allowed = self._timing_allowed(request)
        if allowed is None:
            allowed = await sync_to_async(self._timing_user_check)(request, probe)
        if allowed:
            self._add_server_timing(response, probe)
        self._defer_finish(request, response, probe)
        return response

    def _after(self, request: HttpRequest, response: HttpResponseBase, probe: Probe) -> None:
        """Server-Timing when allowed, and the finish deferred to the response's close."""
        allowed = self._timing_allowed(request)
        if allowed is None:
            allowed = self._timing_user_check(request, probe)
        if allowed:
            self._add_server_timing(response, probe)
        self._defer_finish(request, response, probe)

    @staticmethod
    def _timing_allowed(request: HttpRequest) -> bool | None:
        """Server-Timing for this request: yes, no, or None when PERMISSION_CALLBACK must decide.

        Without a session cookie and with ``request.user`` not loaded, the answer is no without asking:
        anonymous requests never pay a session or user query for the header.
        """
        try:
            mode = get_config().server_timing
            if mode != "staff":
                return mode == "all"
            user = request.__dict__.get("user")
            if user is not None and (not issubclass(type(user), LazyObject) or user._wrapped is not empty):
                return None
            # Most anonymous requests carry no cookie at all: no settings read, no parsing.
            cookies = request.META.get("HTTP_COOKIE")
            if not cookies:
                return False
            cookie_name = settings.SESSION_COOKIE_NAME
            if cookie_name not in cookies:  # a substring test before parsing
                return False
            return None if cookie_name in request.COOKIES else False
        except Exception as exc:  # noqa: BLE001 - fail open: no header
            failures.record("the Server-Timing header failed", exc)
            return False

    @staticmethod
    def _timing_user_check(request: HttpRequest, probe: Probe) -> bool:
        """PERMISSION_CALLBACK (default: active staff); its session and user queries are not the view's."""
        probe.active = False
        try:
            return can_view_stats(request)
        finally:
            probe.active = True

    @staticmethod
    def _add_server_timing(response: HttpResponseBase, probe: Probe) -> None:
        """``Server-Timing: app;dur=…, db;dur=…;desc="N queries", cache;dur=…, http;dur=…`` (milliseconds)."""
        with fail_open("the Server-Timing header failed"):
            app_ns = perf_counter_ns() - probe.start_ns
            queries, db_ns, cache_calls, cache_ns, http_calls, http_ns = probe.totals()
            parts = [f"app;dur={app_ns / 1e6:.2f}", f'db;dur={db_ns / 1e6:.2f};desc="{queries} queries"']
            if cache_calls:
                parts.append(f'cache;dur={cache_ns / 1e6:.2f};desc="{cache_calls} calls"')
            if http_calls:
                parts.append(f'http;dur={http_ns / 1e6:.2f};desc="{http_calls} calls"')
            response["Server-Timing"] = ", ".join(parts)
            if get_config().server_timing == "staff":
                # Only some users get it: a shared cache must not serve one staff member's variant to everyone.
                patch_vary_headers(response, ("Cookie",))
                patch_cache_control(response, private=True)

    def _begin(self, request: HttpRequest) -> Probe | None:
        """A new probe for this request, or None when recording is off or the request is not sampled."""
        config = get_config()
        if not config.enabled:
            return None
        rate = config.sample_rate
        if rate < 1.0 and random.random() >= rate:
            current_probe.set(None)
            return None
        probe = Probe(
            perf_counter_ns(), config.n_plus_one_threshold, config.slow_query_ms, request, config.samples_per_view > 0
        )
        current_probe.set(probe)
        meta = request.META
        for key in config.queue_time_meta:  # X-Request-Start: kept raw, parsed in the flusher thread
            stamp = meta.get(key)
            if stamp is not None:
                probe.queue_stamp = stamp
                break
        return probe

    def _defer_finish(self, request: HttpRequest, response: HttpResponseBase, probe: Probe) -> None:
        """Finish when the server closes the response: the body (streaming or not) has been sent."""
        try:
            response._resource_closers.append(partial(self._finish, request, response, probe))
        except Exception:  # noqa: BLE001 - an exotic response object: finish now rather than never
            self._finish(request, response, probe)

    def _finish(self, request: HttpRequest, response: HttpResponseBase | None, probe: Probe) -> None:
        """Hand the finished request over (stats/intake.py, the door ``record()`` uses too); never raises."""
        if not probe.active:
            return
        end_ns = perf_counter_ns()
        probe.end()  # nothing of the request waits with it for the flusher
        try:
            status = response.status_code if response is not None else 500
            match = getattr(request, "resolver_match", None)
            if match is not None:
                view, route = match.view_name or match._func_path, match.route or ""
            else:
                view, route = unresolved_name(status, request.path, self.static_prefix), ""
            if probe.timeline is not None:
                # samples.admit(), inlined (a call costs more than the test): not slower than the view's K-th
                # slowest of the bucket so far, its timeline is let go and nothing of it is built.
                entry = thresholds.get(view)
                if entry is not None and end_ns < entry[0] and end_ns - probe.start_ns <= entry[1]:
                    probe.timeline = None
                else:
                    probe.user_kind = user_kind(request)
            hand_over((view, route, request.method or "", status, end_ns - probe.start_ns, probe, end_ns))
        except Exception as exc:  # noqa: BLE001 - fail open; by hand: fail_open() costs ~0.15-0.25 µs a request
            failures.record("recording a request failed", exc)
