"""One read stays bounded whatever memcached holds (issue 8, finding 6: forged roll-ups).

Forged values are written into the real memcached under the keys the flusher uses (the bucket's
process index and each process's roll-up) beside one genuine process. The read must keep to its byte
and view budgets, skip and count what does not fit, and still show the genuine view.
"""

from __future__ import annotations

import time
import tracemalloc

from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.naming import OTHER_VIEW
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats
from instrumented.stats.rollup import encode_rollup

READ_MAX_BYTES = 8 * 1024 * 1024


def genuine_process() -> tuple[int, float]:
    """One real process with one request to ``genuine:view``, flushed; its bucket and the time."""
    config = get_config()
    aggregator = Aggregator(config)
    flusher = Flusher(aggregator, config)
    now = time.time()
    aggregator.record("genuine:view", "g/", "GET", 200, 1_000_000, Probe(0), now=now)
    flusher.flush()
    return int(now // config.bucket_seconds), now


def view_snapshot(route: str = "") -> dict:
    return {"route": route, "n": 1, "s": [1, 0, 0, 0], "lsum": 1.0, "lmax": 1.0, "h": ""}


def forge(bucket: int, rollups: dict[str, bytes]) -> None:
    """Register forged processes in the bucket's index and store their roll-ups, as a flusher would."""
    store = get_store()
    assert store.append(store.config.keys.bucket_index(bucket), "".join(f"{p} " for p in rollups).encode())
    for process_id, value in rollups.items():
        assert store.set(store.config.keys.rollup(process_id), value), process_id


def rollup(bucket: int, views: dict) -> bytes:
    """A roll-up value as the flusher writes it (columnar), of forged views."""
    return encode_rollup({"process": "forged", "as_of": bucket, "at": 0, "buckets": [bucket], "fin": 1}, views, [])


def test_forged_giant_rollups_are_skipped_and_the_read_stays_within_its_byte_budget(settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "READ_MAX_BYTES": READ_MAX_BYTES}
    bucket, now = genuine_process()
    forged: dict[str, bytes] = {}
    for i in range(4):  # ~100 KB each, inflating to 48 MB: far over any one value's cap
        body = rollup(bucket, {f"bomb{i}": view_snapshot("R" * (48 * 1024 * 1024))})
        assert len(body) < 900 * 1024
        forged[f"bomb{i}"] = body
    for i in range(6):  # each under the per-value cap (2 MiB here), together over the read's 8 MiB
        raw = rollup(bucket, {f"wide{i}": view_snapshot("W" * (1900 * 1024))})
        forged[f"big{i}"] = raw
    forge(bucket, forged)

    tracemalloc.start()
    try:
        stats = read_stats(now=now)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    names = {v["view"]: v for v in stats["views"]}
    assert names["genuine:view"]["requests"] == 1, "the genuine process is read first and in full"
    assert stats["skipped"] >= 4 + 2  # every bomb, and the big values past the budget
    assert "READ_MAX_BYTES" in stats["note"]
    wide = [name for name in names if name.startswith("wide")]
    assert 1 <= len(wide) <= 4, wide  # 8 MiB holds four of the 1.9 MiB values, not six
    assert sum(len(v["route"]) for v in stats["views"]) <= READ_MAX_BYTES
    assert peak < 4 * READ_MAX_BYTES, f"{peak / 2**20:.0f} MiB allocated by one read"


def test_over_wide_rollups_and_indexes_are_folded_and_counted(settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "READ_MAX_VIEWS": 50}
    bucket, now = genuine_process()
    wide = rollup(bucket, {f"forged:{i}": view_snapshot() for i in range(3000)})
    forge(bucket, {"wide": wide})
    fake_ids = [f"ghost{i}" for i in range(2500)]  # more than one read asks about (2000)
    store = get_store()
    assert store.append(store.config.keys.bucket_index(bucket), "".join(f"{p} " for p in fake_ids).encode())

    stats = read_stats(now=now)
    names = [v["view"] for v in stats["views"]]
    assert "genuine:view" in names
    assert len(names) <= 50 + 1 and OTHER_VIEW in names
    other = next(v for v in stats["views"] if v["view"] == OTHER_VIEW)
    assert other["requests"] == 3000 - (50 - 1)  # every forged view is counted, named or folded
    assert "READ_MAX_VIEWS" in stats["note"] and "process(es)" in stats["note"]
