"""What profiling on demand (issue 21) costs: requests that are not profiled, and a profiled request.

Usage:
  python benchmarks/profile_cost.py count [--requests 1000]
      CPU instructions per request (valgrind's callgrind: exact, whatever the machine's load) of a trivial
      view through the middleware (no flusher thread, whose clock-driven flushes would blur the count), with
      the profiling check as shipped and with it taken out of the middleware. Budget: +0 µs for requests
      that are not profiled.
  python benchmarks/profile_cost.py time [--rounds 15]
      Views profiled (a superuser's request: header, profile stored in memcached) and not, interleaved,
      with pyinstrument and with the built-in sampler; medians and ratios. Budget: <= 1.4x.

In-process WSGI (Django's handler), SQLite in memory, a real memcached for the stored profiles.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import wsgi_env  # noqa: E402 - after the path is set


def crunch_numbers(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += (i * i) % 7
    return total


def setup(port: int | None) -> None:
    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.template import engines
    from django.urls import path

    def trivial(request):
        return HttpResponse("ok")

    def burn(request):
        return HttpResponse(f"burnt {crunch_numbers(200_000)}")

    def template(request):
        loop = engines["django"].from_string(
            "{% for row in rows %}<li>{{ row.name|title }} {{ row.value|floatformat:2 }} "
            "{{ row.when|date:'Y-m-d' }}</li>{% endfor %}"
        )
        import datetime

        rows = [{"name": f"item {i}", "value": i / 7, "when": datetime.date(2026, 1, 1 + i % 28)} for i in range(400)]
        return HttpResponse(loop.render({"rows": rows}))

    urlconf = type(sys)("profile_cost_urls")
    urlconf.urlpatterns = [path("trivial/", trivial), path("burn/", burn), path("template/", template)]
    sys.modules["profile_cost_urls"] = urlconf
    settings.configure(
        SECRET_KEY="benchmark-only",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="profile_cost_urls",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "instrumented"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": False}],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        MIDDLEWARE=["instrumented.middleware.InstrumentedMiddleware"],
        USE_TZ=True,
        INSTRUMENTED={"SERVERS": [f"127.0.0.1:{port or 9}"], "KEY_PREFIX": f"pc{os.getpid()}"},
    )
    django.setup()


def environ(path: str, profile: bool = False) -> dict:
    """A GET of ``path``; with ``profile``, the profile header and a session cookie (the gate below stands in for
    the superuser check)."""
    if not profile:
        return wsgi_env.environ(path)
    return wsgi_env.environ(path, {"HTTP_X_INSTRUMENTED_PROFILE": "1", "HTTP_COOKIE": "sessionid=benchmark"})


def serve(app, path: str, n: int, profile: bool = False) -> float:
    """Mean seconds per request (the response iterated and closed, as a server does)."""

    def start_response(status, headers, exc_info=None):
        return None

    start = time.perf_counter_ns()
    for _ in range(n):
        response = app(environ(path, profile), start_response)
        for _chunk in response:
            pass
        response.close()
        if profile:
            assert response.has_header("X-Instrumented-Profile"), response.headers
    return (time.perf_counter_ns() - start) / n / 1e9


def without_profiling_check() -> None:
    """Put the middleware's ``__call__`` back as it was before issue 21 (the two tests of the profile hook out)."""
    from instrumented import middleware

    source = textwrap.dedent(inspect.getsource(middleware.InstrumentedMiddleware.__call__))
    lines = source.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if "watch.armed or PROFILE_META" in line)
    del lines[start - 1 : start + 2]  # the comment, the test and its return
    namespace: dict = {}
    exec("".join(lines), middleware.__dict__, namespace)  # the package's own source, minus 3 lines
    middleware.InstrumentedMiddleware.__call__ = namespace["__call__"]


def run(variant: str, requests: int) -> None:
    """The measured process of ``count``: warm up, then ``requests`` requests of the trivial view."""
    setup(None)
    from django.core.handlers.wsgi import WSGIHandler

    from instrumented.stats import intake

    # No flusher thread: its flushes come with the clock, not with the requests, and would blur the count
    # (the requests are then counted when the pending list is full, in the request: the same in both variants).
    intake.ensure_flusher = lambda config: None
    if variant == "without":
        without_profiling_check()
    app = WSGIHandler()
    serve(app, "/trivial/", 200)
    serve(app, "/trivial/", requests)


