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

from .aggregate import OTHER_VIEW, Aggregator, get_aggregator
from .merge import ViewTotals, cap_views, merge_views
from .store import MAX_VALUE_BYTES, Store, failures, make_process_id, pack

logger = logging.getLogger("instrumented")


def shrink(snapshot: dict[str, Any], limit: int = MAX_VALUE_BYTES) -> bytes:
    """Pack ``snapshot``, dropping SQL text and then the least-used views until it fits ``limit``."""
    payload = pack(snapshot)
    if len(payload) <= limit:
        return payload
    views: dict[str, Any] = snapshot["views"]
    for view in views.values():
        view["q"] = [[sql[:200], *rest] for sql, *rest in view["q"][:3]]
    payload = pack(snapshot)
    keep = len(views)
    while len(payload) > limit and keep > 1:
        keep //= 2
        ranked = sorted(views.items(), key=lambda item: item[1]["n"], reverse=True)
        snapshot["views"] = dict(ranked[:keep])
        snapshot["truncated"] = True
        payload = pack(snapshot)
    return payload


class Flusher:
    """Writes one process's dirty buckets under its own keys and registers it in each bucket's index."""

    def __init__(self, aggregator: Aggregator, interval: float, config: dict[str, Any]) -> None:
        self.aggregator = aggregator
        self.interval = interval
        self.bucket_seconds = int(config["BUCKET_SECONDS"])
        self.window_buckets = -(-int(config["WINDOW_SECONDS"]) // self.bucket_seconds)
        self.max_views = int(config["MAX_VIEWS"])
        self.max_queries = int(config["MAX_QUERIES_PER_VIEW"])
        self.process_id = make_process_id()
        # Its own client and breaker, bound to the settings it was started with.
        self.store = Store(config)
        self.registered: set[int] = set()
        # The latest snapshot of every bucket still in the window: the roll-up is built from these.
        self.window: dict[int, dict[str, Any]] = {}
        self._final_key: tuple[int, ...] = ()
        self._final_views: dict[str, dict[str, Any]] = {}
        self._rollup_written: tuple[Any, ...] | None = None
        self._version = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="instrumented-flusher", daemon=True)

    def start(self) -> None:
        """Start the daemon thread and flush once more at interpreter exit."""
        self._thread.start()
        self.aggregator.flushing = True
        atexit.register(self.stop)

    def stop(self) -> None:
        """Final flush, then end the thread."""
        self._stop.set()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                failures.record("flush failed", exc)

    def flush(self) -> int:
        """Write every changed bucket, then this process's window roll-up; returns buckets written."""
        with self._lock:
            snapshots = self.aggregator.collect_dirty()
            current = int(time.time() // self.bucket_seconds)
            if snapshots:
                self.window.update(snapshots)
                self._version += 1
            for bucket in [b for b in self.window if b <= current - self.window_buckets]:
                del self.window[bucket]
            if not snapshots:
                if self.window:
                    self._write_rollup(self.store, current)
                return 0
            store = self.store
            failed: list[int] = []
            for bucket, snapshot in snapshots.items():
                snapshot["process"] = self.process_id
                if not store.set(store.stats_key(bucket, self.process_id), shrink(snapshot)):
                    failed.append(bucket)
                    continue
                if not self._register(store, bucket):
                    failed.append(bucket)
            if failed:
                # memcached may have restarted and lost the indexes: register again once it is back.
                self.registered.clear()
                self.aggregator.mark_dirty(failed)
            else:
                self._write_rollup(store, current)
            return len(snapshots) - len(failed)

    def _write_rollup(self, store: Store, current: int) -> None:
        """Write the sum of this process's buckets in the window, when it changed or the window slid.

        Finished buckets never change, so their sum is recomputed only when one is added or expires;
        each flush then adds just the current bucket's views on top.
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
        if store.set(store.rollup_key(self.process_id), shrink(rollup)):
            self._rollup_written = state

    def _register(self, store: Store, bucket: int) -> bool:
        """Add this process to the bucket's index once (``add``, else ``append``)."""
        if bucket in self.registered:
            return True
        entry = f"{self.process_id} ".encode()
        added = store.add(store.procs_key(bucket), entry)
        if added is None:
            return False
        if not added and not store.append(store.procs_key(bucket), entry):
            return False
        self.registered.add(bucket)
        if len(self.registered) > 64:
            self.registered = {b for b in self.registered if b >= bucket - 40}
        return True


_flusher: Flusher | None = None
_flusher_lock = threading.Lock()


def ensure_flusher(config: dict[str, Any]) -> Flusher:
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
                _flusher = Flusher(aggregator, float(config["FLUSH_INTERVAL"]), config)
                _flusher.start()
            flusher = _flusher
    return flusher


def current_flusher() -> Flusher | None:
    """The running flusher, if any (tests use it to flush without waiting)."""
    return _flusher


def _after_fork() -> None:
    global _flusher, _flusher_lock
    _flusher = None
    _flusher_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
