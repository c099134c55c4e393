"""Exact per-request costs on a loaded machine: CPU instructions counted by valgrind (callgrind), and Python calls.

Usage: python benchmarks/counts.py [--tree PATH ...] [--only WORD,...] [--requests 100,400]

Wall-clock timings mean little on a shared machine; instruction counts do not depend on the load. Only the
requests are counted (callgrind's instrumentation is switched on after the warm-up and off after them). For
each tree (a checkout or ``git archive`` export of the package: compare a branch with the tree before it) and each
case, the in-process benchmark site (bench_site.py) serves the case's path ``a`` then ``b`` times in two
processes run under ``valgrind --tool=callgrind``; (count(b) - count(a)) / (b - a) is the cost of one request,
start-up excluded. The flusher thread is not started: each request is counted (``Aggregator.drain``) in the
same thread right after it, so the count includes that deferred work and is deterministic (PYTHONHASHSEED=0).
The instrumented site and the same site without the middleware and SQL hook are both counted. Calls: the
Python function calls per request (``sys.setprofile``), the same way. ``COUNTS_INSTRUMENTED`` (JSON) overrides
settings of the benchmark site, e.g. ``{"SAMPLES_PER_VIEW": 0}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from wsgi_env import environ

HERE = Path(__file__).resolve().parent
CASES = {
    "trivial view": "/trivial/",
    "10-query N+1 view": "/queries/10/",
    "20-query N+1 view": "/queries/20/",
    "10 distinct queries": "/distinct/10/",
    "20 cache calls": "/cache/20/",
    "10 template renders": "/templates/10/",
    "ORM N+1, loop in view": "/orm/view/10/",
    "ORM N+1, loop in template": "/orm/template/10/",
}


def _steady_state(builds: bool) -> dict:
    """The steady state of the slowest requests (issue 20): each view's threshold is known and this request is
    not among the slowest, so its timeline is let go when it ends and nothing is built (unless ``builds``).
    Returns the thresholds table (empty for a tree before issue 20)."""
    try:
        from instrumented.stats.samples import thresholds
    except ImportError:  # a tree before issue 20
        return {}
    if not builds:
        for view in list(thresholds) or ["trivial", "queries", "distinct", "cache", "templates"]:
            thresholds[view] = (2**62, 2**62)
    return thresholds


def inner(tree: str, path: str, requests: int, instrumented: bool, calls: bool, builds: bool = False) -> None:
    """Serve ``path`` ``requests`` times in this process (run under valgrind by :func:`count`)."""
    sys.path[:0] = [tree, str(HERE)]
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_site"
    import bench_site
    import django

    if not instrumented:
        bench_site.MIDDLEWARE = []
    bench_site.INSTRUMENTED.update(json.loads(os.environ.get("COUNTS_INSTRUMENTED", "{}")))
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.db import connection

    from instrumented.conf import get_config
    from instrumented.stats.aggregate import get_aggregator
    from instrumented.stats.probe import sql_wrapper

    assert Path(sys.modules["instrumented"].__file__ or "").is_relative_to(tree), "the package of the tree asked for"
    app = WSGIHandler()
    connection.ensure_connection()
    call_command("migrate", verbosity=0)
    if not instrumented and sql_wrapper in connection.execute_wrappers:
        connection.execute_wrappers.remove(sql_wrapper)
    # migrate ran as a recorded command and started the flusher thread: stopped, so nothing runs beside the
    # requests (its flushes would land in the counts at random); the requests are counted below, in this thread.
    from instrumented.stats.flusher import shutdown

    shutdown()
    aggregator = get_aggregator(get_config())
    aggregator.flushing = True

    def start_response(status, headers, exc_info=None):
        return None

    thresholds: dict = {}

    def serve(n: int) -> None:
        for _ in range(n):
            response = app(environ(path), start_response)
            for _chunk in response:
                pass
            response.close()
            aggregator.drain()
            if builds:  # every request becomes a sample: what building one costs
                aggregator.samples.held.clear()
                thresholds.clear()

    serve(20)  # warm-up: first-time imports and caches are in both counts alike
    thresholds = _steady_state(builds)
    # Django's heap is the same before every request: frozen, so the collector's passes cost what the requests
    # allocate, not a full pass over the site at a moment that differs from run to run (±40k instructions).
    gc.collect()
    gc.freeze()
    if calls:
        counted = [0]

        def profile(frame, event, arg):
            if event == "call":
                counted[0] += 1

        sys.setprofile(profile)
        serve(requests)
        sys.setprofile(None)
        print(f"CALLS {counted[0]}")
    else:
        # Counted from here only: the parent switches callgrind's instrumentation on while this waits, and off
        # after the requests (start-up and interpreter exit vary from run to run by millions of instructions).
        print("READY", flush=True)
        sys.stdin.readline()
        serve(requests)
        print("DONE", flush=True)
        sys.stdin.readline()


def build_cost(tree: str, path: str = "/queries/10/", a: int = 100, b: int = 400) -> str:
    """Instructions one sample's build adds (every request built, minus the steady state), in the flusher thread."""
    built = (count(tree, path, b, True, builds=True) - count(tree, path, a, True, builds=True)) / (b - a)
    steady = (count(tree, path, b, True) - count(tree, path, a, True)) / (b - a)
    return (
        f"building one sample of {path}: {built - steady:.0f} instructions "
        f"(every request built {built:.0f}, none {steady:.0f})"
    )


