"""The slowest requests of a view with their timeline, in-process (Django's test client, the real memcached)."""

from __future__ import annotations

import random

import pytest
from django.test import Client

from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.stats.aggregate import get_aggregator
from instrumented.stats.literals import strip_literals
from instrumented.stats.samples import read_samples
from instrumented.stats.sql import template_of


def normalised(sql: str) -> str:
    """What the flusher stores of a statement (literals stripped, IN lists collapsed, cut)."""
    return template_of(strip_literals(sql, "sqlite"))[: get_config().max_sql_length]


def samples(view: str, **kwargs) -> dict:
    found = read_samples(view, store=get_store(), **kwargs)
    assert "error" not in found, found
    return found


@pytest.mark.django_db(databases=["default", "analytics"])
def test_the_five_slowest_with_their_statements_in_order(flush):
    client = Client()
    slowest = [320, 290, 260, 230, 200]  # far apart: their order survives a loaded machine's noise
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
    for sample, ms in zip(got, slowest, strict=True):
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
        lookups = [e for e in sample["timeline"] if e["kind"] == "sql" and '"shop_book"."id" = %s' in e["sql"]]
        assert len(lookups) == ms % 7 + 1
        assert all(e["n_plus_one"] == (len(lookups) >= 5) for e in lookups)
        if len(lookups) >= 5:
            assert any(e["call_site"] and "sample_views.py" in e["call_site"]["site"] for e in lookups)
        assert not sample["truncated"]


@pytest.mark.django_db(databases=["default", "analytics"])
def test_nothing_is_built_for_a_request_not_among_the_slowest(flush):
    client = Client()
    keeper = get_aggregator(get_config()).samples
    for ms in (40, 41, 42, 43, 44):
        client.get(f"/planted/?ms={ms}")
    flush()
    assert keeper.built == 5
    for _ in range(20):
        client.get("/planted/?ms=0")
    flush()
    assert keeper.built == 5, "faster than the view's 5th slowest: dropped on the request path"
    client.get("/planted/?ms=60")
    flush()
    assert keeper.built == 6
    assert min(s["duration_ms"] for s in samples("shop:planted")["samples"]) >= 41
