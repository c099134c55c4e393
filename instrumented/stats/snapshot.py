"""The snapshot wire format, once: one view's record (ViewTotals), how it is encoded, merged and shrunk.

The aggregator counts requests into a ViewTotals per view and bucket and encodes it here; the
flusher rewrites its SQL and sums buckets into the roll-up here; the reader merges every process's
snapshots here. Snapshot fields, per view:
``route, n (requests), e (errors), s ([2xx, 3xx, 4xx, 5xx]), lsum/lmax (latency µs), h (histogram
slice, see histogram.py), m (methods), qn/qmax (queries), db (µs), n1 (requests with a read N+1), q ([[sql, count,
µs, n1], ...], n1 the requests in which the template repeated, a read or a write; a bucket written by the aggregator
adds the vendor: [raw sql, count, µs, n1, vendor], which the flusher strips), a ({alias: [count, µs]}), x ({exception
class: [count, last reference, last time]}), qx ([[sql, exact duplicates, slow runs, slowest µs, [[N+1 call site,
requests, hint], ...], [[slow-query call site, requests, hint], ...]], ...]: the templates that had any; vendor
appended in an aggregator's bucket, like q), c ({cache alias: [calls, µs, hits, misses]}), o ({origin: [outgoing
HTTP calls, µs, errors, slowest µs]}), qt (request queue time, queue.py: [stamped requests, µs, largest µs,
ignored stamps, histogram slice])``; and the view's totals of its findings, counted per request apart from the
templates kept (so they stay exact through the merge), each only when not zero: n1s/n1q (read N+1s: one per request
and repeated template / the statements they ran), dup (exact duplicates), w1/w1s/w1q (writes per row: requests /
one per request and repeated template / statements), cm (statement runs whose SQL comments were removed).

A process's roll-up holds the same numbers *columnar* (rollup.py); its per-view series live in a second,
sectioned value (:func:`encode_sections`) from which a one-view read parses that view's section only.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NotRequired, TypedDict

from ..memcached import MAX_UNPACKED_BYTES, MAX_VALUE_BYTES, dumps, inflate, pack
from . import histogram, queue

#: The view totals counted apart from the templates (see above), in stored order: (snapshot field, ViewTotals slot).
TOTALS = (
    ("n1s", "n1_runs"),
    ("n1q", "n1_queries"),
    ("dup", "duplicates"),
    ("w1", "writes"),
    ("w1s", "write_runs"),
    ("w1q", "write_queries"),
    ("cm", "comments"),
)
#: Every stored number is below this (a reader refuses others): sums of 2000 processes fit 64-bit lanes.
NUMBER_LIMIT = 1 << 48
#: Latest unix time a stored entry may carry (the year 9999): a later one cannot be shown as a date.
LATEST_TIME = 253_402_300_799
#: An error reference as instrumented.errors.records makes them (Crockford base32, 14 characters).
REFERENCE = re.compile(r"[0-9a-hjkmnp-tv-z]{14}\Z")


def is_count(value: object) -> bool:
    """A stored count: an int (never a bool, a float or a string) in 0 .. NUMBER_LIMIT-1."""
    return type(value) is int and 0 <= value < NUMBER_LIMIT


def is_amount(value: object) -> bool:
    """A stored amount (µs and the like): an int or finite float in 0 .. NUMBER_LIMIT (NaN fails both tests)."""
    return (type(value) is int or type(value) is float) and 0 <= value < NUMBER_LIMIT


def _is_text(value: object) -> bool:
    return type(value) is str


def _is_hint(value: object) -> bool:
    return value is None or type(value) is str


def _is_list(value: object) -> bool:
    return type(value) is list


Check = Callable[[object], bool]


def _row_ok(row: object, checks: tuple[Check, ...]) -> bool:
    """``row`` is a list of ``len(checks)`` values, each passing its check."""
    return type(row) is list and len(row) == len(checks) and all(check(v) for check, v in zip(checks, row, strict=True))


def _rows(value: Any) -> list[Any]:
    """A stored list of rows; one malformed row (so it is counted once) when it is not a list."""
    return value if type(value) is list else [None]


def _entries(value: Any) -> Iterable[tuple[str, Any]]:
    """A stored ``{key: entry}``'s items; one malformed entry (so it is counted once) when it is not a dict."""
    return value.items() if type(value) is dict else [("", None)]


