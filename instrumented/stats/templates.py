"""The template probe: each Django and Jinja2 template render of a recorded request, timed.

Installed once at start-up, like the cache and HTTP probes: ``django.template.base.Template.render``
(every Django render, ``{% include %}`` included) and the Jinja2 backend's ``Template.render`` are wrapped.
Inside a recorded request a render costs a ContextVar lookup, two clock reads and an append to the
request's timeline (events.py), with its name and nesting depth; the outermost renders' time, and the
SQL time inside them, are added up on the probe (template time per view). Outside a request: a
ContextVar lookup. Fail-open: the site's render runs as it would without the probe.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from ..failopen import failures
from . import events
from .probe import current_probe
from .snapshot import MAX_TEMPLATES as MAX_NAMES
from .snapshot import OTHER_TEMPLATES

MARK = "_instrumented_wrapped"
#: What a template made from a string (no file) is called.
UNNAMED = "(template from a string)"


def _sql_ns_since(timeline: list[tuple[Any, ...]] | None, index: int) -> int:
    """SQL time of the statements appended to ``timeline`` from ``index`` on (those run inside one render)."""
    if not timeline:
        return 0
    return sum(event[1] for event in timeline[index:] if len(event) == 4)


def _count(probe: Any, name: str, elapsed: int, sql_ns: int) -> None:
    """One outermost render of ``name`` on the request's probe (at most MAX_NAMES names; the rest together)."""
    renders = probe.renders
    if renders is None:
        probe.renders = {name: [1, elapsed, sql_ns]}
        return
    entry = renders.get(name)
    if entry is None:
        if len(renders) >= MAX_NAMES:
            name = OTHER_TEMPLATES
            entry = renders.get(name)
        if entry is None:
            renders[name] = [1, elapsed, sql_ns]
            return
    entry[0] += 1
    entry[1] += elapsed
    entry[2] += sql_ns


def _wrap(render: Callable[..., Any], name_of: Callable[[Any], str]) -> Callable[..., Any]:
    """A timing wrapper around one engine's ``render``."""

    @functools.wraps(render)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = current_probe.get()
        if probe is None or not probe.active:
            return render(self, *args, **kwargs)
        depth = probe.template_depth
        probe.template_depth = depth + 1
        index = len(probe.timeline or ())
        start = perf_counter_ns()
        try:
            return render(self, *args, **kwargs)
        finally:
            elapsed = perf_counter_ns() - start
            probe.template_depth = depth
            try:
                name = name_of(self)
                timeline = probe.timeline
                if timeline is not None:  # events.add(), inlined
                    if timeline is events.EMPTY:
                        timeline = probe.timeline = []
                    if len(timeline) < events.MAX_EVENTS:
                        timeline.append((start, elapsed, events.TEMPLATE, name, depth))
                    else:
                        events.add(probe, start, elapsed, events.TEMPLATE, name, depth)
                if depth == 0:
                    # The SQL run inside: the statements appended since the render began (none: no sum).
                    sql_ns = _sql_ns_since(timeline, index) if timeline is not None and len(timeline) > index + 1 else 0
                    _count(probe, name, elapsed, sql_ns)
            except Exception as exc:  # noqa: BLE001 - fail open: the render's result goes back as it is
                failures.record("the template probe failed", exc)

    setattr(timed, MARK, True)
    return timed


def _django_name(template: Any) -> str:
    return str(template.name or UNNAMED)


def _jinja2_name(template: Any) -> str:
    return str(getattr(template.origin, "template_name", None) or UNNAMED)


def install() -> None:
    """Wrap Django's and (when installed) Jinja2's template render, once."""
    try:
        from django.template.base import Template

        if not getattr(Template.render, MARK, False):
            Template.render = _wrap(Template.render, _django_name)
    except Exception as exc:  # noqa: BLE001 - fail open: the site runs without template times
        failures.record("installing the template probe failed", exc)
    try:
        from django.template.backends import jinja2 as jinja2_backend
    except ImportError:  # Jinja2 is not installed
        return
    try:
        cls = jinja2_backend.Template
        if not getattr(cls.render, MARK, False):
            cls.render = _wrap(cls.render, _jinja2_name)
    except Exception as exc:  # noqa: BLE001 - fail open
        failures.record("installing the template probe failed", exc)
