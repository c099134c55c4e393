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
        parser.add_argument(
            "--samples",
            action="store_true",
            help="With --view: its slowest requests of the window and their timelines (JSON with --json).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        window = options.get("window")
        if window is not None and window <= 0:
            raise CommandError("--window must be a positive number of seconds.")
        if options.get("samples"):
            self._samples(options)
            return
        document = read_stats(window, view=options.get("view"))
        stats = dict(document)
        if options["json"]:
            self.stdout.write(terminal_json(stats))
        else:
            from ...dashboard.terminal import make_console, render_findings, render_table, render_work

            console = make_console(self.stdout)
            console.print(render_table(stats, width=console.width))
            work = render_work(stats)
            if work is not None:
                console.print(work)
            if options.get("view"):  # one view: every finding the reader lists, with call sites and fixes
                for view in document["views"]:
                    console.print(render_findings(view))
        if stats.get("error"):
            # The document (with its "error") is printed all the same; the exit code tells scripts.
            raise CommandError(f"no data: {escape_controls(str(stats['error']))}")

    def _samples(self, options: dict[str, Any]) -> None:
        """``--view X --samples``: the view's slowest requests (the API's document), as JSON or a text timeline."""
        from ...dashboard.samples import read
        from ...dashboard.terminal import render_samples

        view = options.get("view")
        if not view:
            raise CommandError("--samples needs --view NAME.")
        found = read(view)
        if options["json"]:
            self.stdout.write(terminal_json(found))
        else:
            self.stdout.write(render_samples(found))
        if found.get("error"):
            raise CommandError(f"no data: {escape_controls(str(found['error']))}")
