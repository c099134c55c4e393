"""History (issue 24): each finished bucket merged once by one elected process, and readers merging those values
plus only the buckets not merged yet. The document is the one the processes' roll-ups give, exactly; a missing,
late, forged or unreachable history value only sends that bucket back to the processes' snapshots."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.stats import history, reader
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats
from instrumented.stats.rollup import decode_rollup, encode_rollup
from tests.support.ports import free_port
from tests.support.servers import Memcached

BUCKET = 10
VIEWS = 40


def make() -> tuple[Flusher, Aggregator]:
    config = get_config()
    aggregator = Aggregator(config)
    return Flusher(aggregator, config), aggregator


def serve(aggregator: Aggregator, at: float, rng: random.Random) -> None:
    """Requests to a random subset of the views, in a random order: every process gets a layout of its own."""
    views = rng.sample(range(VIEWS), rng.randint(3, 15))
    for v in views:
        for r in range(rng.randint(1, 3)):
            probe = Probe(0)
            probe.add("default", f"SELECT * FROM t{v % 4} WHERE id = %s", 1 + r, rng.randint(100, 90_000))
            if v % 3 == 0:
                probe.add("other", "SELECT 1", 1, rng.randint(100, 9_000))
            status = (200, 302, 404, 500)[(v + r) % 4]
            method = "POST" if r else "GET"
            aggregator.record(f"app:v{v}", f"v/{v}/", method, status, rng.randint(100, 900_000) * 1000, probe, now=at)


class Site:
    """``n`` simulated processes that each serve random views once per bucket and flush (their merger runs)."""

    def __init__(self, n: int, start: float, seed: int) -> None:
        self.processes = [make() for _ in range(n)]
        self.start = start
        self.rng = random.Random(seed)

    def bucket(self, b: int) -> float:
        """Traffic of bucket ``b`` (counted from ``start``), every process flushing; returns a time to read at."""
        at = self.start + b * BUCKET + 1
        for flusher, aggregator in self.processes:
            serve(aggregator, at, self.rng)
            flusher.flush(now=at)
        return at + 1


def reference(now: float, window: int | None = None, **kwargs: Any) -> dict:
    """The same read from the processes' roll-ups (and snapshots), never the history."""
    with mock.patch.object(reader, "READ_HISTORY", False):
        return read_stats(window, now=now, **kwargs)


def with_history(now: float, window: int | None = None, **kwargs: Any) -> tuple[dict, int]:
    """A read, and how many buckets (with data) it took from history values."""
    with (
        mock.patch.object(reader, "_add_history", wraps=reader._add_history) as added,
        mock.patch.object(history, "unpad", wraps=history.unpad) as used,  # only when the history is used
    ):
        stats = read_stats(window, now=now, **kwargs)
    if not used.called:
        return stats, 0
    return stats, sum(sum(1 for n in call.args[2].doc["idx"] if n) for call in added.call_args_list)


def same(a: dict, b: dict) -> None:
    for key in ("views", "processes", "processes_live", "queue", "covered_seconds", "window_seconds"):
        assert a.get(key) == b.get(key), key
    assert "skipped" not in a and "skipped" not in b


