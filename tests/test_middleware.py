"""The middleware in-process (Django's test client), against the real memcached."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client

from instrumented.stats.reader import read_stats


def view_stats(name: str) -> dict:
    stats = read_stats()
    assert "error" not in stats, stats
    matches = [v for v in stats["views"] if v["view"] == name]
    assert matches, f"{name} not in {[v['view'] for v in stats['views']]}"
    return matches[0]


@pytest.mark.django_db(databases=["default", "analytics"])
def test_counts_statuses_and_queries(flush):
    client = Client(raise_request_exception=False)
    for _ in range(3):
        assert client.get("/catalogue/").status_code == 200
    assert client.get("/fast/").status_code == 200
    assert client.get("/no/such/page/").status_code == 404
    assert client.get("/fail/").status_code == 500
    flush()

    catalogue = view_stats("shop:catalogue")
    assert catalogue["route"] == "catalogue/"
    assert catalogue["requests"] == 3
    assert catalogue["status"] == {"2xx": 3, "3xx": 0, "4xx": 0, "5xx": 0}
    assert catalogue["errors"] == 0
    assert catalogue["queries"]["total"] >= 3 * 4
    assert set(catalogue["databases"]) == {"default", "analytics"}
    assert catalogue["databases"]["analytics"]["queries"] == 3
    assert catalogue["db_time_ms"] > 0
    assert catalogue["top_queries"] and "%s" in " ".join(q["sql"] for q in catalogue["top_queries"])
    lat = catalogue["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]

    assert view_stats("shop:fast")["queries"]["total"] == 0
    assert view_stats("(not found)")["status"]["4xx"] == 1
    fail = view_stats("shop:fail")
    assert fail["errors"] == 1 and fail["status"]["5xx"] == 1
    assert fail["exceptions"][0]["class"] == "ZeroDivisionError"


@pytest.mark.django_db(databases=["default", "analytics"])
def test_n_plus_one_is_flagged(flush):
    from shop.views import ensure_catalogue

    ensure_catalogue()
    client = Client()
    client.get("/n-plus-one/")
    client.get("/n-plus-one/")
    client.get("/catalogue/")
    flush()
    stats = view_stats("shop:n_plus_one")
    assert stats["n_plus_one"] == 2
    suspects = [q for q in stats["top_queries"] if q["n_plus_one"]]
    assert len(suspects) == 1 and suspects[0]["count"] == 2 * 15
    assert 'FROM "shop_author"' in suspects[0]["sql"]
    assert view_stats("shop:catalogue")["n_plus_one"] == 0


@pytest.mark.django_db(databases=["default", "analytics"])
def test_n_plus_one_threshold_is_configurable(settings, flush):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "N_PLUS_ONE_THRESHOLD": 50}
    Client().get("/n-plus-one/")
    flush()
    assert view_stats("shop:n_plus_one")["n_plus_one"] == 0


@pytest.mark.django_db(databases=["default", "analytics"])
def test_streaming_is_timed_to_close(flush):
    response = Client().get("/stream/")
    assert b"".join(response.streaming_content).count(b"chunk") == 5
    response.close()
    flush()
    # 5 chunks 40 ms apart: the body takes >= 200 ms, the view itself returns at once.
    assert view_stats("shop:stream")["latency_ms"]["max"] >= 190


@pytest.mark.django_db(transaction=True, databases=["default", "analytics"])
def test_async_view_and_its_queries(flush):
    from asgiref.sync import async_to_sync

    response = async_to_sync(AsyncClient().get)("/async/")
    assert response.status_code == 200
    flush()
    stats = view_stats("shop:async")
    assert stats["requests"] == 1
    assert stats["queries"]["total"] >= 1


@pytest.mark.django_db(databases=["default", "analytics"])
def test_disabled_records_nothing(settings, flush):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "ENABLED": False}
    Client().get("/fast/")
    flush()
    assert read_stats()["views"] == []
