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


def _outcome(name: str, args: tuple[Any, ...], result: Any, missed: list[bool]) -> tuple[int, int]:
    """(hits, misses) of one finished call; writes go uncounted."""
    if name == "get":
        return (0, 1) if result is _MISSING else (1, 0)
    if name == "get_many":
        keys = args[0] if args else ()
        hits = len(result)
        return hits, max(len(keys) - hits, 0) if hasattr(keys, "__len__") else 0
    if name == "get_or_set":
        return (0, 1) if missed else (1, 0)
    return 0, 0


def _wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A timing wrapper around one backend method."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active or probe.cache_depth:
            return method(self, *args, **kwargs)
        missed: list[bool] = []
        call_args, call_kwargs = args, kwargs
        caller_default = _MISSING
        with fail_open("the cache probe failed"):
            if name == "get":  # our own sentinel tells a miss from a stored None; the caller still gets theirs
                caller_default = args[1] if len(args) > 1 else kwargs.get("default")
                call_args = (args[0], _MISSING, *args[2:])
                call_kwargs = {k: v for k, v in kwargs.items() if k != "default"}
            elif name == "get_or_set" and (len(args) > 1 or "default" in kwargs):
                default = args[1] if len(args) > 1 else kwargs["default"]

                def compute() -> Any:  # the backend calls it only on a miss
                    missed.append(True)
                    return default() if callable(default) else default

                if len(args) > 1:
                    call_args = (args[0], compute, *args[2:])
                else:
                    call_kwargs = {**kwargs, "default": compute}
        probe.cache_depth += 1
        start = perf_counter_ns()
        try:
            result = method(self, *call_args, **call_kwargs)
        finally:
            elapsed = perf_counter_ns() - start
            probe.cache_depth -= 1
        with fail_open("the cache probe failed"):
            hits, misses = _outcome(name, args, result, missed)
            alias = getattr(self, ALIAS_ATTRIBUTE, UNNAMED_ALIAS)
            entry = probe.cache.get(alias)
            if entry is None:
                probe.cache[alias] = [1, elapsed, hits, misses]
            else:
                entry[0] += 1
                entry[1] += elapsed
                entry[2] += hits
                entry[3] += misses
        if name == "get" and result is _MISSING:
            return caller_default
        return result

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
