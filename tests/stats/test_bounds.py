"""Bounded memory and snapshot size whatever the views: unicode, 10 kB names, 5 000 distinct views."""

import pytest
from django.test import Client, override_settings

from instrumented.codec import MAX_VALUE_BYTES
from instrumented.memcached import get_store
from instrumented.naming import OTHER_VIEW
from instrumented.stats.reader import read_stats
from tests.urls_many import LONG_NAME, UNICODE_NAME


def names() -> dict[str, dict]:
    return {v["view"]: v for v in read_stats()["views"]}


@override_settings(ROOT_URLCONF="tests.urls_many")
def test_unicode_and_huge_view_names(flush):
    client = Client()
    assert client.get("/unicode/").status_code == 200
    assert client.get("/long/").status_code == 200
    assert client.get("/long/").status_code == 200
    assert client.get("/unnamed/").status_code == 200
    flush()
    found = names()
    assert found[UNICODE_NAME]["requests"] == 1
    long_names = [n for n in found if n.startswith("long-")]
    assert len(long_names) == 1 and len(long_names[0]) <= 200 and long_names[0] != LONG_NAME
    assert found[long_names[0]]["requests"] == 2
    assert found["tests.urls_many.ok"]["route"] == "unnamed/"


@override_settings(ROOT_URLCONF="tests.urls_many")
def test_five_thousand_views_cap_and_snapshot_size(settings, flush):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "MAX_VIEWS": 500}
    client = Client()
    for i in range(5000):
        assert client.get(f"/v/{i // 100}/{i % 100}/").status_code == 200
    flush()
    found = names()
    assert len(found) == 501
    assert found[OTHER_VIEW]["requests"] == 4500
    assert sum(v["requests"] for v in found.values()) == 5000
    store = get_store()
    raw = store.get_many([store.config.keys.bucket_index(b) for b in range(0, 1)])  # warm the client
    assert raw is not None
    from instrumented.stats.flusher import current_flusher

    process = current_flusher().process_id
    keys = [store.config.keys.bucket(b, process) for b in current_flusher().registered]
    sizes = [len(value) for value in store.get_many(keys).values()]
    assert sizes and max(sizes) < MAX_VALUE_BYTES


@pytest.mark.django_db(databases=["default", "analytics"])
def test_many_distinct_sql_templates_stay_bounded(settings, flush):
    from django.db import connection

    from instrumented.conf import get_config
    from instrumented.stats.aggregate import get_aggregator

    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "MAX_QUERIES_PER_VIEW": 4}
    client = Client()
    client.get("/fast/")
    aggregator = get_aggregator(get_config())
    from instrumented.stats.probe import Probe, current_probe

    for i in range(300):
        probe = Probe(0)
        token = current_probe.set(probe)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {i} AS n{i}")
        finally:
            current_probe.reset(token)
        aggregator.record("tests:sql", "sql/", "GET", 200, 1000, probe)
    stats = next(iter(aggregator.buckets.values()))["tests:sql"]
    assert len(stats.templates) <= 4 * 4
    flush()
    assert len(names()["tests:sql"]["top_queries"]) <= 4
