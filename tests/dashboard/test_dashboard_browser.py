"""The dashboard and the bookmarklet in a real headless Chromium, against the demo site under gunicorn.

Set INSTRUMENTED_SCREENSHOTS=1 (docs/screenshots/make.py does) to also save the screenshots of the docs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support import browser
from tests.support.ports import wait_until
from tests.support.servers import EXAMPLE, ROOT, server_env

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

SCREENSHOTS = os.environ.get("INSTRUMENTED_SCREENSHOTS") == "1"
SHOTS_DIR = ROOT / "docs" / "screenshots"


def hit(server, path: str, times: int = 1) -> None:
    for _ in range(times):
        try:
            urllib.request.urlopen(server.url + path, timeout=10).read()
        except urllib.error.HTTPError:
            pass  # /fail/ answers 500 on purpose


def row_requests(driver, view: str) -> int | None:
    return driver.execute_script(
        "const r = [...document.querySelectorAll('#instr-table tbody tr')].find(t => t.dataset.view === arguments[0]);"
        "return r ? Number(r.dataset.requests) : null;",
        view,
    )


def p95_column(driver) -> list[float]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#instr-table tbody tr[data-view]')]"
        ".map(t => parseFloat(t.cells[5].textContent));"
    )


def visible_views(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#instr-table tbody tr[data-view]')].map(t => t.dataset.view);"
    )


def shot(driver, name: str, full_page: bool = False) -> None:
    if SCREENSHOTS:
        SHOTS_DIR.mkdir(parents=True, exist_ok=True)
        if full_page:
            width = driver.get_window_size()["width"]
            driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight;") + 140)
        driver.save_screenshot(str(SHOTS_DIR / name))
        if full_page:
            driver.set_window_size(width, 900)


def demo_traffic(server) -> None:
    """A little of everything; spread over several 10 s buckets when making screenshots (charts need time)."""
    rounds = 4 if SCREENSHOTS else 1
    for i in range(rounds):
        hit(server, "/fast/", 6)
        hit(server, "/catalogue/", 3)
        hit(server, "/n-plus-one/", 2)
        hit(server, "/slow/", 2)
        hit(server, "/books/3/", 2)
        hit(server, "/stream/")
        hit(server, "/fail/")
        if i < rounds - 1:
            time.sleep(10)


def test_dashboard_updates_live_sorts_filters_and_obeys_its_csp(site_server, site_data_dir, settings):
    server = site_server(workers=2)
    browser.create_user(site_data_dir, "staff", "staff-pw", staff=True)
    demo_traffic(server)
    with browser.chrome() as driver:
        from selenium.webdriver.common.by import By

        browser.login(driver, server.url, "staff", "staff-pw")
        browser.console_messages(driver)  # start the CSP check from a clean log
        driver.get(server.url + "/instrumented/")
        driver.execute_script("window.__notReloaded = true;")
        wait_until(lambda: row_requests(driver, "shop:fast"), timeout=10)
        before = row_requests(driver, "shop:fast")

        hit(server, "/fast/", 5)
        wait_until(lambda: row_requests(driver, "shop:fast") == before + 5, timeout=15)
        assert driver.execute_script("return window.__notReloaded === true;"), "the page reloaded"

        # Sort by p95 (descending), click again for ascending; the worst p95 is highlighted.
        driver.find_element(By.CSS_SELECTOR, "th[data-key=p95] button").click()
        values = p95_column(driver)
        assert values == sorted(values, reverse=True) and values[0] >= 150  # /slow/ or /stream/ on top
        assert driver.find_element(By.CSS_SELECTOR, "th[data-key=p95]").get_attribute("aria-sort") == "descending"
        worst = driver.find_element(By.CSS_SELECTOR, "#instr-table tbody tr:first-child td.instr-worst")
        assert float(worst.text.split()[0]) == values[0]
        assert worst.text.endswith(" n=" + worst.find_element(By.CSS_SELECTOR, ".instr-few").text[2:])  # few requests
        driver.find_element(By.CSS_SELECTOR, "th[data-key=p95] button").click()
        assert p95_column(driver) == sorted(values)
        driver.find_element(By.CSS_SELECTOR, "th[data-key=requests] button").click()
        assert visible_views(driver)[0] == "shop:fast"

        # The filter box narrows the rows, and they stay narrowed across refreshes.
        driver.find_element(By.ID, "instr-filter").send_keys("n-plus")
        assert visible_views(driver) == ["shop:n_plus_one"]
        time.sleep(3.5)
        assert visible_views(driver) == ["shop:n_plus_one"]
        driver.find_element(By.ID, "instr-filter").clear()
        driver.find_element(By.ID, "instr-filter").send_keys(" ")  # fires input; blank filter shows everything
        wait_until(lambda: len(visible_views(driver)) >= 6, timeout=5)

        # Error rows are marked.
        assert "instr-bad" in driver.find_element(By.CSS_SELECTOR, "tr[data-view='shop:fail']").get_attribute("class")

        # A one-off command goes to its own table, and its process is not one of the site's (issue 23).
        env = server_env(site_data_dir, settings.INSTRUMENTED["KEY_PREFIX"])
        subprocess.run([sys.executable, "manage.py", "check"], cwd=EXAMPLE, env=env, check=True, capture_output=True)
        work_rows = "return [...document.querySelectorAll('#instr-work tbody tr')].map(t => t.dataset.view);"
        wait_until(lambda: driver.execute_script(work_rows) == ["command:check"], timeout=10)
        assert "command:check" not in visible_views(driver)
        assert driver.find_element(By.ID, "instr-work-section").is_displayed()
        assert re.search(r"· [12] live process(es)? · ", driver.find_element(By.ID, "instr-status").text)

        # The bookmarklet to drag.
        href = driver.find_element(By.ID, "instr-bookmarklet").get_attribute("href")
        assert href.startswith("javascript:")
        shot(driver, "dashboard.png")

        # The per-view page: charts and SQL.
        driver.find_element(By.LINK_TEXT, "shop:n_plus_one").click()
        assert "/instrumented/view/?name=shop%3An_plus_one" in driver.current_url
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.ichart")) == 3
        assert driver.find_element(By.ID, "instr-suspects").text.startswith("N+1 in")
        assert "FROM" in driver.find_element(By.CSS_SELECTOR, "pre.instr-sql").text
        shot(driver, "view-detail.png", full_page=True)
        if SCREENSHOTS:
            driver.get(server.url + "/instrumented/view/?name=shop%3Aslow")
            shot(driver, "view-detail-slow.png", full_page=True)

        # Every page above ran under the dashboard's own script-src 'self' policy without a violation.
        messages = browser.console_messages(driver)
        assert browser.csp_violations(messages) == [], messages
        if SCREENSHOTS:  # the admin's dark theme, through its CSS variables
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
            )
            driver.get(server.url + "/instrumented/")
            wait_until(lambda: row_requests(driver, "shop:fast"), timeout=10)
            shot(driver, "dashboard-dark.png")


def test_api_refuses_anonymous_callers_over_http(site_server):
    server = site_server(workers=1)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server.url + "/instrumented/api/views", timeout=10)
    assert error.value.code == 401
    assert json.loads(error.value.read())["error"].startswith("authentication required")


def test_bookmarklet_overlay_on_a_strict_csp_page(site_server, site_data_dir):
    server = site_server(workers=2)
    browser.create_user(site_data_dir, "staff", "staff-pw", staff=True)
    hit(server, "/csp/", 4)
    with browser.chrome(width=1200, height=700) as driver:
        from selenium.webdriver.common.by import By

        browser.login(driver, server.url, "staff", "staff-pw")
        driver.get(server.url + "/instrumented/bookmarklet/")
        href = driver.find_element(By.ID, "instr-bookmarklet").get_attribute("href")

        driver.get(server.url + "/csp/")
        # The page's policy is enforced: its own inline script was blocked, and Chromium said so.
        assert driver.title == "Orders (strict CSP)"
        assert browser.csp_violations(browser.console_messages(driver)), "expected the page's inline script blocked"
        time.sleep(1.0)  # let the flusher publish this visit

        browser.click_bookmarklet(driver, href)
        text = wait_until(lambda: (t := browser.overlay_text(driver)) and "Full view page" in t and t, timeout=10)
        assert driver.current_url == server.url + "/csp/"  # the page stayed
        shadow = driver.execute_script(
            "const h = document.getElementById('instrumented-overlay');"
            "return [h.shadowRoot.mode, h.shadowRoot.adoptedStyleSheets.length, getComputedStyle(h).position];"
        )
        assert shadow == ["open", 1, "fixed"]
        api = driver.execute_async_script(
            "fetch('/instrumented/api/view?path=/csp/').then(r => r.json()).then(arguments[0]);"
        )
        assert api["view"] == "demo_extra:strict_csp" and api["stats"]["requests"] >= 5
        assert "demo_extra:strict_csp" in text
        rows = dict(
            driver.execute_script(
                "return [...document.getElementById('instrumented-overlay').shadowRoot.querySelectorAll('tr')]"
                ".map(r => [r.cells[0].textContent, r.cells[1].textContent]);"
            )
        )
        stats, lat = api["stats"], api["stats"]["latency_ms"]
        assert rows == {
            "requests (300 s)": str(stats["requests"]),
            "errors": "0",
            "p50 / p95": f"{lat['p50']:.1f} ms / {lat['p95']:.1f} ms"
            + (f" (n={lat['samples']})" if lat["samples"] < 20 else ""),
            "p99 / max": f"{lat['p99']:.1f} ms / {lat['max']:.1f} ms",
            "queries / request": "0 (max 0)",
            "DB time": "0.0 ms",
            "N+1 requests": "0",
        }
        link = driver.execute_script(
            "return document.getElementById('instrumented-overlay').shadowRoot.querySelector('a').href;"
        )
        assert link == server.url + "/instrumented/view/?name=demo_extra%3Astrict_csp"
        # Nothing the bookmarklet did was blocked by the page's policy.
        assert browser.csp_violations(browser.console_messages(driver)) == []
        shot(driver, "overlay.png")

        browser.click_bookmarklet(driver, href)  # a second click closes it
        wait_until(lambda: browser.overlay_text(driver) is None, timeout=5)

        # On a page that no view serves, it says so.
        driver.get(server.url + "/no/such/page/")
        browser.click_bookmarklet(driver, href)
        text = wait_until(lambda: (t := browser.overlay_text(driver)) and "No data" in t and t, timeout=10)
        assert "no view serves this path" in text


def test_anonymous_and_non_staff_see_nothing_sensitive(site_server, site_data_dir):
    server = site_server(workers=1)
    hit(server, "/csp/", 2)
    session = browser.create_user(site_data_dir, "customer", "customer-pw", staff=False)
    with browser.chrome(width=1200, height=700) as driver:
        from instrumented.dashboard.bookmarklet import href_for

        href = href_for("/instrumented/")
        # Anonymous: the dashboard redirects to the admin login, the overlay asks to log in.
        driver.get(server.url + "/instrumented/")
        assert "/admin/login/?next=/instrumented/" in driver.current_url
        driver.get(server.url + "/csp/")
        browser.click_bookmarklet(driver, href)
        text = wait_until(lambda: (t := browser.overlay_text(driver)) and "Loading" not in t and t, timeout=10)
        assert "Log in as a staff user" in text and "requests" not in text and "strict_csp" not in text
        shot(driver, "overlay-anonymous.png")

        # Logged in, not staff: the API says 403, the overlay says so, the dashboard still redirects.
        browser.use_session(driver, server.url, session)
        status = driver.execute_async_script("fetch('/instrumented/api/views').then(r => arguments[0](r.status));")
        assert status == 403
        driver.get(server.url + "/csp/")
        browser.click_bookmarklet(driver, href)
        text = wait_until(lambda: (t := browser.overlay_text(driver)) and "Loading" not in t and t, timeout=10)
        assert "may not see stats" in text and "requests" not in text
        driver.get(server.url + "/instrumented/")
        assert "/admin/login/" in driver.current_url
        assert "strict_csp" not in driver.page_source


def test_documented_screenshots_exist():
    doc = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    names = re.findall(r"\(screenshots/([\w.-]+\.png)\)", doc)
    assert {"dashboard.png", "view-detail.png", "overlay.png"} <= set(names)
    for name in names:
        assert (SHOTS_DIR / name).stat().st_size > 10_000, name
