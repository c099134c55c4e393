"""A profile's call tree as stored: a frame table and pre-ordered nodes; building, checking, merging, exporting.

Stored shape (JSON, in memcached): ``frames`` is ``[[function, file, line], ...]`` (``line`` is where the
function starts, so one function is one frame wherever it was called from), ``nodes`` is
``[[frame, parent, total_us, self_us], ...]`` in pre-order (a parent comes before its children), node 0 the
root. Everything read back from memcached is untrusted: :func:`check_tree` refuses a value whose indexes,
order or times do not add up, before anything of it is shown or merged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

#: A frame: (function, file, first line of the function).
Frame = tuple[str, str, int]
#: The synthetic root of every tree, and the leaf of time a coroutine spent awaiting.
ROOT: Frame = ("(request)", "", 0)
AWAIT: Frame = ("(await)", "", 0)
#: Largest time one node may claim (a day, in microseconds) and the longest strings kept.
MAX_US = 86_400 * 1_000_000
MAX_TEXT = 300


class Node:
    """One call path's time while a tree is built (children keyed by frame)."""

    __slots__ = ("children", "frame", "self_us", "total_us")

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.total_us = 0
        self.self_us = 0
        self.children: dict[Frame, Node] = {}

    def child(self, frame: Frame) -> Node:
        node = self.children.get(frame)
        if node is None:
            node = self.children[frame] = Node(frame)
        return node


def add_stack(root: Node, stack: Iterable[Frame], us: int) -> None:
    """Add ``us`` microseconds to every node of ``stack`` (outermost first) and to its leaf's own time."""
    node = root
    node.total_us += us
    for frame in stack:
        node = node.child(frame)
        node.total_us += us
    node.self_us += us


def encode(root: Node, max_nodes: int) -> dict[str, Any]:
    """The stored form of a built tree with its heaviest ``max_nodes`` (a cut subtree's time stays in its parent)."""
    kept = _heaviest(root, max_nodes)
    frames: list[list[Any]] = []
    index: dict[Frame, int] = {}
    nodes: list[list[int]] = []
    stack: list[tuple[Node, int]] = [(root, -1)]
    while stack:
        node, parent = stack.pop()
        frame = node.frame
        fi = index.get(frame)
        if fi is None:
            fi = index[frame] = len(frames)
            frames.append([frame[0][:MAX_TEXT], frame[1][:MAX_TEXT], int(frame[2])])
        me = len(nodes)
        children = [c for c in node.children.values() if id(c) in kept]
        dropped = sum(c.total_us for c in node.children.values() if id(c) not in kept)
        nodes.append([fi, parent, min(node.total_us, MAX_US), min(node.self_us + dropped, MAX_US)])
        for child in sorted(children, key=lambda c: c.total_us):  # popped heaviest first
            stack.append((child, me))
    return {"frames": frames, "nodes": nodes}


def _heaviest(root: Node, max_nodes: int) -> set[int]:
    """Ids of the nodes kept: the root and, breadth-first by weight, the heaviest until ``max_nodes``."""
    everything: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        everything.append(node)
        stack.extend(node.children.values())
    if len(everything) <= max_nodes:
        return {id(n) for n in everything}
    # A node is kept only with its parent: the heaviest nodes form a connected tree, as totals only shrink downwards.
    everything.sort(key=lambda n: -n.total_us)
    return {id(n) for n in everything[:max_nodes]} | {id(root)}


def decode(tree: dict[str, Any]) -> Node:
    """A checked stored tree back as nodes (for merging)."""
    frames = [(f[0], f[1], f[2]) for f in tree["frames"]]
    built: list[Node] = []
    for fi, parent, total, own in tree["nodes"]:
        node = Node(frames[fi])
        node.total_us, node.self_us = total, own
        if parent >= 0:
            existing = built[parent].children.get(node.frame)
            if existing is not None:  # the same frame twice under one parent: add up
                existing.total_us += total
                existing.self_us += own
                node = existing
            else:
                built[parent].children[node.frame] = node
        built.append(node)
    return built[0]


def merge(trees: Sequence[dict[str, Any]], max_nodes: int) -> dict[str, Any]:
    """Several checked trees as one: the same call path (function, file and line at each level) adds up."""
    root = Node(ROOT)
    for tree in trees:
        _merge_into(root, decode(tree))
    return encode(root, max_nodes)


