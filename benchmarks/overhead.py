"""Per-request cost of InstrumentedMiddleware, and the reader's cost, measured side by side.

Usage: python benchmarks/overhead.py [--batches 21] [--requests 2000]

In-process WSGI, no network: the same Django site with and without the middleware (and without
the SQL hook), batches interleaved, medians and paired ratios printed. Each instrumented batch
includes counting its requests (done by the flusher thread in a site), so "added" is all the work the
middleware causes, not only what a request waits for. A real memcached is started for the flusher and
for the reader benchmark (50 processes x 300 views: the same views, a third each, and random traffic). Budgets:
ARCHITECTURE.md §7.
benchmarks/http_read.py measures the dashboard's api/views over HTTP with 48 real gunicorn workers.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from wsgi_env import environ  # noqa: E402 - after the path is set


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_memcached() -> tuple[subprocess.Popen, int]:
    binary = shutil.which("memcached")
    if binary is None:
        sys.exit("memcached is not installed (the README's setup command installs it)")
    port = free_port()
    args = [binary, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-m", "256"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    proc = subprocess.Popen(args)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def run_batch(app, path: str, n: int, settle=None) -> tuple[float, float]:
    """Mean seconds per request over ``n`` requests (response iterated and closed, as a server does), with
    and without ``settle``.

    ``settle`` runs inside the timing after the requests: the instrumented site counts its requests
    in the flusher thread, and that deferred work is part of what the middleware costs. The second
    figure leaves it out: what the requests themselves waited.
    """

    def start_response(status, headers, exc_info=None):
        return None

    start = time.perf_counter_ns()
    for _ in range(n):
        response = app(environ(path), start_response)
        for _chunk in response:
            pass
        response.close()
    served = time.perf_counter_ns()
    if settle is not None:
        settle()
    return (time.perf_counter_ns() - start) / n / 1e9, (served - start) / n / 1e9


def overhead(batches: int, requests: int, only: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import override_settings

    from instrumented.conf import get_config
    from instrumented.stats.aggregate import get_aggregator
    from instrumented.stats.probe import install_on, sql_wrapper

    with_app = WSGIHandler()
    with override_settings(MIDDLEWARE=[]):
        without_app = WSGIHandler()
    connection.ensure_connection()
    call_command("migrate", verbosity=0)  # contenttypes and auth, for the ORM N+1 views

    def set_hook(on: bool) -> None:
        if on:
            install_on(connection)
        elif sql_wrapper in connection.execute_wrappers:
            connection.execute_wrappers.remove(sql_wrapper)

    from instrumented.stats import callsite

    class Forgetful(dict):
        """A known-sites table that never keeps anything: every request walks the stack (the worst case)."""

        def __setitem__(self, key, value) -> None:
            pass

    results: dict[str, dict[str, float]] = {}
    for label, path in (
        ("trivial view", "/trivial/"),
        ("10 distinct queries", "/distinct/10/"),
        ("10-query N+1 view", "/queries/10/"),
        ("20-query N+1 view", "/queries/20/"),
        ("N+1, stack walked", "/n-plus-one/10/"),
        ("20 cache calls", "/cache/20/"),
        ("ORM N+1, loop in view", "/orm/view/10/"),
        ("ORM N+1, loop in template", "/orm/template/10/"),
    ):
        if only and not any(word in label for word in only):
            continue
        callsite._known = Forgetful() if label == "N+1, stack walked" else {}
        for app in (with_app, without_app):  # warm up
            run_batch(app, path, requests // 4)
        base, inst, waited = [], [], []
        for i in range(batches):
            order = [(False, without_app), (True, with_app)]
            if i % 2:
                order.reverse()
            for instrumented, app in order:
                set_hook(instrumented)
                settle = get_aggregator(get_config()).drain if instrumented else None
                total, served = run_batch(app, path, requests, settle)
                (inst if instrumented else base).append(total)
                if instrumented:
                    waited.append(served)
        set_hook(True)
        ratios = [a / b for a, b in zip(inst, base, strict=True)]
        results[label] = {
            "base_us": statistics.median(base) * 1e6,
            "inst_us": statistics.median(inst) * 1e6,
            "added_us": statistics.median([a - b for a, b in zip(inst, base, strict=True)]) * 1e6,
            "ratio": statistics.median(ratios),
            "waited_us": statistics.median([w - b for w, b in zip(waited, base, strict=True)]) * 1e6,
        }
    callsite._known = {}
    return results


def cache_outside_requests(rounds: int = 21, calls: int = 20_000) -> tuple[float, float]:
    """ns per ``cache.get`` outside a request: the wrapped method vs the backend's own (what every site pays)."""
    from django.core.cache import caches

    backend = caches["default"]
    wrapped = type(backend).get
    original = wrapped.__wrapped__
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for is_wrapped, method in ((True, wrapped), (False, original)):
            start = time.perf_counter_ns()
            for _ in range(calls):
                method(backend, "absent")
            times[is_wrapped].append((time.perf_counter_ns() - start) / calls)
    return statistics.median(times[True]), statistics.median(times[False])


