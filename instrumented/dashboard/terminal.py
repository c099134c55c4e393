"""Rich renderings of the reader's document, shared by the terminal commands."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..display import escape_controls, local_time, plain

#: Sort keys accepted by the terminal commands, mapped to a function of one view dict.
SORT_KEYS: dict[str, Any] = {
    "requests": lambda v: v["requests"],
    "errors": lambda v: v["errors"],
    "p50": lambda v: v["latency_ms"]["p50"],
    "p95": lambda v: v["latency_ms"]["p95"],
    "p99": lambda v: v["latency_ms"]["p99"],
    "max": lambda v: v["latency_ms"]["max"],
    "queries": lambda v: v["queries"]["mean"],
    "db": lambda v: v["db_time_ms"],
    "n1": lambda v: v["n_plus_one"],
}


#: Columns left out when the terminal is narrower than WIDE_COLUMNS characters.
NARROW_DROPS = frozenset({"route", "p99", "q max"})
WIDE_COLUMNS = 120


def render_table(
    stats: dict[str, Any], sort: str = "requests", limit: int | None = None, width: int | None = None
) -> Table:
    """A table of every view: requests, errors, latency percentiles (ms), queries, N+1 (names shown escaped).

    Below ``WIDE_COLUMNS`` characters of ``width`` the route, p99 and max-queries columns are left out,
    so the view names stay readable in an 80-column terminal.
    """
    title = f"django-instrumented — last {stats['window_seconds']} s, {stats['processes']} process(es), ms"
    caption = stats.get("error") or stats.get("note") or f"generated {local_time(stats['generated_at'])}"
    table = Table(title=title, caption=plain(caption))
    narrow = width is not None and width < WIDE_COLUMNS
    columns: list[tuple[str, Any]] = [
        ("view", lambda v, lat: plain(v["view"])),
        ("route", lambda v, lat: plain(v["route"])),
        ("req", lambda v, lat: str(v["requests"])),
        ("err", lambda v, lat: str(v["errors"])),
        ("p50", lambda v, lat: f"{lat['p50']:.1f}"),
        ("p95", lambda v, lat: f"{lat['p95']:.1f}"),
        ("p99", lambda v, lat: f"{lat['p99']:.1f}"),
        ("max", lambda v, lat: f"{lat['max']:.1f}"),
        ("q/req", lambda v, lat: f"{v['queries']['mean']:.1f}"),
        ("q max", lambda v, lat: str(v["queries"]["max"])),
        ("db", lambda v, lat: f"{v['db_time_ms']:.1f}"),
        ("N+1", lambda v, lat: str(v["n_plus_one"])),
    ]
    if narrow:
        columns = [c for c in columns if c[0] not in NARROW_DROPS]
    for name, _ in columns:
        if name == "view":
            table.add_column(name, overflow="fold", min_width=16, ratio=3)
        elif name == "route":
            table.add_column(name, overflow="ellipsis", max_width=24, ratio=1)
        else:
            table.add_column(name, justify="right", no_wrap=True)
    views = sorted(stats["views"], key=SORT_KEYS.get(sort, SORT_KEYS["requests"]), reverse=True)
    if limit is not None:
        views = views[:limit]
    worst_p95 = max((v["latency_ms"]["p95"] for v in views), default=0.0)
    for v in views:
        lat = v["latency_ms"]
        style = ""
        if v["errors"]:
            style = "red"
        elif v["n_plus_one"] or (worst_p95 and lat["p95"] == worst_p95 and len(views) > 1):
            style = "yellow"
        table.add_row(*(cell(v, lat) for _, cell in columns), style=style)
    if not views:
        table.add_row("(no data)", *[""] * (len(columns) - 1))
    return table


def render_summary(stats: dict[str, Any]) -> Text:
    """One line over the whole site: traffic, errors, and the worst views by p95 and by errors."""
    views = stats["views"]
    requests = sum(v["requests"] for v in views)
    errors = sum(v["errors"] for v in views)
    window = max(int(stats["window_seconds"]), 1)
    line = Text()
    line.append(f"{len(views)} view(s) · {requests} requests ({requests / window:.2f}/s) · ")
    line.append(f"{errors} error(s)", style="bold red" if errors else "")
    if requests:
        line.append(f" ({100.0 * errors / requests:.1f} %)")
    slowest = max(views, key=lambda v: v["latency_ms"]["p95"], default=None)
    if slowest is not None and slowest["requests"]:
        line.append(" · slowest p95: ")
        line.append(f"{escape_controls(slowest['view'])} {slowest['latency_ms']['p95']:.1f} ms", style="bold yellow")
    failing = max(views, key=lambda v: v["errors"], default=None)
    if failing is not None and failing["errors"]:
        line.append(" · most errors: ")
        line.append(f"{escape_controls(failing['view'])} ({failing['errors']})", style="bold red")
    if stats.get("error"):
        line.append(f"\nno data: {escape_controls(str(stats['error']))}", style="bold red")
    if stats.get("note"):
        line.append(f"\nincomplete: {escape_controls(str(stats['note']))}", style="yellow")
    return line


def render_top(
    stats: dict[str, Any],
    sort: str = "requests",
    limit: int | None = None,
    interval: float | None = None,
    width: int | None = None,
) -> Group:
    """What ``instrumented_top`` draws each tick: the summary line, the table, and how to drive it."""
    hint = f"sorted by {sort}"
    if interval is not None:
        hint += f" · refreshing every {interval:g} s · Ctrl-C to quit"
    return Group(render_summary(stats), render_table(stats, sort, limit, width), Text(hint, style="dim"))