def _merge_into(target: Node, source: Node) -> None:
    stack = [(target, source)]
    while stack:
        into, node = stack.pop()
        into.total_us += node.total_us
        into.self_us += node.self_us
        for frame, child in node.children.items():
            stack.append((into.child(frame), child))


def _int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _good_frame(frame: Any) -> bool:
    return (
        isinstance(frame, list)
        and len(frame) == 3
        and isinstance(frame[0], str)
        and isinstance(frame[1], str)
        and len(frame[0]) <= MAX_TEXT
        and len(frame[1]) <= MAX_TEXT
        and _int(frame[2], 0, 10_000_000)
    )


def _good_nodes(nodes: list[Any], frame_count: int) -> bool:
    """Indexes in range, parents first, ``0 <= self <= total``, children within their parent's time."""
    room = [0] * len(nodes)
    slack = [0] * len(nodes)
    for i, node in enumerate(nodes):
        if not (isinstance(node, list) and len(node) == 4):
            return False
        fi, parent, total, own = node
        if not (_int(fi, 0, frame_count - 1) and _int(total, 0, MAX_US) and _int(own, 0, total)):
            return False
        if i == 0:
            if parent != -1:
                return False
        elif not _int(parent, 0, i - 1):
            return False
        else:
            room[parent] += total
            slack[parent] += 1
        room[i] -= total - own
    # Each node's children together take at most its time not spent in itself (+1 µs a child of rounding).
    return all(r <= s for r, s in zip(room, slack, strict=True))


def check_tree(value: Any, max_nodes: int) -> dict[str, Any] | None:
    """``value`` if it is a well-formed tree of at most ``max_nodes`` nodes, else None (forged or damaged).

    Frames are ``[str, str, int]``; nodes point at an existing frame and an earlier node (pre-order),
    times are integers with ``0 <= self <= total <= MAX_US``, and the children's totals fit in the parent's
    (a small rounding slack is allowed): a reader can then trust every sum it draws.
    """
    if not isinstance(value, dict):
        return None
    frames, nodes = value.get("frames"), value.get("nodes")
    if not isinstance(frames, list) or not isinstance(nodes, list) or not nodes:
        return None
    if len(nodes) > max_nodes or len(frames) > len(nodes):
        return None
    if not all(_good_frame(frame) for frame in frames) or not _good_nodes(nodes, len(frames)):
        return None
    return {"frames": frames, "nodes": nodes}


def hot_functions(tree: dict[str, Any], limit: int = 15) -> list[dict[str, Any]]:
    """Functions by their own time (summed over every call path), the heaviest first."""
    own: dict[int, int] = {}
    total: dict[int, int] = {}
    for fi, _parent, node_total, node_self in tree["nodes"][1:]:
        own[fi] = own.get(fi, 0) + node_self
        total[fi] = max(total.get(fi, 0), node_total)
    whole = tree["nodes"][0][2] or 1
    rows = []
    for fi, us in sorted(own.items(), key=lambda item: -item[1])[:limit]:
        function, file, line = tree["frames"][fi]
        rows.append(
            {"function": function, "file": file, "line": line, "self_ms": us / 1000, "share": us / whole, "fi": fi}
        )
    return rows


def speedscope(profile: dict[str, Any], name: str) -> dict[str, Any]:
    """The tree in speedscope's file format (one evented profile, microseconds), for speedscope.app and others."""
    frames = [{"name": f[0], "file": f[1], "line": f[2]} for f in profile["frames"]]
    nodes = profile["nodes"]
    children: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes[1:], 1):
        children[node[1]].append(i)
    events: list[dict[str, Any]] = []
    # Depth first: open a node at its start, its children one after the other, its own time last, then close.
    stack: list[tuple[int, int, bool]] = [(0, 0, False)]
    while stack:
        i, at, closing = stack.pop()
        fi, _parent, total, _own = nodes[i]
        if closing:
            events.append({"type": "C", "frame": fi, "at": at + total})
            continue
        events.append({"type": "O", "frame": fi, "at": at})
        stack.append((i, at, True))
        start = at
        starts = []
        for child in children[i]:
            starts.append((child, start))
            start += nodes[child][2]
        stack.extend((child, child_at, False) for child, child_at in reversed(starts))
    total = nodes[0][2]
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "evented",
                "name": name,
                "unit": "microseconds",
                "startValue": 0,
                "endValue": total,
                "events": events,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "django-instrumented",
    }


def share(part: float, whole: float) -> float:
    """``part / whole``, 0 for an empty whole (and never NaN)."""
    return part / whole if whole > 0 and math.isfinite(part) else 0.0
