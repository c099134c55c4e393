"""Where a query came from: the line a developer edits, and a fix that works on the queryset they wrote.

Looked up only when a template crosses the N+1 threshold or after a slow query, at most once per
template per request, and not again once known for the view, its place and bucket (:func:`locate`; the place is
the first frame of the site's code or template node, found in a short walk, frames.place, looked up on every
crossing only for statements seen at two places of one view). The stack is
walked with ``sys._getframe`` from the query outwards, up to the view (Django's handler: the middleware and
server frames past it never issued a view's query); frames are judged once per code object (frames.py).
What is kept, innermost first (the stored form is in sites.py):

- the library frame nearest the query when the query ran inside a library (DRF, Wagtail, the admin), with the
  site's object it worked for (``BookSerializer(ModelSerializer), field author``);
- the first frame of the site's own code, or the site's template line being rendered (template_lines.py);
- for a template, the site's frame that rendered it (the view's line), when it is still on the stack;
- the view's name when no frame of the site's own code is on the stack: never a launcher's or server's line.

The hint comes from hints.py: only a lookup that is valid on the loop's queryset and removes the repeats.
"""

from __future__ import annotations

import threading
import time
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ..conf import get_config
from ..failopen import fail_open, failures
from ..naming import view_name
from . import frames, hints, sites
from .sql import READ, kind_of
from .template_lines import template_line

if TYPE_CHECKING:
    from .probe import Probe

#: Known call sites kept per process: (view, alias, sql, place or None) -> [bucket, site, hint, place, hits];
#: cleared when full. The place is part of the key only for the statements seen at two places of one view.
MAX_KNOWN = 4096
#: Crossings of a bucket that check that a known site's place is still the same: the first ones, then one in 8.
PLACE_FIRST = 16
PLACE_SAMPLE = 8
#: How many frames are walked at most before giving up (a deep recursion must not cost much).
MAX_DEPTH = 200

_known: dict[tuple[str, str, str, Any], list[Any]] = {}
#: (view, alias, sql) seen at two places: their place is looked up on every crossing.
_multi_place: dict[tuple[str, str, str], None] = {}
_lock = threading.Lock()
_boundary: tuple[CodeType, ...] | None = None
#: Stack walks done by this process (tests check that a known site is not looked up again).
walks = 0


def _view_boundary() -> tuple[CodeType, ...]:
    """Django's handler frames that call the view (and render a TemplateResponse): the walk stops there."""
    global _boundary
    if _boundary is None:
        from django.core.handlers.base import BaseHandler

        _boundary = (BaseHandler._get_response.__code__, BaseHandler._get_response_async.__code__)
    return _boundary


def _class_text(cls: type) -> str:
    """``BookSerializer(ModelSerializer)``: a site class and the library class it builds on."""
    base = next((b for b in cls.__mro__[1:] if not frames.site_class(b)), object)
    return f"{cls.__name__}({base.__name__})" if base is not object else cls.__name__


def _object_text(obj: Any) -> str | None:
    """The site's object a library frame works for: a serializer (and its field), a page, a ModelAdmin. Read from
    the object's own attributes only: none of its code runs (a lazy object is not evaluated by the walk)."""
    attributes = hints.attributes(obj)
    parent = attributes.get("parent")
    field_name = attributes.get("field_name")
    if type(field_name) is str and field_name and parent is not None and frames.site_class(type(parent)):
        return f"{_class_text(type(parent))}, field {field_name}"
    if frames.site_class(type(obj)):
        return _class_text(type(obj))
    return None


