"""The slowest requests of each view, with their timeline: recorded, bounded, written, read back and merged.

Request path (:func:`admit`): a request that is not slower than its view's current K-th of the bucket (a
threshold in process memory) drops its timeline there; nothing is built. Flusher thread
(:class:`SampleKeeper`): an admitted request is built into a sample (statements in order with offsets,
durations, templates, N+1 and duplicate marks, call sites; cache, HTTP and template events), the K
slowest per view and bucket are kept and written once per flush under their own key (keys.py), and the
threshold is raised. Readers (:func:`read_samples`) read only for one view's page: the bucket indexes,
then every process's sample values of the window, each validated (forged values are refused and counted
in ``skipped``), merged into the worst K.

Bounds per process and bucket: at most MAX_VIEWS views x SAMPLES_PER_VIEW samples, each with at most
events.MAX_EVENTS events and MAX_STATEMENTS distinct statements of at most MAX_SQL_LENGTH characters; one
stored value at most MAX_VALUE_BYTES (the fastest samples of a view are dropped first, then events cut).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.utils.functional import LazyObject, empty

from ..codec import ValueTooLarge, dumps, inflate, pack_bytes
from ..failopen import failures
from ..memcached import Store
from ..references import is_reference
from . import events, processes
from .probe import Probe, _memo, _template, vendors

#: Wire-format version of a stored sample value (inside the key prefix's schema version).
VERSION = 2
#: Distinct statements kept in one sample's table (the events refer to them by index).
MAX_STATEMENTS = 200
#: One stored value (one view, one bucket, one process), packed: the fastest samples are dropped to fit.
MAX_VALUE_BYTES = 256 * 1024
#: A sample's events as written: kind, offset (µs from the request's start), duration (µs), reference, mark.
KINDS = ("sql", "cache", "http", "template")
_KIND_CODE = {"sql": "q", events.CACHE: "c", events.HTTP: "h", events.TEMPLATE: "t"}
_CODE_KIND = {code: kind for kind, code in _KIND_CODE.items()}
USER_KINDS = ("anonymous", "authenticated", "staff", "unknown")
#: Marks of a statement event: bit 1 N+1 (its template ran N_PLUS_ONE_THRESHOLD times or more), bit 2 exact duplicate.
N_PLUS_ONE, DUPLICATE = 1, 2
#: Largest number a reader accepts in a sample (µs offsets and durations: about 11 days).
MAX_NUMBER = 10**12
MAX_TEXT = 200
#: Largest stored value a reader inflates (a genuine one packs into MAX_VALUE_BYTES; its SQL compresses well).
MAX_INFLATED = 8 * 1024 * 1024

#: Request path: view name as the middleware names it -> (end of its bucket, perf_counter ns; K-th duration ns).
thresholds: dict[str, tuple[int, int]] = {}
MAX_THRESHOLDS = 10_000
#: Buckets a process holds samples of when the flusher cannot write them (memcached down): memory stays bounded.
KEEP_BUCKETS = 3


def admit(probe: Probe, view: str, duration_ns: int, end_ns: int, request: Any) -> bool:
    """Whether the finished request may be among its view's slowest of the bucket (then its user kind is noted).

    On the request path: one dict lookup; a request that is not slower than the view's current K-th is refused
    and its timeline let go by the caller.
    """
    entry = thresholds.get(view)
    if entry is not None and end_ns < entry[0] and duration_ns <= entry[1]:
        return False
    probe.user_kind = user_kind(request)
    return True


def user_kind(request: Any) -> str:
    """anonymous / authenticated / staff, from a user the request already loaded (never who); without a loaded
    user, "anonymous" when there is no session cookie, else "unknown" (loading it would query the database)."""
    try:
        user = request.__dict__.get("user") if request is not None else None
        if user is not None and issubclass(type(user), LazyObject):
            user = None if user._wrapped is empty else user._wrapped
        if user is None:
            from django.conf import settings

            cookies = request.META.get("HTTP_COOKIE", "") if request is not None else ""
            return "unknown" if settings.SESSION_COOKIE_NAME in cookies else "anonymous"
        if not user.is_authenticated:
            return "anonymous"
        return "staff" if user.is_staff else "authenticated"
    except Exception:  # noqa: BLE001 - fail open: a broken user is not the sample's business
        return "unknown"


def _clear_thresholds() -> None:
    thresholds.clear()


os.register_at_fork(after_in_child=_clear_thresholds)


def view_hash(view: str) -> str:
    """The part of a sample key that names the view (view names are user-controlled text: hashed)."""
    return hashlib.blake2b(view.encode("utf-8", "replace"), digest_size=10).hexdigest()


def build(
    probe: Probe, duration_ns: int, templates: dict[tuple[str, str], list[int]], threshold: int, max_raw_sql: int
) -> dict[str, Any]:
    """One request's sample from its probe (flusher thread): statements by template, events in order.

    Templates are raw here (the flusher strips literals when it writes); ``templates`` is the request's
    ``{(vendor, template): [runs, ns]}`` from ``Probe.summarise`` (N+1 marks are per template, as in the stats).
    """
    start = probe.start_ns
    statements: dict[tuple[str, str, str], int] = {}
    table: list[list[Any]] = []
    alias_of = {id(counts): alias for alias, counts, _times in probe.statements()}
    per_alias: dict[str, dict[Any, tuple[str, str]]] = _memo.setdefault(max_raw_sql, {})
    sites = probe.sites or {}
    duplicates = probe.duplicates or ()
    found: list[list[Any]] = []
    kept_sql = 0
    timeline = sorted(probe.timeline or (), key=lambda event: event[0])
    for event in timeline:
        offset = max(event[0] - start, 0) // 1000
        elapsed = event[1] // 1000
        if len(event) == 4:
            kept_sql += 1
            sql, counts = event[2], event[3]
            alias = alias_of.get(id(counts), "")
            memo = per_alias.setdefault(alias, {})
            vendor, text = memo.get(sql) or _template(memo, vendors.get(alias, ""), sql, max_raw_sql)
            key = (alias, vendor, text)
            index = statements.get(key)
            if index is None:
                if len(table) >= MAX_STATEMENTS:
                    key = (alias, "", "(other SQL statements)")
                    index = statements.get(key)
                if index is None:
                    site = sites.get((alias, sql), (None, None))[0]
                    index = statements[key] = len(table)
                    table.append([alias, vendor, text if index < MAX_STATEMENTS else key[2], site])
            mark = N_PLUS_ONE if templates.get((vendor, text), (0,))[0] >= threshold else 0
            if event[0] in duplicates:
                mark |= DUPLICATE
            found.append(["q", offset, elapsed, index, mark])
        else:
            _start, _elapsed, kind, name, detail = event
            found.append([_KIND_CODE.get(kind, "c"), offset, elapsed, str(name)[:MAX_TEXT], detail])
    queries = db_ns = 0
    for _alias, counts, times in probe.statements():
        queries += sum(counts.values())
        db_ns += sum(times.values())
    cut = dict(probe.cut or {})
    if queries > kept_sql:
        cut["sql"] = queries - kept_sql
    return {
        "ms": round(duration_ns / 1e6, 3),
        "status": 0,
        "method": "",
        "error": probe.error_reference,
        "user": probe.user_kind or "unknown",
        "q": queries,
        "db": round(db_ns / 1e6, 3),
        "sql": table,
        "ev": found,
        "cut": cut,
    }


class SampleKeeper:
    """The K slowest requests per view and bucket of one process, built in the flusher thread."""

    def __init__(self, per_view: int, max_views: int, bucket_seconds: int, threshold: int, max_raw_sql: int) -> None:
        self.per_view = per_view
        self.max_raw_sql = max_raw_sql
        self.max_views = max_views
        self.bucket_seconds = bucket_seconds
        self.n_plus_one_threshold = threshold
        self.lock = threading.Lock()
        #: bucket -> view -> heap of (duration ns, sequence, sample), the fastest first.
        self.held: dict[int, dict[str, list[tuple[int, int, dict[str, Any]]]]] = {}
        self.dirty: set[tuple[int, str]] = set()
        self.latest = 0
        #: Buckets below this were written and let go: a sample arriving late for one is dropped.
        self.dropped_below = 0
        self._sequence = itertools.count()
        #: Samples built since start (tests and benchmarks: nothing is built for a request not among the slowest).
        self.built = 0

    def offer(
        self,
        bucket: int,
        view: str,
        raw_view: str,
        method: str,
        status: int,
        duration_ns: int,
        end_at: float,
        probe: Probe,
        templates: dict[tuple[str, str], list[int]],
    ) -> None:
        """Keep the request if it is among the K slowest of its view and bucket; raise the view's threshold."""
        if probe.user_kind is None or probe.timeline is None or bucket < self.dropped_below:
            return
        with self.lock:
            views = self.held.get(bucket)
            if views is None:
                views = self.held[bucket] = {}
                self.latest = max(self.latest, bucket)
                self._forget(self.latest - KEEP_BUCKETS)
            held = views.get(view)
            if held is None:
                if len(views) >= self.max_views:
                    return
                held = views[view] = []
            if len(held) >= self.per_view and duration_ns <= held[0][0]:
                self._raise(bucket, raw_view, held)
                return
        sample = build(probe, duration_ns, templates, self.n_plus_one_threshold, self.max_raw_sql)
        sample.update(at=round(end_at - duration_ns / 1e9, 6), status=status, method=method[:16])
        self.built += 1
        with self.lock:
            entry = (duration_ns, next(self._sequence), sample)
            if len(held) < self.per_view:
                heapq.heappush(held, entry)
            elif duration_ns > held[0][0]:
                heapq.heapreplace(held, entry)
            else:
                return
            self.dirty.add((bucket, view))
            self._raise(bucket, raw_view, held)

    def _raise(self, bucket: int, raw_view: str, held: list[tuple[int, int, dict[str, Any]]]) -> None:
        """The request path's threshold for the view: the K-th duration, until the bucket ends."""
        if len(held) < self.per_view or bucket < self.latest:
            return
        if len(thresholds) >= MAX_THRESHOLDS:
            thresholds.clear()
        ends_in = (bucket + 1) * self.bucket_seconds - time.time()
        thresholds[raw_view] = (time.perf_counter_ns() + int(ends_in * 1e9), held[0][0])

    def collect(self, current: int) -> list[tuple[int, str, list[dict[str, Any]]]]:
        """The (bucket, view, samples slowest first) that changed since the last call; finished buckets let go."""
        with self.lock:
            dirty, self.dirty = self.dirty, set()
            found = [
                (bucket, view, [entry[2] for entry in sorted(self.held[bucket][view], reverse=True)])
                for bucket, view in sorted(dirty)
                if bucket in self.held and view in self.held[bucket]
            ]
            self._forget(current - 1)
            return found

    def _forget(self, below: int) -> None:
        """Let go of the buckets below ``below`` (written, or memcached was down for that long); under the lock."""
        for bucket in [b for b in self.held if b < below]:
            del self.held[bucket]
            self.dropped_below = max(self.dropped_below, bucket + 1)
        self.dirty = {(b, view) for b, view in self.dirty if b >= below}


