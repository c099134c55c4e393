"""``manage.py instrumented_stats``: the merged last-window stats, as JSON or a table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...display import escape_controls, terminal_json
from ...stats.reader import read_stats


class Command(BaseCommand):
    help = "Print per-view stats of the last window, merged across every process and server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the reader's JSON document.")
        parser.add_argument(
            "--window", type=int, metavar="SECONDS", help="Look back this many seconds (at most the window)."
        )
        parser.add_argument("--view", help="Only this view name.")

    def handle(self, *args: Any, **options: Any) -> None:
        window = options.get("window")
        if window is not None and window <= 0:
            raise CommandError("--window must be a positive number of seconds.")
        stats = dict(read_stats(window, view=options.get("view")))
        if options["json"]:
            self.stdout.write(terminal_json(stats))
        else:
            from ...dashboard.terminal import make_console, render_table, render_work

            console = make_console(self.stdout)
            console.print(render_table(stats, width=console.width))
            work = render_work(stats)
            if work is not None:
                console.print(work)
        if stats.get("error"):
            # The document (with its "error") is printed all the same; the exit code tells scripts.
            raise CommandError(f"no data: {escape_controls(str(stats['error']))}")
