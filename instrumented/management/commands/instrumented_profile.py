"""``manage.py instrumented_profile <view> -n 10``: profile the next N requests of a view everywhere, merged."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from instrumented.display import escape_controls
from instrumented.memcached import get_store
from instrumented.profiling.render import text_tree
from instrumented.profiling.store import MAX_ARMED, arm_profiles, arm_view
from instrumented.profiling.tree import hot_functions, merge, speedscope


class Command(BaseCommand):
    """Arm a view (every process learns it at its next flush), wait for its N profiles, print their merged tree."""

    help = "Profile the next N requests of a view on every process and print their merged call tree."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("view", help="the view's name as the dashboard shows it, e.g. shop:catalogue")
        parser.add_argument("-n", type=int, default=10, help=f"how many requests, 1 to {MAX_ARMED} (default 10)")
        parser.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: the window)")
        parser.add_argument("--min-share", type=float, default=1.0, help="hide call paths under this %% (default 1)")
        parser.add_argument("--speedscope", action="store_true", help="print speedscope's JSON instead of text")

    def handle(self, *args: Any, **options: Any) -> None:
        n = options["n"]
        if not 1 <= n <= MAX_ARMED:
            raise CommandError(f"-n must be between 1 and {MAX_ARMED}")
        store = get_store()
        arm = arm_view(options["view"], n, "manage.py instrumented_profile", store)
        if arm is None:
            raise CommandError(f"memcached did not take the arm: {store.last_error or 'unavailable'}")
        self.stderr.write(f"Armed {arm['view']} for its next {n} requests (arm {arm['id']}); waiting…")
        deadline = time.monotonic() + (options["timeout"] or store.config.window_seconds)
        profiles: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            profiles = arm_profiles(arm, store)
            if len(profiles) >= n:
                break
            time.sleep(0.5)
        if not profiles:
            raise CommandError("no profile arrived before the timeout (no traffic to that view?)")
        tree = merge([p["tree"] for p in profiles], store.config.profile_max_nodes)
        processes = len({p["process"] for p in profiles})
        if options["speedscope"]:
            self.stdout.write(json.dumps(speedscope(tree, f"{arm['view']} x {len(profiles)}")))
            return
        self.stdout.write(
            f"{escape_controls(arm['view'])}: {len(profiles)} request(s) of {n} on {processes} process(es), "
            f"{tree['nodes'][0][2] / 1000:.1f} ms sampled in all"
        )
        self.stdout.write("\nFunctions by own time:")
        for row in hot_functions(tree, 10):
            self.stdout.write(
                f"{row['self_ms']:9.1f} ms {100 * row['share']:5.1f} %  {escape_controls(row['function'])}  "
                f"{escape_controls(row['file'])}:{row['line']}"
            )
        self.stdout.write("\nMerged call tree:")
        self.stdout.write(escape_controls(text_tree(tree, options["min_share"] / 100), keep_newlines=True))
