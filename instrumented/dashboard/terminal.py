"""Rich renderings of the reader's document, shared by the terminal commands."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..display import escape_controls, local_time, plain
from ..naming import REQUEST
from ..stats.document import FEW_SAMPLES, per_second, rate_seconds

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


#: Columns left out, in this order, until the longest view name fits whole in the terminal's width;
#: below WIDE_COLUMNS characters the first three always are.
DROP_ORDER = ("route", "p99", "q max", "max", "db", "p50", "q/req", "N+1")
NARROW_DROPS = frozenset(DROP_ORDER[:3])
WIDE_COLUMNS = 120
#: Widest the route column gets (cut with an ellipsis beyond).
ROUTE_MAX_WIDTH = 24
#: Width of the output when it is not a terminal (a pipe, a file) and COLUMNS is unset: whole view
#: names for scripts, the same for instrumented_stats and instrumented_top.
PIPE_WIDTH = 160


def make_console(out: Any) -> Console:
    """A rich Console writing straight to the stream under Django's OutputWrapper, if any.

    The wrapper adds a newline to every write that lacks one, which breaks rich's in-place redraw
    (every refresh of ``instrumented_top`` left its summary line behind). A terminal gets its own
    width; anything else COLUMNS, or PIPE_WIDTH.
    """
    stream = getattr(out, "_out", out)
    width = None if Console(file=stream).is_terminal or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(file=stream, width=width, soft_wrap=False)


def _fitting_columns(names: list[str], widths: dict[str, int], width: int | None) -> list[str]:
    """The columns to show in ``width`` characters: DROP_ORDER's left out until every one fits whole."""
    if width is None:
        return names
    if width < WIDE_COLUMNS:
        names = [name for name in names if name not in NARROW_DROPS]
    for name in [n for n in DROP_ORDER if n in names]:
        # a rich box table: one border per column and one more, two characters of padding per column
        if 1 + sum(widths[kept] + 3 for kept in names) <= width:
            break
        names.remove(name)
    return names


def is_request(view: dict[str, Any]) -> bool:
    """A request's view, not a command, task or ``record`` block (those are shown apart: :func:`render_work`)."""
    return view.get("kind", REQUEST) == REQUEST


def processes_text(stats: dict[str, Any]) -> str:
    """``3 live process(es), 5 in the window``: the workers now, and every process with data in the window."""
    live, total = stats.get("processes_live", 0), stats["processes"]
    return f"{live} live process(es)" + (f", {total} in the window" if total != live else "")


def _p95_cell(view: dict[str, Any], lat: dict[str, Any]) -> str:
    """p95, and the requests it rests on when they are few (FEW_SAMPLES): ``300.0 n=3``."""
    samples = lat.get("samples", FEW_SAMPLES)
    return f"{lat['p95']:.1f}" + (f" n={samples}" if samples < FEW_SAMPLES else "")


def render_table(
    stats: dict[str, Any], sort: str = "requests", limit: int | None = None, width: int | None = None
) -> Table:
    """A table of every view: requests, errors, latency percentiles (ms), queries, N+1 (names shown escaped).

    View names are never broken over lines: in a narrow ``width`` (80 columns) columns are left out in
    DROP_ORDER until the longest name fits; a name longer than even that is cut with an ellipsis.
    Commands and tasks are not in it (:func:`render_work`).
    """
    covered = stats.get("covered_seconds") or 0
    span = f" (data for {covered:.0f} s)" if 0 < covered < stats["window_seconds"] else ""
    title = f"django-instrumented — last {stats['window_seconds']} s{span}, {processes_text(stats)}, ms"
    caption = stats.get("error") or stats.get("note") or f"generated {local_time(stats['generated_at'])}"
    table = Table(title=title, caption=plain(caption))
    columns: list[tuple[str, Any]] = [
        ("view", lambda v, lat: plain(v["view"])),
        ("route", lambda v, lat: plain(v["route"])),
        ("req", lambda v, lat: str(v["requests"])),
        ("err", lambda v, lat: str(v["errors"])),
        ("p50", lambda v, lat: f"{lat['p50']:.1f}"),
        ("p95", _p95_cell),
        ("p99", lambda v, lat: f"{lat['p99']:.1f}"),
        ("max", lambda v, lat: f"{lat['max']:.1f}"),
        ("q/req", lambda v, lat: f"{v['queries']['mean']:.1f}"),
        ("q max", lambda v, lat: str(v["queries"]["max"])),
        ("db", lambda v, lat: f"{v['db_time_ms']:.1f}"),
        ("N+1", lambda v, lat: str(v["n_plus_one"]) + (f" w{v['writes_per_row']}" if v.get("writes_per_row") else "")),
    ]
    views = sorted(filter(is_request, stats["views"]), key=SORT_KEYS.get(sort, SORT_KEYS["requests"]), reverse=True)
    if limit is not None:
        views = views[:limit]
    cells = [[cell(v, v["latency_ms"]) for _, cell in columns] for v in views]
    widths = {name: max([len(name), *(len(row[i]) for row in cells)]) for i, (name, _) in enumerate(columns)}
    widths["route"] = min(widths["route"], ROUTE_MAX_WIDTH)
    names = _fitting_columns([name for name, _ in columns], widths, width)
    index = {name: i for i, (name, _) in enumerate(columns)}
    for name in names:
        if name == "view":
            table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=min(widths["view"], 16))
        elif name == "route":
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=ROUTE_MAX_WIDTH)
        else:
            table.add_column(name, justify="right", no_wrap=True)
    worst_p95 = max((v["latency_ms"]["p95"] for v in views), default=0.0)
    for v, row in zip(views, cells, strict=True):
        lat = v["latency_ms"]
        style = ""
        if v["errors"]:
            style = "red"
        elif v["n_plus_one"] or (worst_p95 and lat["p95"] == worst_p95 and len(views) > 1):
            style = "yellow"
        table.add_row(*(row[index[name]] for name in names), style=style)
    if not views:
        table.add_row("(no data)", *[""] * (len(names) - 1))
    return table


