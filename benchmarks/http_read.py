"""The dashboard's ``api/views`` over HTTP, with 48 real gunicorn workers that served 300 views.

Usage: python benchmarks/http_read.py [--workers 48] [--views-requests 20] [--rounds 15]

Starts a real memcached and gunicorn (sync workers, ``--preload``) on benchmarks/http_site.py, sends
every one of the 300 views ``--views-requests`` times from 32 threads (until every worker has written),
then GETs ``/instrumented/api/views`` as a logged-in staff user (a session cookie, as a browser's
dashboard does), one request at a time: each lands on whichever worker accepts it. Prints the median,
beside its budget (docs/architecture.md §7: <= 80 ms).
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--views-requests", type=int, default=20, help="requests per view (300 views)")
    parser.add_argument("--rounds", type=int, default=15)
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
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    os.environ.update({key: env[key] for key in ("DJANGO_SETTINGS_MODULE", "HTTP_BENCH_DIR")})
    port = free_port()
    # This process's own work (migrate) is recorded under another prefix: only the workers' data is read.
    os.environ.update(INSTRUMENTED_SERVERS=env["INSTRUMENTED_SERVERS"], INSTRUMENTED_KEY_PREFIX=f"setup{port}")
    cookie = staff_cookie()
    cmd = [sys.executable, "-m", "gunicorn", "django.core.wsgi:get_wsgi_application()", "--preload"]
    cmd += ["--workers", str(args.workers), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    site = subprocess.Popen(cmd, cwd=HERE, env=env)
    try:
        wait_for_port(port, site)
        run(f"http://127.0.0.1:{port}", cookie, args)
    finally:
        site.terminate()
        site.wait(30)


def run(url: str, cookie: str, args: argparse.Namespace) -> None:
    from http_site import VIEWS

    paths = [f"/v/{i}/" for i in range(VIEWS)] * args.views_requests
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        statuses = set(pool.map(lambda path: get(url + path)[0], paths))
    assert statuses == {200}, statuses
    sent = len(paths)
    while True:  # until every worker has written (gunicorn hands connections to whichever worker accepts)
        time.sleep(1.5)  # a flush interval and then some: every request is in memcached
        status, body, _ = get(url + "/instrumented/api/views", cookie)
        stats = json.loads(body)
        total = sum(view["requests"] for view in stats["views"] if view["view"].startswith("view_"))
        if stats["processes"] >= args.workers or time.monotonic() - started > 60:
            break
        with ThreadPoolExecutor(32) as pool:
            statuses = set(pool.map(lambda path: get(url + path)[0], paths[:VIEWS]))
        sent += VIEWS
    traffic = time.monotonic() - started
    assert status == 200 and total == sent, (status, total, sent)
    times = [get(url + "/instrumented/api/views", cookie)[2] for _ in range(args.rounds)]
    per_process = sent / max(stats["processes"], 1)
    print(
        f"{args.workers} gunicorn workers, {len(stats['views'])} views, {sent} requests in {traffic:.1f} s "
        f"({stats['processes']} processes wrote, ~{per_process:.0f} requests each)"
    )
    print(
        f"  api/views over HTTP, staff session, one at a time: median {statistics.median(times) * 1000:.1f} ms "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}; {args.rounds} rounds; budget <= 80 ms)"
    )


if __name__ == "__main__":
    main()