#: What each rare part of a stored view holds, checked before anything of it is added (issue 17: a forged value
#: with a string count or a time of Infinity made every reader raise). The frequent parts have checks of their
#: own below, written out: a reader checks thousands of them.
# [sql, duplicates, slow runs, slowest µs, N+1 call sites, slow-query call sites]
QX_ROW = (_is_text, is_count, is_count, is_amount, _is_list, _is_list)
SITE_ROW = (_is_text, is_count, _is_hint)  # [call site, requests, hint]
C_ENTRY = (is_count, is_amount, is_count, is_count)  # cache alias: [calls, µs, hits, misses]
O_ENTRY = (is_count, is_amount, is_count, is_amount)  # origin: [calls, µs, errors, slowest µs]
T_ENTRY = (is_count, is_amount, is_amount)  # outermost template: [renders, µs, SQL µs inside]
_NUMBERS = (int, float)  # ``type(x) in _NUMBERS``: never a bool
_LIMIT = NUMBER_LIMIT


def view_ok(snap: Any) -> bool:
    """The numbers of one stored view (a bucket's or a roll-up's row form) are what a writer stores: counts are
    ints in range, times finite and non-negative, texts text. Its tables and sparse parts are checked per entry."""
    if type(snap) is not dict:
        return False
    get: Any = snap.get
    s, n, e, n1 = get("s"), get("n"), get("e", 0), get("n1", 0)
    lsum, lmax = get("lsum"), get("lmax")
    if not (
        type(s) is list and len(s) == 4
        and type(n) is type(e) is type(n1) is type(s[0]) is type(s[1]) is type(s[2]) is type(s[3]) is int
        and 0 <= min(n, e, n1, *s) and max(n, e, n1, *s) < _LIMIT
        and type(lsum) in _NUMBERS and type(lmax) in _NUMBERS and 0 <= lsum < _LIMIT and 0 <= lmax < _LIMIT
        and type(snap.get("h", "")) is str and type(snap.get("route", "")) is str
    ):  # fmt: skip
        return False
    if "qn" not in snap:
        return True
    qn, qmax, db = get("qn"), get("qmax"), get("db")
    return type(qn) is type(qmax) is int and 0 <= min(qn, qmax) and max(qn, qmax) < _LIMIT and type(db) in _NUMBERS \
        and 0 <= db < _LIMIT  # fmt: skip


def q_row_ok(row: Any) -> bool:
    """``[sql, count, µs, N+1 requests]``."""
    return (
        type(row) is list and len(row) == 4 and type(row[0]) is str and type(row[1]) is type(row[3]) is int
        and type(row[2]) in _NUMBERS and 0 <= row[1] < _LIMIT and 0 <= row[2] < _LIMIT and 0 <= row[3] < _LIMIT
    )  # fmt: skip


def alias_ok(entry: Any) -> bool:
    """An alias's ``[count, µs]``."""
    return (
        type(entry) is list and len(entry) == 2 and type(entry[0]) is int and type(entry[1]) in _NUMBERS
        and 0 <= entry[0] < _LIMIT and 0 <= entry[1] < _LIMIT
    )  # fmt: skip


def exception_ok(entry: Any) -> bool:
    """An exception class's ``[count, last reference, last unix time]``: the reference in its own format or none
    (never text a page would turn into a link of its own), the time one a date can show."""
    if type(entry) is not list or len(entry) != 3:
        return False
    count, ref, at = entry
    return (
        type(count) is int and 0 <= count < _LIMIT and type(at) in _NUMBERS and 0 <= at <= LATEST_TIME
        and (ref is None or ref == "" or (type(ref) is str and REFERENCE.match(ref) is not None))
    )  # fmt: skip


def point_ok(row: Any) -> bool:
    """A series point ``[bucket, requests, errors, histogram slice]``."""
    return (
        type(row) is list and len(row) == 4 and type(row[0]) is type(row[1]) is type(row[2]) is int
        and type(row[3]) is str and 0 <= min(row[0], row[1], row[2]) and max(row[0], row[1], row[2]) < _LIMIT
    )  # fmt: skip


#: Call sites kept per view and template (the most frequent), and origins per view.
MAX_SITES = 3
MAX_ORIGINS = 20
OTHER_ORIGIN = "(other hosts)"
#: Outermost templates kept per request and per view (by name); the rest are counted under OTHER_TEMPLATES.
MAX_TEMPLATES = 20
OTHER_TEMPLATES = "(other templates)"


