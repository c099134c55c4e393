"""Request queue time from the front server's X-Request-Start / X-Queue-Start stamp (issue 23, item 12)."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from instrumented.stats import queue
from instrumented.stats.reader import read_stats

NOW = 1_796_000_000.0


@pytest.mark.parametrize(
    ("raw", "waited_ms"),
    [
        (f"t={NOW - 0.05:.3f}", 50.0),  # nginx: t=${msec}, seconds with milliseconds
        (f"{NOW - 0.02:.3f}", 20.0),  # seconds without the prefix
        (f"{int((NOW - 0.03) * 1000)}", 30.0),  # Heroku: milliseconds
        (f"t={int((NOW - 0.004) * 1e6)}", 4.0),  # Apache t=%t, Thruster: microseconds
        (f"{int((NOW - 0.007) * 1e9)}", 7.0),  # nanoseconds
        (f" t={NOW + 0.001:.3f} ", 0.0),  # a front server's clock a millisecond ahead: no wait
    ],
)
def test_stamps_in_every_unit(raw, waited_ms):
    assert queue.waited_us(raw, NOW) == pytest.approx(waited_ms * 1000, abs=2)


@pytest.mark.parametrize(
    "raw",
    [
        f"t={NOW + 5:.3f}",  # the future
        f"t={NOW - 3600:.3f}",  # an hour in a queue: a wrong clock or a forged header
        "t=1",  # 1970
        "",
        "t=",
        "garbage",
        "t=nan",
        "t=inf",
        "t=-1796000000",
        "t=1e9",
        "t=1_796_000_000",
        "t=" + "\uff11\uff17\uff19\uff16" + "000000",  # full-width digits
        "t=" + "9" * 400,
        None,
        b"t=1796000000",
    ],
)
def test_unparsable_future_and_absurd_stamps_are_ignored(raw):
    assert queue.waited_us(raw, NOW) is None


def stamped(client: Client, path: str, value: str) -> None:
    client.get(path, HTTP_X_REQUEST_START=value)


@pytest.mark.django_db(databases=["default", "analytics"])
def test_queue_time_per_view_and_per_process(flush):
    client = Client()
    now = time.time()
    for _ in range(4):
        stamped(client, "/fast/", f"t={now - 2.0:.3f}")  # waited two seconds at least
    client.get("/fast/", HTTP_X_QUEUE_START=f"{int((now - 4.0) * 1000)}")  # the second header, in ms
    stamped(client, "/fast/", f"t={now + 60:.3f}")  # ignored: the future
    stamped(client, "/fast/", "t=yesterday")  # ignored: unparsable
    client.get("/fast/")  # no stamp: not counted at all
    client.get("/catalogue/")
    flush()
    stats = read_stats()
    fast = next(v for v in stats["views"] if v["view"] == "shop:fast")
    wait = fast["queue"]
    assert (wait["requests"], wait["ignored"]) == (5, 2)
    assert 1960 <= wait["p50_ms"] <= wait["p95_ms"] and 3920 <= wait["max_ms"]
    catalogue = next(v for v in stats["views"] if v["view"] == "shop:catalogue")
    assert catalogue["queue"] == queue.describe(None)
    site = stats["queue"]
    assert (site["requests"], site["ignored"]) == (5, 2)
    [process] = site["processes"]
    assert process["live"] is True and process["requests"] == 5 and process["p95_ms"] == site["p95_ms"]
    # A narrower window reads the bucket snapshots rather than the roll-ups: the same answer.
    assert read_stats(60)["queue"]["processes"][0]["requests"] == 5


@pytest.mark.django_db(databases=["default", "analytics"])
def test_queue_headers_setting(settings, flush):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "QUEUE_TIME_HEADERS": ["X-Front-Start"]}
    client = Client()
    stamped(client, "/fast/", f"t={time.time() - 1:.3f}")  # not a configured header: not looked at
    client.get("/fast/", HTTP_X_FRONT_START=f"t={time.time() - 1:.3f}")
    flush()
    fast = next(v for v in read_stats()["views"] if v["view"] == "shop:fast")
    assert fast["queue"]["requests"] == 1 and fast["queue"]["p50_ms"] >= 980


def test_a_forged_queue_value_in_memcached_is_skipped():
    from instrumented.stats.snapshot import ViewTotals

    totals = ViewTotals()
    forged = (["x", 0, 0, 0, ""], [1, 2, 3], [-1, 0, 0, 0, ""], [1, 0, 0, 0, 5], [1, float("nan"), 0, 0, ""],
              {"n": 1}, [1, 0, float("inf"), 0, ""], [True, 0, 0, 0, ""])  # fmt: skip
    for bad in forged:
        assert totals.add_findings({"qt": bad}) == 1, bad  # left out, counted in the reader's skipped
    assert totals.queue is None
    assert totals.add_findings({"qt": [2, 3000, 2000, 1, ""]}) == 0 and totals.queue[:4] == [2, 3000, 2000, 1]


@pytest.mark.django_db(databases=["default", "analytics"])
def test_the_dashboard_and_view_page_show_it(flush, staff_client):
    client = Client()
    for _ in range(3):
        stamped(client, "/fast/", f"t={time.time() - 0.5:.3f}")
    stamped(client, "/fast/", "t=soon")
    flush()
    html = staff_client.get("/instrumented/").content.decode()
    assert '<th data-key="queue" data-optional="queue" title=' in html  # the column shows
    section = html.split('id="instr-queue-section"')[1].split("</section>")[0]
    assert not section.startswith(" hidden") and "every process" in section and "<code>" in section
    page = staff_client.get("/instrumented/view/", {"name": "shop:fast"}).content.decode()
    assert 'id="instr-queue-card"' in page and "3 stamped · 1 stamp ignored" in page


def test_the_demo_traffic_stamps_its_requests(site_server):
    import subprocess
    import sys

    from tests.support.servers import EXAMPLE

    server = site_server(workers=2)
    subprocess.run(
        [sys.executable, "traffic.py", "--url", server.url, "--seconds", "3", "--threads", "2", "--quiet"],
        cwd=EXAMPLE,
        check=True,
        timeout=60,
    )
    from tests.support.ports import wait_until

    wait_until(lambda: read_stats()["queue"]["requests"], timeout=10)  # the workers' next flush
    site = read_stats()["queue"]
    assert site["requests"] > 0 and site["ignored"] == 0 and 1 <= len(site["processes"]) <= 2
