"""Several real memcached servers, one of them killed, frozen or flushed mid-window: writers move its keys
to the live servers, readers merge what the live ones hold and name the missing one, and the numbers are
exact again once the server is back (issue 10)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from instrumented.conf import get_config
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats
from tests.support.ports import free_port, wait_until
from tests.support.servers import Memcached

BUCKET = 10
PROCESSES = 4
BUCKETS = 3


@pytest.fixture
def cluster(settings) -> Iterator[Callable[[int], list[Memcached]]]:
    """Factory: ``n`` memcached servers of the test's own, and the settings pointed at all of them."""
    started: list[Memcached] = []

    def start(n: int) -> list[Memcached]:
        for _ in range(n):
            server = Memcached(free_port())
            server.start()
            started.append(server)
        settings.INSTRUMENTED = {
            **settings.INSTRUMENTED,
            "SERVERS": [server.address for server in started],
            "TIMEOUT": 0.3,
            "CONNECT_TIMEOUT": 0.2,
        }
        return started

    yield start
    for server in started:
        server.stop()


def writers(now: float) -> list[Flusher]:
    """PROCESSES simulated processes, each with 1..PROCESSES requests to "v" in each of BUCKETS buckets."""
    config = get_config()
    flushers = []
    for p in range(PROCESSES):
        aggregator = Aggregator(config)
        flusher = Flusher(aggregator, config)
        for b in range(BUCKETS):
            at = now - (BUCKETS - 1 - b) * BUCKET
            for _ in range(p + 1):
                aggregator.record("v", "v/", "GET", 200, 2_000_000, Probe(0), now=at)
            flusher.flush(now=at)
        flushers.append(flusher)
    return flushers


EXPECTED = BUCKETS * sum(range(1, PROCESSES + 1))


def requests_read(now: float, **kwargs: object) -> tuple[int, dict]:
    stats = read_stats(now=now, **kwargs)
    return sum(v["requests"] for v in stats["views"]), stats


def flush_all(flushers: list[Flusher], now: float) -> None:
    for flusher in flushers:
        flusher.flush(now=now)


@pytest.mark.parametrize("servers", [2, 3])
def test_killed_server_readers_merge_the_survivors_then_exact_after_restart(cluster, servers):
    nodes = cluster(servers)
    now = time.time()
    flushers = writers(now)
    total, stats = requests_read(now)
    assert total == EXPECTED and "partial" not in stats

    nodes[0].stop()
    total, stats = requests_read(now)
    assert stats["partial"] is True and stats["missing"] == [nodes[0].address]
    assert "error" not in stats and total <= EXPECTED
    # Within a flush each writer notices, and writes its window to the live servers.
    flush_all(flushers, now + 0.5)
    total, stats = requests_read(now + 0.5)
    assert (total, stats["partial"], stats["missing"]) == (EXPECTED, True, [nodes[0].address])
    series = read_stats(now=now + 0.5, view="v", series=True)["views"][0]["series"]
    assert sum(point["requests"] for point in series) == EXPECTED

    nodes[0].start()  # back on the same port, empty

    def exact_again() -> dict | None:
        flush_all(flushers, time.time())
        total, stats = requests_read(time.time())
        return stats if total == EXPECTED and "partial" not in stats else None

    wait_until(exact_again, timeout=get_config().breaker_max_cooldown + 3)


def test_frozen_server_is_left_out_and_its_stale_keys_rewritten_when_it_answers(cluster):
    nodes = cluster(2)
    now = time.time()
    flushers = writers(now)
    nodes[1].freeze()
    try:
        flush_all(flushers, now + 0.5)  # each writer waits one read timeout, then leaves it out
        total, stats = requests_read(now + 0.5)
        assert (total, stats["partial"], stats["missing"]) == (EXPECTED, True, [nodes[1].address])
        for flusher in flushers:  # more traffic while it is frozen: the frozen server's copies go stale
            flusher.aggregator.record("v", "v/", "GET", 200, 2_000_000, Probe(0), now=now + 0.6)
        flush_all(flushers, now + 0.7)
    finally:
        nodes[1].thaw()

    def exact_again() -> dict | None:
        flush_all(flushers, time.time())
        total, stats = requests_read(time.time())
        return stats if total == EXPECTED + PROCESSES and "partial" not in stats else None

    wait_until(exact_again, timeout=get_config().breaker_max_cooldown + 3)


@pytest.mark.parametrize("servers", [1, 2])
def test_flush_all_mid_window_is_rewritten_within_a_flush(cluster, servers):
    nodes = cluster(servers)
    now = time.time()
    flushers = writers(now)
    nodes[0].flush_all()
    total, stats = requests_read(now)
    assert "partial" not in stats, "an emptied server is missing data, not a failure"
    assert total < EXPECTED if servers == 1 else total <= EXPECTED
    flush_all(flushers, now + 0.5)
    total, stats = requests_read(now + 0.5)
    assert total == EXPECTED and stats["processes"] == PROCESSES


