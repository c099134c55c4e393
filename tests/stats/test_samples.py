"""The slowest requests of a view with their timeline, in-process (Django's test client, the real memcached)."""

from __future__ import annotations

import random

import pytest
from django.test import Client

from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.stats.aggregate import get_aggregator
from instrumented.stats.samples import read_samples
from tests.support.samples import forge, lookups, normalised, stored, written


def samples(view: str, **kwargs) -> dict:
    found = read_samples(view, store=get_store(), **kwargs)
    assert "error" not in found, found
    return found


@pytest.mark.django_db(databases=["default", "analytics"])
def test_the_five_slowest_with_their_statements_in_order(flush):
    from shop.views import ensure_catalogue

    ensure_catalogue()  # its inserts would make the first request one of the slowest
    client = Client()
    slowest = [1000, 900, 800, 700, 600]  # far above the rest: a machine at load 20 delays requests by 100s of ms
    planted = list(range(60)) + slowest  # 65 requests
    random.Random(7).shuffle(planted)
    captured = {}
    for ms in planted:
        response = client.get(f"/planted/?ms={ms}")
        assert response.status_code == 200
        captured[ms] = response.json()["sql"]
    flush()
    found = samples("shop:planted")
    got = found["samples"]
    assert len(got) == 5 and found["matching"] >= 5 and found["processes"] == 1
    assert got == sorted(got, key=lambda s: -s["duration_ms"])
    by_lookups = {ms % 7 + 1: ms for ms in slowest}  # one each: a sample is matched by it, not by its rank
    assert {by_lookups[lookups(sample)] for sample in got} == set(slowest)
    for sample in got:
        ms = by_lookups[lookups(sample)]
        assert sample["duration_ms"] >= ms
        statements = [e["sql"] for e in sample["timeline"] if e["kind"] == "sql"]
        assert statements == [normalised(sql) for sql in captured[ms]], ms
        assert sample["status"] == 200 and sample["method"] == "GET" and sample["user"] == "anonymous"
        assert sample["queries"] == len(captured[ms])
        offsets = [e["offset_ms"] for e in sample["timeline"] if e["kind"] == "sql"]
        assert offsets == sorted(offsets)
        sleep = next(e for e in sample["timeline"] if e["kind"] == "sql" and "demo_sleep" in e["sql"])
        assert sleep["duration_ms"] >= ms * 0.9
        kinds = {e["kind"] for e in sample["timeline"]}
        assert kinds == {"sql", "cache", "template"}
        templates = [e for e in sample["timeline"] if e["kind"] == "template"]
        expected = {("shop/planted.html", 0), ("shop/planted_footer.html", 1)}
        assert {(t["name"], t["depth"]) for t in templates} == expected
        books = [e for e in sample["timeline"] if e["kind"] == "sql" and '"shop_book"."id" = %s' in e["sql"]]
        assert len(books) == ms % 7 + 1
        assert all(e["n_plus_one"] == (len(books) >= 5) for e in books)
        if len(books) >= 5:
            assert any(e["call_site"] and "sample_views.py" in e["call_site"]["site"] for e in books)
        assert not sample["truncated"]


def fresh_bucket() -> None:
    """Wait for the start of a bucket (at most one bucket), so what follows runs within it."""
    import time

    seconds = get_config().bucket_seconds
    time.sleep(seconds - time.time() % seconds + 0.05)


@pytest.mark.django_db(databases=["default", "analytics"])
def test_nothing_is_built_for_a_request_not_among_the_slowest(flush):
    client = Client()
    keeper = get_aggregator(get_config()).samples
    fresh_bucket()  # a new bucket admits its first five again: the test runs within one
    for ms in (300, 301, 302, 303, 304):
        client.get(f"/planted/?ms={ms}")
    flush()
    assert keeper.built == 5
    for _ in range(20):
        client.get("/planted/?ms=0")
    flush()
    assert keeper.built == 5, "faster than the view's 5th slowest: dropped on the request path"
    client.get("/planted/?ms=400")
    flush()
    assert keeper.built == 6
    assert min(s["duration_ms"] for s in samples("shop:planted")["samples"]) >= 301


