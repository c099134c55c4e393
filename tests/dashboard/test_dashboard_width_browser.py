"""The dashboard's table at the widths people use (issue 23): whole at 1 280 px, usable on a 390 px phone.

The demo site under gunicorn, with traffic on every kind of view (cache and outgoing HTTP columns shown,
queue time stamped) and a management command, in headless Chromium. Set INSTRUMENTED_SHOTS_DIR to keep the
screenshots, or INSTRUMENTED_SCREENSHOTS=1 to write them to docs/screenshots (docs/screenshots/make.py does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import browser
from tests.support.ports import wait_until
from tests.support.servers import EXAMPLE, ROOT, server_env

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

PAGES = ["/fast/", "/catalogue/", "/n-plus-one/", "/authors/", "/duplicates/", "/cached/", "/outgoing/",
         "/books/3/", "/slow/", "/stream/", "/fail/", "/async/", "/missing-page/", "/csp/"]  # fmt: skip


def traffic(base: str) -> None:
    for path in PAGES * 2:
        request = urllib.request.Request(base + path, headers={"X-Request-Start": f"t={time.time():.3f}"})
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError:
            pass


def measure(driver) -> dict:
    return driver.execute_script(
        "const s = document.querySelector('#instr-table').closest('.instr-scroll');"
        "const shown = [...document.querySelectorAll('#instr-table thead th')]"
        "  .filter((th) => getComputedStyle(th).display !== 'none' && !th.hidden);"
        "return {view: document.documentElement.clientWidth, page: document.documentElement.scrollWidth,"
        " table: s.scrollWidth, box: s.clientWidth, columns: shown.map((th) => th.dataset.key),"
        " right: Math.max(...shown.map((th) => th.getBoundingClientRect().right)),"
        " names: [...document.querySelectorAll('#instr-table td.instr-left a, #instr-work td.instr-left a')]"
        "  .map((a) => a.getClientRects().length)};"
    )


def shot(driver, name: str) -> None:
    directory = os.environ.get("INSTRUMENTED_SHOTS_DIR") or (
        str(ROOT / "docs" / "screenshots") if os.environ.get("INSTRUMENTED_SCREENSHOTS") == "1" else None
    )
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        width = driver.get_window_size()["width"]
        driver.set_window_size(width, min(height + 140, 2400))
        driver.save_screenshot(str(Path(directory) / name))


def test_the_table_fits_1280_pixels_and_is_usable_at_390(site_server, site_data_dir, settings):
    server = site_server(workers=2)
    browser.create_user(site_data_dir, "staff", "staff-pw", staff=True)
    traffic(server.url)
    env = server_env(site_data_dir, settings.INSTRUMENTED["KEY_PREFIX"])
    subprocess.run([sys.executable, "manage.py", "check"], cwd=EXAMPLE, env=env, check=True, capture_output=True)
    with browser.chrome(width=1280, height=900) as driver:
        browser.login(driver, server.url, "staff", "staff-pw")
        driver.get(server.url + "/instrumented/")
        wide = wait_until(
            lambda: (m := measure(driver)) and {"cache", "http", "queue", "template"} <= set(m["columns"]) and m
        )
        shot(driver, "dashboard-1280.png")
        # Every column, the N+1 one last, within the window: no horizontal scrolling, in the page or the table.
        assert wide["columns"][-1] == "n1" and len(wide["columns"]) == 16, wide
        assert wide["page"] <= wide["view"] and wide["table"] <= wide["box"] and wide["right"] <= wide["view"], wide
        driver.set_window_size(390, 844)
        driver.get(server.url + "/instrumented/")
        narrow = wait_until(lambda: (m := measure(driver)) and len(m["names"]) > 5 and m)
        shot(driver, "dashboard-390.png")
    # On a phone: the view, its traffic, errors, p95 and N+1, whole, without scrolling sideways.
    assert {"view", "requests", "errors", "p95", "n1"} <= set(narrow["columns"]), narrow
    assert narrow["page"] <= narrow["view"] and narrow["table"] <= narrow["box"], narrow
