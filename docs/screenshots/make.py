"""Regenerate the screenshots of docs/dashboard.md: the browser tests, run with INSTRUMENTED_SCREENSHOTS=1.

Usage (from anywhere): ``python docs/screenshots/make.py``. Needs what the browser tests need
(memcached, /usr/bin/chromium, /usr/bin/chromedriver, selenium); takes about a minute because the
charts need traffic spread over several 10-second buckets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    """Run the browser tests that save the screenshots; return pytest's exit code."""
    env = {**os.environ, "INSTRUMENTED_SCREENSHOTS": "1"}
    tests = [
        "tests/dashboard/test_dashboard_browser.py",
        "tests/dashboard/test_dashboard_width_browser.py",
        "tests/errors/test_traceback_page_browser.py",
        "tests/dashboard/test_findings_browser.py",
        "tests/querylog/test_explain_browser.py",
        "tests/profiling/test_profile_browser.py",
        "tests/dashboard/test_samples_browser.py",
        "tests/stats/test_real_site.py::test_real_site_under_gunicorn[sqlite]",
    ]
    command = [sys.executable, "-m", "pytest", *tests, "-q", "-k", "not documented"]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