class _Walk:
    """The parts found so far while walking one stack outwards."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, ...]] = []
        self.library: tuple[frames.Library, int] | None = None
        self.owner: str | None = None
        self.code = False  # a frame of the site's own code was kept
        self.template = False  # a template line of the site's was kept
        self.done = False

    def keep_library(self) -> None:
        """The library part, before the first part of the site's own (only when the query ran inside it)."""
        if self.library is not None and not self.parts:
            lib, line = self.library
            self.parts.append(("library", lib.name, lib.path, str(line), lib.function, self.owner or ""))

    def see(self, frame: FrameType, verdict: frames.Verdict, rules: frames.Rules) -> None:
        """Take what ``frame`` tells (innermost first)."""
        if isinstance(verdict, frames.Site):
            self.keep_library()
            if self.code and not self.template:
                self.done = True  # a second frame of the site's code, no template between: the first is the line
                return
            self.parts.append(("code", verdict.path, str(frame.f_lineno), verdict.function))
            self.code = True
            self.done = self.template  # the view line that rendered the template: nothing more to find
            return
        located = template_line(frame, verdict, rules) if verdict in (frames.FRAMEWORK, frames.JINJA) else None
        if located is not None:
            if located.site and not self.template:
                self.keep_library()
                self.parts.append(("template", located.name, str(located.line), located.node, located.engine))
                self.template = True
            return
        if self.parts:
            return
        if isinstance(verdict, frames.Library) and self.library is None:
            self.library = (verdict, frame.f_lineno)
        if self.owner is None and verdict is not frames.SKIP and "self" in frame.f_code.co_varnames:
            self.owner = _object_text(frame.f_locals.get("self"))


def capture(frame: FrameType | None, sql: str, view: str = "") -> tuple[str | None, str | None]:
    """(stored site, stored hint) for the query ``sql`` issued from ``frame``; (None, None) when nothing is known."""
    global walks
    walks += 1
    rules = frames.rules()
    boundary = _view_boundary()
    walk = _Walk()
    stack: list[FrameType] = []
    depth = 0
    while frame is not None and depth < MAX_DEPTH and not any(frame.f_code is code for code in boundary):
        stack.append(frame)
        if not walk.done:
            walk.see(frame, frames.verdict(frame, rules), rules)
        frame = frame.f_back
        depth += 1
    walk.keep_library()
    if not walk.code and view:
        walk.parts.append(("view", view))
    site = sites.encode(walk.parts)
    if site is None:
        return None, None
    if kind_of(sql) is not READ:
        return site, None  # a write per row: its fix (bulk_create, bulk_update) is told by the reader from the SQL
    with fail_open("finding an N+1 hint failed"):  # the site stands without its hint
        return site, hints.hint(stack, sql)
    return site, None


def locate(probe: Probe, key: tuple[str, str], frame: FrameType | None) -> None:
    """Note the call site of ``key`` (alias, SQL) on ``probe``: known for the view, its place and the bucket, else
    from the stack.

    The place (frames.place: a short walk) is looked up on every crossing only for statements seen at two places
    of one view (two Wagtail page types under ``wagtail_serve``); for the others the first PLACE_FIRST crossings
    of a bucket check it, then one in PLACE_SAMPLE: a busy view's crossing costs a dict lookup, and a second
    place is found in its first requests.
    """
    try:  # by hand: fail_open() costs ~0.2 µs, and a known site is the common case (once per template per request)
        known_sites = probe.sites
        if known_sites is None:
            known_sites = probe.sites = {}
        elif key in known_sites:
            return
        view = probe.view
        if view is None:
            match = getattr(probe.request, "resolver_match", None)
            view = probe.view = view_name(match) if match is not None else ""
        bucket = int(time.time() // get_config().bucket_seconds)
        statement = (view, key[0], key[1])
        place = frames.place(frame) if statement in _multi_place else None
        known = _known.get((*statement, place))
        if known is not None and known[0] == bucket:
            hits = known[4] = known[4] + 1
            if place is not None or (hits > PLACE_FIRST and hits % PLACE_SAMPLE) or frames.place(frame) == known[3]:
                known_sites[key] = (known[1], known[2])
                return
            _multi_place[statement] = None  # a second place: from now on every crossing looks its place up
            if len(_multi_place) > MAX_KNOWN:
                _multi_place.clear()
    except Exception as exc:  # noqa: BLE001 - fail open
        failures.record("finding a call site failed", exc)
        return
    with fail_open("finding a call site failed"):
        found = capture(frame, key[1], view)
        here = frames.place(frame)
        with _lock:
            if len(_known) >= MAX_KNOWN:
                _known.clear()
            _known[(*statement, here if statement in _multi_place else None)] = [bucket, *found, here, 0]
        known_sites[key] = found


def forget() -> None:
    """Forget known sites and code verdicts (tests, and settings changes)."""
    _known.clear()
    _multi_place.clear()
    frames.forget()
    hints.forget()