class ViewSnapshot(TypedDict, total=False):
    """One view in a bucket snapshot (row form), as written by the aggregator and read back."""

    route: str
    n: int
    e: int
    s: list[int]
    lsum: float
    lmax: float
    h: str
    m: dict[str, int]
    qn: int
    qmax: int
    db: int
    n1: int
    q: list[list[Any]]
    a: dict[str, list[int]]
    x: dict[str, list[Any]]
    qx: list[list[Any]]
    n1s: int
    n1q: int
    dup: int
    w1: int
    w1s: int
    w1q: int
    cm: int
    c: dict[str, list[int]]
    o: dict[str, list[int]]
    qt: list[Any]
    #: outermost template -> [renders, µs, SQL µs inside]
    t: dict[str, list[int]]


class BucketSnapshot(TypedDict):
    """``<prefix>:<bucket>:<process>``: one process's views of one bucket."""

    bucket: int
    process: str
    views: dict[str, ViewSnapshot]
    truncated: NotRequired[bool]


class SeriesHeader(TypedDict):
    """The first line of ``<prefix>:ser:<process>``: its views, where each one's section ends, and ``fin``.
    Section i is view ``names[i]``: ``[[bucket, requests, errors, histogram slice], ...]``."""

    process: str
    fin: int
    names: list[str]
    ends: list[int]


def template_rank(item: tuple[Any, list[Any]]) -> tuple[bool, int]:
    """The one ranking of SQL templates everywhere: N+1 suspects first, then by time."""
    return item[1][2] > 0, item[1][1]


def add_into(table: dict[Any, list[Any]], key: Any, values: list[Any]) -> None:
    """``table[key] += values`` element-wise (a new entry is a copy of ``values``)."""
    entry = table.get(key)
    if entry is None:
        table[key] = list(values)
    else:
        for i, value in enumerate(values):
            entry[i] += value


def _add_sites(known: dict[str, list[Any]], rows: Any) -> None:
    """Add ``[[site, requests, hint], ...]`` to a template's ``{site: [requests, hint]}``."""
    for site, count, hint in rows:
        found = known.get(site)
        if found is None:
            known[str(site)] = [count, hint or None]
        else:
            found[0] += count
            found[1] = found[1] or hint or None


