"""One slow request's timeline as an inline SVG waterfall, drawn on the server (no script, CSP-safe).

SQL, cache, HTTP and template bars share one time axis (the request's duration); consecutive runs of
one N+1 statement are one row of bars; each bar's ``<title>`` (shown on hover) holds the full SQL, its
offset and duration and the call site. Every string goes through ``format_html`` escaping: a sample's
text (SQL, names) comes from memcached and is untrusted.
"""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 960
LABEL = 330
RIGHT = 16
ROW = 15
AXIS = 22
#: Rows drawn at most (a sample holds at most a few hundred events; grouped N+1 runs are one row).
MAX_ROWS = 400
_CLASS = {"sql": "iwf-sql", "cache": "iwf-cache", "http": "iwf-http", "template": "iwf-template"}


def _f(value: float) -> str:
    return f"{value:.1f}"


def _tick(ms: float) -> str:
    """An axis label: ``0 ms``, ``336 ms``, ``1.34 s``."""
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def _label(event: dict[str, Any]) -> str:
    kind = event["kind"]
    if kind == "sql":
        return f"{event['alias']}: {event['sql']}"
    if kind == "cache":
        return f"cache {event['alias']}: {event['call']}".rstrip(": ")
    if kind == "http":
        return f"HTTP {event['origin']}{' (error)' if event['error'] else ''}"
    return f"{'  ' * min(int(event.get('depth') or 0), 8)}template {event['name']}"


def _title(event: dict[str, Any], runs: int = 1) -> str:
    """What hovering a bar shows: timing, the whole label, marks and the call site."""
    parts = [f"at {event['offset_ms']:.2f} ms, {event['duration_ms']:.2f} ms"]
    if runs > 1:
        parts.append(f"N+1: {runs} runs in a row")
    elif event.get("n_plus_one"):
        parts.append("N+1")
    if event.get("duplicate"):
        parts.append("exact duplicate")
    text = " · ".join(parts) + "\n" + _label(event).strip()
    site = event.get("call_site")
    if site and site.get("site"):
        text += f"\nfrom {site['site']}"
    return text


def rows(timeline: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(first event, its events) per row: consecutive runs of one N+1 statement share a row."""
    found: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for event in timeline:
        if found and event["kind"] == "sql" and event.get("n_plus_one"):
            first, group = found[-1]
            if first["kind"] == "sql" and first.get("n_plus_one") and first["sql"] == event["sql"]:
                group.append(event)
                continue
        found.append((event, [event]))
    return found[:MAX_ROWS]


def waterfall(sample: dict[str, Any]) -> SafeString:
    """The SVG of one sample (``samples.describe``'s form)."""
    total = max(float(sample["duration_ms"]), 0.001)
    grouped = rows(sample["timeline"])
    plot = WIDTH - LABEL - RIGHT
    height = AXIS + ROW * max(len(grouped), 1) + 4

    def x_of(ms: float) -> float:
        return LABEL + plot * min(max(ms, 0.0), total) / total

    parts: list[SafeString] = []
    for tick in range(5):
        ms = total * tick / 4
        parts.append(
            format_html(
                '<line class="iwf-grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>'
                '<text class="iwf-axis" x="{}" y="12" text-anchor="middle">{}</text>',
                _f(x_of(ms)),
                _f(x_of(ms)),
                AXIS - 6,
                height,
                _f(min(max(x_of(ms), LABEL + 12), WIDTH - RIGHT - 12)),
                _tick(ms),
            )
        )
    for i, (first, group) in enumerate(grouped):
        y = AXIS + i * ROW
        css = _CLASS.get(first["kind"], "iwf-sql")
        if first.get("n_plus_one"):
            css += " iwf-n1"
        if any(e.get("duplicate") for e in group):
            css += " iwf-dup"
        label = _label(first)
        if len(group) > 1:
            label = f"{len(group)}\N{MULTIPLICATION SIGN} {label}"
        title = _title(first, len(group))
        bars = format_html_join(
            "",
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            (
                (
                    css,
                    _f(x_of(e["offset_ms"])),
                    y + 2,
                    _f(max(x_of(e["offset_ms"] + e["duration_ms"]) - x_of(e["offset_ms"]), 1.0)),
                    ROW - 4,
                    _title(e) if len(group) == 1 else title,
                )
                for e in group
            ),
        )
        parts.append(
            format_html(
                '<g class="iwf-row"><text class="iwf-label" x="4" y="{}">{}<title>{}</title></text>{}</g>',
                y + ROW - 4,
                label if len(label) <= 52 else label[:51] + "…",
                title,
                bars,
            )
        )
    label = f"Timeline of a {total:.1f} ms request: {len(sample['timeline'])} events"
    return format_html(
        '<svg class="iwf" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}">{}</svg>',
        WIDTH,
        height,
        WIDTH,
        height,
        label,
        mark_safe("".join(parts)),
    )