def simulated_request(aggregator: Any, rng: random.Random, view: int, at: float) -> None:
    """One request to ``app:view_<view>`` counted straight into ``aggregator`` (two statements, a lognormal latency):
    the readers' benchmarks simulate their processes' traffic with it."""
    from instrumented.stats.probe import Probe

    probe = Probe(0)
    probe.add("default", f"SELECT * FROM t{view} WHERE id = %s", 3, 30_000)
    probe.add("default", "SELECT 1", 1, 10_000)
    latency = int(rng.lognormvariate(15, 0.6))
    aggregator.record(f"app:view_{view}", f"v/{view}/", "GET", 200, latency, probe, now=at)


def reader_benchmark(
    processes: int, views: int, rounds: int, full_window: bool, share: float = 1.0, per_bucket: int = 0
) -> dict[str, float]:
    """Simulate ``processes`` x ``views`` through the real aggregator and flusher, then time reads; with
    ``share`` below 1 each process serves its own random part of the views (view 0 always). With ``per_bucket``,
    traffic as real workers see it instead: each process, in each bucket, that many requests, each to a random
    view (its own subset and order, different from bucket to bucket)."""
    from django.conf import settings
    from django.test.utils import override_settings

    prefix = f"reader{os.getpid()}{processes}x{views}{int(full_window)}{int(share * 100)}r{per_bucket}"
    with override_settings(INSTRUMENTED={**settings.INSTRUMENTED, "KEY_PREFIX": prefix}):
        return _reader_benchmark(processes, views, rounds, full_window, share, per_bucket)