def count(tree: str, path: str, requests: int, instrumented: bool, builds: bool = False) -> int:
    """Instructions of one process serving ``path`` ``requests`` times (valgrind's total)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        cmd += [sys.executable, __file__, "--inner", "--tree", tree, "--path", path, "--requests", str(requests)]
        if not instrumented:
            cmd.append("--bare")
        if builds:
            cmd.append("--builds")
        return callgrind_total(cmd, out)[0]


def callgrind_total(cmd: list[str], out: Path) -> tuple[int, list[str]]:
    """Run ``cmd`` (valgrind --instr-atstart=no over a child that prints READY, waits for a line, does the counted
    work, prints DONE and waits again): callgrind's total for the counted work, and the lines printed before READY."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    child = subprocess.Popen(
        cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    before: list[str] = []
    for line in child.stdout:  # Django's own output, then READY
        if line.strip() == "READY":
            break
        before.append(line)
    control = ["callgrind_control", "--instr=on", str(child.pid)]
    subprocess.run(control, check=True, stdout=subprocess.DEVNULL)
    child.stdin.write("go\n")
    child.stdin.flush()
    for line in child.stdout:
        if line.strip() == "DONE":
            break
    control[1] = "--instr=off"
    subprocess.run(control, check=True, stdout=subprocess.DEVNULL)
    child.stdin.write("exit\n")
    child.stdin.close()
    assert child.wait() == 0
    match = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    assert match, "no total in callgrind's output"
    return int(match.group(1)), before


def calls(tree: str, path: str, requests: int, instrumented: bool) -> int:
    """Python calls of one process serving ``path`` ``requests`` times (after the warm-up)."""
    cmd = [sys.executable, __file__, "--inner", "--calls", "--tree", tree, "--path", path, "--requests", str(requests)]
    if not instrumented:
        cmd.append("--bare")
    found = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    return int(found.stdout.split("CALLS ")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", help="a tree holding instrumented/ (default: this checkout)")
    parser.add_argument("--only", default="", help="comma-separated words: only the cases whose label has one")
    parser.add_argument("--requests", default="100,400", help="the two request counts a,b")
    parser.add_argument(
        "--builds", action="store_true", help="instead: instructions to build one sample of the 10-query N+1 view"
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.tree[0], args.path, int(args.requests), not args.bare, args.calls, args.builds)
        return
    if args.builds:
        print(build_cost(args.tree[0] if args.tree else str(HERE.parent)))
        return
    trees = args.tree or [str(HERE.parent)]
    a, b = (int(x) for x in args.requests.split(","))
    only = [word for word in args.only.split(",") if word]
    print(f"Python {sys.version.split()[0]}; instructions per request = (count({b}) - count({a})) / {b - a}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (does not change counts)")
    print(f"{'case':24}{'tree':>40}{'bare':>12}{'instrumented':>14}{'added':>10}{'calls added':>13}")
    for label, path in CASES.items():
        if only and not any(word in label for word in only):
            continue
        for tree in trees:
            per = {}
            for instrumented in (False, True):
                per[instrumented] = (count(tree, path, b, instrumented) - count(tree, path, a, instrumented)) / (b - a)
            added_calls = (calls(tree, path, 200, True) - calls(tree, path, 200, False)) / 200
            name = tree if len(tree) <= 38 else "…" + tree[-37:]
            added = per[True] - per[False]
            print(f"{label:24}{name:>40}{per[False]:12.0f}{per[True]:14.0f}{added:10.0f}{added_calls:13.1f}")


if __name__ == "__main__":
    main()
