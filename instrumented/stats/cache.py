"""The cache probe: calls to Django's cache framework per request, per alias (count, time, hits, misses).

Installed once, at start-up: ``CacheHandler.create_connection`` is wrapped so every backend instance it
makes carries its alias, and the backend's class gets timing wrappers around its public methods (once
per class, so every backend works, built-in or not). Inside a recorded request a call costs a
ContextVar lookup and two clock reads; outside one, a ContextVar lookup. Only the outermost call is
counted (``get_many`` may call ``get``; ``DatabaseCache.get`` calls ``get_many``). Fail-open: the
site's call runs as it would without the probe, whatever the probe's own bookkeeping does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from ..failopen import fail_open, failures
from . import events
from .probe import current_probe

#: Methods counted (the async ones of BaseCache run these in a thread, with the request's context).
METHODS = (
    "get",
    "get_many",
    "get_or_set",
    "has_key",
    "set",
    "add",
    "set_many",
    "touch",
    "delete",
    "delete_many",
    "incr",
    "decr",
    "clear",
)
#: The attribute a backend instance made by the handler carries.
ALIAS_ATTRIBUTE = "_instrumented_alias"
#: Instances made outside ``caches`` (``CacheClass(...)`` directly) are counted under this alias.
UNNAMED_ALIAS = "(unnamed)"
#: A marker on wrapped methods and on classes already done.
MARK = "_instrumented_wrapped"
_MISSING = object()


def _count(probe: Any, backend: Any, elapsed: int, hits: int, misses: int, start: int = 0, call: str = "") -> None:
    """Add one finished call to the request's probe, under the backend's alias (and to its timeline)."""
    try:
        alias = backend.__dict__.get(ALIAS_ATTRIBUTE, UNNAMED_ALIAS)
        if probe.timeline is not None:
            events.add(probe, start, elapsed, events.CACHE, alias, call)
        calls = probe.cache
        if calls is None:
            calls = probe.cache = {}
        entry = calls.get(alias)
        if entry is None:
            calls[alias] = [1, elapsed, hits, misses]
        else:
            entry[0] += 1
            entry[1] += elapsed
            entry[2] += hits
            entry[3] += misses
    except Exception as exc:  # noqa: BLE001 - fail open: the call's result goes back as it is
        failures.record("the cache probe failed", exc)


def _wrap_get(method: Callable[..., Any]) -> Callable[..., Any]:
    """``get``: our own sentinel as the default tells a miss from a stored None; the caller gets theirs."""

    @functools.wraps(method)
    def get(self: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active or probe.cache_depth:
            return method(self, key, *args, **kwargs)
        if args:
            default, args = args[0], args[1:]
        else:
            default = kwargs.pop("default", None) if kwargs else None
        probe.cache_depth = 1
        start = perf_counter_ns()
        try:
            result = method(self, key, _MISSING, *args, **kwargs)
        finally:
            elapsed = perf_counter_ns() - start
            probe.cache_depth = 0
        hit = result is not _MISSING
        try:  # _count(), inlined: the most frequent cache call
            alias = self.__dict__.get(ALIAS_ATTRIBUTE, UNNAMED_ALIAS)
            timeline = probe.timeline
            if timeline is not None:  # events.add(), inlined: the most frequent cache call
                if timeline is events.EMPTY:
                    timeline = probe.timeline = []
                if len(timeline) < events.MAX_EVENTS:
                    timeline.append((start, elapsed, events.CACHE, alias, "get hit" if hit else "get miss"))
                else:
                    events.add(probe, start, elapsed, events.CACHE, alias, "get hit" if hit else "get miss")
            calls = probe.cache
            if calls is None:
                calls = probe.cache = {}
            entry = calls.get(alias)
            if entry is None:
                calls[alias] = [1, elapsed, int(hit), int(not hit)]
            else:
                entry[0] += 1
                entry[1] += elapsed
                if hit:
                    entry[2] += 1
                else:
                    entry[3] += 1
        except Exception as exc:  # noqa: BLE001 - fail open
            failures.record("the cache probe failed", exc)
        return result if hit else default

    return get


def _wrap_get_many(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def get_many(self: Any, keys: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active or probe.cache_depth:
            return method(self, keys, *args, **kwargs)
        keys = list(keys)  # a generator would be used up by the backend before it is counted
        probe.cache_depth = 1
        start = perf_counter_ns()
        try:
            result = method(self, keys, *args, **kwargs)
        finally:
            elapsed = perf_counter_ns() - start
            probe.cache_depth = 0
        hits = len(result) if isinstance(result, dict) else 0
        _count(probe, self, elapsed, hits, max(len(keys) - hits, 0), start, f"get_many {hits}/{len(keys)} hits")
        return result

    return get_many


def _wrap_get_or_set(method: Callable[..., Any]) -> Callable[..., Any]:
    """``get_or_set``: a miss is when the backend calls for the default (given as a callable that says so)."""

    @functools.wraps(method)
    def get_or_set(self: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active or probe.cache_depth:
            return method(self, key, *args, **kwargs)
        missed: list[bool] = []
        default = args[0] if args else kwargs.get("default")

        def compute() -> Any:
            missed.append(True)
            return default() if callable(default) else default

        if args:
            args = (compute, *args[1:])
        else:
            kwargs["default"] = compute
        probe.cache_depth = 1
        start = perf_counter_ns()
        try:
            result = method(self, key, *args, **kwargs)
        finally:
            elapsed = perf_counter_ns() - start
            probe.cache_depth = 0
        _count(
            probe,
            self,
            elapsed,
            0 if missed else 1,
            1 if missed else 0,
            start,
            "get_or_set miss" if missed else "get_or_set hit",
        )
        return result

    return get_or_set


def _wrap_call(method: Callable[..., Any]) -> Callable[..., Any]:
    """Any other method: counted and timed, neither a hit nor a miss."""

    name = method.__name__

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active or probe.cache_depth:
            return method(self, *args, **kwargs)
        probe.cache_depth = 1
        start = perf_counter_ns()
        try:
            return method(self, *args, **kwargs)
        finally:
            probe.cache_depth = 0
            _count(probe, self, perf_counter_ns() - start, 0, 0, start, name)

    return call


_WRAPPERS = {"get": _wrap_get, "get_many": _wrap_get_many, "get_or_set": _wrap_get_or_set}


def _wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """The timing wrapper for one backend method (reads say hit or miss)."""
    wrapper = _WRAPPERS.get(name, _wrap_call)(method)
    setattr(wrapper, MARK, True)
    return wrapper


def instrument_class(cls: type) -> None:
    """Wrap ``cls``'s cache methods, once (methods it inherits from a class already done stay as they are)."""
    if cls.__dict__.get(MARK):
        return
    for name in METHODS:
        method = getattr(cls, name, None)
        if method is None or getattr(method, MARK, False) or not callable(method):
            continue
        setattr(cls, name, _wrap(name, method))
    setattr(cls, MARK, True)


def _instrumented_create_connection(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_connection(self: Any, alias: str) -> Any:
        backend = original(self, alias)
        with fail_open("installing the cache probe failed"):
            instrument_class(type(backend))
            setattr(backend, ALIAS_ATTRIBUTE, alias)
        return backend

    setattr(create_connection, MARK, True)
    return create_connection


def install() -> None:
    """Wrap the cache handler once, and the backends it has already made."""
    try:
        from django.core.cache import CacheHandler, caches

        if not getattr(CacheHandler.create_connection, MARK, False):
            CacheHandler.create_connection = _instrumented_create_connection(CacheHandler.create_connection)
        for alias in caches:
            backend = getattr(caches._connections, alias, None)  # made already in this thread
            if backend is not None:
                instrument_class(type(backend))
                setattr(backend, ALIAS_ATTRIBUTE, alias)
    except Exception as exc:  # noqa: BLE001 - fail open: the site runs without cache numbers
        failures.record("installing the cache probe failed", exc)