def check_loop(variant: str, n: int) -> None:
    """The measured process of ``count``'s second figure: the middleware's test alone, ``n`` times."""
    from instrumented.profiling.runner import REQUEST_META as PROFILE_META
    from instrumented.profiling.store import watch

    class Request:
        META = environ("/trivial/")

    request = Request()
    if variant == "with":
        for _ in range(n):
            if watch.armed or PROFILE_META in request.META:
                raise AssertionError("not armed, no header")
    else:
        for _ in range(n):
            pass


def instructions(variant: str, requests: int, mode: str = "_run") -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            mode,
            variant,
            str(requests),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
    )
    match = re.search(r"Collected : (\d+)", out.stderr)
    assert match, out.stderr[-2000:]
    return int(match[1])


def count(requests: int) -> None:
    print(f"callgrind, trivial view, Python {sys.version.split()[0]}; instructions per request =")
    print(f"  (I({3 * requests} requests) - I({requests} requests)) / {2 * requests}\n")
    per = {}
    for variant in ("without", "with"):
        low, high = instructions(variant, requests), instructions(variant, 3 * requests)
        per[variant] = (high - low) / (2 * requests)
        print(f"  {variant:8} the profiling check: {per[variant]:12.1f} instructions a request")
    added = per["with"] - per["without"]
    print(f"\n  added by the check: {added:.1f} instructions a request (~8 200 instructions a µs on this machine's")
    print(f"  benchmark site, docs/architecture.md §7: {added / 8200:.3f} µs); budget +0 µs")
    loops = 200_000
    alone = {v: instructions(v, loops, "_check") - instructions(v, 0, "_check") for v in ("without", "with")}
    check = (alone["with"] - alone["without"]) / loops
    print(
        f"\n  the test alone (armed? header?), {loops} times in a loop, minus the empty loop: {check:.1f} instructions"
    )
    print(f"  a request ({check / 8200 * 1000:.1f} ns)")


def timing(rounds: int) -> None:
    from overhead import start_memcached

    memcached, port = start_memcached()
    try:
        setup(port)
        from django.core.handlers.wsgi import WSGIHandler
        from django.test.utils import override_settings

        from instrumented.profiling import engines, runner

        runner.is_technical_user = lambda request: True  # the superuser gate, without a user database
        app = WSGIHandler()
        cases = {"burn/ (20 ms of CPU in one function)": "/burn/", "template/ (400-row template)": "/template/"}
        print(f"Python {sys.version.split()[0]}, pyinstrument installed: {engines.pyinstrument_available()}; ")
        print(f"{rounds} interleaved rounds, medians of per-round means\n")
        print(f"{'':40}{'engine':>14}{'plain':>11}{'profiled':>11}{'ratio':>8}   budget <= 1.4x")
        for label, path in cases.items():
            n = 5 if "burn" in path else 20
            serve(app, path, n)
            for engine in ("pyinstrument", "builtin"):
                with override_settings(INSTRUMENTED={"SERVERS": [f"127.0.0.1:{port}"], "PROFILE_ENGINE": engine}):
                    serve(app, path, n, profile=True)
                    plain, profiled, ratios = [], [], []
                    for _ in range(rounds):
                        a = serve(app, path, n)
                        b = serve(app, path, n, profile=True)
                        plain.append(a)
                        profiled.append(b)
                        ratios.append(b / a)
                    name = engine if engines.pyinstrument_available() else "builtin"
                    print(
                        f"{label:40}{name:>14}{statistics.median(plain) * 1e3:9.2f}ms"
                        f"{statistics.median(profiled) * 1e3:9.2f}ms{statistics.median(ratios):7.2f}x"
                    )
    finally:
        memcached.terminate()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in ("_run", "_check"):
        if sys.argv[1] == "_run":
            run(sys.argv[2], int(sys.argv[3]))
        else:
            setup(None)
            check_loop(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["count", "time"])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.mode == "count":
        count(args.requests)
    else:
        timing(args.rounds)


if __name__ == "__main__":
    main()
