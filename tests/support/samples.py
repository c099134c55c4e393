"""Helpers of the slowest-request tests: what the flusher stores of a statement, forged values, the planted view."""

from __future__ import annotations

import time

from instrumented.conf import get_config
from instrumented.stats.literals import strip_literals
from instrumented.stats.samples import view_hash
from instrumented.stats.sql import template_of

FORGED_PROCESS = "forged.1.abcdef"


def normalised(sql: str) -> str:
    """What the flusher stores of a statement (literals stripped, IN lists collapsed, cut)."""
    return template_of(strip_literals(sql, "sqlite"))[: get_config().max_sql_length]


def lookups(sample: dict) -> int:
    """How many book lookups a sampled request of the planted view ran (it runs ms % 7 + 1)."""
    return sum(1 for e in sample["timeline"] if e["kind"] == "sql" and '"shop_book"."id" = %s' in e["sql"])


def written(store, config) -> list[tuple[int, str]]:
    """(bucket, process) pairs of the window, from the bucket indexes."""
    current = int(time.time() // config.bucket_seconds)
    buckets = list(range(current - config.window_buckets + 1, current + 1))
    found = store.fetch([config.keys.bucket_index(b) for b in buckets]).values
    return [(b, p) for b in buckets for p in (found.get(config.keys.bucket_index(b)) or b"").decode().split()]


def forge(store, config, view: str, values: list[bytes]) -> None:
    """Stored values under forged processes, each registered in the current bucket's index."""
    bucket = int(time.time() // config.bucket_seconds)
    for i, value in enumerate(values):
        process = f"{FORGED_PROCESS}{i}"
        assert store.append(config.keys.bucket_index(bucket), f"{process} ".encode())
        assert store.set(config.keys.samples(bucket, view_hash(view), process), value)


def stored(for_view: str, for_bucket: int, samples: list, **header) -> bytes:
    """A stored value of ``samples`` as the flusher writes one (a header line, then the samples), forged at will:
    ``header`` replaces fields of the header (by default, what the samples say)."""
    from instrumented.memcached import dumps, pack_bytes
    from instrumented.stats.samples import VERSION

    head = {"v": VERSION, "view": for_view, "bucket": for_bucket, "ms": [s.get("ms") for s in samples]}
    head["err"] = [s.get("error") for s in samples]
    head.update(header)
    return pack_bytes(dumps(head) + b"\n" + dumps(samples))
