"""The background thread that writes changed buckets to memcached, about once a second.

It is the only writer of stats: the request path never talks to memcached.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..conf import Config
from ..failopen import fail_open
from ..keys import make_process_id
from ..memcached import Store
from ..naming import OTHER_VIEW
from . import history, processes, samples
from .aggregate import Aggregator, get_aggregator
from .literals import strip_for_stats
from .rollup import Rollup, encode_rollup
from .snapshot import ViewTotals, cap_views, encode_sections, merge_views, rewrite_sql, shrink
from .sql import template_of

logger = logging.getLogger("instrumented")


#: Called with the flusher's store at every flush that reaches memcached (features that ride on the flush,
#: e.g. profiling's arms, register here at start-up: the flusher knows nothing of them).
flush_hooks: list[Callable[[Store], None]] = []

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
        self._stripped: dict[tuple[str, str], tuple[str, int]] = {}
        self.process_id = make_process_id()
        # Its own client and breaker, bound to the settings it was started with.
        self.store = Store(config)
        self.registered: set[int] = set()
        self.history = history.Merger(config, self.process_id)
        # The latest snapshot of every bucket still in the window: the roll-up is built from these.
        self.window: dict[int, dict[str, Any]] = {}
        # Buckets whose latest state is not in memcached yet (a write failed, or memcached was down).
        self.unwritten: set[int] = set()
        self.pid = os.getpid()
        self._final_key: tuple[int, ...] | None = ()
        self._final_views: dict[str, dict[str, Any]] = {}
        self._rollup_written: tuple[Any, ...] | None = None
        self._version = 0
        # The finished buckets' per-view series ([[bucket, requests, errors, histogram slice], ...]) and which
        # version of them (``fin``) the roll-up names; the series value is written when ``fin`` changes.
        self._final_series: dict[str, list[list[Any]]] = {}
        self._fin = 0
        self._series_written: int | None = None
        # The servers that were up when everything was last written, and the flush slot last announced.
        self._servers: frozenset[str] | None = None
        self._live_slot: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="instrumented-flusher", daemon=True)

    def _strip(self, sql: str, vendor: str) -> tuple[str, int]:
        """``sql`` without its literals and comments, cut to MAX_SQL_LENGTH, and how many comments it had (remembered:
        the same SQL comes back every second)."""
        key = (vendor, sql)
        stripped = self._stripped.get(key)
        if stripped is None:
            if len(self._stripped) >= STRIP_CACHE_SIZE:
                self._stripped.clear()
            # Stripped values are %s like Django's, so a raw IN list collapses as Django's does.
            text, comments = strip_for_stats(sql, vendor)
            stripped = self._stripped[key] = (template_of(text)[: self.max_sql], comments)
        return stripped

    def _template(self, sql: str, vendor: str) -> str:
        """:meth:`_strip`'s template alone (what a sample's timeline shows; its comments are counted with the view)."""
        return self._strip(sql, vendor)[0]

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
            processes.bump()
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
            at = time.time() if now is None else now
            for hook in flush_hooks:
                with fail_open("a flush hook failed"):
                    hook(self.store)
            with fail_open("checking the memcached servers failed"):
                self._check_servers(at)
            with fail_open("announcing a live process failed"):
                self._announce(at)
            written = 0
            for bucket in sorted(self.unwritten):
                ok = False
                with fail_open("writing a bucket failed"):  # one bad bucket must not stop the others
                    ok = self.store.set(self.keys.bucket(bucket, self.process_id), shrink(self.window[bucket]))
                    ok = ok and processes.register_write(
                        self.registered, self.store, self.keys, bucket, self.process_id, late=bucket < current
                    )
                if ok:
                    self.unwritten.discard(bucket)
                    written += 1
                else:
                    # memcached may have restarted and lost the indexes: register again once it is back.
                    self.registered.clear()
            if not self.unwritten:
                with fail_open("writing the roll-up failed"):
                    self._write_rollup(self.store, current, at)
            with fail_open("writing samples failed"):
                self._write_samples(current)
            with fail_open("merging a finished bucket failed"):
                self.history.run(self.store, at)
            return written

    def _write_samples(self, current: int) -> None:
        """The slowest requests that changed since the last flush: one value per view and bucket (samples.py)."""
        for bucket, view, found in self.aggregator.samples.collect(current):
            value = samples.encode(view, bucket, found, self._template, self.max_sql)
            self.store.set(self.keys.samples(bucket, samples.view_hash(view), self.process_id), value)

    def _check_servers(self, at: float) -> None:
        """Write everything again when the set of live servers changed or a server lost this process's keys.

        A server that died takes its keys' share elsewhere (the store re-routes them); one that returns,
        restarted empty, or was emptied (``flush_all``, eviction) no longer holds this process's marker:
        each flush asks every live server for it (which also notices a dead server within a flush).
        """
        lacking = self.store.check_marker(self.keys.marker(self.process_id), at)
        servers = self.store.live_servers()
        if lacking or servers != self._servers:
            self.unwritten = set(self.window)
            self.registered.clear()
            self._rollup_written = None
            self._series_written = None
            self._live_slot = None
            self._servers = servers

    def _announce(self, at: float) -> None:
        """Add this process to the current flush slot's list (readers count the last ones: ``processes_live``)."""
        slot = int(at // self.interval)
        if slot == self._live_slot:
            return
        if processes.announce(self.store, self.keys, slot, self.process_id, self.interval):
            self._live_slot = slot

    def _write_rollup(self, store: Store, current: int, at: float) -> None:
        """Write the sum of this process's buckets in the window (columnar), and the finished buckets'
        per-view series when they changed.

        Finished buckets rarely change, so their sum and series are recomputed only when one is added,
        expires or changes late; each flush then adds just the current bucket's views on top.
        """
        final_key = tuple(sorted(b for b in self.window if b < current))
        state = (current, final_key, self._version)
        if state == self._rollup_written:
            return
        if final_key != self._final_key:
            final = merge_views([(b, self.window[b]) for b in final_key])
            self._final_views = {name: totals.to_snapshot(self.max_queries) for name, totals in final.items()}
            self._final_series = {
                name: [[b, n, e, encoded[0] if encoded else ""] for b, (n, e, encoded) in sorted(totals.series.items())]
                for name, totals in final.items()
            }
            self._final_key = final_key
            self._fin += 1
        views = dict(self._final_views)
        current_snapshots = [self.window[b] for b in self.window if b >= current]
        points = [(s["bucket"], name, view) for s in current_snapshots for name, view in s["views"].items()]
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

        def encode(snapshot: dict[str, Any]) -> bytes:
            return self._encode_rollup(snapshot, current, at, points)

        if self._series_written != self._fin:
            names = list(self._final_series)
            header = {"process": self.process_id, "fin": self._fin, "names": names}
            if store.set(self.keys.series(self.process_id), encode_sections(header, list(self._final_series.values()))):
                self._series_written = self._fin
        if store.set(self.keys.rollup(self.process_id), shrink({"views": views}, encode=encode)):
            self._rollup_written = state

    def _encode_rollup(self, snapshot: dict[str, Any], current: int, at: float, points: list[Any]) -> bytes:
        """The roll-up value of ``snapshot``'s views: columnar, with the current bucket's series points."""
        rows = snapshot["views"]
        meta: Rollup = {
            "process": self.process_id,
            "as_of": current,
            "at": round(at, 3),
            "buckets": sorted(self.window),
            "fin": self._fin,
        }
        if snapshot.get("truncated"):
            meta["truncated"] = True
        current_points = [[n, b, v["n"], v.get("e", 0), v.get("h", "")] for b, n, v in points if n in rows]
        return encode_rollup(meta, rows, current_points)


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
