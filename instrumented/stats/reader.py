"""The one reader API: every process's stats of the window, merged per view.

Every consumer (CLI, dashboard, JSON API, bookmarklet, terminal view) calls :func:`read_stats`; none
reads memcached itself. A full-window read costs two round trips whatever the traffic: one multi-get
of the ~30 bucket indexes (which processes wrote in the window), one of those processes' window
roll-ups. Per-bucket snapshots are read instead for per-10 s series, narrower windows, and processes
whose roll-up is missing or stale (a process that died mid-window): a third round trip, rarely.
"""

from __future__ import annotations

import gc
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..codec import ValueTooLarge, inflate
from ..failopen import fail_open, failures
from ..keys import is_command_process
from ..memcached import Store, get_store
from ..naming import OTHER_VIEW
from . import history, queue
from . import processes as process_index
from .document import StatsDocument, empty_document, queue_document, view_dict
from .processes import MAX_PROCESSES_PER_READ
from .rollup import Decoded, RollupMerge, parse_rollup, split_rollup
from .snapshot import ViewTotals, add_series, cap_views, merge_into, section, section_header


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Parsing thousands of small containers triggers repeated full GC passes in a large heap; none are
    needed (nothing here forms cycles), so collection waits until the parse or merge is done (never
    across memcached I/O)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ReadBudget:
    """What one read may decode and merge: a byte budget, a per-value cap, a view budget; counts the rest."""

    def __init__(self, max_bytes: int, max_views: int) -> None:
        self.bytes_left = max_bytes
        self.value_limit = max(max_bytes // 4, 1)
        self.max_views = max_views
        self.skipped = 0
        #: Parts of stored values left out as malformed (a string count, a time of Infinity, a forged reference).
        self.malformed = 0
        self.folded = 0
        self.processes_skipped = 0

    def inflate(self, data: bytes | None) -> bytes | None:
        """One stored value's JSON bytes, or None: missing, unreadable, or over the cap or what is left (counted)."""
        if not data:
            return None
        try:
            body = inflate(data, min(self.value_limit, self.bytes_left))
        except ValueTooLarge:
            self.skipped += 1
            return None
        if body is not None:
            self.bytes_left -= len(body)
        return body

    def decode_rollup(self, data: bytes | None) -> Decoded | None:
        """A roll-up value parsed and checked (its current points still packed), or None as for decode()."""
        parts = split_rollup(data) if data else None
        body = None if parts is None else self.inflate(parts[0])
        if parts is None or body is None:
            return None
        try:
            with _no_gc_pauses():
                return parse_rollup(body, parts[1])
        except (ValueError, RecursionError):
            return None

    def decode(self, data: bytes | None) -> Any:
        """One stored value, parsed, or None: missing, unreadable, or over the cap or what is left (counted)."""
        body = self.inflate(data)
        if body is None:
            return None
        try:
            with _no_gc_pauses():
                return json.loads(body)
        except (ValueError, RecursionError):
            return None

    def count_skipped(self, parts: int = 1) -> None:
        """More parts of a stored value left out as malformed."""
        self.malformed += parts

    def note(self) -> str | None:
        """Why the answer is incomplete, for people (None when the whole window was read)."""
        parts = []
        if self.skipped:
            parts.append(
                f"{self.skipped} stored value(s) skipped: each may inflate to {self.value_limit // 1024} KiB, "
                f"a read to {self.value_limit * 4 // 1024} KiB (READ_MAX_BYTES)"
            )
        if self.malformed:
            parts.append(f"{self.malformed} malformed part(s) of stored values left out")
        if self.folded:
            parts.append(
                f"{self.folded} view entr(ies) over READ_MAX_VIEWS ({self.max_views}) counted under {OTHER_VIEW}"
            )
        if self.processes_skipped:
            parts.append(f"{self.processes_skipped} process(es) over {MAX_PROCESSES_PER_READ} not read")
        return "; ".join(parts) or None


def _covered_seconds(oldest: int | None, bucket_seconds: int, window: int, now: float) -> float:
    """Seconds from the start of the oldest bucket any process wrote up to now, at most the window (what the
    document's rates divide by: document.rate_seconds). 0.0 when nothing was written.
    """
    if oldest is None:
        return 0.0
    return round(min(float(window), max(now - oldest * bucket_seconds, 1.0)), 1)


def _annotate(result: StatsDocument, budget: ReadBudget, truncated: bool) -> None:
    """Say in the document what the read left out: truncated snapshots, skipped values, folded views."""
    if truncated:
        result["truncated"] = True
    if budget.skipped or budget.malformed:
        result["skipped"] = budget.skipped + budget.malformed
    note = budget.note()
    if note:
        result["note"] = note


#: Whether reads use the history values (history.py); off, they merge the processes' roll-ups as before (the
#: benchmarks and tests compare both).
READ_HISTORY = True
#: Finished buckets of the full window without a usable history value (a merger behind, a late flush) that are
#: read per process beside the history; with more, the read takes the processes' roll-ups instead.
MAX_HISTORY_HOLES = 2

#: Bytes of snapshots of the buckets not merged yet (stored, compressed) that a full read parses beside the history
#: whatever the history's size, and per byte of the history values' main parts; past both, the read takes the
#: processes' roll-ups. Measured 2026-12-07 (callgrind, 300 views): a snapshot's byte costs several times a
#: history byte; 48 workers serving 8 random views a bucket write ~30 KB of current snapshots beside ~50 KB of
#: history, 50 processes serving all 300 views every bucket ~285 KB (their roll-ups were 3x cheaper). At 2 per
#: byte, 50 processes each serving its own third of the views every bucket read through the history in 94 ms
#: against 58 ms from their roll-ups; at 1 they take the roll-ups (63 ms) while random traffic keeps the history
#: (41 against 165 ms): benchmarks/overhead.py's reader cases, 2026-12-07.
MAX_RAW_BESIDE_HISTORY = 64 * 1024
RAW_PER_HISTORY_BYTE = 1

#: How long one merged document serves the process's other readers (ten open dashboards: one read).
CACHE_SECONDS = 1.0
_cache: dict[tuple[Any, ...], tuple[float, StatsDocument]] = {}
_cache_locks: dict[tuple[Any, ...], threading.Lock] = {}
_cache_lock = threading.Lock()


def read_stats(
    window_seconds: int | None = None,
    *,
    view: str | None = None,
    series: bool = False,
    top_queries: int = 5,
    now: float | None = None,
    store: Store | None = None,
) -> StatsDocument:
    """Merged stats of the last ``window_seconds`` (default: the configured window), every process.

    ``view`` limits the result to one view name; ``series`` adds per-10 s points and the latency
    histogram (for charts). When memcached cannot be read the result has no views and ``error``
    says why: readers show "no data" with the reason, never fail.

    Readers of this process asking the same question within CACHE_SECONDS (and no flush of this
    process in between) share one merge; ``now`` or ``store`` (tests, benchmarks) read afresh.
    """
    if now is not None or store is not None:
        at = time.time() if now is None else now
        return _read_safely(window_seconds, view, series, top_queries, at, store or get_store())
    store = get_store()
    key = (id(store), window_seconds, view, series, top_queries)
    with _cache_lock:
        lock = _cache_locks.get(key)
        if lock is None:
            if len(_cache_locks) > 256:
                _cache_locks.clear()
                _cache.clear()
            lock = _cache_locks[key] = threading.Lock()
    with lock:  # concurrent readers wait for the one merge in flight rather than start their own
        generation = process_index.generation
        cached = _cache.get(key)
        clock = time.monotonic()
        if cached is not None and cached[0] > clock and cached[1].get("_generation") == generation:
            document = cached[1]
        else:
            document = _read_safely(window_seconds, view, series, top_queries, time.time(), store)
            expires = clock + min(CACHE_SECONDS, store.config.flush_interval)
            _cache[key] = (expires, {**document, "_generation": generation})  # type: ignore[typeddict-unknown-key]
            return document
    result = dict(document)
    result.pop("_generation", None)
    return result  # type: ignore[return-value]


def _read_safely(
    window_seconds: int | None, view: str | None, series: bool, top_queries: int, now: float, store: Store
) -> StatsDocument:
    """:func:`_read`, which checks every part of what it reads; should it still fail, "no data" with the reason
    (the failure counted and logged), never an exception to the dashboard, API, metrics or terminal."""
    with fail_open("reading stats failed") as failed:
        return _read(window_seconds, view, series, top_queries, now, store)
    result = empty_document(store.config.window_seconds if window_seconds is None else window_seconds, now)
    result["error"] = f"reading stats failed: {type(failed.error).__name__}"
    return result


def _read(  # noqa: C901 - one read, in the order of its round trips
    window_seconds: int | None, view: str | None, series: bool, top_queries: int, now: float, store: Store
) -> StatsDocument:
    config = store.config
    keys = config.keys
    bucket_seconds = config.bucket_seconds
    full_window = config.window_seconds
    window = full_window if window_seconds is None else max(bucket_seconds, min(int(window_seconds), full_window))
    current = int(now // bucket_seconds)
    buckets = list(range(current - math.ceil(window / bucket_seconds) + 1, current + 1))
    result = empty_document(window, now)
    missing: set[str] = set()
    waits: dict[str, list[Any]] = {}  # process -> its requests' queue time, summed over its views

    def fetch(wanted_keys: list[str]) -> dict[str, bytes] | None:
        found = store.fetch(wanted_keys)
        missing.update(found.missing)
        return None if len(found.missing) == len(store.servers) else found.values

    def unavailable() -> StatsDocument:
        result["error"] = f"memcached unavailable: {store.last_error or 'circuit breaker open'}"
        return result

    live_keys = process_index.live_keys(keys, now, config.flush_interval)
    indexes = fetch([keys.bucket_index(b) for b in buckets] + live_keys)
    if indexes is None:
        return unavailable()
    budget = ReadBudget(config.read_max_bytes, config.read_max_views)
    writers = process_index.writers(indexes, keys, buckets, budget.bytes_left)
    budget.bytes_left -= writers.bytes_read
    budget.processes_skipped += writers.skipped
    wanted = writers.buckets
    result["covered_seconds"] = _covered_seconds(writers.oldest(), bucket_seconds, window, now)
    live = process_index.live(indexes, live_keys)

    # Parsed and merged one value at a time, smallest first: a forged giant is dropped, not kept, and
    # spends what the budget has left after the genuine values.
    merged: dict[str, ViewTotals] = {}
    processes: set[str] = set()
    truncated = False

    def merge(bucket: int | None, process_id: str, snapshot: dict[str, Any]) -> None:
        nonlocal truncated
        with _no_gc_pauses():
            folded, skipped = merge_into(merged, bucket, snapshot, view, budget.max_views, OTHER_VIEW)
        budget.folded += folded
        budget.count_skipped(skipped)
        processes.add(process_id)
        views = snapshot.get("views")
        if isinstance(views, dict):
            queue.add_waits(waits, process_id, views.values())
        truncated = truncated or bool(snapshot.get("truncated"))

    per_bucket: list[tuple[int, str]] = []
    raw_snapshots: dict[str, bytes] = {}
    by_bucket: dict[int, list[str]] = {}
    for process_id, process_buckets in wanted.items():
        for b in process_buckets:
            by_bucket.setdefault(b, []).append(process_id)
    # Finished buckets merged once for everyone (history.py): the window as a few aligned blocks; what is not merged
    # yet (the current bucket, the one before just after it ended), read per process.
    used_history = False
    finished = [b for b in buckets if b < current and b in by_bucket] if READ_HISTORY else []
    if finished:
        recent = now < current * bucket_seconds + history.settle_seconds(config) + config.flush_interval
        blocks = history.cover(buckets[0], current - 2 if recent else current - 1, history.top_level(config))
        blocks += [(0, current - 1)] if recent else []
        raw_first = [(b, p) for b in ((current - 1, current) if recent else (current,)) for p in by_bucket.get(b, ())]
        found = fetch([keys.history_block(*block) for block in blocks] + [keys.bucket(b, p) for b, p in raw_first])
        if found is None:
            return unavailable()
        columns = RollupMerge(view, budget.max_views, OTHER_VIEW)
        points: list[tuple[str, list[list[Any]]]] = []
        from_history: set[str] = set()
        covered: set[int] = set()

        def take(level: int, first: int, raw: bytes | None) -> bool:
            """Merge one history value if it is usable; forged or malformed ones are counted."""
            nonlocal truncated
            span = range(first, first + (1 << level))
            decoded = budget.decode_rollup(raw)
            if decoded is None:
                if raw is not None:
                    budget.count_skipped()  # not what a merger writes
                return False
            lengths = [len(indexes.get(keys.bucket_index(b)) or b"") for b in span]
            ok = history.usable(decoded.doc, level, first, lengths)
            if ok is None:
                return False  # behind its indexes (a late flush): not forged
            if not (ok and _add_history(columns, points, decoded, span, view, series, budget)):
                budget.count_skipped()
                return False
            doc = decoded.doc
            from_history.update(doc["p"])
            for process_id, wire in doc["pq"].items():
                queue.add_waits(waits, str(process_id), [{"qt": wire}])
            budget.count_skipped(doc["sk"])
            truncated = truncated or bool(doc.get("truncated"))
            covered.update(span)
            return True

        # The history pays off when the buckets not merged yet are small beside it (real traffic: each process
        # serves a few views a bucket); when they are larger (every process serving every view every bucket),
        # parsing their snapshots costs more than the processes' roll-ups, whose layouts are then alike: decided
        # on the stored sizes, before anything is parsed.
        raw_bytes = sum(len(found.get(keys.bucket(b, p)) or b"") for b, p in raw_first)
        history_bytes = sum(int.from_bytes(found.get(keys.history_block(*b), b"")[1:5], "little") for b in blocks)
        small = raw_bytes <= max(RAW_PER_HISTORY_BYTE * history_bytes, MAX_RAW_BESIDE_HISTORY)
        singles: list[int] = []
        for level, first in blocks if small or window < full_window else ():
            if not take(level, first, found.pop(keys.history_block(level, first), None)) and level:
                singles += [b for b in range(first, first + (1 << level)) if b in by_bucket]
        if singles:  # a block missing or behind: its buckets one by one
            more = fetch([keys.history(b) for b in singles])
            if more is None:
                return unavailable()
            for bucket in singles:
                take(0, bucket, more.get(keys.history(bucket)))
        holes = [b for b in finished if b not in covered and not (recent and b == current - 1)]
        if covered and (window < full_window or len(holes) <= MAX_HISTORY_HOLES):
            used_history = True
            processes.update(from_history)
            columns.into(merged, budget.count_skipped)
            budget.folded += columns.folded
            for name, view_points in points:
                if name in merged:
                    budget.count_skipped(add_series(merged[name], view_points, range(buckets[0], current + 1)))
            per_bucket = [(b, p) for b, p in raw_first if b not in covered]
            per_bucket += [(b, p) for b in holes for p in by_bucket[b]]
            raw_snapshots = {key: found[key] for key in (keys.bucket(b, p) for b, p in per_bucket) if key in found}
        else:  # history not there yet (a fresh site, memcached restarted), or too large beside it: the roll-ups
            waits.clear()
            truncated = False
            refused = budget.malformed  # forged history values stay counted
            budget = ReadBudget(config.read_max_bytes, config.read_max_views)
            budget.malformed = refused
            budget.bytes_left -= writers.bytes_read
            budget.processes_skipped += writers.skipped
        del columns, points, found
    if used_history:
        pass
    elif window == full_window and wanted:
        wanted_keys = [keys.rollup(p) for p in wanted] + ([keys.series(p) for p in wanted] if series else [])
        rollups = fetch(wanted_keys)
        if rollups is None:
            return unavailable()
        by_size = sorted(wanted.items(), key=lambda item: len(rollups.get(keys.rollup(item[0])) or b""))
        columns = RollupMerge(view, budget.max_views, OTHER_VIEW)
        points = []
        for process_id, process_buckets in by_size:
            rollup = budget.decode_rollup(rollups.pop(keys.rollup(process_id), None))
            sections = rollups.pop(keys.series(process_id), None) if series else None
            if _merge_rollup(columns, points, rollup, current, view, series, sections, budget):
                processes.add(process_id)
                assert rollup is not None  # merged
                findings = rollup.doc.get("fx")
                if isinstance(findings, dict):
                    queue.add_waits(waits, process_id, findings.values())
                truncated = truncated or bool(rollup and rollup.doc.get("truncated"))
            else:
                per_bucket.extend((b, process_id) for b in process_buckets)
            del rollup, sections
        columns.into(merged, budget.count_skipped)
        budget.folded += columns.folded
        for name, view_points in points:
            if name in merged:
                budget.count_skipped(add_series(merged[name], view_points, range(buckets[0], current + 1)))
        del columns, points
    else:
        per_bucket = [(b, p) for p, process_buckets in wanted.items() for b in process_buckets]
    if per_bucket:
        unread = [keys.bucket(b, p) for b, p in per_bucket if keys.bucket(b, p) not in raw_snapshots]
        if unread:
            more = fetch(unread)
            if more is None:
                return unavailable()
            raw_snapshots.update(more)
        per_bucket.sort(key=lambda item: len(raw_snapshots.get(keys.bucket(*item)) or b""))
        for bucket, process_id in per_bucket:
            snapshot = budget.decode(raw_snapshots.pop(keys.bucket(bucket, process_id), None))
            if isinstance(snapshot, dict):
                merge(bucket, process_id, snapshot)
            elif snapshot is not None:
                budget.count_skipped()
            del snapshot

    if used_history:
        history.unpad(merged)
    for totals in merged.values():
        totals.settle()
    cap_views(merged, config.max_views, OTHER_VIEW)
    views = []
    for name, m in merged.items():
        try:
            views.append(view_dict(name, m, top_queries, bucket_seconds, series))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError):
            # Every part was checked as it was merged; should one still not read, that view is left out, not the
            # whole document (failures counted and logged).
            failures.record("a merged view could not be shown", None)
            budget.count_skipped()
    views.sort(key=lambda v: (-v["requests"], v["view"]))
    commands = {p for p in processes if is_command_process(p)}
    result["processes"] = len(processes) - len(commands)
    result["processes_live"] = sum(1 for p in live if not is_command_process(p))
    result["command_processes"] = len(commands)
    result["queue"] = queue_document(waits, live)
    _annotate(result, budget, truncated)
    if missing:
        result["partial"] = True
        result["missing"] = sorted(missing)
        gap = f"no answer from memcached {', '.join(result['missing'])}: what it holds is missing"
        result["note"] = f"{gap}; {result['note']}" if "note" in result else gap
    result["views"] = views
    return result


def _add_history(
    columns: RollupMerge,
    points: list[tuple[str, list[list[Any]]]],
    decoded: Decoded,
    span: range,
    view: str | None,
    series: bool,
    budget: ReadBudget,
) -> bool:
    """Add one history value (the buckets of ``span``) to ``columns`` (and, for ``series``, its points to
    ``points``); False (nothing added) when it is malformed."""
    found: list[tuple[str, list[Any]]] = []
    if series:
        body = budget.inflate(decoded.current)
        try:
            rows = None if body is None else json.loads(body)
        except (ValueError, RecursionError):
            rows = None
        if type(rows) is not list:
            return False
        for row in rows:
            if type(row) is not list or len(row) != 5 or type(row[0]) is not str or row[1] not in span:
                return False
            if view is None or row[0] == view:
                found.append((row[0], [row[1:]]))
    with _no_gc_pauses():
        if not columns.add(decoded):
            return False
    points.extend(found)
    return True


def _merge_rollup(
    columns: RollupMerge,
    points: list[tuple[str, list[list[Any]]]],
    rollup: Decoded | None,
    current: int,
    view: str | None,
    series: bool,
    sections: bytes | None,
    budget: ReadBudget,
) -> bool:
    """Add one process's roll-up to ``columns`` (and, for ``series``, its series points to ``points``); False
    when the caller must read that process's buckets instead: missing or malformed, stale (a process that died
    mid-window), or its series value missing or of another version; or malformed (then nothing of it is added)."""
    if rollup is None or not isinstance(rollup.doc.get("as_of"), int) or rollup.doc["as_of"] < current:
        return False
    try:
        found = _series_points(rollup, current, view, sections, budget) if series else {}
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError):
        found = None
    if found is None:
        return False
    with _no_gc_pauses():
        if not columns.add(rollup):
            return False
    points.extend(found.items())
    return True


def _series_points(
    rollup: Decoded, current: int, view: str | None, sections: bytes | None, budget: ReadBudget
) -> dict[str, list[list[Any]]] | None:
    """Per view, the series points of one process: its finished buckets from the series value (only the
    sections of the views asked for are parsed) and the current bucket from the roll-up's second part; None
    when the series value does not go with the roll-up."""
    points: dict[str, list[list[Any]]] = {}
    doc = rollup.doc
    if any(b < current for b in doc["buckets"]):
        parsed = section_header(sections, budget.value_limit) if sections else None
        if parsed is None or parsed[0].get("fin") != doc.get("fin"):
            return None
        header, start = parsed
        with _no_gc_pauses():
            for index, name in enumerate(header["names"]):
                if view is None or name == view:
                    points[name] = list(section(sections, header, start, index, budget.value_limit) or ())  # type: ignore[arg-type]
    body = budget.inflate(rollup.current)
    if body is None:
        return None
    with _no_gc_pauses():
        for name, bucket, requests, errors, encoded in json.loads(body):
            if view is None or name == view:
                points.setdefault(name, []).append([bucket, requests, errors, encoded])
    return points
