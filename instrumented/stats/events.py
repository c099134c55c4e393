"""The request's timeline as the probes record it: one tuple appended per statement, call and render.

Kept apart from probe.py so the cache, HTTP and template probes add to it the same way. A tuple of four
is a statement ``(start ns, elapsed ns, SQL as run, its alias's counts)`` (the SQL wrapper appends it
inline); one of five is ``(start ns, elapsed ns, kind, name, detail)`` for the other kinds. Only the
first MAX_EVENTS are kept; the rest are counted (statements from the probe's totals, others here), so
a view that runs 100 000 statements holds a few hundred tuples. Nothing here is built into a sample
unless the request is among its view's slowest (samples.py decides, after the request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .probe import Probe

#: Events kept per request (statements, cache and HTTP calls, template renders); the rest are counted.
MAX_EVENTS = 400
CACHE = "cache"
HTTP = "http"
TEMPLATE = "template"
#: A recorded request's timeline before its first event (shared, never appended to: whoever adds the first event
#: puts a list of the request's own in its place), so a request without SQL, cache, HTTP or templates makes none.
EMPTY = cast(list[tuple[Any, ...]], ())


def mark_duplicate(probe: Probe, start: int) -> None:
    """The statement that started at ``start`` repeated an earlier one exactly (same SQL, same parameters)."""
    marks = probe.duplicates
    if marks is None:
        probe.duplicates = {start}
    else:
        marks.add(start)


def add(probe: Probe, start: int, elapsed: int, kind: str, name: str, detail: Any) -> None:
    """Append one cache call, HTTP call or template render to the request's timeline (or count it, past the cap)."""
    timeline = probe.timeline
    if timeline is None:
        return
    if timeline is EMPTY:
        timeline = probe.timeline = []
    if len(timeline) < MAX_EVENTS:
        timeline.append((start, elapsed, kind, name, detail))
        return
    cut = probe.cut
    if cut is None:
        cut = probe.cut = {}
    cut[kind] = cut.get(kind, 0) + 1
