"""The one door into the stats: a finished request (the middleware) or piece of work (``recording.record``:
blocks, commands, Celery and ``django.tasks`` tasks) is handed over here, and nowhere else.

Handing over is a deque append (no lock); the flusher thread counts what waits (``Aggregator.drain``) before it
collects. Far behind (MAX_PENDING waiting: the flusher is stuck or gone), the caller counts a few itself, so the
queue stays bounded; the first hand-over of a process (or after a fork, or a settings change) starts the flusher.
Callers fail open around it (it raises only what a broken aggregate raises).
"""

from __future__ import annotations

from ..conf import get_config
from . import aggregate
from .aggregate import REQUEST_DRAIN, Finished, get_aggregator
from .flusher import ensure_flusher


def hand_over(finished: Finished) -> None:
    """Queue one finished request or work, ``(view, route, method, status, duration ns, probe, perf_counter_ns at
    the end)``, for the flusher thread; its probe must be ended (``Probe.end``)."""
    config = get_config()
    aggregator = aggregate.current  # get_aggregator()'s fast path without its call (a request pays for each call)
    if aggregator is None or aggregator.config is not config:
        aggregator = get_aggregator(config)
    pending = aggregator.pending
    pending.append(finished)
    if len(pending) >= aggregator.max_pending:  # the flusher is far behind (or gone): count a few here
        aggregator.drain(REQUEST_DRAIN)
    if not aggregator.flushing:
        ensure_flusher(config)
