"""The technical 500 page attacked as issue 8 did, in a real headless Chromium against the demo site.

An attacker chooses request values. Secret-named ones used to be searched and replaced in the *rendered*
page, so a value equal to a piece of Django's template (``class="code"><pre>``) removed that piece and
pushed another parameter's escaped text into a tag's attributes (``onfocus=... autofocus``). Each case is
sent as a crafted link a superuser opens (the live page) and as an anonymous request whose stored page the
superuser opens later; the carrier parameter would set the title and ``window.name`` if its handler ran, and
every element's attribute names are compared with those of a benign request with the same parameters.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

import pytest

from tests.support import browser

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

MARK = "PWNED"
#: The handler builds MARK from two halves: a tab still loading shows its URL as the title, and the URL
#: must not contain MARK itself (under load that read as "the handler ran").
CARRIER = "x onfocus=document.title=window.name='PW'+'NED' autofocus tabindex=0 "
#: Pieces of Django's technical_500.html as values of secret-named parameters, each with the carrier.
CASES = [
    {"api_token": 'class="code"><pre>', "note": CARRIER},
    {"password": '"code"><pre>', "note": CARRIER},
    {"api_token": "<td>", "secret": "</td>", "note": CARRIER},
    {"api_token": '"', "note": CARRIER},
    {"api_token": "onfocus=", "token": '<td class="code">', "note": CARRIER},
    {"api_token": "</pre></td>", "password": "<tr>", "note": CARRIER},
]


def benign(case: dict[str, str]) -> dict[str, str]:
    """The same parameters with harmless values of similar length: the page's markup must be the same."""
    return {name: "b" * max(1, len(value) // 2) + " plain words" for name, value in case.items()}


def element_attributes(driver: Any) -> Counter[tuple[str, tuple[str, ...]]]:
    """Every element of the document as (tag, its attribute names), read over DevTools: no page script needed."""
    root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]
    found: Counter[tuple[str, tuple[str, ...]]] = Counter()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.get("nodeType") == 1:
            found[(node["nodeName"].lower(), tuple(sorted(node.get("attributes", [])[0::2])))] += 1
        stack.extend(node.get("children", []))
    return found


def handler_ran(driver: Any) -> bool:
    """Whether the carrier's handler ran: the tab's title, or (where DevTools may evaluate) window.name."""
    if MARK in driver.execute_cdp_cmd("Target.getTargetInfo", {})["targetInfo"]["title"]:
        return True
    result = driver.execute_cdp_cmd("Runtime.evaluate", {"expression": "window.name", "returnByValue": True})
    return MARK in str(result.get("result", {}).get("value", ""))


def open_and_check(driver: Any, url: str, reference: Counter, problems: list[str], what: str) -> None:
    driver.get(url)
    if handler_ran(driver):
        problems.append(f"{what}: the attacker's handler ran")
    added = element_attributes(driver) - reference
    if added:
        problems.append(f"{what}: markup not in the benign page: {sorted(added)[:5]}")


def anonymous_failure(server: Any, query: dict[str, str]) -> str:
    """Provoke the error as a stranger would; the error reference from the response header."""
    try:
        urllib.request.urlopen(f"{server.url}/fail/?{urllib.parse.urlencode(query)}", timeout=10)
    except urllib.error.HTTPError as error:
        status, reference = error.code, error.headers["X-Error-Reference"]
    else:
        raise AssertionError("/fail/ did not fail")
    assert status == 500
    return reference


@pytest.fixture
def attacked(site_server, site_data_dir):
    server = site_server(workers=3)
    with browser.superuser_chrome(server.url, site_data_dir, "xssroot") as driver:
        yield server, driver


def test_live_technical_page_runs_no_attacker_markup(attacked):
    server, driver = attacked
    problems: list[str] = []
    for case in CASES:
        driver.get(f"{server.url}/fail/?{urllib.parse.urlencode(benign(case))}")
        reference = element_attributes(driver)
        assert reference[("textarea", ("cols", "id", "name", "rows"))] == 1, "the benign page is a technical page"
        open_and_check(driver, f"{server.url}/fail/?{urllib.parse.urlencode(case)}", reference, problems, str(case))
    assert not problems, "\n".join(problems)


def test_stored_technical_page_runs_no_attacker_markup(attacked):
    server, driver = attacked
    problems: list[str] = []
    for case in CASES:
        driver.get(f"{server.url}/instrumented/errors/{anonymous_failure(server, benign(case))}/")
        reference = element_attributes(driver)
        assert reference[("textarea", ("cols", "id", "name", "rows"))] == 1, "the benign page is a technical page"
        ref = anonymous_failure(server, case)
        open_and_check(driver, f"{server.url}/instrumented/errors/{ref}/", reference, problems, str(case))
    assert not problems, "\n".join(problems)
