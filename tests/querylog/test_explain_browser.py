"""The view page's Explain in headless Chromium: a superuser opens the demo's slow-query view, fills the form of
its slow row and reads the full scan, the model and the field that lacks an index (issue 22's "done when")."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.dashboard.test_dashboard_browser import hit, shot
from tests.support import browser
from tests.support.ports import wait_until

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def test_superuser_explains_the_slow_query(site_server, site_data_dir):
    server = site_server(workers=1)
    hit(server, "/slow-query/", 2)
    with browser.superuser_chrome(server.url, site_data_dir, "planner") as driver:
        from selenium.webdriver.common.by import By

        page = server.url + "/instrumented/view/?name=" + quote("shop:slow_query", safe="")

        def slow_row():
            driver.get(page)
            found = driver.find_elements(By.CSS_SELECTOR, "#instr-slow details.instr-explain")
            return found[0] if found else None

        details = wait_until(slow_row, timeout=10)
        browser.console_messages(driver)
        details.find_element(By.TAG_NAME, "summary").click()
        inputs = details.find_elements(By.CSS_SELECTOR, 'input[name="param"]')
        assert len(inputs) == 2  # demo_sleep(%s), price >= %s
        inputs[0].send_keys("0.15")
        inputs[1].send_keys("0")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", details)
        shot(driver, "explain-form.png")
        details.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        wait_until(lambda: driver.find_elements(By.ID, "instr-plan"), timeout=10)
        scans = driver.find_element(By.ID, "instr-full-scans").text
        assert "shop_book (full table scan)" in scans
        table = driver.find_element(By.ID, "instr-table-1").text
        assert "model shop.Book" in table and "full table scan" in table
        assert "No index starts with the filtered Book.price (column price)" in table
        assert "shop_book_author_id" in table  # the foreign key's index, from Meta and the database, not used
        assert browser.csp_violations(browser.console_messages(driver)) == []
        shot(driver, "explain-slow-query.png", full_page=True)
