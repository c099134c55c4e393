"""``manage.py instrumented_top``: one-shot output, sorting, limits, bad input, memcached down, Ctrl-C."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rich.console import Console

from instrumented.conf import get_config
from instrumented.dashboard.terminal import render_summary, render_table, render_top
from instrumented.stats.aggregate import get_aggregator
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats
from tests.support.ports import free_port, wait_until
from tests.support.servers import EXAMPLE, ROOT
from tests.support.stats import spread_requests

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
    slowest = max(read_stats()["views"], key=lambda v: v["latency_ms"]["p95"])  # /slow/, unless /fail/ was slower
    assert len(rows) == 1 and slowest["view"] in rows[0]
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
    assert re.search(r"django-instrumented — last 300 s \(data for \d+ s\), 1 live process\(es\)", out.getvalue())
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
    # Keep reading the terminal while it exits, as a terminal does: a full pty would block its last writes.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    _, err = proc.communicate(timeout=10)
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


def run_command(*args: str, **env_extra: str) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` in the demo site, in a subprocess, as a script would run it (output to a pipe)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLE)])
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_instrumented_stats_exits_non_zero_when_memcached_is_down(args):
    done = run_command("instrumented_stats", *args, INSTRUMENTED_TEST_MEMCACHED_PORT=str(free_port()))
    assert done.returncode == 1
    assert "no data: memcached unavailable" in done.stderr
    if args:
        assert '"error": "memcached unavailable' in done.stdout  # the document is still printed


def test_instrumented_stats_exits_zero_when_memcached_answers(flush, key_prefix):
    traffic(flush)
    done = run_command("instrumented_stats", INSTRUMENTED_KEY_PREFIX=key_prefix)
    assert done.returncode == 0, done.stderr
    assert "shop:fast" in done.stdout


def test_stats_and_top_use_the_same_width_in_a_pipe(flush, key_prefix):
    traffic(flush)
    stats = run_command("instrumented_stats", INSTRUMENTED_KEY_PREFIX=key_prefix).stdout
    top_ = run_command("instrumented_top", "--once", INSTRUMENTED_KEY_PREFIX=key_prefix).stdout
    table_width = {max(len(line) for line in out.splitlines() if "│" in line) for out in (stats, top_)}
    assert len(table_width) == 1, table_width
    assert "route" in stats and "p99" in stats  # wide enough for every column


LONG_VIEW = "shop:catalogue_by_author_and_publication_year_report"  # 52 characters


@contextmanager
def tmux(args: list[str], width: int, height: int = 50, **env_extra: str) -> Iterator[Callable[[], str]]:
    """``manage.py ARGS`` in a real terminal (a tmux pane WIDTH x HEIGHT); yields a function reading its screen."""
    server = f"instr-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLE)])
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    tmux_ = ["tmux", "-L", server, "-f", "/dev/null"]
    command = shlex.join([sys.executable, "manage.py", *args])
    subprocess.run([*tmux_, "new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), "-c", str(EXAMPLE),
                    f"{command}; sleep 60"], env=env, check=True)  # fmt: skip

    def screen() -> str:
        return subprocess.run([*tmux_, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True).stdout

    try:
        yield screen
    finally:
        subprocess.run([*tmux_, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_top_redraws_in_place_in_a_real_terminal(flush, key_prefix):
    """After several refreshes the screen holds one summary line and one table, not a trail of old frames."""
    traffic(flush)
    with tmux(["instrumented_top", "--interval", "0.2"], width=120, INSTRUMENTED_KEY_PREFIX=key_prefix) as screen:
        seen: set[str] = set()

        def refreshed_three_times() -> bool:  # the caption's "generated <time>" changes once a second
            seen.update(line for line in screen().splitlines() if "generated " in line)
            return len(seen) >= 3

        wait_until(refreshed_three_times, timeout=20, interval=0.2)
        text = screen()
    assert sum("view(s) ·" in line for line in text.splitlines()) == 1, text
    assert sum("refreshing every 0.2 s" in line for line in text.splitlines()) == 1, text
    assert text.splitlines()[0].startswith("4 view(s) · 7 requests"), text  # the frame starts at the top


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("command", [["instrumented_top", "--once"], ["instrumented_stats"]])
def test_eighty_columns_never_break_view_names(flush, key_prefix, command):
    traffic(flush)
    get_aggregator(get_config()).record(LONG_VIEW, "report/", "GET", 200, 1_000_000, Probe(0))
    flush()
    with tmux(command, width=80, INSTRUMENTED_KEY_PREFIX=key_prefix) as screen:
        text = wait_until(lambda: "shop:fast" in screen() and screen(), timeout=20)
    lines = str(text).splitlines()
    assert any(LONG_VIEW in line for line in lines), text  # whole, on one line
    assert all(len(line) <= 80 for line in lines)
    assert any("shop:n_plus_one" in line for line in lines)


def test_rates_are_over_the_span_the_data_covers():
    """60 requests over the last ~35 s are ~1.5/s, not 60 / 300 s = 0.2/s (the first minutes after a deploy)."""
    now = spread_requests("shop:fast", "fast/", 60, 35)
    stats = read_stats(now=now)
    assert 35 <= stats["covered_seconds"] <= 35 + get_config().bucket_seconds, stats["covered_seconds"]
    rate = float(re.search(r"60 requests \(([\d.]+)/s\)", render_summary(stats).plain).group(1))
    assert rate == pytest.approx(60 / stats["covered_seconds"], abs=0.01) and rate > 1.0
    title = render_table(stats).title
    assert f"last 300 s (data for {stats['covered_seconds']:.0f} s)" in str(title)


def test_an_empty_window_covers_nothing():
    assert read_stats()["covered_seconds"] == 0.0


def test_commands_never_take_the_summarys_headlines():
    from tests.dashboard.test_dashboard import quick_start_document

    doc = quick_start_document()
    summary = render_summary(doc).plain
    assert "slowest p95: shop:catalogue 41.0 ms" in summary and "command:" not in summary
    assert summary.startswith("2 view(s) · 52 requests")
    console = Console(file=io.StringIO(), width=160)
    console.print(render_top(doc))
    out = console.file.getvalue()
    table, work = out.split("commands and tasks")
    assert "command:" not in table and "command:migrate" in work and "command:createsuperuser" in work
    assert "3 live process(es), 4 in the window" in table
