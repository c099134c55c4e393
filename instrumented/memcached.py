"""memcached I/O only: the client per server, its circuit breaker, the routing; no key knowledge (see keys.py), no
value format (see codec.py).

Every call fails open: errors are counted, logged at most once a minute per kind, and turned into
"nothing stored" / "nothing found" for the caller. Nothing here raises into a request.

Why not pymemcache's ``HashClient``: with ``ignore_exc`` its multi-get answers a failing server's keys as absent,
so a reader could not say which server is missing (the document's ``partial``/``missing``); a failing server keeps
its keys, and writes to them are dropped, until ``retry_attempts`` failures mark it dead, and it comes back after a
fixed ``dead_timeout``. Here each server has its own breaker (a cool-down that doubles), one failure of one of
several servers moves its keys at once, and every multi-get says which servers it could not ask.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pymemcache.client.base import PooledClient

from .codec import MAX_VALUE_BYTES
from .conf import Config, get_config
from .failopen import fail_open, failures


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


class Server:
    """One memcached server: its own lazily made pooled client and its own circuit breaker."""

    def __init__(self, address: tuple[str, int], config: Config, breaker: CircuitBreaker) -> None:
        self.address = address
        self.name = f"{address[0]}:{address[1]}"
        self.config = config
        self.breaker = breaker
        self.last_error: str | None = None
        self._client: PooledClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> PooledClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = PooledClient(
                        self.address,
                        max_pool_size=64,
                        connect_timeout=self.config.connect_timeout,
                        timeout=self.config.timeout,
                        no_delay=True,
                        default_noreply=False,
                    )
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with fail_open("closing a memcached client failed"):
                client.close()


class _Failed(Exception):
    """A server did not answer one call (already counted against its breaker)."""


@dataclass(slots=True)
class Fetched:
    """What one multi-get found, and the servers (``host:port``) that could not be asked or did not answer."""

    values: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


#: Routing rankings remembered per key (the same keys come back every second); cleared when full.
RANKING_CACHE_SIZE = 8192


class Store:
    """memcached access for one configuration: typed, fail-open helpers over one client per server.

    Several servers are rendezvous-hashed (highest random weight) over the servers that are *up*:
    each server has its own circuit breaker, a server whose breaker is open (or that just failed this
    call) is left out, and its keys go to the next server of their ranking, so writers keep writing
    and readers read what the live servers hold. A key's ranking never changes, so keys of live servers
    never move, and a returning server gets its keys back as soon as its cool-down ends.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ttl = config.ttl
        # One server: BREAKER_FAILURES consecutive failures open its breaker (there is nowhere else to go).
        # Several: one failure takes a server out for a cool-down, its keys move to the others at once.
        threshold = config.breaker_failures if len(config.servers) == 1 else 1
        self.servers = [
            Server(address, config, CircuitBreaker(threshold, config.breaker_cooldown, config.breaker_max_cooldown))
            for address in config.servers
        ]
        self._rankings: dict[str, tuple[Server, ...]] = {}

    # -- routing --------------------------------------------------------------------------------
    def _ranking(self, key: str) -> tuple[Server, ...]:
        """Every server, the key's preferred one first (rendezvous hashing: stable, no ring to rebuild)."""
        ranking = self._rankings.get(key)
        if ranking is None:
            if len(self.servers) == 1:
                ranking = (self.servers[0],)
            else:
                scores = {
                    server: hashlib.blake2b(f"{server.name}-{key}".encode(), digest_size=8).digest()
                    for server in self.servers
                }
                ranking = tuple(sorted(self.servers, key=scores.__getitem__, reverse=True))
            if len(self._rankings) >= RANKING_CACHE_SIZE:
                self._rankings.clear()
            self._rankings[key] = ranking
        return ranking

    def _owner(self, key: str, failed: set[Server] | frozenset[Server] = frozenset()) -> Server | None:
        """The live server that holds ``key`` now (None when every server is down)."""
        for server in self._ranking(key):
            if server not in failed and server.breaker.allow():
                return server
        return None

    def owner_name(self, key: str) -> str | None:
        """``host:port`` of the server that holds ``key`` now (the flusher checks each server this way)."""
        server = self._owner(key)
        return None if server is None else server.name

    def live_servers(self) -> frozenset[str]:
        """The servers whose breaker lets calls through (``host:port``)."""
        return frozenset(server.name for server in self.servers if server.breaker.allow())

    def close(self) -> None:
        """Drop the clients' sockets (after fork, or on shutdown)."""
        for server in self.servers:
            server.close()

    def _run(self, server: Server, kind: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """One client call on one server; a failure is counted against that server and raised as _Failed."""
        try:
            result = getattr(server.client, method)(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, RuntimeError) and "Too many objects" in str(exc):
                # Every pooled connection is busy (a burst of threads): not memcached's fault, so no breaker.
                failures.record("memcached client pool exhausted", exc)
                raise _Failed from exc
            server.breaker.failure()
            server.last_error = f"{type(exc).__name__}: {exc}"
            failures.record(f"memcached {kind} failed", exc)
            raise _Failed from exc
        server.breaker.success()
        server.last_error = None
        return result

    def _call(self, kind: str, default: Any, method: str, key: str, *args: Any, **kwargs: Any) -> Any:
        """One keyed call on the key's live server; when that server fails, once more on the next one."""
        failed: set[Server] = set()
        for _attempt in range(2):
            server = self._owner(key, failed)
            if server is None:
                return default
            try:
                return self._run(server, kind, method, key, *args, **kwargs)
            except _Failed:
                failed.add(server)
        return default

    @property
    def available(self) -> bool:
        """False while every server's breaker refuses calls."""
        return any(server.breaker.allow() for server in self.servers)

    @property
    def last_error(self) -> str | None:
        """The latest failure of a server that has not answered since (``host:port: reason``)."""
        errors = [f"{server.name}: {server.last_error}" for server in self.servers if server.last_error]
        return "; ".join(errors) or None

    # -- operations -----------------------------------------------------------------------------
    def fetch(self, keys: list[str], every_server: str | None = None) -> Fetched:
        """Raw values of ``keys`` from the live servers, and the servers that could not be asked.

        Each live server is asked for its keys in one multi-get; the keys of a server that fails are
        asked of the next server of their ranking (where writers put them while it is down). With
        ``every_server``, each live server not otherwise asked is asked for that key (a health check).
        """
        found = Fetched()
        failed: set[Server] = {server for server in self.servers if not server.breaker.allow()}
        pending = list(dict.fromkeys(keys))
        first = True
        while pending or first:
            by_server: dict[Server, list[str]] = {}
            for key in pending:
                server = self._owner(key, failed)
                if server is not None:
                    by_server.setdefault(server, []).append(key)
            if first and every_server is not None:
                for server in self.servers:
                    if server not in failed and server not in by_server:
                        by_server[server] = [every_server]
            first = False
            pending = []
            for server, server_keys in by_server.items():
                try:
                    result = self._run(server, "get", "get_many", server_keys)
                except _Failed:
                    failed.add(server)
                    pending.extend(server_keys)
                    continue
                for key, value in result.items():
                    found.values[key.decode() if isinstance(key, bytes) else key] = value
        found.missing = [server.name for server in self.servers if server in failed]
        return found

    def get_many(self, keys: list[str]) -> dict[str, bytes] | None:
        """Raw values of ``keys`` that exist on the live servers, or None when no server could be asked."""
        if not keys:
            return {}
        found = self.fetch(keys)
        if len(found.missing) == len(self.servers):
            return None
        return found.values

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

    def check_marker(self, key: str, now: float) -> list[str]:
        """Ask every live server for ``key`` (one process's marker), storing it where it is missing or old;
        returns the servers that did not have it (restarted, flushed, evicted, or never written). A server
        that does not answer is left out (its breaker opens), so this is also each flush's health check."""
        lacking: list[str] = []
        for server in self.servers:
            if not server.breaker.allow():
                continue
            try:
                value = self._run(server, "get", "get", key)
                stamp = float(value) if value else None
                if stamp is None or now - stamp > self.ttl / 2:
                    self._run(server, "set", "set", key, str(int(now)).encode(), expire=self.ttl, noreply=False)
            except (_Failed, ValueError):
                continue
            if stamp is None:
                lacking.append(server.name)
        return lacking

    def ping(self, key: str) -> str | None:
        """None when every server answers a read of ``key``, else why not (used by the system checks)."""
        reasons = []
        for server in self.servers:
            try:
                server.client.get(key)
            except Exception as exc:  # noqa: BLE001
                reasons.append(f"{server.name}: {type(exc).__name__}: {exc}")
        return "; ".join(reasons) or None


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