def encode(
    view: str, bucket: int, samples: list[dict[str, Any]], strip: Callable[[str, str], str], max_sql: int
) -> bytes:
    """One stored value: the view's samples of one bucket (slowest first), literals stripped, within MAX_VALUE_BYTES.

    Two JSON documents on two lines: a small header (the view, the bucket, each sample's duration and error
    reference) that a reader parses for every value, and the samples, parsed only for those it shows.
    """
    wire = []
    for sample in samples:
        table = [[alias, strip(text, vendor)[:max_sql], site] for alias, vendor, text, site in sample["sql"]]
        wire.append({**sample, "sql": table})
    payload = _pack(view, bucket, wire)
    while len(payload) > MAX_VALUE_BYTES and wire:
        if len(wire) > 1:
            wire.pop()  # the fastest goes first
        else:
            one = wire[0]
            kept = len(one["ev"]) // 2
            cut = dict(one["cut"])
            for event in one["ev"][kept:]:
                kind = _CODE_KIND.get(event[0], "cache")
                cut[kind] = cut.get(kind, 0) + 1
            wire[0] = {**one, "ev": one["ev"][:kept], "cut": cut, "sql": [[a, t[:200], s] for a, t, s in one["sql"]]}
            if not one["ev"]:
                wire.clear()
        payload = _pack(view, bucket, wire)
    return payload


