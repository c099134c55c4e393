"""``manage.py instrumented_top``: a live per-view table, like ``top``, from the same reader as the dashboard."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.text import Text

from ...dashboard.terminal import SORT_KEYS, make_console, render_top
from ...failopen import fail_open
from ...stats.reader import read_stats


class Command(BaseCommand):
    help = "Live per-view stats of the last window (all processes and servers), refreshed like top."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sort", choices=sorted(SORT_KEYS), default="requests", help="Column to sort by.")
        parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="Seconds between updates.")
        parser.add_argument("--limit", type=int, metavar="N", help="Show at most N views.")
        parser.add_argument("--window", type=int, metavar="SECONDS", help="Look back this many seconds.")
        parser.add_argument("--once", action="store_true", help="Print one table and exit (scripts, CI).")

    def handle(self, *args: Any, **options: Any) -> None:
        interval: float = options["interval"]
        limit: int | None = options["limit"]
        window: int | None = options["window"]
        if interval < 0.1:
            raise CommandError("--interval must be at least 0.1 seconds.")
        if limit is not None and limit <= 0:
            raise CommandError("--limit must be a positive number.")
        if window is not None and window <= 0:
            raise CommandError("--window must be a positive number of seconds.")
        from rich.live import Live

        sort: str = options["sort"]
        console = make_console(self.stdout)  # the real stream: rich's in-place redraw needs its own newlines

        def frame(live: bool) -> Any:
            stats = dict(read_stats(window))  # never raises: "no data" with the reason instead
            with fail_open("drawing instrumented_top failed") as failed:  # nor does a frame: the next one may draw
                return render_top(stats, sort, limit, interval if live else None, console.width)
            return Text(f"no data: the stats could not be drawn ({type(failed.error).__name__})", style="bold red")

        if options["once"]:
            console.print(frame(False))
            return
        try:
            with Live(frame(True), console=console, auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(frame(True), refresh=True)
        except KeyboardInterrupt:
            console.print("[dim]stopped[/dim]")