def test_history_gives_the_roll_ups_document_as_the_window_slides(memcached):
    """Eight processes with random layouts over 34 buckets of a 30-bucket window: at every read the history and
    the current bucket give the document the roll-ups give, also once the oldest buckets leave the window."""
    site = Site(8, (1_700_100_000 // BUCKET) * BUCKET, seed=24)
    window = get_config().window_buckets
    for b in range(window + 4):
        now = site.bucket(b)
        if b in (3, window - 2, window - 1, window, window + 3):
            stats, merged = with_history(now)
            assert merged == min(b, window - 1), (b, merged)  # every finished bucket of the window from its history
            same(stats, reference(now))
            assert stats["processes"] == 8 and len(stats["views"]) > 20
    # One view with its series, and a narrower window, the same way.
    one, merged = with_history(now, view="app:v7", series=True)
    assert merged == window - 1
    assert one["views"][0]["series"] == reference(now, view="app:v7", series=True)["views"][0]["series"]
    assert [p["bucket"] for p in one["views"][0]["series"]] == sorted(p["bucket"] for p in one["views"][0]["series"])
    narrow, merged = with_history(now, 60)
    assert merged == 5
    same(narrow, reference(now, 60))


def test_consecutive_buckets_share_a_layout(memcached):
    """A bucket's history takes its predecessor's layout when that covers it, so readers map few layouts."""
    site = Site(6, (1_700_200_000 // BUCKET) * BUCKET, seed=7)
    for b in range(12):
        site.bucket(b)
    store = get_store()
    keys = store.config.keys
    current = int(site.start // BUCKET)
    layouts = set()
    for b in range(current + 1, current + 11):
        decoded = decode_rollup(store.get(keys.history(b)) or b"")
        assert decoded is not None and decoded.doc["hb"] == b
        layouts.add(decoded.layout)
    assert len(layouts) <= 4, len(layouts)  # the union of 40 views settles within a few buckets


def test_two_contenders_one_merger(memcached):
    """Two processes reach the same ready bucket at once: one claims it and merges, the other does nothing."""
    site = Site(2, (1_700_300_000 // BUCKET) * BUCKET, seed=3)
    at = site.start + 1
    for flusher, aggregator in site.processes:
        serve(aggregator, at, site.rng)
        flusher.flush(now=at)
    later = at + BUCKET + 1
    mergers = [history.Merger(get_config(), f"contender{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    results = [0, 0]

    def contend(i: int) -> None:
        barrier.wait()
        results[i] = mergers[i].run(get_store(), later)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 1]
    store = get_store()
    decoded = decode_rollup(store.get(store.config.keys.history(int(site.start // BUCKET))) or b"")
    assert decoded is not None and decoded.doc["process"] == f"contender{results.index(1)}"


def test_a_dead_merger_is_replaced_within_a_bucket_and_meanwhile_reads_are_exact(memcached, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "BUCKET_SECONDS": 2, "WINDOW_SECONDS": 20}
    config = get_config()
    store = get_store()
    keys = config.keys
    start = (int(time.time()) // 2) * 2 - 40
    processes = [make() for _ in range(3)]
    rng = random.Random(5)
    for b in range(3):
        at = start + 2 * b + 0.1
        for flusher, aggregator in processes:
            serve(aggregator, at, rng)
            if b == 2:
                # A merger claimed the bucket before it and died (or froze) without writing it.
                index = store.get(keys.bucket_index(int(start // 2) + 1)) or b""
                store.add(keys.history_claim(int(start // 2) + 1, len(index)), b"dead", 2)
            flusher.flush(now=at)
    now = start + 4 + 1.5
    dead = int(start // 2) + 1
    assert store.get(keys.history(dead)) is None
    stats, merged = with_history(now)
    assert merged == 1  # the first bucket from history; the dead merger's bucket from the snapshots
    same(stats, reference(now))
    time.sleep(2.2)  # the claim lives one bucket
    replacement = history.Merger(config, "replacement")
    assert replacement.run(store, now + 2) >= 1
    assert store.get(keys.history(dead)) is not None
    stats, merged = with_history(now)
    assert merged == 2
    same(stats, reference(now))


def test_a_late_flush_is_neither_lost_nor_counted_twice(memcached):
    """A process whose requests of a bucket reach memcached after that bucket was merged: readers see the
    history is behind the bucket's index and read the bucket's snapshots until the next merger catches up."""
    site = Site(4, (1_700_400_000 // BUCKET) * BUCKET, seed=11)
    for b in range(4):
        now = site.bucket(b)
    store = get_store()
    keys = store.config.keys
    late_bucket = int(site.start // BUCKET) + 2
    before = store.get(keys.history(late_bucket))
    assert before is not None
    flusher, aggregator = site.processes[2]
    for _ in range(5):  # counted in bucket 2 (the oldest the aggregator still holds), flushed in bucket 3: late
        aggregator.record("app:late", "late/", "GET", 200, 3_000_000, Probe(0), now=site.start + 2 * BUCKET + 9.9)
    flusher.flush(now=now)
    stats, merged = with_history(now)
    assert merged == 2  # buckets 0 and 1; bucket 2 from the snapshots
    same(stats, reference(now))
    assert {v["view"]: v["requests"] for v in stats["views"]}["app:late"] == 5
    # The next round merges it again (another index length, another claim).
    assert history.Merger(get_config(), "next").run(store, now + BUCKET) >= 1
    assert store.get(keys.history(late_bucket)) != before
    stats, merged = with_history(now)
    assert merged == 3
    same(stats, reference(now))


def _forged(kind: str, value: bytes, bucket: int, index_length: int) -> bytes:
    """A history value of ``bucket`` as a forger could write it."""
    if kind == "garbage":
        return b"R\x00\x00\x00\x10garbage"
    if kind == "cut":
        return value[: len(value) // 2]
    if kind == "other-bucket":
        return _with_doc(value, {"hb": bucket + 1})
    if kind == "processes":
        return _with_doc(value, {"p": "everyone"})
    if kind == "skipped":
        return _with_doc(value, {"sk": -1})
    meta = {"process": "forged", "as_of": bucket, "at": 0, "buckets": [bucket], "fin": 0, "hb": bucket, "lv": 0,
            "idx": [index_length], "ls": bucket, "p": [], "pq": {}, "sk": 0}  # fmt: skip
    views = {"app:forged": {"route": "", "n": 2**50, "s": [2**50, 0, 0, 0], "lsum": 0, "lmax": 0, "h": ""}}
    return encode_rollup(meta, views, [])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["garbage", "cut", "other-bucket", "processes", "skipped", "huge"])
def test_forged_history_values_are_refused_and_counted(memcached, kind: str):
    site = Site(3, (1_700_500_000 // BUCKET) * BUCKET, seed=13)
    for b in range(3):
        now = site.bucket(b)
    store = get_store()
    keys = store.config.keys
    bucket = int(site.start // BUCKET)
    value = store.get(keys.history(bucket))
    assert value is not None
    index_length = len(store.get(keys.bucket_index(bucket)) or b"")
    for level in range(1, 5):  # the blocks that hold the bucket are gone: readers read its own value
        store.delete(keys.history_block(level, bucket - bucket % (1 << level)))
    assert store.set(keys.history(bucket), _forged(kind, value, bucket, index_length))
    stats, merged = with_history(now)
    assert merged == 1  # bucket 1 only; bucket 0 from the snapshots
    assert stats.get("skipped", 0) >= 1 and "malformed" in stats["note"]
    expected = reference(now)
    assert stats["views"] == expected["views"] and stats["processes"] == expected["processes"]


def _with_doc(value: bytes, change: dict[str, Any]) -> bytes:
    from tests.stats.test_rollup import _with_meta

    return _with_meta(value, change)


@pytest.fixture
def two_servers(settings) -> Iterator[list[Memcached]]:
    started = []
    for _ in range(2):
        server = Memcached(free_port())
        server.start()
        started.append(server)
    settings.INSTRUMENTED = {
        **settings.INSTRUMENTED,
        "SERVERS": [server.address for server in started],
        "TIMEOUT": 0.3,
        "CONNECT_TIMEOUT": 0.2,
    }
    yield started
    for server in started:
        server.stop()


def test_one_of_two_servers_down_the_read_says_which_and_falls_back(two_servers):
    site = Site(4, (1_700_600_000 // BUCKET) * BUCKET, seed=17)
    for b in range(6):
        now = site.bucket(b)
    store = get_store()
    keys = store.config.keys
    first = int(site.start // BUCKET)
    holders = {store.owner_name(keys.history(b)) for b in range(first, first + 5)}
    assert len(holders) == 2  # the history keys hash to both servers
    stats, merged = with_history(now)
    assert merged == 5
    same(stats, reference(now))
    everything = sum(v["requests"] for v in stats["views"])
    dead = two_servers[0]
    dead.stop()
    stats, merged = with_history(now)
    assert stats["partial"] is True and stats["missing"] == [dead.address]
    assert "error" not in stats and stats["views"]
    assert merged < 5  # the dead server's history values were not read
    assert 0 < sum(v["requests"] for v in stats["views"]) <= everything


def test_a_large_current_bucket_takes_the_roll_ups(memcached):
    """Snapshots not merged yet that outweigh the history (every process serving every view every bucket): the
    read takes the processes' roll-ups, parsing no history value, and the document is the same."""
    site = Site(4, (1_700_700_000 // BUCKET) * BUCKET, seed=19)
    for b in range(4):
        now = site.bucket(b)
    assert with_history(now)[1] == 3
    with (
        mock.patch.object(reader, "MAX_RAW_BESIDE_HISTORY", 0),
        mock.patch.object(reader, "RAW_PER_HISTORY_BYTE", 0),
        mock.patch.object(reader, "_add_history", wraps=reader._add_history) as added,
    ):
        stats = read_stats(now=now)
    assert not added.called
    same(stats, reference(now))
