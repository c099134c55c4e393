"""The view page's samples read: one view's slowest requests merged from many processes (issue 20's budget).

Usage: python benchmarks/samples_read.py [--processes 48] [--rounds 7]

Every process of a simulated site (the real aggregator and flusher, no HTTP) served one view in each 10 s
bucket of the window with requests of 30 statements each (an N+1 of 20 and 10 others), so each (bucket,
process) holds SAMPLES_PER_VIEW samples: the worst case of a view page's read (every key present). Prints
the median time of ``read_samples`` (two round trips: the bucket indexes, then every (bucket, process)
value) beside the budget (<= 100 ms at 48 processes) and the load average (a wall-clock figure).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def simulate(processes: int) -> tuple[float, int]:
    """Write ``processes`` processes' samples of ``app:slow`` for the whole window; (now, requests)."""
    from instrumented.conf import get_config
    from instrumented.stats.aggregate import Aggregator
    from instrumented.stats.flusher import Flusher
    from instrumented.stats.probe import Probe

    config = get_config()
    rng = random.Random(20)
    now = time.time()
    current = int(now // config.bucket_seconds)
    buckets = list(range(current - config.window_buckets + 1, current + 1))
    sent = 0
    for _ in range(processes):
        aggregator = Aggregator(config)
        flusher = Flusher(aggregator, config)
        for bucket in buckets:
            at = bucket * config.bucket_seconds + 1
            for _r in range(8):
                probe = Probe(0)
                probe.add("default", "SELECT * FROM shop_book WHERE id = %s", 0, 0)
                counts = probe.counts
                offset = 1000
                for i in range(30):
                    sql = "SELECT * FROM shop_book WHERE id = %s" if i < 20 else f"SELECT * FROM t{i} WHERE x = %s"
                    counts[sql] = counts.get(sql, 0) + 1
                    probe.times[sql] = probe.times.get(sql, 0) + 50_000
                    probe.timeline.append((offset, 50_000, sql, counts))
                    offset += 60_000
                probe.user_kind = "anonymous"
                latency = int(rng.lognormvariate(17, 0.5))
                aggregator.record("app:slow", "slow/", "GET", 200, latency, probe, now=at)
                sent += 1
            flusher.flush(now=at)
        flusher.flush(now=now)
    return now, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from overhead import start_memcached

    memcached, port = start_memcached()
    try:
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench_site"
        import bench_site

        bench_site.INSTRUMENTED.update(SERVERS=[f"127.0.0.1:{port}"], KEY_PREFIX=f"smp{os.getpid()}")
        import django

        django.setup()
        from instrumented.memcached import get_store
        from instrumented.stats.samples import read_samples

        now, sent = simulate(args.processes)
        timings = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            found = read_samples("app:slow", store=get_store(), now=now)
            timings.append(time.perf_counter() - start)
        assert found["processes"] == args.processes and len(found["samples"]) == 5, found.get("note")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"samples of one view, {args.processes} processes x {len(range(0, 300, 10))} buckets "
            f"({found['matching']} samples of {sent} requests, 30 statements each): "
            f"{statistics.median(timings) * 1000:.1f} ms median of {args.rounds} (budget <= 100 ms); load {load}"
        )
    finally:
        memcached.terminate()


if __name__ == "__main__":
    main()
