"""Small inline SVG charts drawn on the server: no JavaScript library, no external file, CSP-safe.

Colours come from CSS classes (``dashboard.css``) so the admin's light and dark themes both apply;
every string that reaches the markup goes through ``format_html`` escaping.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 26


def _number(value: float, unit: str = "") -> str:
    """A short label: 3 significant digits, thousands as k."""
    if value >= 10_000:
        text = f"{value / 1000:.0f}k"
    elif value >= 100 or value == int(value):
        text = f"{value:.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def _f(value: float) -> str:
    """A coordinate for an SVG attribute (format_html escapes its arguments, so numbers go in as text)."""
    return f"{value:.1f}"


def _svg(label: str, body: SafeString, height: int = HEIGHT) -> SafeString:
    return format_html(
        '<svg class="ichart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}">'
        "<title>{}</title>{}</svg>",
        WIDTH,
        height,
        WIDTH,
        height,
        label,
        label,
        body,
    )


def bars(
    values: list[float],
    *,
    label: str,
    window_seconds: int,
    marks: list[float] | None = None,
    unit: str = "",
) -> SafeString:
    """A bar per time bucket, oldest left; ``marks`` (e.g. errors) are overlaid in the error colour."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = max(values, default=0) or 1
    slot = plot_w / max(len(values), 1)
    parts: list[SafeString] = []

    def bar(css_class: str, x: float, value: float, min_height: float, title: str) -> SafeString:
        h = max(plot_h * value / top_value, min_height)
        return format_html(
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            css_class,
            _f(x + 0.5),
            _f(TOP + plot_h - h),
            _f(max(slot - 1.5, 1.0)),
            _f(h),
            title,
        )

    for i, value in enumerate(values):
        x = LEFT + i * slot
        if value > 0:
            parts.append(bar("ichart-bar", x, value, 1.0, _number(value, unit)))
        mark = (marks or [])[i] if marks and i < len(marks) else 0
        if mark > 0:
            parts.append(bar("ichart-err", x, mark, 1.5, f"{_number(mark)} error(s)"))
    axis = format_html(
        '<line class="ichart-axis" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<line class="ichart-grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<text class="ichart-label" x="{}" y="{}" text-anchor="end">{}</text>'
        '<text class="ichart-label" x="{}" y="{}" text-anchor="end">0</text>'
        '<text class="ichart-label" x="{}" y="{}">\u2212{} s</text>'
        '<text class="ichart-label" x="{}" y="{}" text-anchor="end">now</text>',
        LEFT,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        LEFT,
        TOP,
        WIDTH - RIGHT,
        TOP,
        LEFT - 6,
        TOP + 4,
        _number(top_value if max(values, default=0) else 0, unit),
        LEFT - 6,
        TOP + plot_h + 4,
        LEFT,
        HEIGHT - 6,
        window_seconds,
        WIDTH - RIGHT,
        HEIGHT - 6,
    )
    return _svg(label, mark_safe(axis + "".join(parts)))  # every part was built by format_html


def latency_distribution(
    latency: dict[str, float],
    requests: int,
    histogram: list[dict[str, float]] | None = None,
    link: Callable[[float, float], str] | None = None,
) -> SafeString:
    """Where the requests' latencies fall, on a log axis, with the percentiles marked.

    With the reader's merged ``histogram`` (``read_stats(series=True)``), a bar per column of the axis
    counts the requests whose latency falls there. Without it, the bands are the quantile ranges: 50 %
    of requests up to p50, 45 % from p50 to p95, 4 % to p99, 1 % to the maximum, each band's area
    being its share of the requests. ``link(from_ms, to_ms)``, when given, makes each bar a link (the
    view's slowest requests in that range).
    """
    label = "latency distribution (log scale)"
    if requests <= 0 or latency["max"] <= 0:
        return _svg(
            label,
            format_html('<text class="ichart-label" x="{}" y="{}">no requests in the window</text>', LEFT, HEIGHT / 2),
        )
    p50 = max(latency["p50"], 0.001)
    p95 = max(latency["p95"], p50)
    p99 = max(latency["p99"], p95)
    top = max(latency["max"], p99)
    lo_exp = math.floor(math.log10(p50))
    if p50 < 1.5 * 10**lo_exp:
        lo_exp -= 1  # leave room left of p50 for the first band
    hi_exp = max(math.ceil(math.log10(top)), lo_exp + 1)
    head = 56  # four rows of percentile labels above the plot, so no two labels ever overlap
    height = HEIGHT + head - 12
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM - head

    def x_of(ms: float) -> float:
        return LEFT + plot_w * (math.log10(ms) - lo_exp) / (hi_exp - lo_exp)

    parts: list[SafeString] = []
    if histogram:
        parts.extend(_histogram_bars(histogram, lo_exp, hi_exp, x_of, TOP + head, plot_h, link))
    else:
        parts.extend(_quantile_bands(p50, p95, p99, top, lo_exp, hi_exp, x_of, TOP + head, plot_h))
    for exp in range(lo_exp, hi_exp + 1):
        ms = 10.0**exp
        parts.append(
            format_html(
                '<line class="ichart-grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
                '<text class="ichart-label" x="{}" y="{}" text-anchor="{}">{}</text>',
                _f(x_of(ms)),
                TOP + head,
                _f(x_of(ms)),
                TOP + head + plot_h,
                _f(x_of(ms)),
                height - 6,
                "end" if x_of(ms) > WIDTH - RIGHT - 20 else "middle",
                _number(ms / 1000, "s") if ms >= 1000 else _number(ms, "ms"),
            )
        )
    # Labels end at their marker (text to its left), placed rightmost marker first, each in the first row where it
    # ends left of that row's labels: a marker's line then only runs down past labels that end left of it, so no
    # line strikes through a label and no two labels overlap (issue 23: the labels collided on close percentiles).
    row_starts = [math.inf] * 4  # left edge of the leftmost label in each row
    for name, ms in sorted((("p50", p50), ("p95", p95), ("p99", p99), ("max", top)), key=lambda m: -x_of(m[1])):
        x = x_of(ms)
        text = f"{name} {_number(ms, 'ms')}"
        width = 6.8 * len(text)
        anchor, right = "end", x - 3
        if right - width < 2:  # no room left of the marker: the label runs right of it
            anchor, right = "start", x + 3 + width
        row = next((i for i, start in enumerate(row_starts) if right + 6 <= start), len(row_starts) - 1)
        row_starts[row] = min(row_starts[row], right - width)
        parts.append(
            format_html(
                '<line class="ichart-marker" x1="{}" y1="{}" x2="{}" y2="{}"/>'
                '<text class="ichart-marker-label" x="{}" y="{}" text-anchor="{}">{}</text>',
                _f(x),
                TOP + 2 + 13 * row,
                _f(x),
                TOP + head + plot_h,
                _f(x - 3 if anchor == "end" else x + 3),
                TOP + 10 + 13 * row,
                anchor,
                text,
            )
        )
    axis = format_html(
        '<line class="ichart-axis" x1="{}" y1="{}" x2="{}" y2="{}"/>',
        LEFT,
        TOP + head + plot_h,
        WIDTH - RIGHT,
        TOP + head + plot_h,
    )
    return _svg(label, mark_safe(axis + "".join(parts)), height)  # every part was built by format_html


