"""A stored call tree drawn on the server: an icicle flame graph (inline SVG) and a collapsible call tree.

No script and no style attribute (the page CSP forbids both): colours are CSS classes, each box's
details are its SVG ``<title>``, the tree is nested ``<details>``. Every string from the profile (function
and file names come from the profiled code, memcached is not trusted) goes through ``format_html``.
"""

from __future__ import annotations

import sys
import sysconfig
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 1200
ROW = 18
#: Boxes narrower than this (pixels) are not drawn; labels need this many pixels per character.
MIN_WIDTH = 0.8
CHAR_WIDTH = 6.6
#: Deepest row drawn, and nodes shown in the call tree (the heaviest paths first).
MAX_DEPTH = 120
TREE_MIN_SHARE = 0.005


def _prefixes() -> list[str]:
    paths = sysconfig.get_paths()
    found = {paths.get("purelib", ""), paths.get("platlib", ""), paths.get("stdlib", ""), sys.prefix}
    return sorted((p.rstrip("/") + "/" for p in found if p), key=len, reverse=True)


_PREFIXES = _prefixes()


def short_path(path: str) -> str:
    """A file path without the interpreter's or virtualenv's prefix (``django/db/models/query.py``)."""
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def kind(path: str) -> str:
    """The box's colour class: the site's own code, a library, the standard library, or synthetic."""
    if not path:
        return "pf-syn"
    paths = sysconfig.get_paths()
    if "site-packages" in path or "dist-packages" in path:
        return "pf-lib"
    if path.startswith(paths.get("stdlib", "\0")) or path.startswith("<"):
        return "pf-std"
    return "pf-app"


def where(frame: list[Any]) -> str:
    """``file:line`` of a frame (empty for synthetic ones)."""
    return f"{short_path(frame[1])}:{frame[2]}" if frame[1] else ""


def _children(nodes: list[list[int]]) -> list[list[int]]:
    children: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes[1:], 1):
        children[node[1]].append(i)
    for kids in children:
        kids.sort(key=lambda i: -nodes[i][2])
    return children


def icicle(tree: dict[str, Any]) -> SafeString:
    """The flame graph, root on top, each box as wide as its time, the heaviest child leftmost."""
    nodes, frames = tree["nodes"], tree["frames"]
    whole = nodes[0][2] or 1
    children = _children(nodes)
    scale = WIDTH / whole
    boxes: list[SafeString] = []
    depth_max = 0
    stack = [(0, 0.0, 0)]
    while stack:
        i, x, depth = stack.pop()
        fi, _parent, total, own = nodes[i]
        width = total * scale
        if width < MIN_WIDTH or depth > MAX_DEPTH:
            continue
        depth_max = max(depth_max, depth)
        frame = frames[fi]
        name = frame[0]
        chars = int((width - 6) / CHAR_WIDTH)
        label = name if len(name) <= chars else (name[: chars - 1] + "…" if chars > 2 else "")
        title = f"{name}  {where(frame)}\n{total / 1000:.1f} ms ({100 * total / whole:.1f} %), self {own / 1000:.1f} ms"
        boxes.append(
            format_html(
                '<g class="{}"><title>{}</title><rect x="{}" y="{}" width="{}" height="{}"></rect>'
                '<text x="{}" y="{}">{}</text></g>',
                kind(frame[1]),
                title,
                f"{x:.2f}",
                depth * ROW,
                f"{max(width - 0.5, 0.5):.2f}",
                ROW - 1,
                f"{x + 3:.2f}",
                depth * ROW + 13,
                label,
            )
        )
        offset = x
        for child in children[i]:
            stack.append((child, offset, depth + 1))
            offset += nodes[child][2] * scale
    height = (depth_max + 1) * ROW
    body = mark_safe("".join(boxes))
    return format_html(
        '<svg class="pf-icicle" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="Flame graph (icicle): each box is a function, as wide as its time; its callees below it">'
        "{}</svg>",
        WIDTH,
        height,
        WIDTH,
        height,
        body,
    )


def call_tree(tree: dict[str, Any]) -> SafeString:
    """Nested ``<details>``: total and own time per call path, the heaviest first; tiny paths left out."""
    nodes, frames = tree["nodes"], tree["frames"]
    whole = nodes[0][2] or 1
    children = _children(nodes)
    parts: list[str] = []
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:
        i, closing = stack.pop()
        if closing:
            parts.append("</details>")
            continue
        fi, _parent, total, own = nodes[i]
        frame = frames[fi]
        kids = [c for c in children[i] if nodes[c][2] / whole >= TREE_MIN_SHARE]
        opened = " open" if total / whole >= 0.05 else ""
        parts.append(
            format_html(
                '<details class="pf-node"{}><summary><span class="pf-ms">{} ms</span> <span class="pf-pc">{} %</span> '
                '<span class="pf-self">self {} ms</span> <code class="{}">{}</code> <span class="pf-where">{}</span>'
                "</summary>",
                mark_safe(opened),
                f"{total / 1000:.1f}",
                f"{100 * total / whole:.1f}",
                f"{own / 1000:.1f}",
                kind(frame[1]),
                frame[0],
                where(frame),
            )
        )
        stack.append((i, True))
        stack.extend((c, False) for c in reversed(kids))
    return mark_safe("".join(parts))


def text_tree(tree: dict[str, Any], min_share: float = 0.01, width: int = 100) -> str:
    """The call tree as indented text (the management command prints it)."""
    nodes, frames = tree["nodes"], tree["frames"]
    whole = nodes[0][2] or 1
    children = _children(nodes)
    lines: list[str] = []
    stack = [(0, 0)]
    while stack:
        i, depth = stack.pop()
        fi, _parent, total, _own = nodes[i]
        if total / whole < min_share:
            continue
        frame = frames[fi]
        text = f"{'  ' * depth}{total / 1000:9.1f} ms {100 * total / whole:5.1f} %  {frame[0]}  {where(frame)}"
        lines.append(text[: width + 2 * depth])
        stack.extend((c, depth + 1) for c in reversed(children[i]))
    return "\n".join(lines)


def rows(items: list[dict[str, Any]]) -> SafeString:
    """Table rows of the hot functions."""
    row = (
        '<tr><td>{}</td><td>{}</td><td class="instr-left"><code class="{}">{}</code> '
        '<span class="pf-where">{}</span></td></tr>'
    )
    cells = (
        (
            f"{r['self_ms']:.1f}",
            f"{100 * r['share']:.1f} %",
            kind(r["file"]),
            r["function"],
            where([0, r["file"], r["line"]]),
        )
        for r in items
    )
    return format_html_join("", row, cells)
