"""Instructions per request of InstrumentedMiddleware, counted by callgrind: exact whatever the machine's load.

Usage: python benchmarks/instructions.py [--requests 100] [--only WORD,...] [--calibrate]

The wall-clock figures of overhead.py mean little on a loaded machine; instruction counts do not move with
the load. Each case of overhead.py's site (benchmarks/bench_site.py) runs in a child process under
``valgrind --tool=callgrind``, with the middleware and SQL hook and without: callgrind's counters are
zeroed after start-up and a warm-up (and a full garbage collection: none runs while measuring), dumped
after N requests; per request = the dump's total / N. The instrumented runs count their requests in the
aggregate as the flusher thread would (drained in the loop; no flusher thread, no memcached).
``--calibrate`` also times the uninstrumented 10-query view outside valgrind (fastest of 15 batches) to
turn instructions into microseconds on this machine. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

CASES = (
    ("trivial view", "/trivial/"),
    ("10-query N+1 view", "/queries/10/"),
    ("20-query N+1 view", "/queries/20/"),
    ("10 distinct queries", "/distinct/10/"),
    ("ORM N+1, loop in view", "/orm/view/10/"),
    ("ORM N+1, loop in template", "/orm/template/10/"),
)
WARM_UP = 50


def child(path: str, requests: int, instrumented: bool, pause: bool = False) -> float:
    """Serve ``path`` ``requests`` times in this process (after a warm-up); seconds per request. With ``pause``,
    say "ready" and wait for a line on stdin before the requests and "done" after them (callgrind's counters
    are zeroed and dumped meanwhile)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_site"
    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import override_settings
    from overhead import environ

    from instrumented.conf import get_config
    from instrumented.stats.aggregate import get_aggregator
    from instrumented.stats.probe import install_on, sql_wrapper

    connection.ensure_connection()
    call_command("migrate", verbosity=0)
    # migrate ran as a recorded command and started the flusher thread: stopped, or its flushes (to no
    # memcached) would land in the counts at random.
    from instrumented.stats.flusher import shutdown

    shutdown()
    if instrumented:
        app = WSGIHandler()
        install_on(connection)
    else:
        with override_settings(MIDDLEWARE=[]):
            app = WSGIHandler()
        if sql_wrapper in connection.execute_wrappers:
            connection.execute_wrappers.remove(sql_wrapper)
    aggregator = get_aggregator(get_config())
    aggregator.flushing = True  # no flusher thread: the loop counts the requests as it would

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        return None

    def serve(n: int) -> float:
        start = time.perf_counter_ns()
        for i in range(n):
            response = app(environ(path), start_response)
            for _chunk in response:
                pass
            response.close()
            if i % 50 == 49:
                aggregator.drain()
        aggregator.drain()
        return (time.perf_counter_ns() - start) / n / 1e9

    # The clock stands still: under valgrind a request takes ~50 times longer, and every new 10 s bucket would
    # count into a new aggregate and look its call sites up again, at moments that differ from run to run.
    frozen = time.time()
    time.time = lambda: frozen
    serve(WARM_UP)
    # A full collection now and none while measuring: one would cost as much as dozens of requests.
    gc.collect()
    gc.freeze()
    gc.disable()
    if pause:
        print("ready", flush=True)
        sys.stdin.readline()
    seconds = serve(requests)
    if pause:
        print("done", flush=True)
        sys.stdin.readline()
    return seconds


def per_request(path: str, requests: int, instrumented: bool) -> float:
    """Instructions per request, counted by callgrind between the child's "ready" and "done" (zeroed, dumped)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", sys.executable, __file__]
        cmd += ["--child", path, str(requests), "on" if instrumented else "off", "--pause"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdin is not None and proc.stdout is not None
        for expected in ("ready", "done"):
            while (line := proc.stdout.readline()) and line.strip() != expected:
                pass
            if not line:
                sys.exit(f"callgrind run failed: {proc.communicate()[1][-2000:]}")
            subprocess.run(["callgrind_control", "-z" if expected == "ready" else "-d", str(proc.pid)], check=True,
                           capture_output=True)  # fmt: skip
            if expected == "done":
                dumps = sorted(Path(out).glob("cg.out*"), key=lambda p: p.stat().st_mtime)
                text = dumps[-1].read_text(errors="replace")
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.communicate()
        found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
        if not found:
            sys.exit("no totals in callgrind's dump")
        return int(found.group(1)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--only", default="", help="comma-separated words: only the cases whose label has one")
    parser.add_argument("--calibrate", action="store_true", help="also time instructions outside valgrind")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "N", "ON"), help=argparse.SUPPRESS)
    parser.add_argument("--pause", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, n, on = args.child
        print(child(path, int(n), on == "on", args.pause))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    only = [word for word in args.only.split(",") if word]
    results: dict[str, tuple[float, float]] = {}
    print(f"{'':28}{'without':>12}{'with':>12}{'added':>12}   instructions per request (callgrind)")
    for label, path in CASES:
        if only and not any(word in label for word in only):
            continue
        base = per_request(path, args.requests, False)
        inst = per_request(path, args.requests, True)
        results[label] = (base, inst)
        print(f"{label:28}{base:12.0f}{inst:12.0f}{inst - base:12.0f}")
    added = {label: inst - base for label, (base, inst) in results.items()}
    if "10-query N+1 view" in added and "20-query N+1 view" in added:
        marginal = (added["20-query N+1 view"] - added["10-query N+1 view"]) / 10
        print(f"\nadded per SQL query, marginal (20- vs 10-query view): {marginal:.0f} instructions")
    if "ORM N+1, loop in view" in added and "ORM N+1, loop in template" in added:
        gap = added["ORM N+1, loop in template"] - added["ORM N+1, loop in view"]
        print(f"10-query ORM N+1, loop in a template vs in the view: {gap:+.0f} instructions added (budget <= 0)")
    if args.calibrate and "10-query N+1 view" in results:
        seconds = min(child_time("/queries/10/") for _ in range(15))
        ns_per = seconds * 1e9 / results["10-query N+1 view"][0]
        print(f"calibration: {ns_per:.3f} ns per instruction (uninstrumented 10-query view, fastest of 15 batches)")
        if "10-query N+1 view" in added and "20-query N+1 view" in added:
            print(f"  so the marginal query adds about {marginal * ns_per / 1000:.2f} us (budget <= 1 us)")


def child_time(path: str) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--child", path, "400", "off"], capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[-1])


if __name__ == "__main__":
    main()
