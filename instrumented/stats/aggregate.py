"""The in-process window: per 10 s bucket, per view, counters and a mergeable latency histogram.

A finished request or piece of work is only handed over (intake.py, the one door: a deque append, no lock on
the request path); the flusher thread counts what was handed over in one batch before it collects, under one lock, O(1)
work per request plus one step per distinct SQL template it ran. Snapshots are plain JSON-able dicts;
the reader merges them across processes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

from ..conf import Config
from ..failopen import failures
from ..naming import OTHER_VIEW, is_ignored, shorten
from . import histogram, queue
from .probe import Probe
from .samples import SampleKeeper, thresholds
from .snapshot import ViewTotals, add_into, template_rank
from .sql import CONTROL, WRITE, kind_of

#: Raw SQL kept per template, as a multiple of MAX_SQL_LENGTH (literals shrink to ``?`` before the cut).
RAW_SQL_FACTOR = 4
#: Finished requests waiting for the flusher; past this the request that hands one over counts them itself.
MAX_PENDING = 20_000
#: Requests a request counts when it finds MAX_PENDING waiting (a short pause for one request in this many).
REQUEST_DRAIN = 256
#: View names whose IGNORE_VIEWS verdict is remembered.
MAX_IGNORED_MEMO = 10_000

#: The templates of a request without SQL (never changed).
NO_TEMPLATES: dict[tuple[str, str], list[int]] = {}
#: A finished request as handed over: (view, route, method, status, duration ns, probe, perf_counter_ns at the end).
Finished = tuple[str, str, str, int, int, Probe, int]


class Aggregator:
    """Per-process buckets of ViewTotals (one per view); the flusher collects the buckets that changed."""

    def __init__(self, config: Config) -> None:
        self.bucket_seconds = config.bucket_seconds
        self.max_views = config.max_views
        self.max_queries = config.max_queries_per_view
        self.max_sql = config.max_sql_length
        # Raw SQL is kept longer than it is shown: literals are stripped first, then the text is cut.
        self.max_raw_sql = RAW_SQL_FACTOR * self.max_sql
        self.max_name = config.max_name_length
        self.n_plus_one_threshold = config.n_plus_one_threshold
        #: The settings it was made with (intake.hand_over tells a stale aggregator by it).
        self.config = config
        self.lock = threading.Lock()
        self.buckets: dict[int, dict[str, ViewTotals]] = {}
        # bucket -> names of the views that changed since the flusher last collected them
        self.dirty: dict[int, set[str]] = {}
        # Set by the flusher that writes this aggregate, so the request path can skip checking for it.
        self.flushing = False
        #: Finished requests not yet counted (deque: appends and pops are atomic without a lock).
        self.pending: deque[Finished] = deque()
        self.max_pending = MAX_PENDING
        #: Buckets below this were let go (collected, then expired): a late request is counted in this one.
        self.expired_below = 0
        self.ignore_views = config.ignore_views
        self._ignored: dict[str, bool] = {}
        #: The slowest requests of each view and bucket (samples.py), built from the probes the request path admitted.
        self.samples = SampleKeeper(
            config.samples_per_view, self.max_views, self.bucket_seconds, self.n_plus_one_threshold, self.max_raw_sql
        )

    def drain(self, limit: int | None = None) -> None:
        """Count the requests handed over so far, at most ``limit`` of them (the flusher, before it collects:
        all that wait when it starts, not those that arrive meanwhile; a request, when far behind: a few)."""
        pending = self.pending
        if not pending:
            return
        left = len(pending) if limit is None else min(limit, len(pending))
        popleft = pending.popleft
        ignored_memo = self._ignored
        # perf_counter_ns stamps to unix time: one offset per batch (drift within a second is nanoseconds).
        offset = time.time() - time.perf_counter_ns() / 1e9
        # The lock once per batch: only another drain (a request far behind) and collect_dirty() wait for it, never
        # a request handing one over. No explicit yielding: the interpreter hands the GIL to a waiting request
        # thread every 5 ms. acquire()/release() rather than ``with``: no bound __enter__/__exit__ per batch.
        lock = self.lock
        lock.acquire()
        try:
            while left > 0:
                left -= 1
                try:
                    view, route, method, status, duration_ns, probe, end_ns = popleft()
                except IndexError:  # another thread counted the rest
                    return
                try:
                    ignored = ignored_memo.get(view)
                    if ignored is None:
                        ignored = is_ignored(view, self.ignore_views)
                        if len(ignored_memo) < MAX_IGNORED_MEMO:
                            ignored_memo[view] = ignored
                    if not ignored:
                        self._count(view, route, method, status, duration_ns, probe, offset + end_ns / 1e9)
                except Exception as exc:  # noqa: BLE001 - fail open: one bad request is not counted, the rest are
                    failures.record("recording a request failed", exc)
        finally:
            lock.release()

    def record(
        self,
        view: str,
        route: str,
        method: str,
        status: int,
        duration_ns: int,
        probe: Probe,
        now: float | None = None,
    ) -> None:
        """Count one finished request into its bucket now (tests and benchmarks; requests and work go through
        intake.hand_over, and the flusher thread's drain() counts them)."""
        with self.lock:
            self._count(view, route, method, status, duration_ns, probe, time.time() if now is None else now)

    def _count(  # noqa: C901 - the per-request hot path, inlined on purpose (benchmarks/counts.py)
        self, view: str, route: str, method: str, status: int, duration_ns: int, probe: Probe, now: float
    ) -> None:
        """Count one finished request into its bucket (unix time ``now``); the caller holds the lock."""
        bucket = int(now) // self.bucket_seconds  # whole seconds: no float floor division (fmod)
        latency_us = duration_ns / 1000.0
        queries = 0
        db_ns = 0
        probe_extras = None
        probe_templates = NO_TEMPLATES
        raw_view = view
        if probe.connection is not None:
            probe_aliases, probe_templates, probe_extras = probe.summarise(self.max_raw_sql)
            for count, ns in probe_aliases.values():
                queries += count
                db_ns += ns
        is_error = status >= 500 or probe.exception_class is not None
        threshold = self.n_plus_one_threshold
        stamp = probe.queue_stamp
        if stamp is not None:  # the front server's X-Request-Start: the wait before Django started on it
            waited = queue.waited_us(stamp, now - latency_us / 1e6)
        views = self.buckets.get(bucket)
        if views is None and bucket < self.expired_below:
            # Counted after its bucket was collected and let go (a drain far behind): into the oldest
            # bucket kept, so the flushed state of the old one is never replaced by this request alone.
            bucket = self.expired_below
            views = self.buckets.get(bucket)
        if views is None:
            views = self.buckets[bucket] = {}
            self._expire_old(bucket)
        stats = views.get(view)
        if stats is None:
            if len(view) > self.max_name:
                view = shorten(view, self.max_name)
                stats = views.get(view)
            if stats is None:
                if len(views) >= self.max_views:
                    view, route = OTHER_VIEW, ""
                    stats = views.get(view)
                if stats is None:
                    stats = views[view] = ViewTotals(shorten(route, self.max_name))
        stats.requests += 1
        klass = status // 100 - 2
        if 0 <= klass <= 3:
            stats.status[klass] += 1
        if is_error:
            stats.errors += 1
            if probe.exception_class is not None:
                entry = stats.exceptions.get(probe.exception_class)
                if entry is None:
                    if len(stats.exceptions) < 20:
                        stats.exceptions[probe.exception_class] = [1, probe.error_reference or "", now]
                else:
                    entry[0] += 1
                    if probe.error_reference:
                        entry[1] = probe.error_reference
                    entry[2] = now
        stats.lat_sum += latency_us
        if latency_us > stats.lat_max:
            stats.lat_max = latency_us
        stats.hist[histogram.bin_index(latency_us)] += 1
        method = method[:16]
        if method in stats.methods:
            stats.methods[method] += 1
        elif len(stats.methods) < 16:
            stats.methods[method] = 1
        if queries:
            stats.queries += queries
            if queries > stats.queries_max:
                stats.queries_max = queries
            stats.db_us += db_ns / 1000
            flagged = writes = False
            templates = stats.templates
            for sql, (count, ns) in probe_templates.items():
                suspect = count >= threshold
                if suspect:  # a read N+1, a write per row, or transaction control (neither)
                    kind = kind_of(sql[1])
                    if kind is CONTROL:
                        suspect = False
                    elif kind is WRITE:
                        writes = True
                        stats.write_runs += 1
                        stats.write_queries += count
                    else:
                        flagged = True
                        stats.n1_runs += 1
                        stats.n1_queries += count
                entry = templates.get(sql)
                if entry is None:
                    templates[sql] = [count, ns / 1000, 1 if suspect else 0]
                else:
                    entry[0] += count
                    entry[1] += ns / 1000
                    if suspect:
                        entry[2] += 1
            if flagged:
                stats.n_plus_one += 1
            if writes:
                stats.writes += 1
            if len(templates) > 4 * self.max_queries:
                self._prune_templates(stats)
            aliases = stats.aliases
            for alias, (count, ns) in probe_aliases.items():
                entry = aliases.get(alias)
                if entry is None:
                    aliases[alias] = [count, ns / 1000]
                else:
                    entry[0] += count
                    entry[1] += ns / 1000
            if probe_extras:
                for sql, (dups, slow, slowest_ns, site, hint, slow_site) in probe_extras.items():
                    stats.duplicates += dups
                    stats.add_extras(
                        sql,
                        dups,
                        slow,
                        slowest_ns / 1000,
                        [[site, 1, hint]] if site else (),
                        [[slow_site, 1, hint]] if slow_site else (),
                    )
        if probe.cache:
            for alias, (calls, ns, hits, misses) in probe.cache.items():
                add_into(stats.cache, alias, [calls, ns / 1000, hits, misses])
        if probe.http:
            for where, (calls, ns, errors, slowest_ns) in probe.http.items():
                stats.add_http(where, [calls, ns / 1000, errors, slowest_ns / 1000])
        if stamp is not None:
            if stats.queue is None:
                stats.queue = queue.new()
            queue.count(stats.queue, waited)
        if probe.renders:
            for name, (renders, ns, sql_ns) in probe.renders.items():
                stats.add_render(name, [renders, ns / 1000, sql_ns / 1000])
        changed = self.dirty.get(bucket)
        if changed is None:
            self.dirty[bucket] = {view}
        else:
            changed.add(view)
        if probe.user_kind is not None and probe.timeline is not None:  # admitted on the request path
            self.samples.offer(bucket, view, raw_view, method, status, duration_ns, now, probe, probe_templates)

    def _prune_templates(self, stats: ViewTotals) -> None:
        """Keep the heaviest templates (by time, N+1 suspects first) so memory stays bounded."""
        ranked = sorted(stats.templates.items(), key=template_rank, reverse=True)
        stats.templates = dict(ranked[: 2 * self.max_queries])
        stats.extras = {sql: extra for sql, extra in stats.extras.items() if sql in stats.templates}

    def _expire_old(self, current: int) -> None:
        """Forget buckets older than the previous one once the flusher has collected them (it keeps copies)."""
        for bucket in [b for b in self.buckets if b < current - 1 and b not in self.dirty]:
            del self.buckets[bucket]
            self.expired_below = max(self.expired_below, bucket + 1)

    def collect_dirty(self) -> dict[int, dict[str, Any]]:
        """Snapshots of the views that changed since the last call, per bucket (each view's full state).

        Only changed views are copied, so the lock is held in proportion to the traffic of the last
        second, not to the number of views. Requests handed over and not yet counted are counted first.
        """
        self.drain()
        with self.lock:
            dirty, self.dirty = self.dirty, {}
            return {bucket: self._snapshot(bucket, names) for bucket, names in dirty.items() if bucket in self.buckets}

    def _snapshot(self, bucket: int, names: set[str]) -> dict[str, Any]:
        bucket_views = self.buckets[bucket]
        views = {name: bucket_views[name].to_snapshot(self.max_queries) for name in names}
        return {"bucket": bucket, "views": views}


#: The process's aggregator (None until first used, after a fork, in tests after a reset): read it through
#: get_aggregator(), or as intake.hand_over does, checking ``current.config`` against the settings of the moment.
current: Aggregator | None = None
_aggregator_lock = threading.Lock()


def get_aggregator(config: Config) -> Aggregator:
    """The process's aggregator (re-created after fork, or when the settings object changes)."""
    global current
    aggregator = current
    if aggregator is None or aggregator.config is not config:
        with _aggregator_lock:
            if current is None or current.config is not config:
                current = Aggregator(config)
            aggregator = current
    return aggregator


def reset_aggregator() -> None:
    """Forget all in-process data (tests, and the child after a fork)."""
    global current, _aggregator_lock
    current = None
    _aggregator_lock = threading.Lock()
    thresholds.clear()  # the request path's sample thresholds belong to the aggregate let go


os.register_at_fork(after_in_child=reset_aggregator)
