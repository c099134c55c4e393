"""The stored and live technical pages in a real headless Chromium: nothing dead on them, nothing in the console.

The pages run no script (``Content-Security-Policy: sandbox``), so every control Django's template drives by
script (the "Share this traceback" form, the copy-and-paste switch, the context toggles) would be dead, and
each inline handler is a console error in a sandboxed document.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.support import browser
from tests.support.servers import ROOT

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


#: docs/screenshots/make.py sets it: the grouped list's screenshot for docs/errors.md is saved too.
SCREENSHOTS = os.environ.get("INSTRUMENTED_SCREENSHOTS") == "1"


def anonymous_failure(url: str, **headers: str) -> str:
    """The error reference of a request that fails, from the response header."""
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
    assert raised.value.code == 500
    return str(raised.value.headers["X-Error-Reference"])


def dead_controls(driver: Any) -> list[str]:
    """Forms, buttons and elements with inline handlers, read over DevTools (the page itself runs no script)."""
    root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]
    found: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.get("nodeType") == 1:
            tag = node["nodeName"].lower()
            names = node.get("attributes", [])[0::2]
            values = node.get("attributes", [])[1::2]
            if tag in ("form", "button") or (tag == "input" and "submit" in values):
                found.append(tag)
            found.extend(f"{tag}[{name}]" for name in names if name.startswith("on"))
            found.extend(
                f"{tag}[href=#]" for name, value in zip(names, values, strict=True) if (name, value) == ("href", "#")
            )
        stack.extend(node.get("children", []))
    return found


@pytest.fixture
def superuser_browser(site_server, site_data_dir):
    server = site_server(workers=2)
    with browser.superuser_chrome(server.url, site_data_dir, "tbroot") as driver:
        driver.get("about:blank")
        browser.console_messages(driver)  # forget what the demo's page said (its favicon is a 404)
        yield server, driver


@pytest.mark.parametrize("which", ["stored", "live"])
def test_technical_page_has_no_dead_controls_and_no_console_errors(superuser_browser, which):
    server, driver = superuser_browser
    url = f"{server.url}/fail/"
    if which == "stored":
        url = f"{server.url}/instrumented/errors/{anonymous_failure(url)}/"
    driver.get(url)
    assert "ZeroDivisionError" in driver.page_source
    # The copy-and-paste view is there, readable without a script.
    assert "Exception Type: ZeroDivisionError" in driver.page_source
    found = {
        "share button": "Share this traceback" in driver.page_source,
        "dead controls": dead_controls(driver),
        # The live page's own 500 status is logged as a failed load: that is its truthful status, not an error.
        "console messages": [m for m in browser.console_messages(driver) if not m.startswith(f"{url} - ")],
    }
    assert found == {"share button": False, "dead controls": [], "console messages": []}


def test_grouped_error_list_in_the_admin_look_without_console_errors(superuser_browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, driver = superuser_browser
    for _ in range(4):
        anonymous_failure(server.url + "/fail/")
    for _ in range(2):
        anonymous_failure(server.url + "/errors-demo/secret/")
    anonymous_failure(server.url + "/errors-demo/async/")
    driver.get(server.url + "/instrumented/")
    driver.find_element(By.ID, "instr-errors-link").click()
    assert driver.current_url == server.url + "/instrumented/errors/"
    rows = driver.find_elements(By.CSS_SELECTOR, "#instr-groups tbody tr")
    assert len(rows) == 3 and rows[0].is_displayed()
    assert "admin/css/base.css" in driver.page_source, "the admin's look"
    if SCREENSHOTS:
        driver.save_screenshot(str(ROOT / "docs" / "screenshots" / "errors-grouped.png"))
    # The demo site has no favicon (the admin look is the site's own page: its favicon is the site's).
    assert [m for m in browser.console_messages(driver) if "/favicon.ico - " not in m] == []
    # The filter is a plain form: choose a class, and only its row is left.
    driver.find_element(By.CSS_SELECTOR, "select[name=exception] option[value='ZeroDivisionError']").click()
    driver.find_element(By.CSS_SELECTOR, "#instr-error-filter button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "exception=ZeroDivisionError" in d.current_url)  # the new page
    rows = driver.find_elements(By.CSS_SELECTOR, "#instr-groups tbody tr")
    assert len(rows) == 1 and "shop/views.py:65" in rows[0].text
    rows[0].find_element(By.PARTIAL_LINK_TEXT, "4").click()
    WebDriverWait(driver, 10).until(lambda d: "show=all" in d.current_url)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#instr-occurrences tbody tr")) == 4
