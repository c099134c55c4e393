"""``manage.py instrumented_querylog on|off|status|tail|digest|explain``: the proxy's query log from a terminal."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from instrumented.display import (
    count_of,
    duration_us,
    escape_controls,
    local_time,
    plain,
    pretty_sql,
    proxy_sql,
    zone_name,
)
from instrumented.plans import Plan, PlanNode
from instrumented.querylog import client as querylog


def sql_cell(sql: Any) -> Syntax:
    """Pretty SQL for a table cell, its control characters shown escaped (new lines kept)."""
    return Syntax(escape_controls(pretty_sql(str(sql or "")), keep_newlines=True), "sql", word_wrap=True,
                  background_color="default")  # fmt: skip


class Command(BaseCommand):
    """Turn the proxy's query log on/off and read its status, recent statements and digest."""

    help = "Control the MySQL proxy query log (PROXY LOG statements over the QUERYLOG_DATABASES aliases)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Sub-commands: on [--seconds N] | off | status | tail [-n N] | digest [-n N] | explain [N] | reset."""
        parser.add_argument("--database", default=None, help="one alias through a proxy (default: all configured)")
        sub = parser.add_subparsers(dest="action", required=True)
        on = sub.add_parser("on", help="log every statement for N seconds")
        on.add_argument("--seconds", type=int, default=None, help="how long (proxy default 300, capped by the proxy)")
        on.add_argument("--slow", type=float, default=None, metavar="MS", help="only statements slower than MS ms")
        on.add_argument("--user", default=None, help="only this database user's statements")
        on.add_argument("--db", default=None, help="only statements on this default database")
        on.add_argument("--errors", action="store_true", help="only failed statements (file and tail)")
        on.add_argument("--sample", type=float, default=None, help="only this fraction of statements, e.g. 0.1")
        sub.add_parser("off", help="stop logging now")
        sub.add_parser("status", help="on/off, seconds left, lines logged, log file")
        sub.add_parser("reset", help="clear recent statements and the digest")
        tail = sub.add_parser("tail", help="the most recent statements")
        tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
        tail.add_argument("--view", default=None, help="only statements this Django view sent")
        digest = sub.add_parser("digest", help="statements grouped by fingerprint, heaviest first")
        digest.add_argument("-n", type=int, default=20, help="how many (default 20)")
        digest.add_argument("--order", choices=querylog.ORDERS, default="sum", help="sort by (default sum)")
        digest.add_argument("--view", default=None, help="only statements this Django view sent")
        digest.add_argument("--host", default=None, help="only statements from this client host")
        explain = sub.add_parser("explain", help="the plan of a digest row's slowest statement (plain SELECTs only),"
                                 " on --database's proxy (default: the first alias's)")  # fmt: skip
        explain.add_argument("rank", nargs="?", type=int, default=None, help="the digest row (default 1: the heaviest)")
        explain.add_argument("--id", type=int, default=None, help="the digest row by its id (the digest's id column)")
        explain.add_argument("--json", action="store_true", help="the plan as the server gave it (JSON)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the action and print it with rich."""
        console = Console(file=self.stdout, no_color=bool(options.get("no_color")), highlight=False, soft_wrap=True,
                          width=None if self.stdout.isatty() else 160)  # fmt: skip
        using = options.get("database")
        action = options["action"]
        try:
            if action == "on":
                filters = {k: options.get(k) for k in ("user", "db", "sample")}
                status = querylog.log_on(options.get("seconds"), using=using, slow_ms=options.get("slow"),
                                         errors=bool(options.get("errors")), **filters)  # fmt: skip
                self._status(console, status)
            elif action == "off":
                self._status(console, querylog.log_off(using=using))
            elif action == "reset":
                self._status(console, querylog.reset(using=using))
            elif action == "status":
                self._status(console, querylog.status(using=using))
            elif action == "tail":
                self._tail(console, querylog.tail(options["n"], using=using, view=options.get("view")))
            elif action == "digest":
                rows = querylog.digest(options["n"], using=using, order=options["order"], view=options.get("view"),
                                       host=options.get("host"))  # fmt: skip
                self._digest(console, rows)
            elif action == "explain":
                self._explain(console, querylog.explain(options.get("rank"), digest_id=options.get("id"), using=using),
                              as_json=bool(options.get("json")))  # fmt: skip
        except querylog.QueryLogError as exc:
            raise CommandError(escape_controls(str(exc))) from exc

    def _status(self, console: Console, status: dict[str, Any]) -> None:
        """One line: on/off, time left, lines logged, file (the proxy's values shown escaped)."""
        on = status.get("logging") == "on"
        line = Text("query log ")
        line.append("on" if on else "off", style="bold green" if on else "bold")
        if on:
            line.append(f", {escape_controls(str(status.get('seconds_left')))} s left")
        if status.get("filters"):
            line.append(f" ({escape_controls(str(status.get('filters')))})")
        line.append(f"; {escape_controls(count_of(status.get('logged'), 'statement'))} logged to ")
        line.append(escape_controls(str(status.get("log_file"))))
        proxies = status.get("proxies") or []
        if len(proxies) > 1:
            line.append("; " + ", ".join(escape_controls(f"{p.get('alias')}: {p.get('logging')}") for p in proxies))
        console.print(line)

    def _tail(self, console: Console, rows: list[dict[str, Any]]) -> None:
        """Recent statements, oldest first, with pretty SQL."""
        if not rows:
            console.print("no statements logged (is logging on? PROXY LOG ON / instrumented_querylog on)")
            return
        table = Table(show_lines=True)
        for name in (f"at ({zone_name()})", "thread", "user@db", "view", "time", "rows", "status", "query"):
            table.add_column(name, overflow="fold")
        for row in rows:
            status = row.get("status")
            table.add_row(
                plain(local_time(row.get("ts"))),
                plain(row.get("thread_id") or ""),
                plain(f"{row.get('user') or ''}@{row.get('db') or ''}"),
                plain(row.get("view") or ""),
                duration_us(row.get("response_time_us")),
                plain(row.get("rows") if row.get("rows") is not None else ""),
                Text("error", style="red") if status == "error" else plain(status or ""),
                sql_cell(row.get("query")),
            )
        console.print(table)

    def _digest(self, console: Console, rows: list[dict[str, Any]]) -> None:
        """Fingerprints with count, total, average, p95 and max time, rows, errors and the views that sent them."""
        if not rows:
            console.print("digest is empty (statements are counted while logging is on)")
            return
        table = Table(show_lines=True)
        columns = ("id", "count", "total", "share", "load", "p50", "p95", "p99", "max", "rows", "errors", "statement",
                   "views")  # fmt: skip
        for name in columns:
            table.add_column(name, justify="left" if name in ("statement", "views") else "right", overflow="fold")
        for row in rows:
            table.add_row(
                plain(row.get("id") or ""),
                str(row.get("count") or 0),
                duration_us(row.get("sum_us")),
                f"{row.get('share_pct') or 0:.1f}%",
                f"{row.get('load') or 0:.3f}",
                duration_us(row.get("p50_us")),
                duration_us(row.get("p95_us")),
                duration_us(row.get("p99_us")),
                duration_us(row.get("max_us")),
                plain(row.get("rows_sent") or 0),
                plain(row.get("errors") or 0),
                sql_cell(proxy_sql(str(row.get("digest") or ""))),
                plain(row.get("views") or ""),
            )  # fmt: skip
        console.print(table)

    def _explain(self, console: Console, explained: dict[str, Any], as_json: bool = False) -> None:
        """The statement explained, then its plan as a tree (full scans in red), or the server's JSON."""
        head = Text(f"digest row {escape_controls(str(explained.get('id')))}")
        if explained.get("rank"):
            head.append(f" (rank {escape_controls(str(explained.get('rank')))})")
        head.append(f" on {escape_controls(str(explained.get('alias')))}")
        if explained.get("db"):
            head.append(f", schema {escape_controls(str(explained.get('db')))}")
        console.print(head)
        console.print(sql_cell(explained.get("statement")))
        if explained.get("note"):
            console.print(Text(escape_controls(str(explained["note"])), style="yellow"))
        plan = explained.get("plan")
        if as_json or plan is None:
            if plan is None:
                console.print(Text(f"the plan could not be read: {escape_controls(str(explained.get('plan_error')))}",
                                   style="red"))  # fmt: skip
            console.print(plain(explained.get("plan_json") or ""))
            return
        assert isinstance(plan, Plan)
        tree = Tree(self._node_label(plan.root))
        stack: list[tuple[Tree, PlanNode]] = [(tree, plan.root)]
        while stack:
            branch, node = stack.pop()
            for child in node.children:
                sub = branch.add(self._node_label(child))
                stack.append((sub, child))
        console.print(tree)
        scans = plan.full_scans()
        if scans:
            console.print(Text("full scans: " + ", ".join(escape_controls(str(t.table)) for t in scans), style="red"))

    @staticmethod
    def _node_label(node: PlanNode) -> Text:
        """One step of the plan, its control characters escaped; a full scan in red."""
        return Text(escape_controls(node.summary()), style="red" if node.full_scan else "")