class ViewTotals:
    """One view's numbers: counted per request by the aggregator, summed over snapshots by flusher and reader.

    Times are µs (floats while the aggregator counts, whole numbers on the wire); ``templates`` is keyed by
    SQL text, or by (vendor, raw SQL) in the aggregator until the flusher strips the literals.
    """

    __slots__ = (
        "aliases",
        "cache",
        "comments",
        "db_us",
        "duplicates",
        "errors",
        "exceptions",
        "extras",
        "hist",
        "http",
        "lat_max",
        "lat_sum",
        "methods",
        "n1_queries",
        "n1_runs",
        "n_plus_one",
        "queries",
        "queries_max",
        "queue",
        "renders",
        "requests",
        "route",
        "series",
        "status",
        "templates",
        "wide",
        "write_queries",
        "write_runs",
        "writes",
    )

    def __init__(self, route: str = "") -> None:
        self.route = route
        self.requests = 0
        self.errors = 0
        self.status = [0, 0, 0, 0]
        self.lat_sum = 0.0
        self.lat_max = 0.0
        self.hist: list[int] = histogram.new()
        # Histogram slices summed as one wide integer (rollup.RollupMerge), folded into ``hist`` by settle().
        self.wide = 0
        self.queries = 0
        self.queries_max = 0
        self.db_us: float = 0
        self.n_plus_one = 0
        # Totals of the findings, counted per request apart from the templates kept (TOTALS).
        self.n1_runs = 0
        self.n1_queries = 0
        self.duplicates = 0
        self.writes = 0
        self.write_runs = 0
        self.write_queries = 0
        self.comments = 0
        self.methods: dict[str, int] = {}
        # sql (or (vendor, raw sql)) -> [count, µs, N+1 requests]
        self.templates: dict[Any, list[Any]] = {}
        # alias -> [count, µs]
        self.aliases: dict[str, list[Any]] = {}
        # class -> [count, last reference, last unix time]
        self.exceptions: dict[str, list[Any]] = {}
        # bucket -> [requests, errors, [packed histogram slices]]; merged only when a chart asks for it
        self.series: dict[int, list[Any]] = {}
        # sql (as in templates) -> [exact duplicates, slow runs, slowest µs, {N+1 call site: [requests, hint]},
        # {slow-query call site: [requests, hint]}]: a site's requests never exceed its own finding's
        self.extras: dict[Any, list[Any]] = {}
        # cache alias -> [calls, µs, hits, misses]
        self.cache: dict[str, list[Any]] = {}
        # origin -> [outgoing HTTP calls, µs, errors, slowest µs]
        self.http: dict[str, list[Any]] = {}
        # request queue time (queue.py), None until a request of this view carried a stamp
        self.queue: list[Any] | None = None
        # outermost template -> [renders, µs, SQL µs inside] (templates.py)
        self.renders: dict[str, list[Any]] = {}

    def add(self, snap: Any, bucket: int | None = None) -> int:
        """Add one snapshot of this view; ``bucket`` also records it in the per-bucket series. Returns how many
        parts were left out as malformed: the whole snapshot (1) when one of its numbers is (:func:`view_ok`),
        else each bad entry of its tables, exceptions and findings. Nothing of a malformed part is added."""
        if not view_ok(snap):
            return 1
        return self.add_checked(snap, bucket)

    def add_checked(self, snap: dict[str, Any], bucket: int | None = None) -> int:  # noqa: C901 - reader hot loop, one flat pass
        """:meth:`add` of a snapshot that passed :func:`view_ok`."""
        if not self.route:
            self.route = snap.get("route", "")
        n = snap["n"]
        errors = snap.get("e", 0)
        self.requests += n
        self.errors += errors
        s = snap["s"]
        status = self.status
        status[0] += s[0]
        status[1] += s[1]
        status[2] += s[2]
        status[3] += s[3]
        self.lat_sum += snap["lsum"]
        lmax = snap["lmax"]
        if lmax > self.lat_max:
            self.lat_max = lmax
        encoded = snap.get("h") or ""
        histogram.merge_encoded(self.hist, encoded)
        skipped = 0
        found = snap.get("m")
        if found:  # the containers' checks inlined too: this runs for each of thousands of snapshots
            methods = self.methods
            for method, count in found.items() if type(found) is dict else _entries(found):
                if type(count) is int and 0 <= count < _LIMIT:
                    methods[method] = methods.get(method, 0) + count
                else:
                    skipped += 1
        if "qn" in snap:
            self.queries += snap["qn"]
            if snap["qmax"] > self.queries_max:
                self.queries_max = snap["qmax"]
            self.db_us += snap["db"]
            # Inlined rather than add_into(): this runs for every template of thousands of snapshots per read.
            templates = self.templates
            rows = snap.get("q", [])
            for row in rows if type(rows) is list else _rows(rows):
                if not q_row_ok(row):
                    skipped += 1
                    continue
                sql, count, time_us, n1 = row
                entry = templates.get(sql)
                if entry is None:
                    templates[sql] = [count, time_us, n1]
                else:
                    entry[0] += count
                    entry[1] += time_us
                    entry[2] += n1
            aliases = self.aliases
            found = snap.get("a", {})
            for alias, values in found.items() if type(found) is dict else _entries(found):
                if not alias_ok(values):
                    skipped += 1
                    continue
                entry = aliases.get(alias)
                if entry is None:
                    aliases[alias] = list(values)
                else:
                    entry[0] += values[0]
                    entry[1] += values[1]
        if "n1" in snap:
            self.n_plus_one += snap["n1"]
        for field, slot in TOTALS:  # the findings' totals: rare, each checked like a count
            if field in snap:
                value = snap[field]
                if type(value) is int and 0 <= value < _LIMIT:
                    setattr(self, slot, getattr(self, slot) + value)
                else:
                    skipped += 1
        if "x" in snap:
            skipped += self.add_exceptions(snap["x"])
        if "qx" in snap or "c" in snap or "o" in snap or "qt" in snap or "t" in snap:
            skipped += self.add_findings(snap)
        if bucket is not None:
            point = self.series.get(bucket)
            if point is None:
                self.series[bucket] = [n, errors, [encoded]]
            else:
                point[0] += n
                point[1] += errors
                point[2].append(encoded)
        return skipped

    def add_exceptions(self, found: Any) -> int:
        """Add a stored ``{class: [count, last reference, last unix time]}``; returns the entries left out as
        malformed (all of it, as one, when it is not a dict)."""
        if type(found) is not dict:
            return 1
        skipped = 0
        exceptions = self.exceptions
        for cls, entry in found.items():
            if not exception_ok(entry):
                skipped += 1
                continue
            known = exceptions.get(cls)
            if known is None:
                exceptions[cls] = list(entry)
            else:
                known[0] += entry[0]
                if entry[2] >= known[2]:
                    known[1] = entry[1] or known[1]
                    known[2] = entry[2]
        return skipped

    def _add_exceptions(self, items: Any) -> None:
        for cls, (count, ref, at) in items:
            entry = self.exceptions.get(cls)
            if entry is None:
                self.exceptions[cls] = [count, ref, at]
            else:
                entry[0] += count
                if at >= entry[2]:
                    entry[1] = ref or entry[1]
                    entry[2] = at

    def settle(self) -> None:
        """Fold the wide-integer histogram sum into ``hist`` (before anything reads ``hist``)."""
        if self.wide:
            histogram.settle_wide(self.hist, self.wide)
            self.wide = 0

    def add_findings(self, snap: Any) -> int:
        """Add a snapshot's (or a roll-up column's) ``qx``, ``c``, ``o``, ``qt`` and ``t``: call sites,
        duplicates, cache, HTTP, queue time, template time. Returns how many entries were left out as malformed
        (nothing of them is added)."""
        if type(snap) is not dict:
            return 1
        skipped = 0
        for row in _rows(snap.get("qx", [])):
            if not _row_ok(row, QX_ROW):
                skipped += 1
                continue
            sites = [site for site in row[4] if _row_ok(site, SITE_ROW)]
            slow_sites = [site for site in row[5] if _row_ok(site, SITE_ROW)]
            skipped += len(row[4]) - len(sites) + len(row[5]) - len(slow_sites)
            self.add_extras(row[0], row[1], row[2], row[3], sites, slow_sites)
        for alias, values in _entries(snap.get("c", {})):
            if _row_ok(values, C_ENTRY):
                add_into(self.cache, alias, values)
            else:
                skipped += 1
        for where, values in _entries(snap.get("o", {})):
            if _row_ok(values, O_ENTRY):
                self.add_http(where, values)
            else:
                skipped += 1
        if "qt" in snap:
            skipped += self.add_queue_wire(snap["qt"])
        for name, values in _entries(snap.get("t", {})):
            if _row_ok(values, T_ENTRY):
                self.add_render(name, list(values))
            else:
                skipped += 1
        return skipped

    def add_queue_wire(self, wire: Any) -> int:
        """Add a stored queue-time entry (queue.py), whole or not at all; 1 when it was malformed, else 0."""
        entry = queue.new()
        try:
            queue.add_wire(entry, wire)  # a malformed value raises before anything counts
        except (TypeError, ValueError, OverflowError):
            return 1
        if self.queue is None:
            self.queue = entry
        else:
            queue.merge(self.queue, entry)
        return 0

    def add_render(self, name: str, values: list[Any]) -> None:
        """Add ``[renders, µs, SQL µs]`` to one outermost template (past MAX_TEMPLATES, to OTHER_TEMPLATES)."""
        if name not in self.renders and len(self.renders) >= MAX_TEMPLATES:
            name = OTHER_TEMPLATES
        add_into(self.renders, name, values)

    def add_extras(self, sql: Any, dups: int, slow: int, slowest: float, sites: Any, slow_sites: Any = ()) -> None:
        """Add one template's duplicates, slow runs and call sites (``[[site, requests, hint], ...]``: those found at
        its N+1 threshold crossings, and those found after its slow runs, kept apart)."""
        entry = self.extras.get(sql)
        if entry is None:
            entry = self.extras[sql] = [0, 0, 0, {}, {}]
        entry[0] += dups
        entry[1] += slow
        if slowest > entry[2]:
            entry[2] = slowest
        if sites:
            _add_sites(entry[3], sites)
        if slow_sites:
            _add_sites(entry[4], slow_sites)

    def add_http(self, where: str, values: list[Any]) -> None:
        """Add ``[calls, µs, errors, slowest µs]`` to one origin (past MAX_ORIGINS, to OTHER_ORIGIN)."""
        entry = self.http.get(where)
        if entry is None and len(self.http) >= MAX_ORIGINS:
            where = OTHER_ORIGIN
            entry = self.http.get(where)
        if entry is None:
            self.http[where] = [values[0], values[1], values[2], values[3]]
        else:
            entry[0] += values[0]
            entry[1] += values[1]
            entry[2] += values[2]
            entry[3] = max(entry[3], values[3])

    def _extras_rows(self, max_queries: int) -> list[list[Any]]:
        """The ``qx`` rows: templates with N+1 call sites first, then slow runs, then duplicates."""

        def rank(item: tuple[Any, list[Any]]) -> tuple[int, int, int]:
            return sum(count for count, _hint in item[1][3].values()), item[1][1], item[1][0]

        def top(sites: dict[str, list[Any]]) -> list[list[Any]]:
            ranked = sorted(sites.items(), key=lambda site: site[1][0], reverse=True)[:MAX_SITES]
            return [[site, count, hint] for site, (count, hint) in ranked]

        rows = []
        for sql, (dups, slow, slowest, sites, slow_sites) in sorted(self.extras.items(), key=rank, reverse=True)[
            :max_queries
        ]:
            row = [sql, dups, slow, int(slowest), top(sites), top(slow_sites)]
            if type(sql) is tuple:
                row[0] = sql[1]
                row.append(sql[0])
            rows.append(row)
        return rows

    def absorb(self, other: ViewTotals) -> None:
        """Fold another view's totals into this one (the "(other)" overflow row)."""
        self.settle()
        other.settle()
        self.requests += other.requests
        self.errors += other.errors
        self.status = [a + b for a, b in zip(self.status, other.status, strict=True)]
        self.lat_sum += other.lat_sum
        self.lat_max = max(self.lat_max, other.lat_max)
        histogram.merge(self.hist, other.hist)
        self.queries += other.queries
        self.queries_max = max(self.queries_max, other.queries_max)
        self.db_us += other.db_us
        self.n_plus_one += other.n_plus_one
        for _field, slot in TOTALS:
            setattr(self, slot, getattr(self, slot) + getattr(other, slot))
        for method, count in other.methods.items():
            self.methods[method] = self.methods.get(method, 0) + count
        for sql, counts in other.templates.items():
            add_into(self.templates, sql, counts)
        for alias, counts in other.aliases.items():
            add_into(self.aliases, alias, counts)
        self._add_exceptions(other.exceptions.items())
        for sql, (dups, slow, slowest, sites, slow_sites) in other.extras.items():
            self.add_extras(
                sql,
                dups,
                slow,
                slowest,
                [[site, count, hint] for site, (count, hint) in sites.items()],
                [[site, count, hint] for site, (count, hint) in slow_sites.items()],
            )
        for alias, counts in other.cache.items():
            add_into(self.cache, alias, counts)
        for where, values in other.http.items():
            self.add_http(where, values)
        if other.queue is not None:
            if self.queue is None:
                self.queue = queue.new()
            queue.merge(self.queue, other.queue)
        for name, values in other.renders.items():
            self.add_render(name, list(values))
        for bucket, (requests, errors, encoded) in other.series.items():
            point = self.series.setdefault(bucket, [0, 0, []])
            point[0] += requests
            point[1] += errors
            point[2].extend(encoded)

    def ranked_templates(self) -> list[tuple[Any, list[Any]]]:
        """SQL templates, N+1 suspects first, then by time."""
        return sorted(self.templates.items(), key=template_rank, reverse=True)

    def to_snapshot(self, max_queries: int) -> dict[str, Any]:
        """These totals in snapshot form (a process's roll-up is written like a bucket)."""
        self.settle()
        snap: dict[str, Any] = {
            "route": self.route,
            "n": self.requests,
            "s": list(self.status),
            "lsum": round(self.lat_sum, 1),
            "lmax": round(self.lat_max, 1),
            "h": histogram.encode_dense(self.hist),
        }
        if self.methods:
            snap["m"] = dict(self.methods)
        if self.errors:
            snap["e"] = self.errors
        if self.queries:
            snap["qn"] = self.queries
            snap["qmax"] = self.queries_max
            snap["db"] = int(self.db_us)
            snap["q"] = [
                [sql[1], count, int(time_us), n1, sql[0]] if type(sql) is tuple else [sql, count, int(time_us), n1]
                for sql, (count, time_us, n1) in self.ranked_templates()[:max_queries]
            ]
            snap["a"] = {alias: [count, int(time_us)] for alias, (count, time_us) in self.aliases.items()}
        if self.n_plus_one:
            snap["n1"] = self.n_plus_one
        for field, slot in TOTALS:
            value = getattr(self, slot)
            if value:
                snap[field] = value
        if self.exceptions:
            snap["x"] = {cls: list(entry) for cls, entry in self.exceptions.items()}
        if self.extras:
            snap["qx"] = self._extras_rows(max_queries)
        self._findings_into(snap)
        return snap

    def _findings_into(self, snap: dict[str, Any]) -> None:
        """The sparse findings of :meth:`to_snapshot`: cache, outgoing HTTP, queue time, template time."""
        if self.cache:
            snap["c"] = {alias: [n, int(us), hits, misses] for alias, (n, us, hits, misses) in self.cache.items()}
        if self.http:
            snap["o"] = {where: [n, int(us), errors, int(mx)] for where, (n, us, errors, mx) in self.http.items()}
        if self.queue is not None:
            snap["qt"] = queue.to_wire(self.queue)
        if self.renders:
            snap["t"] = {name: [n, int(us), int(sql)] for name, (n, us, sql) in self.renders.items()}


