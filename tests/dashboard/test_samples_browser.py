"""The slowest requests in headless Chromium: from the p99 to the waterfall, and the overlay's link."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.dashboard.test_dashboard_browser import hit, shot
from tests.support import browser
from tests.support.ports import wait_until

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def test_developer_opens_the_p99_and_reads_the_waterfall(site_server, site_data_dir):
    server = site_server(workers=2)
    browser.create_user(site_data_dir, "staff", "staff-pw", staff=True)
    hit(server, "/catalogue/")
    hit(server, "/planted/?ms=0", 6)  # both workers warm (a cold one's first request is slow on a loaded machine)
    for ms in (3, 8, 13, 20, 27, 33, 40, 61, 1300):  # 1300 % 7 + 1 = 6 book lookups: an N+1 in the slowest
        hit(server, f"/planted/?ms={ms}")
    with browser.chrome(width=1300, height=900) as driver:
        from selenium.webdriver.common.by import By

        browser.login(driver, server.url, "staff", "staff-pw")
        browser.console_messages(driver)
        page = server.url + "/instrumented/view/?name=" + quote("shop:planted", safe="")

        def p99_link() -> object | None:
            driver.get(page)
            found = driver.find_elements(By.ID, "instr-p99-samples")
            return found[0] if found and driver.find_elements(By.CSS_SELECTOR, "svg.iwf") else None

        wait_until(p99_link, timeout=10).click()
        assert "min_ms=" in driver.current_url and driver.current_url.endswith("#samples")
        samples = driver.find_elements(By.CSS_SELECTOR, ".instr-sample")
        assert samples, "the p99 of 16 requests and above: the slowest first"
        head = samples[0].find_element(By.CSS_SELECTOR, ".instr-sample-head").text
        assert "GET · 200" in head and "anonymous" in head and float(head.split(" ms")[0]) >= 1300
        rows = [row.text for row in samples[0].find_elements(By.CSS_SELECTOR, "g.iwf-row text.iwf-label")]
        assert any(r.startswith("6\N{MULTIPLICATION SIGN} default: SELECT") for r in rows), rows
        assert any("demo_sleep" in r for r in rows) and any("template shop/planted.html" in r for r in rows)
        n_plus_one = samples[0].find_element(By.CSS_SELECTOR, "rect.iwf-n1 title")
        assert "sample_views.py" in n_plus_one.get_attribute("textContent"), "the call site, on hover"
        assert browser.csp_violations(browser.console_messages(driver)) == []
        driver.get(page + "#samples")
        shot(driver, "view-detail-samples.png", full_page=True)

        # The overlay on the view's own page links to them.
        driver.get(server.url + "/instrumented/bookmarklet/")
        href = driver.find_element(By.ID, "instr-bookmarklet").get_attribute("href")
        driver.get(server.url + "/planted/?ms=1")
        browser.click_bookmarklet(driver, href)
        wait_until(lambda: (t := browser.overlay_text(driver)) and "Slowest requests" in t, timeout=10)
