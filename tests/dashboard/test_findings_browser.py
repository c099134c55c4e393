"""The per-view page and the overlay in headless Chromium: the N+1's file and line, the fix, cache and HTTP."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from urllib.parse import quote

import pytest

from tests.dashboard.test_dashboard_browser import hit, shot
from tests.stats.test_callsite import line_of
from tests.stats.test_http_probe import Upstream
from tests.support import browser
from tests.support.ports import wait_until

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def test_developer_reads_the_line_and_the_fix(site_server, site_data_dir):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        server = site_server(workers=2, DEMO_UPSTREAM_URL=f"http://127.0.0.1:{upstream.server_address[1]}/ok")
        browser.create_user(site_data_dir, "staff", "staff-pw", staff=True)
        hit(server, "/catalogue/")
        hit(server, "/n-plus-one/", 6)
        hit(server, "/cached/", 4)
        hit(server, "/outgoing/", 2)
        site = f"shop/views.py:{line_of('# N+1: author')} in n_plus_one"
        with browser.chrome(width=1300, height=900) as driver:
            from selenium.webdriver.common.by import By

            browser.login(driver, server.url, "staff", "staff-pw")
            page = server.url + "/instrumented/view/?name=" + quote("shop:n_plus_one", safe="")

            def suspects() -> str | None:
                driver.get(page)
                found = driver.find_elements(By.ID, "instr-suspects")
                return found[0].text if found and site in found[0].text else None

            text = wait_until(suspects, timeout=10)
            fix = 'fix: add .select_related("author") to the Book queryset the loop iterates'
            assert f"{site}\n6 requests · {fix}" in text
            assert "N+1 in 6 requests" in text
            duplicates = driver.find_element(By.ID, "instr-duplicates").text
            assert "60" in duplicates, "15 books by 5 authors: 10 repeats per request"
            shot(driver, "view-detail-n-plus-one.png", full_page=True)

            # The dashboard table shows the cache and HTTP columns, now that some view has such calls.
            driver.get(server.url + "/instrumented/")

            def shown_headers() -> list[str] | None:
                cells = driver.find_elements(By.CSS_SELECTOR, "#instr-table th")
                shown = [th.text.lower() for th in cells if th.is_displayed()]
                return shown if "cache hits" in shown else None

            headers = wait_until(shown_headers, timeout=10)
            assert "http ms/req" in headers

            # The overlay on the N+1 page says the same.
            driver.get(server.url + "/instrumented/bookmarklet/")
            href = driver.find_element(By.ID, "instr-bookmarklet").get_attribute("href")
            driver.get(server.url + "/n-plus-one/")
            browser.click_bookmarklet(driver, href)
            overlay = wait_until(
                lambda: (t := browser.overlay_text(driver)) and "Full view page" in t and t, timeout=10
            )
            assert f'N+1 at {site}: add .select_related("author")' in overlay
    finally:
        upstream.shutdown()
        upstream.server_close()