def merge_views(snapshots: list[tuple[int | None, dict[str, Any]]], view: str | None = None) -> dict[str, ViewTotals]:
    """Sum the ``views`` of many snapshots (each with its bucket, or None) per view name.

    Malformed or foreign entries are skipped rather than failing the whole read.
    """
    merged: dict[str, ViewTotals] = {}
    for bucket, snapshot in snapshots:
        merge_into(merged, bucket, snapshot, view)
    return merged


def _target(
    merged: dict[str, ViewTotals], name: str, max_views: int | None, other_name: str
) -> tuple[ViewTotals, bool]:
    """The ViewTotals ``name`` adds into: its own, or ``other_name``'s once ``max_views`` are taken (True)."""
    totals = merged.get(name)
    if totals is not None:
        return totals, False
    folded = max_views is not None and len(merged) >= max_views
    if folded:
        name = other_name
        totals = merged.get(name)
    if totals is None:
        totals = merged[name] = ViewTotals()
    return totals, folded


def merge_into(
    merged: dict[str, ViewTotals],
    bucket: int | None,
    snapshot: dict[str, Any],
    view: str | None = None,
    max_views: int | None = None,
    other_name: str = "",
) -> tuple[int, int]:
    """Add one snapshot's views to ``merged``; past ``max_views`` names, new names go to ``other_name``.

    Returns how many view entries were folded that way (a reader's view budget), and how many parts were left
    out as malformed (a view whose numbers are, before it is given a name in ``merged``; a bad entry of a view).
    """
    views = snapshot.get("views")
    if not isinstance(views, dict):
        return 0, 1
    folded = skipped = 0
    items = views.items() if view is None else ((view, views[view]),) if view in views else ()
    for name, snap in items:
        if not view_ok(snap):
            skipped += 1
            continue
        totals, was_folded = _target(merged, name, max_views, other_name)
        folded += was_folded
        try:
            skipped += totals.add_checked(snap, bucket)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError):
            skipped += 1
    return folded, skipped