def _histogram_bars(
    histogram: list[dict[str, float]],
    lo_exp: int,
    hi_exp: int,
    x_of: Any,
    base: float,
    plot_h: float,
    link: Callable[[float, float], str] | None = None,
) -> list[SafeString]:
    """The merged histogram's bins summed into 64 columns of the log axis.

    Each bar's title gives its range; latencies below the axis go into the first bar, whose title then
    says "< its upper bound" rather than claiming they start at the axis.
    """
    columns = 64
    counts = [0.0] * columns
    below_axis = 0.0
    for entry in histogram:
        ms, count = float(entry["le_ms"]), float(entry["count"])
        if ms <= 0 or count <= 0:
            continue
        position = (math.log10(ms) - lo_exp) / (hi_exp - lo_exp)
        if position < 0:
            below_axis += count
        counts[min(max(int(position * columns), 0), columns - 1)] += count
    peak = max(counts) or 1.0
    total = sum(counts) or 1.0
    column_w = (x_of(10.0**hi_exp) - x_of(10.0**lo_exp)) / columns
    parts: list[SafeString] = []
    for i, count in enumerate(counts):
        if not count:
            continue
        h = max(plot_h * count / peak, 1.5)
        start_ms = 10 ** (lo_exp + (hi_exp - lo_exp) * i / columns)
        end_ms = 10 ** (lo_exp + (hi_exp - lo_exp) * (i + 1) / columns)
        if i == 0 and below_axis:
            span = f"< {_number(end_ms, 'ms')}"
        else:
            span = f"{_number(start_ms)} to {_number(end_ms, 'ms')}"
        parts.append(
            format_html(
                '<rect class="ichart-bar" x="{}" y="{}" width="{}" height="{}">'
                "<title>{}: {} requests ({} %)</title></rect>",
                _f(x_of(10.0**lo_exp) + i * column_w + 0.5),
                _f(base + plot_h - h),
                _f(max(column_w - 1.0, 1.0)),
                _f(h),
                span,
                _number(count),
                _number(100 * count / total),
            )
        )
        if link is not None:  # the bar opens the slowest requests of its range (a bin's error, ±2 %, included)
            href = link(0.0 if i == 0 and below_axis else start_ms * 0.98, end_ms * 1.02)
            parts[-1] = format_html('<a class="ichart-link" href="{}">{}</a>', href, parts[-1])
    return parts


def _quantile_bands(
    p50: float, p95: float, p99: float, top: float, lo_exp: int, hi_exp: int, x_of: Any, base: float, plot_h: float
) -> list[SafeString]:
    """Bands between the percentiles, when no histogram is at hand."""
    min_width = 0.02 * (hi_exp - lo_exp)  # decades: a band of equal percentiles stays visible
    bands: list[tuple[float, float, float, str]] = []
    quantile_ranges = (
        (10.0**lo_exp, p50, 0.50, "≤ p50"),
        (p50, p95, 0.45, "p50\u2013p95"),
        (p95, p99, 0.04, "p95\u2013p99"),
        (p99, top, 0.01, "p99\u2013max"),
    )
    for start, end, share, name in quantile_ranges:
        a, b = math.log10(start), math.log10(max(end, start))
        if b - a < min_width:
            a, b = max(b - min_width, lo_exp), max(b, lo_exp + min_width)
        bands.append((a, b, share, name))
    densities = [share / (b - a) for a, b, share, _ in bands]
    peak = max(densities)
    parts: list[SafeString] = []
    for (a, b, share, name), density in zip(bands, densities, strict=True):
        h = max(plot_h * density / peak, 1.5)
        x1, x2 = x_of(10**a), x_of(10**b)
        parts.append(
            format_html(
                '<rect class="ichart-bar ichart-band{}" x="{}" y="{}" width="{}" height="{}">'
                "<title>{}: {} % of requests</title></rect>",
                " ichart-open" if name == quantile_ranges[0][3] else "",
                _f(x1),
                _f(base + plot_h - h),
                _f(max(x2 - x1, 1.0)),
                _f(h),
                name,
                _number(share * 100),
            )
        )
    return parts