def _pack(view: str, bucket: int, wire: list[dict[str, Any]]) -> bytes:
    header = {
        "v": VERSION,
        "view": view,
        "bucket": bucket,
        "ms": [s["ms"] for s in wire],
        "err": [s["error"] for s in wire],
    }
    return pack_bytes(dumps(header) + b"\n" + dumps(wire))


# -- reading --------------------------------------------------------------------------------------------


def _number(value: Any, low: float = 0, high: float = MAX_NUMBER) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value) and low <= value <= high


def _text(value: Any, limit: int = MAX_TEXT) -> bool:
    return type(value) is str and len(value) <= limit


def _valid_head(raw: dict[str, Any]) -> bool:
    """The request's own fields: start, duration, status, method, error reference, user kind, totals."""
    at, ms, status, error = raw.get("at"), raw.get("ms"), raw.get("status"), raw.get("error")
    method: Any = raw.get("method")
    if not (_number(at, 0, 1e11) and _number(ms, 0, 1e9) and type(status) is int and 0 <= status < 1000):
        return False
    if not (_text(method, 16) and (method == "" or (method.isascii() and method.isalpha()))):
        return False
    if error is not None and not (is_reference(error)):
        return False
    return raw.get("user") in USER_KINDS and _number(raw.get("q")) and _number(raw.get("db"))


