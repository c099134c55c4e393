"""Percentiles of few requests: nearest rank (p95 of 3 requests is the slowest), and the number of requests they
rest on shown wherever a percentile is (API, dashboard, view page, CLI) when it is under 20."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command
from django.urls import reverse
from rich.console import Console

from instrumented.conf import get_config
from instrumented.dashboard.terminal import render_table
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats

pytestmark = pytest.mark.django_db


def _record(view: str, durations_ms: list[float]) -> None:
    config = get_config()
    aggregator = Aggregator(config)
    now = time.time()
    for ms in durations_ms:
        aggregator.record(view, "few/", "GET", 200, int(ms * 1_000_000), Probe(0), now=now)
    Flusher(aggregator, config).flush(now=now)


def test_p95_of_three_requests_is_the_slowest_and_says_three(staff_client):
    _record("few:three", [10, 20, 300])
    _record("few:many", [5] * 25)
    views = {v["view"]: v for v in read_stats()["views"]}
    three = views["few:three"]["latency_ms"]
    assert three["samples"] == 3
    assert abs(three["p95"] - 300) / 300 <= 0.02 and abs(three["p99"] - 300) / 300 <= 0.02
    assert abs(three["p50"] - 20) / 20 <= 0.02
    assert views["few:many"]["latency_ms"]["samples"] == 25

    html = staff_client.get(reverse("instrumented:dashboard")).content.decode()
    assert ">n=3</span>" in html and "n=25" not in html
    page = staff_client.get(reverse("instrumented:view_detail") + "?name=few%3Athree").content.decode()
    assert 'id="instr-few">of 3 requests</span>' in page
    page = staff_client.get(reverse("instrumented:view_detail") + "?name=few%3Amany").content.decode()
    assert 'id="instr-few"' not in page

    out = io.StringIO()
    Console(file=out, width=200).print(render_table(dict(read_stats()), width=200))
    table = out.getvalue()
    assert "n=3" in table and "n=25" not in table
    printed = io.StringIO()
    call_command("instrumented_stats", "--json", stdout=printed)
    assert '"samples": 3' in printed.getvalue()