def cap_views(merged: dict[str, ViewTotals], limit: int, other_name: str) -> None:
    """Keep the ``limit`` busiest views; fold the rest into ``other_name`` so documents stay bounded."""
    named = [name for name in merged if name != other_name]
    if len(named) <= limit:
        return
    named.sort(key=lambda name: merged[name].requests, reverse=True)
    other = merged.pop(other_name, None) or ViewTotals()
    for name in named[limit:]:
        other.absorb(merged.pop(name))
    merged[other_name] = other


def rewrite_sql(views: dict[str, Any], rewrite: Callable[[str, str], tuple[str, int]]) -> None:
    """Replace each raw ``[sql, count, µs, n1, vendor]`` by ``[text, count, µs, n1]`` where ``rewrite(sql, vendor)``
    is ``(text, comments removed)``, summing the templates that then read the same (the flusher strips literals and
    comments this way); the runs of statements that had comments are the view's ``cm``."""
    for view in views.values():
        if view.get("qx"):
            extras = ViewTotals()
            for sql, dups, slow, slowest, sites, slow_sites, vendor in view["qx"]:
                extras.add_extras(rewrite(sql, vendor)[0], dups, slow, slowest, sites, slow_sites)
            view["qx"] = extras._extras_rows(len(view["qx"]))
        if not view.get("q"):
            continue
        merged: dict[str, list[Any]] = {}
        commented = 0
        for sql, count, time_us, n1, vendor in view["q"]:
            text, comments = rewrite(sql, vendor)
            if comments:
                commented += count
            add_into(merged, text, [count, time_us, n1])
        view["q"] = [[sql, *entry] for sql, entry in merged.items()]
        if commented:
            view["cm"] = commented