def test_processes_live_counts_recent_flushes_and_stopped_processes_stay_counted(cluster):
    cluster(2)
    now = time.time()
    flushers = writers(now)
    stats = read_stats(now=now)
    assert (stats["processes"], stats["processes_live"]) == (PROCESSES, PROCESSES)
    # Two of them stop; the others keep flushing: the window still counts everyone's requests.
    later = now + 5 * get_config().flush_interval
    flush_all(flushers[2:], later)
    total, stats = requests_read(later)
    assert (total, stats["processes"], stats["processes_live"]) == (EXPECTED, PROCESSES, PROCESSES - 2)


def load(server, paths: list[str], threads: int = 16) -> list[int]:
    """Send every path once, ``threads`` at a time; the statuses."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda path: server.get(path)[0], paths))


@pytest.mark.django_db(databases=["default", "analytics"])
def test_site_keeps_answering_and_readers_show_survivors_when_a_server_dies(cluster, site_server):
    nodes = cluster(2)
    servers = ",".join(node.address for node in nodes)
    site = site_server(workers=3, INSTRUMENTED_TEST_MEMCACHED_SERVERS=servers)
    assert set(load(site, ["/fast/"] * 60)) == {200}
    wait_until(lambda: sum(v["requests"] for v in read_stats()["views"]) == 60, timeout=5)
    nodes[0].stop()
    assert set(load(site, ["/fast/"] * 40 + ["/catalogue/"] * 10)) == {200}

    def survivors_exact() -> dict | None:
        stats = read_stats()
        found = {v["view"]: v["requests"] for v in stats["views"]}
        wanted = found.get("shop:fast") == 100 and found.get("shop:catalogue") == 10
        return stats if wanted and stats.get("partial") else None

    stats = wait_until(survivors_exact, timeout=5)
    assert stats["missing"] == [nodes[0].address] and "error" not in stats
    nodes[0].start()
    assert set(load(site, ["/slow/"] * 2)) == {200}

    def exact_again() -> dict | None:
        stats = read_stats()
        found = {v["view"]: v["requests"] for v in stats["views"]}
        wanted = (found.get("shop:fast"), found.get("shop:catalogue"), found.get("shop:slow")) == (100, 10, 2)
        return stats if wanted and "partial" not in stats else None

    wait_until(exact_again, timeout=get_config().breaker_max_cooldown + 5)


@pytest.mark.django_db(databases=["default", "analytics"])
def test_recycled_workers_keep_their_window_counted_exactly(site_server):
    site = site_server(workers=3, GUNICORN_CMD_ARGS="--max-requests 25 --max-requests-jitter 0")
    assert set(load(site, ["/fast/"] * 300, threads=4)) == {200}

    def exact() -> dict | None:
        stats = read_stats()
        found = {v["view"]: v["requests"] for v in stats["views"]}
        return stats if found.get("shop:fast") == 300 and stats["processes_live"] <= 3 else None

    stats = wait_until(exact, timeout=10)
    assert stats["processes"] > 3, "the recycled workers' requests stay counted for the window"


@pytest.mark.django_db(databases=["default", "analytics"])
def test_forty_workers_three_hundred_views_exact_totals(site_server):
    site = site_server(workers=40, GUNICORN_CMD_ARGS="--preload", INSTRUMENTED_TEST_URLCONF="tests.urls_many")
    paths = [f"/v/{g}/{i}/" for g in range(3) for i in range(100)] * 4
    assert set(load(site, paths, threads=32)) == {200}
    names = [f"g{g}:view_{g}_{i}" for g in range(3) for i in range(100)]

    def exact() -> dict | None:
        stats = read_stats()
        found = {v["view"]: v["requests"] for v in stats["views"]}
        every = all(found.get(name) == 4 for name in names)
        return stats if every and stats["processes_live"] == stats["processes"] else None

    stats = wait_until(exact, timeout=10)
    assert sum(v["requests"] for v in stats["views"]) == len(paths)
    assert stats["processes"] >= 8, "the traffic was spread over the workers, each writing its own keys"


@pytest.mark.django_db
def test_partial_is_shown_on_the_dashboard_api_overlay_and_terminal(cluster, staff_client):
    nodes = cluster(2)
    now = time.time()
    flushers = writers(now)
    nodes[1].stop()
    flush_all(flushers, time.time())  # the writers' next flush moves the dead server's share to the live one
    missing = nodes[1].address
    body = staff_client.get(reverse("instrumented:api_views")).json()
    assert body["partial"] is True and body["missing"] == [missing]
    overlay = staff_client.get(reverse("instrumented:api_view"), {"path": "/fast/"}).json()  # the bookmarklet's
    assert overlay["partial"] is True and overlay["missing"] == [missing]
    page = staff_client.get(reverse("instrumented:dashboard")).content.decode()
    assert f"Partial: no answer from memcached {missing}" in page
    detail = staff_client.get(reverse("instrumented:view_detail"), {"name": "v"}).content.decode()
    assert f"Partial: no answer from memcached {missing}" in detail and 'id="instr-summary"' in detail
    out = StringIO()
    call_command("instrumented_stats", stdout=out)
    assert f"no answer from memcached {missing}" in out.getvalue()
    out = StringIO()
    call_command("instrumented_top", "--once", stdout=out)
    assert f"no answer from memcached {missing}" in out.getvalue()