def _reader_benchmark(
    processes: int, views: int, rounds: int, full_window: bool, share: float, per_bucket: int
) -> dict[str, float]:
    from instrumented.conf import get_config
    from instrumented.reader import read_stats
    from instrumented.stats import reader
    from instrumented.stats.aggregate import Aggregator
    from instrumented.stats.flusher import Flusher

    config = get_config()
    rng = random.Random(5)
    now = time.time()
    seconds = config.bucket_seconds
    current = int(now // seconds)
    buckets = list(range(current - config.window_seconds // seconds + 1, current + 1))
    if not full_window:
        buckets = buckets[-1:]
    sent = 0
    sites = []
    for _ in range(processes):
        aggregator = Aggregator(config)
        served = [v for v in range(views) if v == 0 or rng.random() < share]
        sites.append((aggregator, Flusher(aggregator, config), served))
    # Bucket by bucket, every process in turn, as time passes in a site: each finished bucket is merged once
    # (history.py) by the first process that flushes after it settled.
    for bucket in buckets:
        at = bucket * seconds + 1
        for aggregator, flusher, served in sites:
            if per_bucket:
                requests = [rng.randrange(views) for _ in range(per_bucket)]
            else:
                requests = [v for v in served for _r in range(3)]
            sent += len(requests)
            for v in requests:
                simulated_request(aggregator, rng, v, at)
            flusher.flush(now=at)
    for _aggregator, flusher, _served in sites:
        flusher.flush(now=now)
    if time.time() - now > config.ttl - config.bucket_seconds:  # the first processes' keys have expired
        raise RuntimeError(f"writing {processes} processes' traffic took {time.time() - now:.0f} s, longer than "
                           f"memcached keeps it ({config.ttl} s): run the benchmark on a quieter machine")  # fmt: skip
    result: dict[str, float] = {"snapshots": len(buckets) * processes}
    for history, label in ((False, "rollups_"), (True, "")):  # the processes' roll-ups (before), then history
        reader.READ_HISTORY = history
        try:
            timings: dict[str, list[float]] = {"table": [], "series": [], "table_cpu": []}
            for _ in range(rounds):
                start, cpu = time.perf_counter(), time.process_time()
                stats = read_stats(now=now)
                timings["table"].append(time.perf_counter() - start)
                timings["table_cpu"].append(time.process_time() - cpu)
                start = time.perf_counter()
                read_stats(now=now, view="app:view_7", series=True)
                timings["series"].append(time.perf_counter() - start)
        finally:
            reader.READ_HISTORY = True
        assert stats["processes"] == processes, stats["processes"]
        assert sum(view["requests"] for view in stats["views"]) == sent, (stats["views"], sent)
        result[f"{label}median_ms"] = statistics.median(timings["table"]) * 1000
        result[f"{label}cpu_ms"] = statistics.median(timings["table_cpu"]) * 1000
        result[f"{label}series_ms"] = statistics.median(timings["series"]) * 1000
    return result


def one_server_down(rounds: int, requests: int) -> dict[str, float]:
    """Two memcached servers with the flusher thread writing: request p99 with both up and with one killed
    (interleaved), and how long after the kill a reader shows the survivors' data, exact, marked partial."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    from instrumented.reader import read_stats
    from instrumented.stats import flusher

    servers = [start_memcached() for _ in range(3)]  # two for the cluster, one kept alive for comparison
    try:
        addresses = [f"127.0.0.1:{port}" for _, port in servers]
        app = WSGIHandler()

        def p99(cluster: list[str]) -> list[float]:
            config = {**settings.INSTRUMENTED, "SERVERS": cluster, "KEY_PREFIX": f"down{os.getpid()}{len(cluster)}"}
            with override_settings(INSTRUMENTED=config):
                latencies = []
                for _ in range(requests):
                    start = time.perf_counter()
                    response = app(environ("/queries/10/"), lambda *a: None)
                    for _chunk in response:
                        pass
                    response.close()
                    latencies.append(time.perf_counter() - start)
                return latencies

        up, down = [], []
        healthy, broken = addresses[:2], [addresses[0], addresses[2]]
        p99(healthy), p99(broken)  # warm up: both clusters' flushers exist and have written
        servers[2][0].terminate()
        servers[2][0].wait()
        killed_at = time.monotonic()
        config = {**settings.INSTRUMENTED, "SERVERS": broken, "KEY_PREFIX": f"down{os.getpid()}2"}
        with override_settings(INSTRUMENTED=config):
            expected = requests
            while True:
                stats = read_stats()
                total = sum(v["requests"] for v in stats["views"])
                if stats.get("partial") and total == expected:
                    shown_after = time.monotonic() - killed_at
                    break
                if time.monotonic() - killed_at > 30:
                    shown_after = float("inf")
                    break
                time.sleep(0.05)
        for i in range(rounds):
            pairs = [(up, healthy), (down, broken)]
            for into, cluster in pairs if i % 2 == 0 else reversed(pairs):
                into.extend(p99(cluster))
        flusher.shutdown()

        def q99(values: list[float]) -> float:
            return statistics.quantiles(values, n=100)[98] * 1e3

        return {"p99_up_ms": q99(up), "p99_down_ms": q99(down), "shown_after_s": shown_after}
    finally:
        for proc, _port in servers:
            proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=21)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--reader-rounds", type=int, default=7)
    parser.add_argument("--skip-full-window", action="store_true", help="skip the 30-bucket reader case")
    parser.add_argument(
        "--only", default="", help="comma-separated words: only the request cases whose label has one (no reader)"
    )
    args = parser.parse_args()

    memcached, port = start_memcached()
    try:
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench_site"
        import bench_site

        bench_site.INSTRUMENTED.update(SERVERS=[f"127.0.0.1:{port}"], KEY_PREFIX=f"bench{os.getpid()}")
        import django

        django.setup()
        print(
            f"Python {sys.version.split()[0]}, Django {django.get_version()}, {args.batches} batches x "
            f"{args.requests} requests, interleaved; medians.\n"
        )
        only = tuple(word for word in args.only.split(",") if word)
        results = overhead(args.batches, args.requests, only)
        budgets = {
            "trivial view": "<= 1.08x and <= +6 us",
            "10 distinct queries": "<= 12 us",
            "10-query N+1 view": "<= 15 us (call site known for the bucket)",
            "N+1, stack walked": "(worst case: every request walks the stack)",
            "ORM N+1, loop in template": "<= the loop in the view's added",
        }
        print(f"{'':26}{'without':>12}{'with':>12}{'added':>12}{'ratio':>9}{'waited':>12}   budget")
        for label, r in results.items():
            figures = f"{r['base_us']:10.2f}us{r['inst_us']:10.2f}us{r['added_us']:10.2f}us{r['ratio']:8.3f}x"
            print(f"{label:26}{figures}{r['waited_us']:10.2f}us   {budgets.get(label, '')}")
        print("(added: all the work the middleware causes, counting in the flusher thread included;")
        print(" waited: what the requests themselves waited for, without that counting)")
        if only:
            return
        per_query = (results["10-query N+1 view"]["added_us"] - results["trivial view"]["added_us"]) / 10
        marginal = (results["20-query N+1 view"]["added_us"] - results["10-query N+1 view"]["added_us"]) / 10
        print(f"\nadded per SQL query: {marginal:.2f} us marginal (20- vs 10-query view; budget <= 1 us),")
        print(f"  {per_query:.2f} us averaged over the 10-query view (includes the per-request cost of having SQL)")
        in_view = results["ORM N+1, loop in view"]["added_us"]
        in_template = results["ORM N+1, loop in template"]["added_us"]
        print(
            f"10-query ORM N+1, loop in a template vs in the view: {in_template - in_view:+.2f} us added "
            "(budget <= 0: the template's line is found at the threshold only, then known)"
        )
        per_call = (results["20 cache calls"]["added_us"] - results["trivial view"]["added_us"]) / 21
        wrapped_ns, original_ns = cache_outside_requests()
        print(f"added per cache call in a request: {per_call:.2f} us (budget <= 1 us); outside a request")
        print(f"  {wrapped_ns - original_ns:.0f} ns ({wrapped_ns:.0f} ns wrapped vs {original_ns:.0f} ns, LocMem get)")

        print("\nreader: 50 processes x 300 views")
        one = reader_benchmark(50, 300, args.reader_rounds, full_window=False)
        print(
            f"  traffic in one bucket: all views {one['median_ms']:.1f} ms (budget <= 50 ms); "
            f"one view with series {one['series_ms']:.1f} ms"
        )
        small = reader_benchmark(10, 50, args.reader_rounds, full_window=True)
        print(
            f"  10 processes x 50 views, traffic in all 30 buckets: all views {small['median_ms']:.1f} ms; "
            f"one view with series {small['series_ms']:.1f} ms"
        )
        if not args.skip_full_window:
            full = reader_benchmark(50, 300, max(3, args.reader_rounds // 2), full_window=True)
            print(
                f"  traffic in all 30 buckets: all views {full['median_ms']:.1f} ms (budget <= 50 ms); "
                f"one view with series {full['series_ms']:.1f} ms (budget <= 100 ms)"
            )
            third = reader_benchmark(50, 300, max(3, args.reader_rounds // 2), full_window=True, share=1 / 3)
            print(
                f"  the same, each process a third of the views (no two alike): all views {third['median_ms']:.1f} ms; "
                f"one view with series {third['series_ms']:.1f} ms"
            )
            real = reader_benchmark(50, 300, max(3, args.reader_rounds // 2), full_window=True, per_bucket=12)
            print(
                "  random traffic, as real workers see it (each process 12 requests a bucket, each to a random view:"
                f"\n    its own subset and order in every bucket): all views {real['median_ms']:.1f} ms "
                f"(budget <= 50 ms); one view with series {real['series_ms']:.1f} ms (budget <= 100 ms)"
                f"\n    the same read from the processes' roll-ups (no history): all views "
                f"{real['rollups_median_ms']:.1f} ms; one view with series {real['rollups_series_ms']:.1f} ms"
            )

        print("\none of two memcached servers killed (flusher thread writing, 10-query view):")
        down = one_server_down(max(3, args.batches // 3), args.requests // 2)
        print(
            f"  request p99 {down['p99_up_ms']:.3f} ms both up, {down['p99_down_ms']:.3f} ms one down: "
            f"{down['p99_down_ms'] - down['p99_up_ms']:+.3f} ms (budget <= +1 ms)"
        )
        print(
            f"  a reader shows the survivors' data, exact and partial, {down['shown_after_s']:.2f} s after the kill "
            "(budget <= 5 s)"
        )
    finally:
        memcached.terminate()


if __name__ == "__main__":
    main()
