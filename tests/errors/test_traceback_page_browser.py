"""The stored and live technical pages in a real headless Chromium: nothing dead on them, nothing in the console.

The pages run no script (``Content-Security-Policy: sandbox``), so every control Django's template drives by
script (the "Share this traceback" form, the copy-and-paste switch, the context toggles) would be dead, and
each inline handler is a console error in a sandboxed document.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.support import browser

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def anonymous_failure(url: str) -> str:
    """The error reference of a request that fails, from the response header."""
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url, timeout=10)
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
    session = browser.create_user(site_data_dir, "tbroot", "tbroot-pw-1", staff=True, superuser=True)
    with browser.chrome() as driver:
        browser.use_session(driver, server.url, session)
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
