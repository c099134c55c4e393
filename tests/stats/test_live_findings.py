"""Call sites, hints, duplicates, slow SQL, cache and outgoing HTTP, merged across real gunicorn workers."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer

import pytest

from instrumented.stats.reader import read_stats
from tests.stats.test_callsite import FINDING_VIEWS_PY, line_of
from tests.stats.test_http_probe import Upstream
from tests.support.ports import wait_until


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


EXPECTED = {
    "shop:n_plus_one": 12,
    "shop:authors": 6,
    "shop:duplicates": 6,
    "shop:slow_query": 3,
    "shop:cached": 10,
    "shop:outgoing": 4,
}


@pytest.mark.django_db(databases=["default", "analytics"])
def test_findings_merged_across_workers(site_server, upstream):
    server = site_server(workers=3, DEMO_UPSTREAM_URL=f"{upstream}/ok?private=query")
    assert server.get("/catalogue/")[0] == 200  # the catalogue exists before the measured traffic
    paths = ["/n-plus-one/"] * 12 + ["/authors/"] * 6 + ["/duplicates/"] * 6 + ["/slow-query/"] * 3
    paths += ["/outgoing/"] * 4
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda p: server.get(p)[0], paths)) == {200}
    for _ in range(10):  # one after the other: the shared cache misses once, then hits
        assert server.get("/cached/")[0] == 200
    with urllib.request.urlopen(server.url + "/duplicates/", timeout=10) as response:
        assert response.headers.get("Server-Timing") is None, "anonymous: no header"

    def merged() -> dict | None:
        views = {v["view"]: v for v in read_stats()["views"]}
        got = {name: views.get(name, {}).get("requests", 0) for name in EXPECTED}
        return views if got == {**EXPECTED, "shop:duplicates": 7} else None

    views = wait_until(merged, timeout=10)
    assert read_stats()["processes"] >= 2, "the traffic was spread over several workers"

    (fk,) = views["shop:n_plus_one"]["n_plus_one_suspects"]
    assert fk["requests"] == 12 and fk["count"] == 12 * 15
    (site,) = fk["call_sites"]
    assert (site["site"], site["requests"], site["hint"], site["hint_model"]) == (
        f"shop/views.py:{line_of('# N+1: author')} in n_plus_one",
        12,
        'select_related("author")',
        "Book",
    )
    (reverse,) = views["shop:authors"]["n_plus_one_suspects"]
    (site,) = reverse["call_sites"]
    assert (site["site"], site["requests"], site["hint"], site["hint_model"]) == (
        f"shop/finding_views.py:{line_of('# N+1: books', FINDING_VIEWS_PY)} in authors",
        6,
        'prefetch_related("books")',
        "Author",
    )

    assert views["shop:duplicates"]["duplicates"] == 7 * 4 and views["shop:duplicates"]["n_plus_one"] == 0
    (slow,) = views["shop:slow_query"]["slow_queries"]
    where = f"shop/finding_views.py:{line_of('# slow', FINDING_VIEWS_PY)} in slow_query"
    assert slow["slow"] == 3 and slow["call_sites"][0]["site"] == where

    cache = views["shop:cached"]["cache"]["aliases"]
    assert (cache["shared"]["hits"], cache["shared"]["misses"], cache["shared"]["calls"]) == (9, 1, 11)
    local = cache["default"]
    assert local["calls"] == 10 and local["hits"] + local["misses"] == 10
    assert 1 <= local["misses"] <= 3, "each worker's own memory misses once"

    http = views["shop:outgoing"]["http"]
    assert http["origins"] == [{**http["origins"][0], "origin": upstream, "calls": 8, "errors": 0}], (
        "requests and urllib, four times, scheme and host only"
    )
    assert "private" not in str(read_stats())
