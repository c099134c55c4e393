"""Request queue time: how long a request waited between the front server and Django.

The front server stamps the time it received the request in a header (``QUEUE_TIME_HEADERS``, by default
``X-Request-Start`` and ``X-Queue-Start``): nginx ``t=${msec}`` (seconds with milliseconds), Heroku's router
(milliseconds), Apache's ``t=%t`` and Thruster (microseconds). The middleware only keeps the header's raw
value on the probe; the flusher thread parses it here and counts the wait per view: requests with a stamp,
the summed and largest wait, a latency histogram, and the stamps ignored (unparsable, in the future, or
absurdly old), so "slow because of the code, or because the workers are saturated?" has an answer.

Wire form (snapshot and roll-up findings, ``qt``): ``[stamped requests, µs summed, largest µs, ignored,
histogram slice]``.
"""

from __future__ import annotations

import math
from typing import Any

from . import histogram

#: A wait longer than this is not a queue but a wrong clock or a forged header: ignored, counted.
MAX_QUEUE_SECONDS = 600.0
#: A stamp this far ahead of our clock is a front server's clock that runs ahead a little: a wait of 0.
#: Anything further in the future is ignored, counted.
CLOCK_SKEW_SECONDS = 0.005
#: Longest header value looked at (``t=`` and 19 digits with a point fit well within).
MAX_STAMP_LENGTH = 40
#: Processes whose queue time one document lists (the slowest by p95 first).
MAX_PROCESSES = 100


def stamp_seconds(raw: str) -> float | None:
    """The unix time in a queue header (``t=`` prefix optional; seconds, ms, µs or ns by magnitude), or None."""
    text = raw.strip()[:MAX_STAMP_LENGTH]
    if text[:2] in ("t=", "T="):
        text = text[2:]
    if not text.isascii() or not text.replace(".", "", 1).isdigit():  # no sign, exponent, nan, inf, underscores
        return None
    value = float(text)
    if value < 1e11:  # seconds: 1.7e9 in 2024, 1e11 is the year 5138
        return value
    if value < 1e14:
        return value / 1e3
    if value < 1e17:
        return value / 1e6
    return value / 1e9


def waited_us(raw: Any, arrived: float) -> float | None:
    """Microseconds between the stamp ``raw`` and ``arrived`` (unix time Django started on the request);
    None when the stamp is unparsable, in the future, or older than MAX_QUEUE_SECONDS."""
    if not isinstance(raw, str):
        return None
    stamp = stamp_seconds(raw)
    if stamp is None:
        return None
    waited = arrived - stamp
    if waited < -CLOCK_SKEW_SECONDS or waited > MAX_QUEUE_SECONDS or not math.isfinite(waited):
        return None
    return max(waited, 0.0) * 1e6


def new() -> list[Any]:
    """An empty per-view queue record: [stamped, µs summed, largest µs, ignored, dense histogram]."""
    return [0, 0.0, 0.0, 0, histogram.new()]


def count(entry: list[Any], waited: float | None) -> None:
    """Count one stamped request's wait (None: an ignored stamp) into ``entry``."""
    if waited is None:
        entry[3] += 1
        return
    entry[0] += 1
    entry[1] += waited
    if waited > entry[2]:
        entry[2] = waited
    entry[4][histogram.bin_index(waited)] += 1


def add_wire(entry: list[Any], wire: Any) -> None:
    """Add a stored ``qt`` value (untrusted: a malformed one raises TypeError/ValueError, the caller skips it)."""
    if type(wire) is not list or len(wire) != 5:
        raise ValueError("qt")
    stamped, summed, largest, ignored, encoded = wire
    if not all(type(n) is int for n in (stamped, ignored)) or not all(
        type(n) in (int, float) for n in (summed, largest)
    ):
        raise TypeError("qt")
    if min(stamped, ignored, summed, largest) < 0 or not (math.isfinite(summed) and math.isfinite(largest)):
        raise ValueError("qt")
    if not isinstance(encoded, str):
        raise ValueError("qt")
    entry[0] += stamped
    entry[1] += summed
    entry[2] = max(entry[2], largest)
    entry[3] += ignored
    histogram.merge_encoded(entry[4], encoded)


def merge(entry: list[Any], other: list[Any]) -> None:
    """Add one in-memory record to another."""
    entry[0] += other[0]
    entry[1] += other[1]
    entry[2] = max(entry[2], other[2])
    entry[3] += other[3]
    histogram.merge(entry[4], other[4])


def add_waits(waits: dict[str, list[Any]], process_id: str, entries: Any) -> None:
    """Sum the queue time (``qt``) of one process's views (a snapshot's views or a roll-up's findings) into
    ``waits[process_id]``; a malformed part is left out (the view's own merge counts it)."""
    for view in entries:
        wire = view.get("qt") if isinstance(view, dict) else None
        if wire is None:
            continue
        total = waits.get(process_id) or new()
        try:
            add_wire(total, wire)
        except (TypeError, ValueError):
            continue
        waits[process_id] = total


def to_wire(entry: list[Any]) -> list[Any]:
    """The stored form of a record."""
    return [entry[0], int(entry[1]), int(entry[2]), entry[3], histogram.encode_dense(entry[4])]


def describe(entry: list[Any] | None) -> dict[str, Any]:
    """The reader's form: requests with a stamp, ignored stamps, mean, p50, p95 and max in ms (zeros without)."""
    if entry is None or not (entry[0] or entry[3]):
        return {"requests": 0, "ignored": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    stamped, summed, largest, ignored, dense = entry
    p50, p95 = histogram.quantiles(dense, (0.50, 0.95))
    return {
        "requests": stamped,
        "ignored": ignored,
        "mean_ms": round(summed / max(stamped, 1) / 1000.0, 3),
        "p50_ms": round(min(p50, largest) / 1000.0, 3) if stamped else 0.0,
        "p95_ms": round(min(p95, largest) / 1000.0, 3) if stamped else 0.0,
        "max_ms": round(largest / 1000.0, 3),
    }