@pytest.mark.django_db(databases=["default", "analytics"])
def test_bounds_under_a_flood_of_statements(flush):
    from instrumented.stats import events
    from instrumented.stats import samples as samples_module

    client = Client()
    assert client.get("/many-statements/?n=100000&big=1").status_code == 200
    flush()
    (sample,) = samples("shop:many_statements")["samples"]
    statements = [e for e in sample["timeline"] if e["kind"] == "sql"]
    assert len(sample["timeline"]) <= events.MAX_EVENTS
    assert sample["queries"] == 100_001
    assert sample["truncated"] and sample["cut"]["sql"] == 100_001 - len(statements)
    assert {e["sql"] for e in statements} == {"SELECT %s"}, "the 1 MB statement came last: cut off with the rest"
    # The 1 MB statement alone: its text is cut to MAX_SQL_LENGTH, and its literal never stored.
    assert client.get("/many-statements/?n=0&big=1").status_code == 200
    flush()
    store = get_store()
    config = get_config()
    found = samples("shop:many_statements", limit=10)["samples"]
    big = next(s for s in found if s["queries"] == 1)
    (statement,) = [e["sql"] for e in big["timeline"] if e["kind"] == "sql"]
    assert len(statement) <= config.max_sql_length and "xxxx" not in statement
    hashed = samples_module.view_hash("shop:many_statements")
    values = store.fetch([config.keys.samples(b, hashed, p) for b, p in written(store, config)]).values.values()
    assert values and all(len(value) <= samples_module.MAX_VALUE_BYTES for value in values)


@pytest.mark.django_db(databases=["default", "analytics"])
def test_forged_values_are_refused_and_counted(flush):
    import json
    import time
    import zlib

    from instrumented.memcached import pack

    client = Client()
    for ms in (30, 31, 32):
        client.get(f"/planted/?ms={ms}")
    flush()
    genuine = samples("shop:planted")["samples"]
    assert len(genuine) == 3
    config = get_config()
    store = get_store()
    bucket = int(time.time() // config.bucket_seconds)
    good = {
        "at": time.time(),
        "ms": 5000.0,
        "status": 200,
        "method": "GET",
        "error": None,
        "user": "anonymous",
        "q": 1,
        "db": 1.0,
        "sql": [["default", "SELECT 1", None]],
        "ev": [["q", 0, 10, 0, 0]],
        "cut": {},
    }

    def value(*found, **header) -> bytes:
        return stored("shop:planted", bucket, list(found), **header)

    forged = [
        b"garbage",
        b"z" + zlib.compress(b"[" * 10_000_000),  # a bomb: inflated past the per-value limit
        pack([1, 2, 3]),
        value(good, view="shop:other"),  # another view's value under this view's key
        value(good, bucket=bucket - 1),
        value({**good, "ms": float("inf")}),
        value({**good, "ms": 1e300}),
        value({**good, "ms": 6000.0}, ms=[5000.0]),  # a header that does not say what its sample is
        value(good, err=["<script>"]),
        value(good, v=1),
        b"j" + b"{}\n[]",
        value({**good, "ev": [["q", 0, 10, 5, 0]]}),  # a statement that is not in the table
        value({**good, "ev": [["x", 0, 10, 0, 0]]}),
        value({**good, "ev": [["q", -1, 10, 0, 0]]}),
        value({**good, "user": "alice@example.com"}),
        value({**good, "error": "<script>alert(1)</script>"}),
        value({**good, "sql": [["default", "S" * 100_000, None]]}),
        value({**good, "ev": [["q", 0, 10, 0, 0]] * 100_000}),
        value(*[good] * 100),
        json.dumps({"v": 1}).encode(),
    ]
    forge(store, config, "shop:planted", forged)
    found = samples("shop:planted")
    assert found["samples"] == genuine, "nothing forged is shown"
    assert found["skipped"] == len(forged) and "skipped" in found["note"]
    # A well-formed forged sample is shown as a sample (memcached is shared state), escaped by every page.
    forge(store, config, "shop:planted", [value(good)])
    assert samples("shop:planted")["samples"][0]["duration_ms"] == 5000.0


def test_memory_stays_bounded_when_nothing_is_written():
    """memcached down for long: the keeper holds a few buckets, K samples per view each, never more."""
    from time import perf_counter_ns

    from instrumented.stats.probe import Probe
    from instrumented.stats.samples import KEEP_BUCKETS, SampleKeeper

    keeper = SampleKeeper(per_view=5, max_views=3, bucket_seconds=10, threshold=5, max_raw_sql=8000)
    for bucket in range(1000, 1200):
        for view in ("a", "b", "c", "d"):
            for duration in range(10):
                probe = Probe(perf_counter_ns())
                probe.user_kind = "anonymous"
                probe.timeline = [(probe.start_ns, 1000, "SELECT 1", {})]
                keeper.offer(bucket, view, view, "GET", 200, duration, bucket * 10.0 + 5, probe, {})
    assert len(keeper.held) <= KEEP_BUCKETS + 1
    assert all(len(views) <= 3 and all(len(h) <= 5 for h in views.values()) for views in keeper.held.values())
    assert {b for b, _view in keeper.dirty} <= set(keeper.held)
