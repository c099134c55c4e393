"""Terminal output shows hostile names and SQL escaped (issue 8, finding 6).

A view name or statement may carry an OSC 52 clipboard write, a screen clear, a one-byte C1 CSI, a
bidi override, or rich markup. The commands run on a real pty; the bytes that reach it must carry none
of the payload's sequences raw (rich's own styling escapes are allowed: they are not the payload's).
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from rich.console import Console

from instrumented.conf import get_config
from instrumented.management.commands.instrumented_querylog import Command as QueryLogCommand
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from tests.support.servers import EXAMPLE, ROOT

OSC52 = "\x1b]52;c;cHduZWQ=\x07"
CLEAR = "\x1b[2J"
C1_CSI = "\x9b31m"
BIDI = "\u202e"
MARKUP = "[bold]b[/bold][link=https://evil.example/]l[/link]"
PAYLOAD = f"evil{OSC52}{CLEAR}{C1_CSI}{BIDI}{MARKUP}"
# What must never reach the terminal raw, as bytes (UTF-8, as the terminal receives them).
RAW = [b"\x1b]52;", b"\x1b[2J", "\x9b".encode(), BIDI.encode(), b"\x07"]


def assert_nothing_raw(output: bytes, json: bool = False) -> None:
    """None of the payload's sequences raw; each shown as an escape instead, and the markup as written."""
    found = [sequence for sequence in RAW if sequence in output]
    assert not found, f"raw control sequences reached the terminal: {found}"
    assert b"\x1b]8;" not in output, "rich markup in the data became a hyperlink"
    text = re.sub("\x1b\\[[0-9;]*m", "", output.decode("utf-8", "replace"))  # rich's own colours, SQL highlighting
    shown = ["\\u001b]52;c;", "\\u001b[2J", "\\u009b31m"] if json else ["\\x1b]52;c;", "\\x1b[2J", "\\x9b31m"]
    assert all(escape in text for escape in [*shown, "\\u202e"]), text
    assert MARKUP in text, "markup in the data is shown as written"


def write_hostile_view() -> None:
    """One request to a view named with the payload, through the real aggregator, flushed to memcached."""
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    aggregator.record(PAYLOAD, f"r/{CLEAR}/", "GET", 200, 1_000_000, Probe(0), now=time.time())
    flusher.flush()


def run_on_pty(prefix: str, *args: str) -> bytes:
    """``manage.py`` with ``args`` on a real pty, 200 columns; everything it wrote to the terminal."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        INSTRUMENTED_KEY_PREFIX=prefix,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLE)]),
        COLUMNS="200",
        TERM="xterm-256color",
    )
    env.pop("NO_COLOR", None)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, stdout=follower, stderr=subprocess.PIPE
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready = select.select([leader], [], [], 0.5)[0]
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    _, err = proc.communicate(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, err.decode()
    return b"".join(chunks)


@pytest.mark.parametrize(
    "command", [("instrumented_top", "--once"), ("instrumented_stats",), ("instrumented_stats", "--json")]
)
def test_hostile_view_names_reach_the_pty_escaped(key_prefix, command):
    write_hostile_view()
    output = run_on_pty(key_prefix, *command)
    assert b"\x1b[" in output or command[-1] == "--json", "a terminal: rich styled its own output"
    assert_nothing_raw(output, json=command[-1] == "--json")


def querylog_output(method: str, rows: object) -> bytes:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=400, highlight=False)
    getattr(QueryLogCommand(), method)(console, rows)
    return out.getvalue().encode()


def test_querylog_tail_digest_and_status_show_hostile_text_escaped():
    row = {"ts": f"2024 {MARKUP}", "thread_id": 7, "user": PAYLOAD, "db": "shop", "response_time_us": 12,
           "rows": 1, "status": f"ok{CLEAR}", "query": f"SELECT '{PAYLOAD}'"}  # fmt: skip
    tail = querylog_output("_tail", [row])
    assert_nothing_raw(tail)
    digest = querylog_output(
        "_digest", [{"count": 1, "total_us": 5, "max_us": 5, "rows": 1, "digest": f"SELECT '{PAYLOAD}'"}]
    )
    assert_nothing_raw(digest)
    status = querylog_output("_status", {"logging": "on", "seconds_left": 9, "logged": 1, "log_file": PAYLOAD})
    assert_nothing_raw(status)
