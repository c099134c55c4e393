"""The cache probe: every call to Django's cache framework counted per view and alias, on every backend."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path

from instrumented.failopen import failures
from instrumented.stats import cache as cache_probe
from instrumented.stats.reader import read_stats

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])
CACHE_TABLE = "i11_test_cache_table"


def exercise(request: HttpRequest) -> JsonResponse:
    """Seven calls on the alias in ?alias=: three reads that hit, three that miss, one write and a delete."""
    cache = caches[request.GET["alias"]]
    answers = {
        "first": cache.get("k", "default-1"),  # miss: the caller's default comes back
        "set": cache.set("k", None, 60),  # None is a value, not a miss
        "second": cache.get("k", "default-2"),  # hit (unless the backend stores nothing)
        "many": cache.get_many(["k", "absent"]),  # one hit, one miss
        "computed": cache.get_or_set("g", lambda: "made", 60),  # miss: computed
        "again": cache.get_or_set("g", lambda: "made twice", 60),  # hit
    }
    cache.delete("k")
    return JsonResponse({name: repr(value) for name, value in answers.items()})


urlpatterns = [path("exercise/", exercise, name="exercise")]

BACKENDS = {
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache"},
    "database": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": CACHE_TABLE},
    "pymemcache": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache"},
}


@pytest.fixture
def cache_site(settings, tmp_path, memcached, key_prefix):
    settings.ROOT_URLCONF = "tests.stats.test_cache_probe"
    settings.CACHES = {
        "default": BACKENDS["locmem"],
        "file": {**BACKENDS["file"], "LOCATION": str(tmp_path / "cache")},
        "database": BACKENDS["database"],
        "pymemcache": {**BACKENDS["pymemcache"], "LOCATION": memcached.address, "KEY_PREFIX": key_prefix},
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    call_command("createcachetable", CACHE_TABLE, database="default")
    return Client(raise_request_exception=False)


def cache_numbers(flush) -> dict:
    flush()
    (view,) = [v for v in read_stats()["views"] if v["view"] == "exercise"]
    return view["cache"]


@pytest.mark.parametrize("alias", ["default", "file", "database", "pymemcache"])
def test_hits_misses_and_calls_on_every_backend(cache_site, flush, alias):
    body = cache_site.get("/exercise/", {"alias": alias}).json()
    assert body == {
        "first": "'default-1'",
        "set": "None",
        "second": "None",
        "many": "{'k': None}",
        "computed": "'made'",
        "again": "'made'",
    }, "the site sees exactly what it would without the probe"
    numbers = cache_numbers(flush)
    expected = {"calls": 7, "hits": 3, "misses": 3, "hit_rate": 0.5}
    assert {k: numbers["aliases"][alias][k] for k in expected} == expected
    assert numbers["aliases"][alias]["time_ms"] > 0
    assert set(numbers["aliases"]) == {alias}, "nested calls (get_many -> get, get -> get_many) count once"


def test_a_backend_that_stores_nothing_only_misses(cache_site, flush):
    cache_site.get("/exercise/", {"alias": "dummy"})
    numbers = cache_numbers(flush)["aliases"]["dummy"]
    assert (numbers["calls"], numbers["hits"], numbers["misses"]) == (7, 0, 6)


def test_the_probe_fails_open(cache_site, flush, monkeypatch):
    # An alias the probe cannot count under (unhashable): its bookkeeping fails, the site's calls do not.
    monkeypatch.setitem(caches["default"].__dict__, cache_probe.ALIAS_ATTRIBUTE, ["not", "hashable"])
    before = failures.counts.get("the cache probe failed", 0)
    body = cache_site.get("/exercise/", {"alias": "default"}).json()
    assert body["computed"] == "'made'" and body["first"] == "'default-1'"
    assert failures.counts["the cache probe failed"] > before


def test_installed_once_and_outside_requests_untouched(cache_site):
    cache_probe.install()
    cache_probe.install()
    backend = caches["default"]
    assert getattr(type(backend).get, cache_probe.MARK)
    assert not getattr(type(backend).get.__wrapped__, cache_probe.MARK, False), "not wrapped twice"
    backend.set("outside", 1)
    assert backend.get("outside") == 1 and backend.get("nothing", "d") == "d"
