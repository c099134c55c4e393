"""Stats written straight through an aggregator and a flusher of the test's own, at chosen times."""

from __future__ import annotations

import time

from instrumented.conf import get_config
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe


def spread_requests(view: str, route: str, count: int, seconds: float) -> float:
    """``count`` requests to ``view`` evenly over the last ``seconds``, flushed as they came; returns "now"."""
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    now = time.time()
    for i in range(count):
        at = now - seconds + i * seconds / count
        aggregator.record(view, route, "GET", 200, 1_000_000, Probe(0), now=at)
        flusher.flush(now=at)
    flusher.flush(now=now)
    return now
