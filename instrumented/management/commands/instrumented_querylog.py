"""``manage.py instrumented_querylog on|off|status|tail|digest``: the proxy's query log from a terminal."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from instrumented.display import duration_us, escape_controls, plain, pretty_sql
from instrumented.querylog import client as querylog


def sql_cell(sql: Any) -> Syntax:
    """Pretty SQL for a table cell, its control characters shown escaped (new lines kept)."""
    return Syntax(escape_controls(pretty_sql(str(sql or "")), keep_newlines=True), "sql", word_wrap=True,
                  background_color="default")  # fmt: skip


class Command(BaseCommand):
    """Turn the proxy's query log on/off and read its status, recent statements and digest."""

    help = "Control the MySQL proxy query log (PROXY LOG statements over the QUERYLOG_DATABASE alias)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Sub-commands: on [--seconds N] | off | status | tail [-n N] | digest [-n N] | reset."""
        parser.add_argument("--database", default=None, help="database alias through the proxy (default: setting)")
        sub = parser.add_subparsers(dest="action", required=True)
        on = sub.add_parser("on", help="log every statement for N seconds")
        on.add_argument("--seconds", type=int, default=None, help="how long (proxy default 300, capped by the proxy)")
        sub.add_parser("off", help="stop logging now")
        sub.add_parser("status", help="on/off, seconds left, lines logged, log file")
        sub.add_parser("reset", help="clear recent statements and the digest")
        tail = sub.add_parser("tail", help="the most recent statements")
        tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
        digest = sub.add_parser("digest", help="statements grouped by fingerprint, heaviest first")
        digest.add_argument("-n", type=int, default=20, help="how many (default 20)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the action and print it with rich."""
        console = Console(file=self.stdout, no_color=bool(options.get("no_color")), highlight=False, soft_wrap=True,
                          width=None if self.stdout.isatty() else 160)  # fmt: skip
        using = options.get("database")
        action = options["action"]
        try:
            if action == "on":
                self._status(console, querylog.log_on(options.get("seconds"), using=using))
            elif action == "off":
                self._status(console, querylog.log_off(using=using))
            elif action == "reset":
                self._status(console, querylog.reset(using=using))
            elif action == "status":
                self._status(console, querylog.status(using=using))
            elif action == "tail":
                self._tail(console, querylog.tail(options["n"], using=using))
            elif action == "digest":
                self._digest(console, querylog.digest(options["n"], using=using))
        except querylog.QueryLogError as exc:
            raise CommandError(escape_controls(str(exc))) from exc

    def _status(self, console: Console, status: dict[str, Any]) -> None:
        """One line: on/off, time left, lines logged, file (the proxy's values shown escaped)."""
        on = status.get("logging") == "on"
        line = Text("query log ")
        line.append("on" if on else "off", style="bold green" if on else "bold")
        if on:
            line.append(f", {escape_controls(str(status.get('seconds_left')))} s left")
        line.append(f"; {escape_controls(str(status.get('logged')))} statements logged to ")
        line.append(escape_controls(str(status.get("log_file"))))
        console.print(line)

    def _tail(self, console: Console, rows: list[dict[str, Any]]) -> None:
        """Recent statements, oldest first, with pretty SQL."""
        if not rows:
            console.print("no statements logged (is logging on? PROXY LOG ON / instrumented_querylog on)")
            return
        table = Table(show_lines=True)
        for name in ("ts", "thread", "user@db", "time", "rows", "status", "query"):
            table.add_column(name, overflow="fold")
        for row in rows:
            status = row.get("status")
            table.add_row(
                plain(row.get("ts") or ""),
                plain(row.get("thread_id") or ""),
                plain(f"{row.get('user') or ''}@{row.get('db') or ''}"),
                duration_us(row.get("response_time_us")),
                plain(row.get("rows") if row.get("rows") is not None else ""),
                Text("error", style="red") if status == "error" else plain(status or ""),
                sql_cell(row.get("query")),
            )
        console.print(table)

    def _digest(self, console: Console, rows: list[dict[str, Any]]) -> None:
        """Fingerprints with count, total, average and max time, rows."""
        if not rows:
            console.print("digest is empty (statements are counted while logging is on)")
            return
        table = Table(show_lines=True)
        for name, justify in (("count", "right"), ("total", "right"), ("avg", "right"), ("max", "right"),
                              ("rows", "right"), ("statement", "left")):  # fmt: skip
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for row in rows:
            count = row.get("count") or 0
            total = row.get("total_us") or 0
            table.add_row(
                str(count),
                duration_us(total),
                duration_us(total / count if count else 0),
                duration_us(row.get("max_us")),
                plain(row.get("rows") or 0),
                sql_cell(row.get("digest")),
            )  # fmt: skip
        console.print(table)