def _valid_table(table: Any, max_sql: int) -> bool:
    """The statements: ``[alias, template, stored call site or None]``."""
    if type(table) is not list or len(table) > MAX_STATEMENTS + 1:
        return False
    return all(
        type(row) is list
        and len(row) == 3
        and _text(row[0])
        and _text(row[1], max_sql)
        and (row[2] is None or _text(row[2], 2048))
        for row in table
    )


def _valid_event(event: Any, statements: int) -> bool:
    """``[kind code, offset µs, duration µs, statement index or name, mark or detail]``."""
    if type(event) is not list or len(event) != 5 or event[0] not in _CODE_KIND:
        return False
    if type(event[1]) is not int or type(event[2]) is not int or not (_number(event[1]) and _number(event[2])):
        return False
    ref, mark = event[3], event[4]
    if event[0] == "q":
        return type(ref) is int and 0 <= ref < statements and mark in (0, 1, 2, 3) and type(mark) is int
    return _text(ref) and (mark is None or (type(mark) in (bool, int, str) and len(str(mark)) < 40))


def validate(raw: Any, max_sql: int) -> dict[str, Any] | None:
    """One stored sample, checked field by field (memcached is not trusted); None when anything is off."""
    if type(raw) is not dict or not _valid_head(raw):
        return None
    table: Any = raw.get("sql")
    found, cut = raw.get("ev"), raw.get("cut")
    if not _valid_table(table, max_sql) or type(found) is not list or len(found) > events.MAX_EVENTS:
        return None
    if not all(_valid_event(event, len(table)) for event in found):
        return None
    if type(cut) is not dict or not all(k in KINDS and type(n) is int and 0 <= n <= MAX_NUMBER for k, n in cut.items()):
        return None
    return raw


def describe(sample: dict[str, Any]) -> dict[str, Any]:
    """A validated sample as the API shows it (docs/dashboard.md, "Slowest requests")."""
    from .sites import describe as describe_site

    table = sample["sql"]
    sites = [describe_site(site) if site else None for _alias, _sql, site in table]
    timeline: list[dict[str, Any]] = []
    for code, offset, elapsed, ref, mark in sample["ev"]:
        entry: dict[str, Any] = {"kind": _CODE_KIND[code], "offset_ms": offset / 1000, "duration_ms": elapsed / 1000}
        if code == "q":
            alias, sql, _site = table[ref]
            entry.update(
                alias=alias,
                sql=sql,
                n_plus_one=bool(mark & N_PLUS_ONE),
                duplicate=bool(mark & DUPLICATE),
                call_site=sites[ref],
            )
        elif code == "c":
            entry.update(alias=ref, call=mark if isinstance(mark, str) else "")
        elif code == "h":
            entry.update(origin=ref, error=bool(mark))
        else:
            entry.update(name=ref, depth=mark if type(mark) is int else 0)
        timeline.append(entry)
    cut = {kind: sample["cut"].get(kind, 0) for kind in KINDS}
    return {
        "start": datetime.fromtimestamp(sample["at"], UTC).isoformat(timespec="milliseconds"),
        "duration_ms": sample["ms"],
        "status": sample["status"],
        "method": sample["method"],
        "error_reference": sample["error"],
        "user": sample["user"],
        "queries": sample["q"],
        "db_time_ms": sample["db"],
        "timeline": timeline,
        "truncated": any(cut.values()),
        "cut": cut,
    }


