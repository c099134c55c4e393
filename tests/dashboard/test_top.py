"""``manage.py instrumented_top``: one-shot output, sorting, limits, bad input, memcached down, Ctrl-C."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from instrumented.dashboard.terminal import render_summary
from instrumented.stats.reader import read_stats
from tests.support.ports import free_port
from tests.support.servers import EXAMPLE, ROOT

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])


def top(*args: str) -> str:
    out = io.StringIO()
    call_command("instrumented_top", *args, stdout=out)
    return out.getvalue()


def traffic(flush) -> None:
    client = Client(raise_request_exception=False)
    for path in ["/fast/"] * 4 + ["/slow/", "/fail/", "/n-plus-one/"]:
        client.get(path)
    flush()


def data_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if "shop:" in line and "│" in line]


def test_once_prints_every_view_and_a_summary(flush):
    traffic(flush)
    output = top("--once")
    assert "4 view(s) · 7 requests" in output
    assert "1 error(s)" in output
    slowest = max(read_stats()["views"], key=lambda v: v["latency_ms"]["p95"])  # /slow/, unless /fail/ was slower
    assert f"slowest p95: {slowest['view']}" in output and "most errors: shop:fail" in output
    rows = data_rows(output)
    assert [row.split("│")[1].strip() for row in rows] == ["shop:fast", "shop:fail", "shop:n_plus_one", "shop:slow"]
    assert "Ctrl-C" not in output  # a one-shot table has nothing to quit


def test_sort_and_limit(flush):
    traffic(flush)
    rows = data_rows(top("--once", "--sort", "p95", "--limit", "1"))
    assert len(rows) == 1 and "shop:slow" in rows[0]
    rows = data_rows(top("--once", "--sort", "n1", "--limit", "1"))
    assert "shop:n_plus_one" in rows[0]


@pytest.mark.parametrize(
    "args", [("--sort", "speed"), ("--interval", "0"), ("--limit", "0"), ("--window", "-1"), ("--limit", "x")]
)
def test_bad_arguments_are_command_errors(args):
    with pytest.raises(CommandError):
        top("--once", *args)


def test_memcached_down_prints_the_reason(settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    output = top("--once")
    assert "no data: memcached unavailable" in output
    assert "(no data)" in output


def test_summary_of_an_empty_window():
    text = render_summary({"window_seconds": 300, "processes": 0, "generated_at": "", "views": []}).plain
    assert text == "0 view(s) · 0 requests (0.00/s) · 0 error(s)"


def test_instrumented_stats_still_renders_its_table(flush):
    traffic(flush)
    out = io.StringIO()
    call_command("instrumented_stats", stdout=out)
    assert "django-instrumented — last 300 s, 1 process(es)" in out.getvalue()
    assert "(no data)" not in out.getvalue()


def test_live_mode_refreshes_and_ctrl_c_exits_cleanly(settings):
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        INSTRUMENTED_KEY_PREFIX=settings.INSTRUMENTED["KEY_PREFIX"],
        PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLE)]),
        COLUMNS="160",
    )
    # A terminal, as a person would run it: rich redraws in place only on a tty.
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "instrumented_top", "--interval", "0.2"],
        cwd=EXAMPLE,
        env=env,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and b"".join(chunks).count(b"refreshing every") < 4:
        if select.select([leader], [], [], 0.5)[0]:
            chunks.append(os.read(leader, 65536))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    while select.select([leader], [], [], 0.2)[0]:
        try:
            chunks.append(os.read(leader, 65536))
        except OSError:
            break
    os.close(leader)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    text = b"".join(chunks).decode(errors="replace")
    assert text.count("refreshing every 0.2 s") >= 3  # redrawn several times before Ctrl-C
    assert "stopped" in text.splitlines()[-1]


def test_narrow_terminal_keeps_view_names_readable():
    from io import StringIO

    from rich.console import Console

    from instrumented.dashboard.terminal import render_table

    view = {
        "view": "shop:n_plus_one", "route": "n-plus-one/<int:page>/", "requests": 3, "errors": 0,
        "latency_ms": {"mean": 1.0, "p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
        "queries": {"total": 3, "mean": 1.0, "max": 1}, "db_time_ms": 0.5, "n_plus_one": 0,
    }  # fmt: skip
    doc = {"window_seconds": 300, "processes": 1, "generated_at": "now", "views": [view]}
    for width, route_shown in ((80, False), (160, True)):
        out = StringIO()
        Console(file=out, width=width).print(render_table(doc, width=width))
        text = out.getvalue()
        assert "shop:n_plus_one" in text
        assert ("n-plus-one/<int:page>/" in text) is route_shown
        assert max(len(line) for line in text.splitlines()) <= width
