"""memcached I/O only: the client, the circuit breaker and value packing; no key knowledge (see keys.py).

Every call fails open: errors are counted, logged at most once a minute per kind, and turned into
"nothing stored" / "nothing found" for the caller. Nothing here raises into a request.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from typing import Any

from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient

from .conf import Config, get_config
from .failopen import fail_open, failures

#: Values larger than this are zlib-compressed before they are stored.
COMPRESS_OVER = 1024
#: memcached's default item limit is 1 MiB; stay well below it.
MAX_VALUE_BYTES = 900 * 1024

#: Largest value unpack() inflates: memcached is not trusted, a compressed bomb must not exhaust memory.
MAX_UNPACKED_BYTES = 64 * 1024 * 1024

_PLAIN = b"j"
_ZLIB = b"z"


def pack(obj: Any) -> bytes:
    """JSON (never pickle: memcached is not a trusted store), compressed when large."""
    # errors="replace": a lone surrogate (raw SQL built from bad input) must not make a snapshot unwritable.
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
    if len(raw) > COMPRESS_OVER:
        return _ZLIB + zlib.compress(raw, 6)
    return _PLAIN + raw


class ValueTooLarge(ValueError):
    """A stored value inflates past the caller's limit: not something this package wrote, or over a budget."""


def inflate(data: bytes, limit: int = MAX_UNPACKED_BYTES) -> bytes | None:
    """The JSON bytes of a packed value (None when it is not one); raises ValueTooLarge past ``limit``."""
    kind, body = data[:1], data[1:]
    if kind == _ZLIB:
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, limit)
        except zlib.error:
            return None
        if inflater.unconsumed_tail or (len(body) >= limit and not inflater.eof):
            raise ValueTooLarge(f"inflates past {limit} bytes")
    elif kind != _PLAIN:
        return None
    elif len(body) > limit:
        raise ValueTooLarge(f"{len(body)} bytes, over {limit}")
    return body


def unpack(data: bytes | None, limit: int = MAX_UNPACKED_BYTES) -> Any:
    """Inverse of :func:`pack`; None for missing, unreadable or too large (past ``limit``) values."""
    if not data:
        return None
    try:
        body = inflate(data, limit)
        return None if body is None else json.loads(body.decode("utf-8"))
    except (ValueError, zlib.error, UnicodeDecodeError, RecursionError):
        return None


class CircuitBreaker:
    """After ``threshold`` consecutive failures, refuse calls for a cool-down that doubles up to a max."""

    def __init__(self, threshold: int, cooldown: float, max_cooldown: float) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._consecutive = 0
        self._cooldown = cooldown
        self._open_until = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a call may be attempted now (False while the breaker is open)."""
        return time.monotonic() >= self._open_until

    def success(self) -> None:
        """A call worked: close the breaker and reset the back-off."""
        if self._consecutive:
            with self._lock:
                self._consecutive = 0
                self._cooldown = self.base_cooldown

    def failure(self) -> None:
        """A call failed: open the breaker once the threshold is reached, doubling the cool-down."""
        with self._lock:
            self._consecutive += 1
            if self._consecutive >= self.threshold:
                self._open_until = time.monotonic() + self._cooldown
                self._cooldown = min(self._cooldown * 2, self.max_cooldown)
                self._consecutive = 0


class Store:
    """memcached access for one configuration: typed helpers over a thread-safe pymemcache client."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ttl = config.ttl
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown, config.breaker_max_cooldown)
        self.last_error: str | None = None
        self._client: Any = None
        self._client_lock = threading.Lock()

    # -- client ---------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        servers = list(self.config.servers)
        common: dict[str, Any] = {
            "connect_timeout": self.config.connect_timeout,
            "timeout": self.config.timeout,
            "no_delay": True,
            "default_noreply": False,
        }
        if len(servers) == 1:
            return PooledClient(servers[0], max_pool_size=64, **common)
        return HashClient(
            servers,
            use_pooling=True,
            max_pool_size=64,
            retry_attempts=1,
            retry_timeout=0,
            dead_timeout=self.config.breaker_cooldown,
            ignore_exc=False,
            **common,
        )

    def close(self) -> None:
        """Drop the client's sockets (after fork, or on shutdown)."""
        client, self._client = self._client, None
        if client is not None:
            with fail_open("closing a memcached client failed"):
                client.close()

    def _call(self, kind: str, default: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one client method behind the breaker; failures become ``default``."""
        if not self.breaker.allow():
            return default
        try:
            result = getattr(self._get_client(), method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - fail open on anything the client raises
            if isinstance(exc, RuntimeError) and "Too many objects" in str(exc):
                # Every pooled connection is busy (a burst of threads): not memcached's fault, so no breaker.
                failures.record("memcached client pool exhausted", exc)
                return default
            self.breaker.failure()
            self.last_error = f"{type(exc).__name__}: {exc}"
            failures.record(f"memcached {kind} failed", exc)
            return default
        self.breaker.success()
        self.last_error = None
        return result

    @property
    def available(self) -> bool:
        """False while the breaker refuses calls."""
        return self.breaker.allow()

    # -- operations -----------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, bytes] | None:
        """Raw values of ``keys`` that exist, or None when memcached could not be asked."""
        if not keys:
            return {}
        result = self._call("get", None, "get_many", keys)
        if result is None:
            return None
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in result.items()}

    def get(self, key: str) -> bytes | None:
        """One raw value, or None (missing or unreachable)."""
        values = self.get_many([key])
        return None if values is None else values.get(key)

    def set(self, key: str, value: bytes, ttl: int | None = None) -> bool:
        """Store ``value``; False when it was not stored (too large, unreachable)."""
        if len(value) > MAX_VALUE_BYTES:
            failures.record("value too large for memcached", None)
            return False
        return bool(self._call("set", False, "set", key, value, expire=ttl or self.ttl, noreply=False))

    def add(self, key: str, value: bytes, ttl: int | None = None) -> bool | None:
        """Store only if absent: True stored, False existed, None unreachable."""
        return self._call("add", None, "add", key, value, expire=ttl or self.ttl, noreply=False)

    def append(self, key: str, value: bytes) -> bool:
        """Append to an existing value (keeps its TTL); False when missing or unreachable."""
        return bool(self._call("append", False, "append", key, value, noreply=False))

    def incr(self, key: str, delta: int = 1, ttl: int | None = None) -> int | None:
        """Increment a counter, creating it (with ``ttl``) when missing; None when unreachable."""
        value = self._call("incr", None, "incr", key, delta, noreply=False)
        if value is None and self.available:
            if self.add(key, str(delta).encode(), ttl):
                return delta
            value = self._call("incr", None, "incr", key, delta, noreply=False)
        return None if value is None else int(value)

    def delete(self, key: str) -> bool:
        """Remove a key; False when missing or unreachable."""
        return bool(self._call("delete", False, "delete", key, noreply=False))

    def ping(self, key: str) -> str | None:
        """None when memcached answers a read of ``key``, else the reason (used by the system checks)."""
        try:
            self._get_client().get(key)
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        return None


_stores: dict[int, Store] = {}
_stores_lock = threading.Lock()


def get_store() -> Store:
    """The process's Store for the current settings (a new one after ``override_settings``)."""
    config = get_config()
    store = _stores.get(id(config))
    if store is None:
        with _stores_lock:
            store = _stores.get(id(config))
            if store is None:
                for old in _stores.values():
                    old.close()
                _stores.clear()
                store = _stores[id(config)] = Store(config)
    return store


def _after_fork() -> None:
    """Sockets and locks are not shared with a forked child: start clean."""
    global _stores_lock
    _stores.clear()
    _stores_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