def render_work(stats: dict[str, Any]) -> Table | None:
    """Commands, tasks and ``record`` blocks, apart from the views (never a view's worst p95); None without any."""
    work = sorted((v for v in stats["views"] if not is_request(v)), key=lambda v: (-v["requests"], v["view"]))
    if not work:
        return None
    table = Table(title="commands and tasks, ms")
    table.add_column("name", no_wrap=True, overflow="ellipsis")
    for name in ("runs", "err", "p50", "p95", "max", "q/run", "db"):
        table.add_column(name, justify="right", no_wrap=True)
    for v in work:
        lat = v["latency_ms"]
        cells = [f"{lat['p50']:.1f}", f"{lat['p95']:.1f}", f"{lat['max']:.1f}", f"{v['queries']['mean']:.1f}"]
        table.add_row(
            plain(v["view"]), str(v["requests"]), str(v["errors"]), *cells, f"{v['db_time_ms']:.1f}",
            style="red" if v["errors"] else "",
        )  # fmt: skip
    return table


def render_findings(view: dict[str, Any]) -> Text:
    """One view's N+1 suspects and writes per row, every one the reader lists, each with its call sites and fix,
    and how many more there are (``instrumented_stats --view``)."""
    out = Text()
    out.append(f"{escape_controls(view['view'])}: ", style="bold")
    out.append(f"N+1 in {view['n_plus_one']} request(s), {view.get('n_plus_one_runs', 0)} run(s)")
    out.append(f" · writes per row in {view.get('writes_per_row', 0)} request(s)")
    out.append(f" · {view.get('duplicates', 0)} exact duplicate(s)\n")
    for label, key, style in (("N+1", "n_plus_one_suspects", "red"), ("writes per row", "write_suspects", "yellow")):
        for found in view.get(key, ()):
            out.append(f"{label}", style=f"bold {style}")
            out.append(f" in {found['requests']} request(s), {found['count']} runs: {escape_controls(found['sql'])}\n")
            if found.get("hint") and key == "write_suspects":
                model = f"{found['hint_model']}.objects." if found.get("hint_model") else ""
                out.append(f"  fix: one {escape_controls(model + found['hint'])}\n")
            for site in found["call_sites"]:
                out.append(f"  at {escape_controls(site['site'])} ({site['requests']} request(s))")
                if site.get("hint"):
                    out.append(f", fix: add .{escape_controls(site['hint'])}")
                    if site.get("hint_model"):
                        out.append(f" to the {escape_controls(site['hint_model'])} queryset")
                out.append("\n")
        more = view.get(f"{key}_more", 0)
        if more:
            out.append(f"and {more} more {label} suspect(s)\n", style=style)
    unlisted = view.get("n_plus_one_unlisted_runs", 0)
    if unlisted:
        out.append(f"{unlisted} more N+1 run(s) in templates not kept by the processes\n", style="red")
    return out


def render_summary(stats: dict[str, Any]) -> Text:
    """One line over the site's requests: traffic, errors, and the worst views by p95 and by errors (commands
    and tasks are not views: they never take these headlines)."""
    views = [v for v in stats["views"] if is_request(v)]
    requests = sum(v["requests"] for v in views)
    errors = sum(v["errors"] for v in views)
    span = rate_seconds(stats)
    line = Text()
    line.append(f"{len(views)} view(s) · {requests} requests ({per_second(requests, span):.2f}/s) · ")
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
    work = render_work(stats)
    if work is None:
        return Group(render_summary(stats), render_table(stats, sort, limit, width), Text(hint, style="dim"))
    return Group(render_summary(stats), render_table(stats, sort, limit, width), work, Text(hint, style="dim"))


def render_samples(found: dict[str, Any]) -> str:
    """A view's slowest requests as plain text: one line per request, then its timeline (``--samples``)."""
    lines = [f"Slowest requests of {found['view']}, last {found['window_seconds']} s"]
    if found.get("note"):
        lines.append(f"  ({found['note']})")
    for sample in found["samples"]:
        lines.append("")
        error = f" error {sample['error_reference']}" if sample["error_reference"] else ""
        lines.append(
            f"{sample['duration_ms']:.1f} ms {sample['method']} {sample['status']} at {sample['start']} "
            f"{sample['user']}, {sample['queries']} queries ({sample['db_time_ms']:.1f} ms){error}"
        )
        for event in sample["timeline"]:
            what = {
                "sql": lambda e: (
                    f"{e['alias']}: {e['sql']}"
                    + (" [N+1]" if e["n_plus_one"] else "")
                    + (" [duplicate]" if e["duplicate"] else "")
                ),
                "cache": lambda e: f"cache {e['alias']} {e['call']}",
                "http": lambda e: f"HTTP {e['origin']}" + (" [error]" if e["error"] else ""),
                "template": lambda e: "  " * e["depth"] + f"template {e['name']}",
            }[event["kind"]](event)
            lines.append(f"  +{event['offset_ms']:9.2f} ms {event['duration_ms']:9.2f} ms  {what}")
        if sample["truncated"]:
            cut = ", ".join(f"{n} {kind}" for kind, n in sample["cut"].items() if n)
            lines.append(f"  ... not shown: {cut}")
    if not found["samples"]:
        lines.append("No sampled request in the window.")
    return escape_controls("\n".join(lines), keep_newlines=True) + "\n"