def shrink(
    snapshot: dict[str, Any], limit: int = MAX_VALUE_BYTES, encode: Callable[[dict[str, Any]], bytes] = pack
) -> bytes:
    """Encode ``snapshot`` (``pack`` unless told); when too large, drop SQL text and then the least-used
    views until it fits. Works on copies: the flusher keeps ``snapshot`` for the roll-up.
    """
    payload = encode(snapshot)
    if len(payload) <= limit:
        return payload
    views = {}
    for name, view in snapshot["views"].items():
        views[name] = view = dict(view)
        for field in ("q", "qx"):
            if view.get(field):
                view[field] = [[sql[:200], *rest] for sql, *rest in view[field][:3]]
    smaller = {**snapshot, "views": views}
    payload = encode(smaller)
    keep = len(views)
    while len(payload) > limit and keep > 1:
        keep //= 2
        ranked = sorted(views.items(), key=lambda item: item[1]["n"], reverse=True)
        smaller = {**snapshot, "views": dict(ranked[:keep]), "truncated": True}
        payload = encode(smaller)
    return payload


def add_series(totals: ViewTotals, points: Iterable[Any], buckets: range | None = None) -> int:
    """Record ``[bucket, requests, errors, histogram slice]`` points in one view's per-bucket series (only those
    of ``buckets``, when given); returns how many points were left out as malformed."""
    series = totals.series
    skipped = 0
    for row in points:
        if not point_ok(row):
            skipped += 1
            continue
        bucket, requests, errors, encoded = row
        if buckets is not None and bucket not in buckets:
            continue
        point = series.get(bucket)
        if point is None:
            series[bucket] = [requests, errors, [encoded]]
        else:
            point[0] += requests
            point[1] += errors
            point[2].append(encoded)
    return skipped


