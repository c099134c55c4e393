"""Bounded state and fail-open behaviour of the writer side under bad input and long outages."""

import zlib
from unittest import mock

from instrumented.codec import pack, unpack
from instrumented.conf import get_config
from instrumented.naming import OTHER_VIEW
from instrumented.stats import flusher as flusher_module
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.literals import strip_literals
from instrumented.stats.probe import MAX_DISTINCT_SQL, OTHER_SQL, Probe, current_probe, sql_wrapper
from instrumented.stats.reader import read_stats
from instrumented.stats.snapshot import ViewTotals

BUCKET = 10


def request(aggregator: Aggregator, at: float, view: str = "v", sql: str | None = None, method: str = "GET") -> None:
    probe = Probe(0)
    if sql is not None:
        probe.add("default", sql, 1, 1000)
    aggregator.record(view, "r/", method, 200, 1_000_000, probe, now=at)


def flush_at(flusher: Flusher, at: float) -> int:
    return flusher.flush(now=at)


def test_long_outage_keeps_memory_bounded_and_skips_packing(settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": ["127.0.0.1:1"], "BREAKER_COOLDOWN": 60}
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    start = (1_700_000_000 // BUCKET) * BUCKET
    with mock.patch("instrumented.stats.flusher.shrink", wraps=flusher_module.shrink) as shrink:
        for i in range(200):  # 2 000 s of traffic with memcached down
            request(aggregator, start + i * BUCKET + 1)
            flush_at(flusher, start + i * BUCKET + 2)
        assert shrink.call_count <= 10, "no packing while the breaker is open"
    assert len(aggregator.buckets) <= 2
    assert len(flusher.window) <= 30 and flusher.unwritten <= flusher.window.keys()


def test_late_request_in_a_finished_bucket_reaches_the_rollup(memcached):
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    start = (1_700_001_000 // BUCKET) * BUCKET
    request(aggregator, start + 9.99)
    flush_at(flusher, start + 9.995)
    flush_at(flusher, start + BUCKET + 0.5)  # the next bucket began: bucket 1 is "finished"
    request(aggregator, start + 9.999)  # stamped before the boundary, recorded after that flush
    flush_at(flusher, start + BUCKET + 1.5)
    assert read_stats(now=start + BUCKET + 2)["views"][0]["requests"] == 2


def test_sql_literals_never_reach_memcached(memcached):
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    start = (1_700_002_000 // BUCKET) * BUCKET
    request(aggregator, start + 1, sql="SELECT * FROM users WHERE email = 'alice@example.com' AND id = 42")
    request(aggregator, start + 1, sql="SELECT * FROM users WHERE email = 'bob@example.com' AND id = 7")
    flush_at(flusher, start + 2)
    view = read_stats(now=start + 3)["views"][0]
    # Values become Django's own placeholder, so raw SQL reads like Django's (one placeholder on every page).
    assert [q["sql"] for q in view["top_queries"]] == ["SELECT * FROM users WHERE email = %s AND id = %s"]
    assert view["top_queries"][0]["count"] == 2
    assert (
        strip_literals('SELECT "t"."c1" FROM t2 WHERE x = %s LIMIT 21')
        == 'SELECT "t"."c1" FROM t2 WHERE x = %s LIMIT %s'
    )
    request(aggregator, start + 4, sql="SELECT * FROM t WHERE id IN (1, 2, 3)")
    request(aggregator, start + 4, sql="SELECT * FROM t WHERE id IN (4, 5)")
    flush_at(flusher, start + 5)
    in_lists = [q for q in read_stats(now=start + 6)["views"][0]["top_queries"] if " IN " in q["sql"]]
    assert [(q["sql"], q["count"]) for q in in_lists] == [("SELECT * FROM t WHERE id IN (%s, ...)", 2)]


def test_distinct_sql_per_request_is_capped():
    probe = Probe(0)
    token = current_probe.set(probe)
    context = {"connection": mock.Mock(alias="default")}
    try:
        for i in range(MAX_DISTINCT_SQL + 500):
            sql_wrapper(lambda *args: None, f"INSERT INTO t VALUES ({i})", None, False, context)
    finally:
        current_probe.reset(token)
    assert len(probe.counts) == MAX_DISTINCT_SQL + 1
    assert probe.counts[OTHER_SQL] == 500


def test_bad_text_and_bad_values_fail_open():
    assert unpack(pack({"sql": "SELECT '\udc80'"})) == {"sql": "SELECT '?'"}
    bomb = b"z" + zlib.compress(b"[" * (100 * 1024 * 1024))
    assert unpack(bomb) is None
    assert unpack(b"j" + b"[" * 100_000) is None


def test_long_methods_and_other_row_keep_their_numbers():
    aggregator = Aggregator(get_config())
    for _ in range(5):
        request(aggregator, 1_700_003_001, method="X" * 40)
    stats = next(iter(aggregator.buckets.values()))["v"]
    assert stats.methods == {"X" * 16: 5}
    a, b = ViewTotals(), ViewTotals()
    b.templates = {"SELECT 1": [3, 30, 0]}
    b.aliases = {"default": [3, 30]}
    a.absorb(b)
    assert a.templates == {"SELECT 1": [3, 30, 0]} and a.aliases == {"default": [3, 30]}
    assert OTHER_VIEW == "(other)"
