"""The demo site under real multi-process servers (gunicorn WSGI, uvicorn ASGI) with a real memcached."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from instrumented.stats.reader import read_stats
from tests.support.ports import wait_until


def load(server, paths: list[str], threads: int = 16) -> list[tuple[int, float]]:
    """Send every path once, ``threads`` at a time; (status, seconds) per request."""

    def one(path: str) -> tuple[int, float]:
        start = time.perf_counter()
        status, _ = server.get(path)
        return status, time.perf_counter() - start

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, paths))


def views() -> dict[str, dict]:
    return {v["view"]: v for v in read_stats()["views"]}


def counts_reach(expected: dict[str, int]):
    def check():
        found = views()
        got = {name: found.get(name, {}).get("requests", 0) for name in expected}
        return found if got == expected else None

    return check


@pytest.mark.django_db(databases=["default", "analytics"])
def test_exact_counts_across_worker_processes(site_server):
    server = site_server(workers=3)
    paths = ["/fast/"] * 300 + ["/catalogue/"] * 60 + ["/n-plus-one/"] * 20 + ["/fail/"] * 10
    results = load(server, paths)
    assert sorted({status for status, _ in results}) == [200, 500]
    finished = time.monotonic()
    expected = {"shop:fast": 300, "shop:catalogue": 60, "shop:n_plus_one": 20, "shop:fail": 10}
    found = wait_until(counts_reach(expected), timeout=5)
    visible_after = time.monotonic() - finished
    stats = read_stats()
    assert stats["processes"] >= 2, "load was spread over several workers, each with its own keys"
    assert found["shop:fail"]["errors"] == 10 and found["shop:fail"]["status"]["5xx"] == 10
    assert found["shop:n_plus_one"]["n_plus_one"] == 20
    assert found["shop:catalogue"]["databases"]["analytics"]["queries"] == 60
    assert visible_after < 2.0, f"stats became visible {visible_after:.2f} s after the traffic"


@pytest.mark.django_db(databases=["default", "analytics"])
def test_asgi_async_view_and_streaming(site_server):
    server = site_server(workers=2, kind="asgi")
    results = load(server, ["/async/"] * 40 + ["/stream/"] * 4 + ["/fast/"] * 20, threads=8)
    assert {status for status, _ in results} == {200}
    found = wait_until(counts_reach({"shop:async": 40, "shop:stream": 4, "shop:fast": 20}), timeout=5)
    assert found["shop:async"]["queries"]["total"] >= 40
    assert found["shop:stream"]["latency_ms"]["p50"] >= 190


@pytest.mark.django_db(databases=["default", "analytics"])
def test_memcached_stopped_mid_run_then_restarted(site_server, memcached):
    server = site_server(workers=2)
    load(server, ["/fast/"] * 20)
    wait_until(counts_reach({"shop:fast": 20}), timeout=5)
    memcached.stop()
    try:
        results = load(server, ["/fast/"] * 50 + ["/catalogue/"] * 10)
        assert {status for status, _ in results} == {200}, "the site keeps answering while memcached is down"
        # A reader shares one merge for up to a second (reader.CACHE_SECONDS): the reason shows once that is past.
        assert wait_until(lambda: read_stats().get("error"), timeout=5), "readers say why there is no data"
    finally:
        memcached.start()
    load(server, ["/slow/"] * 3)
    # A restarted memcached is empty: what was counted in the current bucket is written again, and new traffic shows.
    found = wait_until(lambda: views().get("shop:slow", {}).get("requests") == 3 and views(), timeout=10)
    assert found["shop:slow"]["requests"] == 3


def test_memcached_unreachable_from_the_start(site_server):
    # A "black hole" memcached: connections are accepted by the kernel, nothing ever answers, so every
    # memcached call would wait for the read timeout (0.5 s). Requests must not.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(1024)
    try:
        port = str(black_hole.getsockname()[1])
        server = site_server(workers=2, INSTRUMENTED_TEST_MEMCACHED_PORT=port)
        load(server, ["/fast/"] * 20, threads=2)  # warm up both workers
        results = load(server, ["/fast/", "/catalogue/"] * 50, threads=1)
        assert {status for status, _ in results} == {200}
        slowest = max(seconds for _, seconds in results)
        assert slowest < 0.4, f"a request waited {slowest:.3f} s: the request path touched memcached"
        assert server.proc.poll() is None
    finally:
        black_hole.close()
