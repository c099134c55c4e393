"""Traffic for the demo: every demo page, weighted, from a few threads, until stopped (or --seconds)."""

from __future__ import annotations

import argparse
import random
import threading
import time
import urllib.error
import urllib.request

PAGES = {
    "/": 5,
    "/fast/": 30,
    "/catalogue/": 15,
    "/n-plus-one/": 8,
    "/authors/": 4,
    "/duplicates/": 4,
    "/slow-query/": 2,
    "/cached/": 6,
    "/outgoing/": 2,
    "/books/3/": 10,
    "/books/999/": 3,
    "/slow/": 3,
    "/fail/": 1,
    "/stream/": 2,
    "/async/": 6,
    "/burn/?rounds=100000": 3,
    "/missing-page/": 2,
}


def worker(base: str, deadline: float, stop: threading.Event, counts: dict[int, int], lock: threading.Lock) -> None:
    rng = random.Random()
    paths, weights = zip(*PAGES.items(), strict=True)
    while not stop.is_set() and time.monotonic() < deadline:
        path = rng.choices(paths, weights)[0]
        try:
            # Stamped as nginx does (`proxy_set_header X-Request-Start "t=${msec}"`): the dashboard shows the
            # request queue time, here the wait in gunicorn's backlog while every worker is busy.
            request = urllib.request.Request(base + path, headers={"X-Request-Start": f"t={time.time():.3f}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            status = 0
            time.sleep(0.5)
        with lock:
            counts[status] = counts.get(status, 0) + 1
        time.sleep(rng.uniform(0.01, 0.08))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=24 * 3600, help="stop after this long")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    stop = threading.Event()
    counts: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=worker, args=(args.url.rstrip("/"), deadline, stop, counts, lock), daemon=True)
        for _ in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(10)
            if not args.quiet:
                with lock:
                    print("requests by status:", dict(sorted(counts.items())), flush=True)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
