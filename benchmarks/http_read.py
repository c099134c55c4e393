"""Reads at real traffic: the dashboard's ``api/views`` over HTTP and the in-process full read, with 48 real
gunicorn workers that served 300 views in random order.

Usage: python benchmarks/http_read.py [--workers 48] [--seconds 45] [--rate 200] [--rounds 7]

Starts a real memcached and gunicorn (sync workers, ``--preload``) on benchmarks/http_site.py with a 60 s window
of 2 s buckets (``--window``, ``--bucket``), then sends ``--rate`` requests a second for ``--seconds`` from 32
threads, each to a view picked at random: each worker sees its own random subset of the views in its own order,
as in production, and the traffic spans most of the window's buckets. Then, interleaved, ``--rounds`` times:
GET ``/instrumented/api/views`` as a logged-in staff user (a session cookie, as a browser's dashboard does) on a
new connection, landing on whichever worker accepts it, at least the reader's per-process share
(``CACHE_SECONDS``) after the last one so no worker answers from its share; and ``read_stats()`` in this
process over the same memcached, read afresh (the full table, and one view with its series; the full table
also from the workers' roll-ups, as before the history of stats/history.py). Prints the
medians beside their budgets (docs/architecture.md §7: full read <= 50 ms, one view with series <= 100 ms,
``api/views`` over HTTP <= 80 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from overhead import free_port, start_memcached  # noqa: E402


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gunicorn exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("gunicorn did not start listening")


def staff_cookie() -> str:
    """A staff user and a logged-in session in the site's database: the cookie a browser would send."""
    import django
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def get(url: str, cookie: str | None = None) -> tuple[int, bytes, float]:
    """Status, body and seconds of one GET on a new connection."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        return response.status, body, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=45.0, help="how long the traffic lasts")
    parser.add_argument("--rate", type=float, default=200.0, help="requests a second, each to a random view")
    parser.add_argument("--window", type=int, default=60, help="INSTRUMENTED WINDOW_SECONDS of the site")
    parser.add_argument("--bucket", type=int, default=2, help="INSTRUMENTED BUCKET_SECONDS of the site")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    memcached, memcached_port = start_memcached()
    try:
        with tempfile.TemporaryDirectory(prefix="http-bench-") as data_dir:
            serve(memcached_port, data_dir, args)
    finally:
        memcached.terminate()


def serve(memcached_port: int, data_dir: str, args: argparse.Namespace) -> None:
    """Set up the site's database and a staff session, start gunicorn, run the measurement, stop gunicorn."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "http_site",
        "HTTP_BENCH_DIR": data_dir,
        "INSTRUMENTED_SERVERS": f"127.0.0.1:{memcached_port}",
        "INSTRUMENTED_KEY_PREFIX": f"http{os.getpid()}",
        "INSTRUMENTED_WINDOW_SECONDS": str(args.window),
        "INSTRUMENTED_BUCKET_SECONDS": str(args.bucket),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    shared = ("DJANGO_SETTINGS_MODULE", "HTTP_BENCH_DIR", "INSTRUMENTED_SERVERS", "INSTRUMENTED_WINDOW_SECONDS",
              "INSTRUMENTED_BUCKET_SECONDS")  # fmt: skip
    os.environ.update({key: env[key] for key in shared})
    port = free_port()
    # This process's own work (migrate) is recorded under another prefix: only the workers' data is read.
    os.environ["INSTRUMENTED_KEY_PREFIX"] = f"setup{port}"
    cookie = staff_cookie()
    cmd = [sys.executable, "-m", "gunicorn", "django.core.wsgi:get_wsgi_application()", "--preload"]
    cmd += ["--workers", str(args.workers), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    site = subprocess.Popen(cmd, cwd=HERE, env=env)
    try:
        wait_for_port(port, site)
        run(f"http://127.0.0.1:{port}", cookie, env["INSTRUMENTED_KEY_PREFIX"], args)
    finally:
        site.terminate()
        site.wait(30)


def random_traffic(url: str, requests: int, rate: float, rng: random.Random) -> None:
    """``requests`` GETs, each to a random view, paced at ``rate`` a second (as fast as 32 threads go if slower)."""
    from http_site import VIEWS

    paths = [f"/v/{rng.randrange(VIEWS)}/" for _ in range(requests)]
    start = time.monotonic()

    def send(numbered: tuple[int, str]) -> int:
        delay = start + numbered[0] / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return get(url + numbered[1])[0]

    with ThreadPoolExecutor(32) as pool:
        statuses = set(pool.map(send, enumerate(paths)))
    assert statuses == {200}, statuses


def run(url: str, cookie: str, prefix: str, args: argparse.Namespace) -> None:
    from django.conf import settings
    from django.test.utils import override_settings

    from instrumented.reader import read_stats
    from instrumented.stats import reader
    from instrumented.stats.reader import CACHE_SECONDS

    rng = random.Random(24)
    started = time.monotonic()
    sent = int(args.seconds * args.rate)
    random_traffic(url, sent, args.rate, rng)
    traffic = time.monotonic() - started
    while True:  # until every worker has written (gunicorn hands connections to whichever worker accepts)
        time.sleep(1.5)  # a flush interval and then some: every request is in memcached
        status, body, _ = get(url + "/instrumented/api/views", cookie)
        stats = json.loads(body)
        total = sum(view["requests"] for view in stats["views"] if view["view"].startswith("view_"))
        if stats["processes"] >= args.workers or time.monotonic() - started > args.seconds + 30:
            break
        random_traffic(url, 300, args.rate, rng)
        sent += 300
    assert status == 200 and total == sent, (status, total, sent)
    times: dict[str, list[float]] = {"http": [], "full": [], "series": [], "rollups": []}
    same = 0
    with override_settings(INSTRUMENTED={**settings.INSTRUMENTED, "KEY_PREFIX": prefix}):
        last = time.monotonic()
        for _ in range(args.rounds):
            time.sleep(max(0.0, last + CACHE_SECONDS + 0.05 - time.monotonic()))  # every worker's share has expired
            last = time.monotonic()
            times["http"].append(get(url + "/instrumented/api/views", cookie)[2])
            start = time.perf_counter()
            document = read_stats(now=time.time())  # ``now``: read afresh, never this process's share
            times["full"].append(time.perf_counter() - start)
            reader.READ_HISTORY = False  # the same read from the workers' roll-ups, as before history
            try:
                start = time.perf_counter()
                before = read_stats(now=time.time())
                times["rollups"].append(time.perf_counter() - start)
            finally:
                reader.READ_HISTORY = True
            same += before["views"] == document["views"]  # unless a bucket left the window in between
            start = time.perf_counter()
            read_stats(view="view_7", series=True, now=time.time())
            times["series"].append(time.perf_counter() - start)
    in_window = sum(view["requests"] for view in document["views"] if view["view"].startswith("view_"))
    layouts = len(document["views"])
    print(
        f"{args.workers} gunicorn workers, {layouts} views, {sent} requests to random views in {traffic:.1f} s "
        f"({sent / traffic:.0f}/s; {stats['processes']} processes wrote, ~{sent / max(stats['processes'], 1):.0f} "
        f"requests each); window {args.window} s of {args.bucket} s buckets"
    )
    if in_window != sent:
        print(f"  (the last read saw {in_window} of the {sent} requests: the first buckets left the window)")
    ms = {key: [t * 1000 for t in values] for key, values in times.items()}
    for key, label, budget in (
        ("full", "full read, in-process read_stats() (history)", 50),
        ("rollups", "the same from the workers' roll-ups (no history)", 50),
        ("series", "one view with series, in-process", 100),
        ("http", "api/views over HTTP, staff session", 80),
    ):
        print(
            f"  {label}: median {statistics.median(ms[key]):.1f} ms (min {min(ms[key]):.1f}, max {max(ms[key]):.1f}; "
            f"{args.rounds} rounds; budget <= {budget} ms)"
        )
    print(f"  history and roll-ups gave the same views in {same} of {args.rounds} rounds")
    print(f"  load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