def read_samples(
    view: str,
    *,
    store: Store,
    limit: int | None = None,
    min_ms: float | None = None,
    max_ms: float | None = None,
    error: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The worst ``limit`` (default SAMPLES_PER_VIEW) samples of ``view`` over every process and server of
    the window, optionally only those with ``min_ms <= duration < max_ms``, or of the error ``error``. Two
    round trips: the bucket indexes, then every (bucket, process) sample value of the view. Never raises
    for what memcached holds."""
    config = store.config
    current = int((time.time() if now is None else now) // config.bucket_seconds)
    buckets = list(range(current - config.window_buckets + 1, current + 1))
    result: dict[str, Any] = {"view": view, "window_seconds": config.window_seconds, "samples": [], "processes": 0}
    found = store.fetch([config.keys.bucket_index(b) for b in buckets])
    missing = set(found.missing)
    if len(found.missing) == len(store.servers):
        result["error"] = f"memcached unavailable: {store.last_error or 'circuit breaker open'}"
        return result
    wanted = processes.pairs(found.values, config.keys, buckets)
    sample_keys = [config.keys.samples(bucket, view_hash(view), process_id) for bucket, process_id in wanted]
    values = store.fetch(sample_keys) if sample_keys else None
    if values is not None:
        missing.update(values.missing)
    merge = _Merge(view, config.samples_per_view, config.max_sql_length, config.read_max_bytes, min_ms, max_ms)
    merge.error = error
    for (bucket, process_id), key in zip(wanted, sample_keys, strict=True):
        merge.add(bucket, process_id, values.values.get(key) if values is not None else None)
    limit = config.samples_per_view if limit is None else limit
    try:
        result["samples"] = [describe(sample) for sample in merge.worst(limit)]
    except Exception as exc:  # noqa: BLE001 - fail open: validated, but a reader never 500s on stored values
        failures.record("reading samples failed", exc)
        merge.skipped += 1
    result["processes"] = len(merge.processes)
    result["matching"] = len(merge.candidates)
    if merge.skipped:
        result["skipped"] = merge.skipped
        result["note"] = (
            f"{merge.skipped} stored sample value(s) skipped: unreadable, over the read budget or not valid"
        )
    if missing:
        result["partial"] = True
        result["missing"] = sorted(missing)
    return result


class _Merge:
    """The samples of one view read so far, within a byte budget; what was refused is counted.

    Every value's header is parsed (durations and error references); a value's samples are parsed and
    validated only when one of them may be shown, slowest first, so a read of 48 processes x 30 buckets
    parses a handful of sample lists, not thousands.
    """

    def __init__(
        self, view: str, per_view: int, max_sql: int, max_bytes: int, min_ms: float | None, max_ms: float | None
    ) -> None:
        self.view = view
        self.most = max(per_view, 1) * 2
        self.max_sql = max_sql
        self.bytes_left = max(max_bytes // 4, 1)
        self.min_ms, self.max_ms = min_ms, max_ms
        self.error: str | None = None
        #: (duration ms, order, value's index in ``bodies``, sample's index in it, error) of the samples wanted.
        self.candidates: list[tuple[float, int, int, int, str | None]] = []
        self.bodies: list[Any] = []
        self.processes: set[str] = set()
        self.skipped = 0

    def add(self, bucket: int, process_id: str, data: bytes | None) -> None:
        """One stored value: inflated within the budget, its header checked whole; its samples wait."""
        if not data:
            return
        header: Any = None
        body = b""
        try:
            raw = inflate(data, min(MAX_INFLATED, self.bytes_left))
            if raw is not None:
                self.bytes_left -= len(raw)
                head, _, body = raw.partition(b"\n")
                header = json.loads(head)
        except (ValueTooLarge, ValueError, RecursionError):
            header = None
        if not self._valid_header(header, bucket):
            self.skipped += 1
            return
        self.processes.add(process_id)
        index = len(self.bodies)
        self.bodies.append(body)
        for i, (ms, error) in enumerate(zip(header["ms"], header["err"], strict=True)):
            if self.wanted(ms, error):
                self.candidates.append((ms, len(self.candidates), index, i, error))

    def _valid_header(self, header: Any, bucket: int) -> bool:
        if type(header) is not dict or header.get("v") != VERSION or header.get("view") != self.view:
            return False
        durations, errors = header.get("ms"), header.get("err")
        return (
            header.get("bucket") == bucket
            and type(durations) is list
            and type(errors) is list
            and len(durations) == len(errors) <= self.most
            and all(_number(ms, 0, 1e9) for ms in durations)
            and all(error is None or is_reference(error) for error in errors)
        )

    def wanted(self, ms: float, error: str | None) -> bool:
        """``min_ms <= ms < max_ms`` (either end open when not given), and of error ``error`` when given."""
        if (self.min_ms is not None and ms < self.min_ms) or (self.max_ms is not None and ms >= self.max_ms):
            return False
        return self.error is None or error == self.error

    def worst(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` slowest wanted samples, each validated (its value's samples parsed on first need)."""
        found: list[dict[str, Any]] = []
        parsed: dict[int, Any] = {}
        for ms, _order, index, i, error in sorted(self.candidates, key=lambda c: (-c[0], c[1])):
            if len(found) >= limit:
                break
            samples = parsed.get(index)
            if samples is None:
                try:
                    samples = json.loads(self.bodies[index])
                except (ValueError, RecursionError):
                    samples = False
                parsed[index] = samples
            sample = validate(samples[i], self.max_sql) if type(samples) is list and i < len(samples) else None
            if sample is None or sample["ms"] != ms or sample["error"] != error:
                self.skipped += 1  # a sample that does not match its header, or is not valid: refused
                continue
            found.append(sample)
        return found