#: First byte of a sectioned value (memcached.pack uses "j" and "z").
SECTIONED = b"S"


def encode_sections(header: dict[str, Any], sections: list[Any]) -> bytes:
    """A stored value of a header and sections, each JSON compressed on its own (``header["ends"]`` says
    where each section ends), so a reader inflates and parses only the sections it needs."""
    parts = [zlib.compress(dumps(part), 6) for part in sections]
    ends, total = [], 0
    for part in parts:
        total += len(part)
        ends.append(total)
    head = zlib.compress(dumps({**header, "ends": ends}), 6)
    return SECTIONED + len(head).to_bytes(4, "little") + head + b"".join(parts)


def section_header(value: bytes, limit: int = MAX_UNPACKED_BYTES) -> tuple[dict[str, Any], int] | None:
    """The header of an :func:`encode_sections` value and where its sections start (None when malformed)."""
    if value[:1] != SECTIONED or len(value) < 5:
        return None
    start = 5 + int.from_bytes(value[1:5], "little")
    body = inflate(b"z" + value[5:start], limit)
    header = None if body is None else json.loads(body)
    return (header, start) if isinstance(header, dict) and isinstance(header.get("ends"), list) else None


def section(value: bytes, header: dict[str, Any], start: int, index: int, limit: int = MAX_UNPACKED_BYTES) -> Any:
    """Section ``index`` of an :func:`encode_sections` value, parsed (None when malformed)."""
    ends = header["ends"]
    begin = start + (ends[index - 1] if index else 0)
    body = inflate(b"z" + value[begin : start + ends[index]], limit)
    return None if body is None else json.loads(body)
