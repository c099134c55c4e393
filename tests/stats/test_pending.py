"""Finished requests handed to the flusher thread: counted exactly, never lost, nothing of them kept."""

from __future__ import annotations

import gc
import weakref
from unittest import mock

import pytest
from django.db import connection
from django.test import Client

from instrumented.conf import get_config
from instrumented.failopen import failures
from instrumented.stats.aggregate import get_aggregator
from instrumented.stats.probe import Probe, current_probe, sql_wrapper
from instrumented.stats.reader import read_stats

pytestmark = pytest.mark.django_db


def requests_of(view: str) -> int:
    return sum(v["requests"] for v in read_stats()["views"] if v["view"] == view)


def test_handed_over_requests_are_counted_exactly(flush):
    client = Client()
    for _ in range(7):
        assert client.get("/fast/").status_code == 200
    flush()
    assert not get_aggregator(get_config()).pending
    assert requests_of("shop:fast") == 7


def test_a_request_counts_the_queue_itself_when_the_flusher_is_far_behind():
    aggregator = get_aggregator(get_config())
    aggregator.max_pending = 3
    client = Client()
    for _ in range(10):
        client.get("/fast/")
        assert len(aggregator.pending) < 3
    aggregator.drain()
    (views,) = aggregator.buckets.values()
    assert views["shop:fast"].requests == 10


def test_one_request_that_cannot_be_counted_does_not_lose_the_others():
    aggregator = get_aggregator(get_config())
    broken = Probe(0)
    broken.add("default", "SELECT 1", 1, 1000)
    broken.counts = None  # type: ignore[assignment]  # summarise() fails on it
    before = failures.counts.get("recording a request failed", 0)
    for view, probe in (("a", Probe(0)), ("b", broken), ("c", Probe(0))):
        aggregator.pending.append((view, f"{view}/", "GET", 200, 1000, probe, 0))
    aggregator.drain()
    (views,) = aggregator.buckets.values()
    assert (views["a"].requests, views["c"].requests) == (1, 1) and "b" not in views
    assert failures.counts["recording a request failed"] == before + 1


def test_ignored_views_are_dropped_when_counted(settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "IGNORE_VIEWS": ["shop:fast"]}
    Client().get("/fast/")
    aggregator = get_aggregator(get_config())
    aggregator.drain()
    assert all("shop:fast" not in views for views in aggregator.buckets.values())


def test_nothing_of_the_request_waits_with_it():
    client = Client()
    response = client.get("/fast/")
    request = weakref.ref(response.wsgi_request)
    del response
    gc.collect()
    assert request() is None, "a finished request is not kept alive by the queue"
    probe = current_probe.get()  # the test client runs the handler in this context
    assert probe is not None and probe.request is None and probe.first is None and probe.seen is None


def test_a_waiting_requests_statements_are_not_tracked_by_the_garbage_collector():
    probe = Probe(0)
    token = current_probe.set(probe)
    try:
        with connection.cursor() as cursor:
            for i in range(3):
                cursor.execute("SELECT %s", [i])
                cursor.execute(f"SELECT {i} AS n")
    finally:
        current_probe.reset(token)
    assert probe.counts == {"SELECT %s": 3, "SELECT 0 AS n": 1, "SELECT 1 AS n": 1, "SELECT 2 AS n": 1}
    assert not gc.is_tracked(probe.counts) and not gc.is_tracked(probe.times)
    assert sql_wrapper in connection.execute_wrappers


def run(probe: Probe, statements: list[tuple[object, str, object, bool]]) -> None:
    """Statements through the SQL hook as (connection, SQL, parameters, many), with a do-nothing driver."""
    token = current_probe.set(probe)
    try:
        for connection, sql, params, many in statements:
            sql_wrapper(lambda *args: None, sql, params, many, {"connection": connection})
    finally:
        current_probe.reset(token)


def test_exact_duplicates_stay_exact_across_aliases_and_executemany():
    default, replica = mock.Mock(alias="default"), mock.Mock(alias="replica")
    probe = Probe(0)
    sql = "SELECT * FROM t WHERE id = %s"
    run(probe, [(default, sql, (1,), False), (replica, sql, (2,), False), (default, sql, (1,), False)])
    assert probe.extras == {("default", sql): [1, 0, 0]}, "replica's first run does not stand in for default's"
    probe = Probe(0)
    run(probe, [(default, sql, (1,), False), (default, sql, [(3,), (4,)], True), (default, sql, [1], False)])
    assert probe.extras == {("default", sql): [1, 0, 0]}, "an executemany between the runs"
    assert probe.first == {}


def test_an_ended_probe_keeps_no_connection():
    probe = Probe(0)
    run(probe, [(mock.Mock(alias="default"), "SELECT 1", None, False)])
    probe.end()
    assert probe.connection is not None and not isinstance(probe.connection, mock.Mock)
    assert probe.summarise()[0] == {"default": [1, probe.times["SELECT 1"]]}


def test_a_drain_counts_what_waits_when_it_starts_and_a_request_counts_a_few():
    aggregator = get_aggregator(get_config())
    for _ in range(5):
        aggregator.pending.append(("v", "v/", "GET", 200, 1000, Probe(0), 0))
    aggregator.drain(2)
    assert len(aggregator.pending) == 3
    aggregator.drain()
    assert not aggregator.pending


def test_a_request_counted_after_its_bucket_was_let_go_is_not_lost(memcached):
    from instrumented.stats.flusher import Flusher

    config = get_config()
    aggregator = get_aggregator(config)
    flusher = Flusher(aggregator, config)
    start = (1_700_000_800 // 10) * 10
    aggregator.record("v", "v/", "GET", 200, 1000, Probe(0), now=start + 1)
    flusher.flush(now=start + 1)
    aggregator.record("v", "v/", "GET", 200, 1000, Probe(0), now=start + 31)  # lets the first bucket go
    aggregator.record("v", "v/", "GET", 200, 1000, Probe(0), now=start + 2)  # late: its bucket is gone
    flusher.flush(now=start + 32)
    assert sum(v["requests"] for v in read_stats(now=start + 33)["views"]) == 3
