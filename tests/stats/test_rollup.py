"""Window roll-ups: what readers read first, and the per-bucket fall-back when a roll-up is missing."""

import json
from typing import Any

from instrumented.codec import inflate, pack_bytes
from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats
from instrumented.stats.rollup import ROLLUP, decode_rollup, split_rollup

BUCKET = 10


def simulate(flusher: Flusher, aggregator: Aggregator, at: float, view: str, requests: int, latency_us: int) -> None:
    for _ in range(requests):
        probe = Probe(0)
        probe.add("default", "SELECT %s", 2, 2000)
        aggregator.record(view, "r/", "GET", 200, latency_us * 1000, probe, now=at)
    flusher.flush(now=at)


def make() -> tuple[Flusher, Aggregator]:
    config = get_config()
    aggregator = Aggregator(config)
    return Flusher(aggregator, config), aggregator


def test_rollup_sums_the_window_and_drops_expired_buckets(memcached):
    flusher, aggregator = make()
    start = (1_700_000_000 // BUCKET) * BUCKET
    simulate(flusher, aggregator, start + 1, "a", 5, 1000)
    simulate(flusher, aggregator, start + BUCKET + 1, "a", 7, 2000)
    simulate(flusher, aggregator, start + 2 * BUCKET + 1, "b", 1, 3000)
    now = start + 2 * BUCKET + 2
    views = {v["view"]: v for v in read_stats(now=now)["views"]}
    assert views["a"]["requests"] == 12 and views["b"]["requests"] == 1
    assert views["a"]["queries"]["total"] == 24
    # 5 minutes later the first bucket has left the window: the roll-up is rewritten without it.
    later = start + 300 + 5
    flusher.flush(now=later)
    views = {v["view"]: v for v in read_stats(now=later)["views"]}
    assert views["a"]["requests"] == 7 and views["b"]["requests"] == 1


def test_missing_rollup_falls_back_to_buckets(memcached):
    flusher, aggregator = make()
    start = (1_700_000_100 // BUCKET) * BUCKET
    simulate(flusher, aggregator, start + 1, "a", 3, 1000)
    simulate(flusher, aggregator, start + BUCKET + 1, "a", 4, 1000)
    store = get_store()
    assert store.delete(store.config.keys.rollup(flusher.process_id))
    stats = read_stats(now=start + BUCKET + 2)
    assert stats["processes"] == 1
    assert stats["views"][0]["requests"] == 7


def test_stale_rollup_of_a_dead_process_is_not_trusted(memcached):
    flusher, aggregator = make()
    start = (1_700_000_200 // BUCKET) * BUCKET
    simulate(flusher, aggregator, start + 1, "a", 3, 1000)
    # The process died; a minute later its roll-up is stale, its bucket keys still count.
    stats = read_stats(now=start + 60)
    assert stats["views"][0]["requests"] == 3


def test_narrow_window_and_series_read_buckets(memcached):
    flusher, aggregator = make()
    start = (1_700_000_300 // BUCKET) * BUCKET
    simulate(flusher, aggregator, start + 1, "a", 3, 1000)
    simulate(flusher, aggregator, start + 3 * BUCKET + 1, "a", 2, 50_000)
    now = start + 3 * BUCKET + 2
    assert read_stats(10, now=now)["views"][0]["requests"] == 2
    view = read_stats(now=now, view="a", series=True)["views"][0]
    assert [point["requests"] for point in view["series"]] == [3, 2]
    assert view["series"][1]["p95_ms"] > 40
    assert sum(bar["count"] for bar in view["histogram"]) == 5


def test_several_processes_merge(memcached):
    start = (1_700_000_400 // BUCKET) * BUCKET
    for n in range(4):
        flusher, aggregator = make()
        simulate(flusher, aggregator, start + 1, "a", n + 1, 1000 * (n + 1))
    stats = read_stats(now=start + 2)
    assert stats["processes"] == 4
    assert stats["views"][0]["requests"] == 1 + 2 + 3 + 4
    assert stats["views"][0]["latency_ms"]["max"] == 4.0


def test_rollup_merge_equals_the_bucket_merge_whatever_the_layouts(memcached):
    """Processes with different views (one with a few of them, two with the same layout) merged from their
    roll-ups give the very document their bucket snapshots give."""
    start = (1_700_000_500 // BUCKET) * BUCKET
    served = [range(0, 8), range(3, 11), range(3, 11), range(9, 11), range(0, 11, 2)]
    flushers = []
    for p, views in enumerate(served):
        flusher, aggregator = make()
        for b in range(3):
            at = start + b * BUCKET + 1
            for v in views:
                for r in range(1 + (v + p + b) % 3):
                    probe = Probe(0)
                    probe.add("default", f"SELECT * FROM t{v % 4} WHERE id = %s", 1 + r, 1000 * (v + 1))
                    if v % 3 == 0:
                        probe.add("other", "SELECT 1", 1, 700)
                    status = (200, 302, 404, 500)[(v + r) % 4]
                    latency_ns = (1000 + 997 * v + 313 * r + 71 * p) * 1000
                    aggregator.record(f"app:v{v}", f"v/{v}/", "POST" if r else "GET", status, latency_ns, probe, now=at)
            flusher.flush(now=at)
        flushers.append(flusher)
    now = start + 2 * BUCKET + 2
    from_rollups = read_stats(now=now)
    store = get_store()
    for flusher in flushers:
        assert store.delete(store.config.keys.rollup(flusher.process_id))
    from_buckets = read_stats(now=now)
    assert from_rollups["processes"] == from_buckets["processes"] == len(served)
    assert len(from_rollups["views"]) == 11
    assert from_rollups["views"] == from_buckets["views"]


def _with_meta(value: bytes, change: dict[str, Any]) -> bytes:
    """A stored roll-up with keys of its meta JSON replaced (what a forger could write)."""
    parts = split_rollup(value)
    assert parts is not None
    main = inflate(parts[0])
    assert main is not None
    size = int.from_bytes(main[:4], "little")
    meta = {**json.loads(main[4 : 4 + size]), **change}
    raw = json.dumps(meta).encode()
    packed = pack_bytes(len(raw).to_bytes(4, "little") + raw + main[4 + size :])
    return ROLLUP + len(packed).to_bytes(4, "little") + packed + parts[1]


def test_forged_sparse_indexes_are_refused_and_the_read_falls_back(memcached):
    flusher, aggregator = make()
    start = (1_700_000_600 // BUCKET) * BUCKET
    simulate(flusher, aggregator, start + 1, "a", 3, 1000)
    store = get_store()
    key = store.config.keys.rollup(flusher.process_id)
    value = store.fetch([key]).values[key]
    assert decode_rollup(value) is not None
    for forged in ({"x": {"²": {}}}, {"fx": {"9" * 5000: {}}}, {"x": {"-1": {}}}):
        bad = _with_meta(value, forged)
        assert decode_rollup(bad) is None, forged  # int("²") and 5000-digit ints raise: refused before any merge
        assert store.set(key, bad)
        stats = read_stats(now=start + 2)
        assert "error" not in stats and stats["views"][0]["requests"] == 3  # from the bucket snapshot
