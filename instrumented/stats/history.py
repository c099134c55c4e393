"""History: each finished bucket merged once, for every reader, by one process elected through memcached.

Why: a reader that merges every process's roll-up pays per distinct layout (rollup.py), and with real traffic
every worker has a layout of its own (48 workers, 300 views in random order: 96 ms a full read, measured
2026-12-07). Here, once a bucket is finished, one process merges every process's snapshot of it and stores
the result as a roll-up value (``<prefix>:hist:<bucket>``): one value per bucket, whatever the number of
processes, and consecutive buckets share one layout (a bucket's layout is its predecessor's when that covers
it, padded with zero rows), so a reader's RollupMerge maps a layout once for many buckets. A reader then
merges the window's history values plus, per process, only the buckets not merged yet (the current one, and
the one before for a moment after it ends).

The protocol (writer side: :class:`Merger`, called by each process's flusher thread, never the request path):

- A bucket is *ready* ``SETTLE_INTERVALS`` flush intervals after it ends (every process has flushed it since).
- Once per ready bucket, each process reads the window's bucket indexes and ``:ok`` keys (one multi-get).
  A bucket whose index length differs from its ``:ok`` (never merged, or written to since: a late flush
  appends the writer to the index again, processes.register) is claimed with ``add`` on
  ``<prefix>:hist:<bucket>:<index length>:claim``; the one process that got it merges and writes the
  history value and then ``:ok``. The claim lives one bucket: a merger that died or froze is replaced at the
  next round, one bucket later. At most MAX_MERGES_PER_ROUND buckets per process and round.
- A history value records the index length it holds (``idx``), the processes merged (``p``) with their
  queue time (``pq``), and the malformed parts it left out (``sk``).

Reader side (:func:`usable`): a history value is used only when it is well formed (like a roll-up), is of
its bucket, and holds the index as the reader read it (same length); otherwise that bucket is read from the
processes' snapshots, as before. Zero rows (the padding) are dropped from the merged views (:func:`unpad`).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from ..codec import MAX_VALUE_BYTES, inflate
from ..conf import Config
from ..memcached import Store
from . import processes, queue
from .rollup import TABLES, Decoded, Layout, Rollup, decode_rollup, encode_rollup
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
        behind their index; returns how many this process merged."""
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
            index = found.values.get(keys.bucket_index(bucket))
            if not index or found.values.get(keys.history_done(bucket)) == str(len(index)).encode():
                continue
            claim = keys.history_claim(bucket, len(index))
            if store.add(claim, self.process_id.encode(), max(1, int(self.config.bucket_seconds))):
                done += self.merge(store, bucket, index, at)
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
                continue  # expired or evicted: the readers' snapshot read would not find it either
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
        start = _pad(views, decode_rollup(found.values.get(keys.history(bucket - 1)) or b""), bucket, config)
        meta: dict[str, Any] = {
            "process": self.process_id,
            "as_of": bucket,
            "at": round(at, 3),
            "buckets": [bucket],
            "fin": 0,
            "hb": bucket,
            "idx": len(index),
            "ls": start,
            "p": merged_ids,
            "pq": {p: queue.to_wire(entry) for p, entry in waits.items()},
            "sk": skipped,
        }
        if truncated:
            meta["truncated"] = True
        points = [[name, bucket, v["n"], v.get("e", 0), v.get("h", "")] for name, v in views.items() if v["n"]]
        value = encode_rollup(cast(Rollup, meta), views, points)
        if len(value) > MAX_VALUE_BYTES:
            return False
        if not store.set(keys.history(bucket), value):
            return False
        return store.set(keys.history_done(bucket), str(len(index)).encode())


def _pad(views: dict[str, ViewSnapshot], previous: Decoded | None, bucket: int, config: Config) -> int:
    """Give ``views`` the previous bucket's layout where it covers them (zero rows for what this bucket lacks),
    so that consecutive history values share one layout; returns the bucket the layout started at. A layout
    is started afresh once a window old (names that left the window do not stay forever)."""
    if previous is None or previous.doc.get("hb") != bucket - 1:
        return bucket
    start = previous.doc.get("ls")
    if not isinstance(start, int) or start <= bucket - config.window_buckets:
        return bucket
    try:
        layout = previous.parse_layout()
    except (ValueError, RecursionError):
        return bucket
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
    return start


def _rows(layout: Layout) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Each view of a layout with its methods, SQL templates and aliases."""
    rows: dict[str, tuple[list[str], list[str], list[str]]] = {name: ([], [], []) for name in layout["names"]}
    names = layout["names"]
    for column, table in enumerate(TABLES):  # methods, SQL templates, aliases
        texts: list[str] = layout[table.strings]  # type: ignore[literal-required]
        for index, string in zip(layout[table.view], layout[table.key], strict=True):  # type: ignore[literal-required]
            rows[names[index]][column].append(texts[string])
    return rows


def usable(doc: dict[str, Any], bucket: int, index_length: int) -> bool:
    """Whether a decoded history value's meta is well formed, of ``bucket``, and holds its index as a reader
    read it (``index_length`` bytes)."""
    ids, waits = doc.get("p"), doc.get("pq")
    return (
        doc.get("hb") == bucket
        and type(doc.get("hb")) is int
        and doc.get("idx") == index_length
        and type(doc.get("idx")) is int
        and is_count(doc.get("sk"))
        and type(ids) is list
        and len(ids) <= processes.MAX_PROCESSES_PER_READ
        and all(type(p) is str for p in ids)
        and type(waits) is dict
        and len(waits) <= len(ids)
    )


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
