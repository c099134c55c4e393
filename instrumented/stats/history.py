"""History: each finished bucket merged once, for every reader, by one process elected through memcached.

Why: a reader that merges every process's roll-up pays per distinct layout (rollup.py), and with real traffic
every worker has a layout of its own (48 workers, 300 views in random order: 96 ms a full read, measured
2026-12-07). Here, once a bucket is finished, one process merges every process's snapshot of it and stores
the result as a roll-up value (``<prefix>:hist:<bucket>``): one value per bucket, whatever the number of
processes, and consecutive buckets share one layout (a bucket's layout is its predecessor's when that covers
it, padded with zero rows), so a reader's RollupMerge maps a layout once for many buckets. A reader then
merges the window's history plus, per process, only the buckets not merged yet (the current one, and the one
before for a moment after it ends). Blocks of 2, 4, 8… aligned buckets are merged too (``<prefix>:hist<level>:
<first bucket>``, built from their two halves as soon as the second is merged), so a 30-bucket window is read
as about eight values (:func:`cover`), not thirty.

The protocol (writer side: :class:`Merger`, called by each process's flusher thread, never the request path):

- A bucket is *ready* ``SETTLE_INTERVALS`` flush intervals after it ends (every process has flushed it since).
- Once per ready bucket, each process reads the window's bucket indexes and ``:ok`` keys (one multi-get).
  A bucket whose index length differs from its ``:ok`` (never merged, or written to since: a late flush
  appends the writer to the index again, processes.register) is claimed with ``add`` on
  ``<prefix>:hist:<bucket>:<index length>:claim``; the one process that got it merges and writes the
  history value and then ``:ok``. The claim lives one bucket: a merger that died or froze is replaced at the
  next round, one bucket later. At most MAX_MERGES_PER_ROUND buckets per process and round.
- A history value records its first bucket (``hb``) and level (``lv``), the index length of each of its
  buckets it holds (``idx``), the processes merged (``p``) with their queue time (``pq``), and the malformed
  parts it left out (``sk``). Its series points (the roll-up's second part) are per bucket.

Reader side (:func:`usable`): a history value is used only when it is well formed (like a roll-up), is of
its buckets, and holds each bucket's index as the reader read it (same lengths); otherwise its halves' buckets
are read one by one, and a bucket without a usable value from the processes' snapshots, as before. Zero rows
(the padding) are dropped from the merged views (:func:`unpad`).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from ..codec import MAX_VALUE_BYTES, inflate
from ..conf import Config
from ..memcached import Store
from . import processes, queue
from .rollup import TABLES, Decoded, Layout, Rollup, RollupMerge, decode_rollup, encode_rollup
from .snapshot import ViewSnapshot, ViewTotals, is_count, merge_into

#: A bucket is merged this many flush intervals after it ended: every live process has flushed it by then.
SETTLE_INTERVALS = 1.5
#: Buckets one process merges in one round (a fresh site, or memcached restarted: the processes share them).
MAX_MERGES_PER_ROUND = 3
#: Templates kept per view in a history value: all of them (the processes' own caps already bound them).
NO_CAP = 1 << 30


def settle_seconds(config: Config) -> float:
    """How long after its end a bucket is merged."""
    return SETTLE_INTERVALS * config.flush_interval


def newest_ready(config: Config, at: float) -> int:
    """The newest bucket that is ready to merge at unix time ``at``."""
    return int((at - settle_seconds(config)) // config.bucket_seconds) - 1


def top_level(config: Config) -> int:
    """The largest block merged: 2**level buckets, less than the window."""
    return max(0, (config.window_buckets - 1).bit_length() - 1)


def cover(lo: int, hi: int, top: int) -> list[tuple[int, int]]:
    """Buckets ``lo``..``hi`` as the fewest aligned blocks ``(level, first bucket)`` of at most 2**top buckets."""
    blocks = []
    while lo <= hi:
        level = top
        while level and (lo % (1 << level) or lo + (1 << level) - 1 > hi):
            level -= 1
        blocks.append((level, lo))
        lo += 1 << level
    return blocks


class Merger:
    """One process's share of merging finished buckets (its flusher calls :meth:`run` at every flush)."""

    def __init__(self, config: Config, process_id: str) -> None:
        self.config = config
        self.keys = config.keys
        self.process_id = process_id
        self.tried: int | None = None
        self.merged = 0

    def run(self, store: Store, at: float | None = None) -> int:
        """Once per newly ready bucket: claim and merge the window's buckets whose history is missing or
        behind their index (then the blocks they complete); returns how many buckets this process merged."""
        at = time.time() if at is None else at
        newest = newest_ready(self.config, at)
        if newest == self.tried:
            return 0
        self.tried = newest
        keys = self.keys
        buckets = range(newest - self.config.window_buckets + 2, newest + 1)
        found = store.fetch([keys.bucket_index(b) for b in buckets] + [keys.history_done(b) for b in buckets])
        if found.missing:
            return 0  # a server is down: its writers' snapshots are elsewhere or gone; merge when it is back
        done = 0
        for bucket in reversed(buckets):
            index = found.values.get(keys.bucket_index(bucket)) or b""
            if found.values.get(keys.history_done(bucket)) == str(len(index)).encode():
                continue
            claim = keys.history_claim(bucket, len(index))
            if store.add(claim, self.process_id.encode(), max(1, int(self.config.bucket_seconds))):
                if self.merge(store, bucket, index, at):
                    self.blocks(store, bucket, newest, at)
                    done += bool(index)
                    if done >= MAX_MERGES_PER_ROUND:
                        break
        self.merged += done
        return done

    def merge(self, store: Store, bucket: int, index: bytes, at: float) -> bool:
        """Merge every process's snapshot of ``bucket`` (those listed in ``index``) and store it; False when
        it could not be done exactly (a server missing, the value too large): readers then read the bucket."""
        keys, config = self.keys, self.config
        writers = processes.writers({keys.bucket_index(bucket): index}, keys, [bucket], config.read_max_bytes)
        if writers.skipped:
            return False
        ids = list(writers.buckets)
        found = store.fetch([keys.bucket(bucket, p) for p in ids] + [keys.history(bucket - 1)])
        if found.missing:
            return False
        limit = max(config.read_max_bytes // 4, 1)
        merged: dict[str, ViewTotals] = {}
        waits: dict[str, list[Any]] = {}
        merged_ids: list[str] = []
        skipped = 0
        truncated = False
        for process_id in ids:
            raw = found.values.get(keys.bucket(bucket, process_id))
            if raw is None:
                return False  # evicted (or not written yet): that process's roll-up still holds it; not merged
            body = inflate(raw, limit)
            try:
                snapshot = None if body is None else json.loads(body)
            except (ValueError, RecursionError):
                snapshot = None
            if not isinstance(snapshot, dict):
                skipped += 1
                continue
            skipped += merge_into(merged, bucket, snapshot)[1]
            merged_ids.append(process_id)
            found_views = snapshot.get("views")
            if isinstance(found_views, dict):
                queue.add_waits(waits, process_id, found_views.values())
            truncated = truncated or bool(snapshot.get("truncated"))
        views = {name: cast(ViewSnapshot, totals.to_snapshot(NO_CAP)) for name, totals in merged.items()}
        # The previous bucket's layout, unless it was started a window ago (names that left stay no longer).
        previous = decode_rollup(found.values.get(keys.history(bucket - 1)) or b"")
        chained = previous is not None and _meta_ok(previous.doc, 0, bucket - 1)
        start = previous.doc.get("ls") if previous is not None and chained else None
        if not (isinstance(start, int) and start > bucket - config.window_buckets and _pad(views, previous)):
            start = bucket
        meta: dict[str, Any] = {
            "hb": bucket,
            "lv": 0,
            "idx": [len(index)],
            "ls": start,
            "p": merged_ids,
            "pq": {p: queue.to_wire(entry) for p, entry in waits.items()},
            "sk": skipped,
        }
        if truncated:
            meta["truncated"] = True
        points = [[name, bucket, v["n"], v.get("e", 0), v.get("h", "")] for name, v in views.items() if v["n"]]
        if not self._store(store, keys.history(bucket), meta, views, points, at):
            return False
        return store.set(keys.history_done(bucket), str(len(index)).encode())

    def blocks(self, store: Store, bucket: int, newest: int, at: float) -> None:
        """Merge the blocks that ``bucket`` completes (or belongs to, when it was merged again) from their halves."""
        keys = self.keys
        for level in range(1, top_level(self.config) + 1):
            size = 1 << level
            first = bucket - bucket % size
            if first + size - 1 > newest:
                return
            half = first + size // 2
            halves = [keys.history_block(level - 1, first), keys.history_block(level - 1, half)]
            found = store.fetch(halves)
            left, right = (decode_rollup(found.values.get(key) or b"") for key in halves)
            if found.missing or left is None or right is None:
                return
            if not (_meta_ok(left.doc, level - 1, first) and _meta_ok(right.doc, level - 1, half)):
                return
            if not self._combine(store, level, first, left, right, at):
                return

    def _combine(self, store: Store, level: int, first: int, left: Decoded, right: Decoded, at: float) -> bool:
        """Store the block of ``left`` and ``right`` (two halves, each checked)."""
        columns = RollupMerge()
        if not (columns.add(left) and columns.add(right)):
            return False
        merged: dict[str, ViewTotals] = {}
        skipped = 0

        def malformed(count: int) -> None:
            nonlocal skipped
            skipped += count

        columns.into(merged, malformed)
        unpad(merged)
        views = {name: cast(ViewSnapshot, totals.to_snapshot(NO_CAP)) for name, totals in merged.items()}
        _pad(views, right)
        points: list[Any] = []
        waits: dict[str, list[Any]] = {}
        for half in (left, right):
            body = inflate(half.current)
            rows = json.loads(body) if body else []
            if type(rows) is not list:
                return False
            points += rows
            for process_id, wire in half.doc["pq"].items():
                queue.add_waits(waits, process_id, [{"qt": wire}])
        meta: dict[str, Any] = {
            "hb": first,
            "lv": level,
            "idx": left.doc["idx"] + right.doc["idx"],
            "ls": right.doc.get("ls", first),
            "p": sorted({*left.doc["p"], *right.doc["p"]}),
            "pq": {p: queue.to_wire(entry) for p, entry in waits.items()},
            "sk": left.doc["sk"] + right.doc["sk"] + skipped,
        }
        if left.doc.get("truncated") or right.doc.get("truncated"):
            meta["truncated"] = True
        return self._store(store, self.keys.history_block(level, first), meta, views, points, at)

    def _store(
        self, store: Store, key: str, meta: dict[str, Any], views: dict[str, ViewSnapshot], points: list[Any], at: float
    ) -> bool:
        """Encode one history value (a roll-up with the history's meta) and store it, if it fits."""
        first = meta["hb"]
        header = {"process": self.process_id, "as_of": first, "at": round(at, 3), "buckets": [first], "fin": 0}
        value = encode_rollup(cast(Rollup, {**header, **meta}), views, points)
        return len(value) <= MAX_VALUE_BYTES and store.set(key, value)


def _pad(views: dict[str, ViewSnapshot], source: Decoded | None) -> bool:
    """Give ``views`` the layout of ``source`` (an earlier history value) where it covers them: zero rows for
    what they lack, so that consecutive history values share one layout (readers map it once). False when
    ``source`` has no readable layout."""
    if source is None:
        return False
    try:
        layout = source.parse_layout()
    except (ValueError, RecursionError):
        return False
    for name, route in zip(layout["names"], layout["routes"], strict=True):
        if name not in views:
            views[name] = {"route": route, "n": 0, "s": [0, 0, 0, 0], "lsum": 0, "lmax": 0, "h": ""}
    for name, (methods, templates, aliases) in _rows(layout).items():
        view = views[name]
        if methods:
            view["m"] = {method: 0 for method in methods} | view.get("m", {})
        if templates:
            known = {row[0] for row in view.get("q", ())}
            view["q"] = [*view.get("q", ()), *([sql, 0, 0, 0] for sql in templates if sql not in known)]
        if aliases:
            view["a"] = {alias: [0, 0] for alias in aliases} | view.get("a", {})
    return True


def _rows(layout: Layout) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Each view of a layout with its methods, SQL templates and aliases."""
    rows: dict[str, tuple[list[str], list[str], list[str]]] = {name: ([], [], []) for name in layout["names"]}
    names = layout["names"]
    for column, table in enumerate(TABLES):  # methods, SQL templates, aliases
        texts: list[str] = layout[table.strings]  # type: ignore[literal-required]
        for index, string in zip(layout[table.view], layout[table.key], strict=True):  # type: ignore[literal-required]
            rows[names[index]][column].append(texts[string])
    return rows


def _meta_ok(doc: dict[str, Any], level: int, first: int) -> bool:
    """A history value's meta is well formed and of the block ``level``, ``first``."""
    ids, waits, lengths = doc.get("p"), doc.get("pq"), doc.get("idx")
    return (
        doc.get("hb") == first
        and type(doc.get("hb")) is int
        and doc.get("lv") == level
        and type(doc.get("lv")) is int
        and type(lengths) is list
        and len(lengths) == 1 << level
        and all(type(n) is int for n in lengths)
        and is_count(doc.get("sk"))
        and type(ids) is list
        and len(ids) <= processes.MAX_PROCESSES_PER_READ
        and all(type(p) is str for p in ids)
        and type(waits) is dict
        and len(waits) <= len(ids)
    )


def usable(doc: dict[str, Any], level: int, first: int, lengths: list[int]) -> bool | None:
    """Whether a decoded history value may be merged: well formed, of its block, and holding each bucket's index
    as the reader read it (``lengths``); None when it is well formed but behind an index (not forged)."""
    if not _meta_ok(doc, level, first):
        return False
    return True if doc["idx"] == lengths else None


def unpad(merged: dict[str, ViewTotals]) -> None:
    """Drop the zero rows history values carry for a shared layout: views without requests, templates, methods
    and aliases never counted (writers never store such rows)."""
    for name in [name for name, totals in merged.items() if not totals.requests and not totals.exceptions]:
        del merged[name]
    for totals in merged.values():
        for table in (totals.templates, totals.aliases):
            for key in [key for key, entry in table.items() if not entry[0]]:
                del table[key]
        for method in [method for method, count in totals.methods.items() if not count]:
            del totals.methods[method]
