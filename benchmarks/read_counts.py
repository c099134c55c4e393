"""Instructions of one in-process full read (callgrind), through the history and through the processes' roll-ups,
on one simulated site: deterministic on a loaded machine, where wall-clock reads are noise.

Usage: python benchmarks/read_counts.py [--processes 48] [--views 300] [--per-bucket 8 | --all-views] [--rounds 3]

A real memcached; ``--processes`` simulated processes (the real aggregator and flusher, so the history is merged by
their flushes as in a site), bucket after bucket over the 30 buckets of the window: each serves ``--per-bucket``
requests a bucket, each to a random view (every process its own layout, as real workers), or with ``--all-views``
every view every bucket (alike layouts). Then a child process reads under ``valgrind --tool=callgrind``, counting
only ``--rounds`` reads (``reader.READ_HISTORY`` on, then off), at a moment when the previous bucket is merged and
at one when it is not yet. Prints instructions a read and what each document held (views, processes, requests).
Nothing expires meanwhile: the writers' TTL is an hour (the setup takes minutes of real time).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from counts import callgrind_total  # noqa: E402 - after the path is set
from overhead import simulated_request  # noqa: E402


def setup_django(port: int, prefix: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_site"
    import bench_site
    import django

    bench_site.INSTRUMENTED.update(SERVERS=[f"127.0.0.1:{port}"], KEY_PREFIX=prefix)
    from instrumented.conf import Config

    Config.ttl = property(lambda self: 3600)  # type: ignore[method-assign,assignment]
    django.setup()


def child(port: int, prefix: str, now: float, history: bool, rounds: int) -> None:
    """Read once (warm-up), say READY, read ``rounds`` times between the parent's instrumentation switches."""
    setup_django(port, prefix)
    import gc

    from instrumented.reader import read_stats
    from instrumented.stats import reader

    reader.READ_HISTORY = history
    stats = read_stats(now=now)
    requests = sum(v["requests"] for v in stats["views"])
    print(f"VIEWS {len(stats['views'])} views, {stats['processes']} processes, {requests} requests", flush=True)
    gc.collect()
    gc.freeze()
    print("READY", flush=True)
    sys.stdin.readline()
    for _ in range(rounds):
        read_stats(now=now)
    print("DONE", flush=True)
    sys.stdin.readline()


def count(port: int, prefix: str, now: float, history: bool, rounds: int) -> tuple[float, str]:
    """Instructions a read, and the document's sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable]
        cmd += [__file__, "--child", str(port), prefix, repr(now), str(int(history)), str(rounds)]
        total, before = callgrind_total(cmd, Path(out))
        info = next((line.strip()[6:] for line in before if line.startswith("VIEWS")), "")
        return total / rounds, info


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        port, prefix, now, history, rounds = sys.argv[2:]
        child(int(port), prefix, float(now), history == "1", int(rounds))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=48)
    parser.add_argument("--views", type=int, default=300)
    parser.add_argument("--per-bucket", type=int, default=8)
    parser.add_argument("--all-views", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from overhead import start_memcached

    memcached, port = start_memcached()
    try:
        prefix = f"counts{os.getpid()}"
        setup_django(port, prefix)
        from instrumented.conf import get_config
        from instrumented.stats.aggregate import Aggregator
        from instrumented.stats.flusher import Flusher

        config = get_config()
        rng = random.Random(5)
        seconds = config.bucket_seconds
        current = int(time.time() // seconds)
        buckets = list(range(current - config.window_buckets + 1, current + 1))
        sites = []
        for _ in range(args.processes):
            aggregator = Aggregator(config)
            sites.append((aggregator, Flusher(aggregator, config)))
        for bucket in buckets:
            at = bucket * seconds + 1
            for aggregator, flusher in sites:
                random_views = [rng.randrange(args.views) for _ in range(args.per_bucket)]
                served = range(args.views) if args.all_views else random_views
                for v in served:
                    simulated_request(aggregator, rng, v, at)
                flusher.flush(now=at)
        settled = current * seconds + 5
        for _aggregator, flusher in sites:
            flusher.flush(now=settled)
        shape = "every view every bucket" if args.all_views else f"{args.per_bucket} random views a bucket"
        print(f"{args.processes} processes x {args.views} views, {shape}, {len(buckets)} buckets of {seconds} s")
        for label, now in (("previous bucket merged", settled), ("not yet", current * seconds + 0.4)):
            for history in (True, False):
                instructions, info = count(port, prefix, now, history, args.rounds)
                path = "history" if history else "roll-ups"
                print(f"  {label:23} {path:9} {instructions / 1e6:8.1f} M instructions a read ({info})", flush=True)
    finally:
        memcached.terminate()


if __name__ == "__main__":
    main()
