"""The background thread that writes changed buckets to memcached, about once a second.

It is the only writer of stats: the request path never talks to memcached.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from ..conf import Config
from ..failopen import fail_open
from ..keys import make_process_id
from ..memcached import Store
from ..naming import OTHER_VIEW
from .aggregate import Aggregator, get_aggregator
from .literals import strip_literals
from .snapshot import ViewTotals, cap_views, merge_views, rewrite_sql, shrink
from .sql import template_of

logger = logging.getLogger("instrumented")


#: Stripped texts the flusher remembers (the same templates come back every second); cleared when full.
STRIP_CACHE_SIZE = 4096


class Flusher:
    """Writes one process's dirty buckets under its own keys and registers it in each bucket's index."""

    def __init__(self, aggregator: Aggregator, config: Config) -> None:
        self.aggregator = aggregator
        self.interval = config.flush_interval
        self.bucket_seconds = config.bucket_seconds
        self.window_buckets = config.window_buckets
        self.max_views = config.max_views
        self.max_queries = config.max_queries_per_view
        self.max_sql = config.max_sql_length
        self.keys = config.keys
        self._stripped: dict[tuple[str, str], str] = {}
        self.process_id = make_process_id()
        # Its own client and breaker, bound to the settings it was started with.
        self.store = Store(config)
        self.registered: set[int] = set()
        # The latest snapshot of every bucket still in the window: the roll-up is built from these.
        self.window: dict[int, dict[str, Any]] = {}
        # Buckets whose latest state is not in memcached yet (a write failed, or memcached was down).
        self.unwritten: set[int] = set()
        self.pid = os.getpid()
        self._final_key: tuple[int, ...] | None = ()
        self._final_views: dict[str, dict[str, Any]] = {}
        self._rollup_written: tuple[Any, ...] | None = None
        self._version = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="instrumented-flusher", daemon=True)

    def _strip(self, sql: str, vendor: str) -> str:
        """``sql`` without its literals, cut to MAX_SQL_LENGTH (remembered: the same SQL comes back every second)."""
        key = (vendor, sql)
        stripped = self._stripped.get(key)
        if stripped is None:
            if len(self._stripped) >= STRIP_CACHE_SIZE:
                self._stripped.clear()
            # Stripped values are %s like Django's, so a raw IN list collapses as Django's does.
            stripped = self._stripped[key] = template_of(strip_literals(sql, vendor))[: self.max_sql]
        return stripped

    def start(self) -> None:
        """Start the daemon thread (the current flusher flushes once more at interpreter exit)."""
        self._thread.start()
        self.aggregator.flushing = True

    def stop(self) -> None:
        """Final flush, then end the thread (not in a forked child: it would write the parent's copy)."""
        self._stop.set()
        self.aggregator.flushing = False  # a later request starts a new flusher rather than count unseen
        if os.getpid() == self.pid:
            self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with fail_open("flush failed"):  # the thread must survive anything
                self.flush()

    def flush(self, now: float | None = None) -> int:
        """Write every changed bucket, then this process's window roll-up; returns buckets written.

        ``now`` (unix time) is the clock seam for tests and benchmarks; the thread passes nothing.
        """
        with self._lock:
            changes = self.aggregator.collect_dirty()
            current = int((time.time() if now is None else now) // self.bucket_seconds)
            for bucket, change in changes.items():
                rewrite_sql(change["views"], self._strip)
                kept = self.window.get(bucket)
                if kept is None:
                    self.window[bucket] = {"bucket": bucket, "process": self.process_id, "views": change["views"]}
                else:
                    kept["views"].update(change["views"])
                if bucket < current:
                    self._final_key = None  # a request that finished at a bucket's very end: recompute
            if changes:
                self._version += 1
                self.unwritten.update(changes)
            for bucket in [b for b in self.window if b <= current - self.window_buckets]:
                del self.window[bucket]
            self.unwritten &= self.window.keys()
            if not self.window or not self.store.available:
                return 0  # nothing to write, or the breaker is open: no packing, no waiting
            written = 0
            for bucket in sorted(self.unwritten):
                ok = False
                with fail_open("writing a bucket failed"):  # one bad bucket must not stop the others
                    ok = self.store.set(self.keys.bucket(bucket, self.process_id), shrink(self.window[bucket]))
                    ok = ok and self._register(self.store, bucket)
                if ok:
                    self.unwritten.discard(bucket)
                    written += 1
                else:
                    # memcached may have restarted and lost the indexes: register again once it is back.
                    self.registered.clear()
            if not self.unwritten:
                with fail_open("writing the roll-up failed"):
                    self._write_rollup(self.store, current)
            return written

    def _write_rollup(self, store: Store, current: int) -> None:
        """Write the sum of this process's buckets in the window, when it changed or the window slid.

        Finished buckets rarely change, so their sum is recomputed only when one is added, expires or
        changes late; each flush then adds just the current bucket's views on top.
        """
        final_key = tuple(sorted(b for b in self.window if b < current))
        state = (current, final_key, self._version)
        if state == self._rollup_written:
            return
        if final_key != self._final_key:
            final = merge_views([(None, self.window[b]) for b in final_key])
            self._final_views = {name: totals.to_snapshot(self.max_queries) for name, totals in final.items()}
            self._final_key = final_key
        views = dict(self._final_views)
        current_snapshots = [self.window[b] for b in self.window if b >= current]
        if current_snapshots:
            for name, totals in merge_views([(None, s) for s in current_snapshots]).items():
                if name in self._final_views:
                    totals.add(self._final_views[name])
                views[name] = totals.to_snapshot(self.max_queries)
        if len(views) > self.max_views + 1:
            merged = {name: ViewTotals() for name in views}
            for name, snap in views.items():
                merged[name].add(snap)
            cap_views(merged, self.max_views, OTHER_VIEW)
            views = {name: totals.to_snapshot(self.max_queries) for name, totals in merged.items()}
        rollup = {"process": self.process_id, "as_of": current, "buckets": sorted(self.window), "views": views}
        if store.set(self.keys.rollup(self.process_id), shrink(rollup)):
            self._rollup_written = state

    def _register(self, store: Store, bucket: int) -> bool:
        """Add this process to the bucket's index once (``add``, else ``append``)."""
        if bucket in self.registered:
            return True
        entry = f"{self.process_id} ".encode()
        added = store.add(self.keys.bucket_index(bucket), entry)
        if added is None:
            return False
        if not added and not store.append(self.keys.bucket_index(bucket), entry):
            return False
        self.registered.add(bucket)
        if len(self.registered) > 64:
            self.registered = {b for b in self.registered if b >= bucket - 40}
        return True


_flusher: Flusher | None = None
_flusher_lock = threading.Lock()


def ensure_flusher(config: Config) -> Flusher:
    """The process's running flusher for the current aggregator (started on first use)."""
    global _flusher
    aggregator = get_aggregator(config)
    flusher = _flusher
    if flusher is None or flusher.aggregator is not aggregator:
        with _flusher_lock:
            if _flusher is None or _flusher.aggregator is not aggregator:
                if _flusher is not None:
                    _flusher.stop()
                    _flusher.store.close()
                _flusher = Flusher(aggregator, config)
                _flusher.start()
            flusher = _flusher
    return flusher


def shutdown() -> None:
    """Final flush of the current flusher, and no flusher afterwards (interpreter exit, test teardown)."""
    global _flusher
    flusher, _flusher = _flusher, None
    if flusher is not None:
        flusher.stop()
        flusher.store.close()


atexit.register(shutdown)


def current_flusher() -> Flusher | None:
    """The running flusher, if any (tests use it to flush without waiting)."""
    return _flusher


def _after_fork() -> None:
    global _flusher, _flusher_lock
    _flusher = None
    _flusher_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
