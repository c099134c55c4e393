"""The overlay's "Profile this page" and the profile pages in a real headless Chromium, against gunicorn.

With INSTRUMENTED_SCREENSHOTS=1 (docs/screenshots/make.py) it saves the profile page and the view page's
merged profiles for the docs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.support import browser
from tests.support.ports import wait_until
from tests.support.servers import EXAMPLE, ROOT, server_env

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

SCREENSHOTS = os.environ.get("INSTRUMENTED_SCREENSHOTS") == "1"
SHOTS_DIR = ROOT / "docs" / "screenshots"


def shot(driver, name: str) -> None:
    if SCREENSHOTS:
        width = driver.get_window_size()["width"]
        driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight;") + 140)
        driver.save_screenshot(str(SHOTS_DIR / name))
        driver.set_window_size(width, 900)


def test_profile_this_page_from_the_overlay(site_server, site_data_dir, key_prefix) -> None:
    server = site_server(workers=3)
    with browser.superuser_chrome(server.url, site_data_dir, "profiler") as driver:
        from selenium.webdriver.common.by import By

        driver.get(server.url + "/instrumented/bookmarklet/")
        href = driver.find_element(By.ID, "instr-bookmarklet").get_attribute("href")
        driver.get(server.url + "/burn/?rounds=600000")
        browser.console_messages(driver)
        browser.click_bookmarklet(driver, href)
        wait_until(lambda: (t := browser.overlay_text(driver)) and "Profile this page" in t, timeout=10)
        driver.execute_script(
            "document.getElementById('instrumented-overlay').shadowRoot.querySelector('button.p').click();"
        )
        link = wait_until(
            lambda: driver.execute_script(
                "const a = [...document.getElementById('instrumented-overlay').shadowRoot.querySelectorAll('a')]"
                ".find(a => a.textContent.startsWith('Open profile')); return a && a.href;"
            ),
            timeout=30,
        )
        assert link.startswith(server.url + "/instrumented/profiles/")
        driver.get(link)
        assert driver.find_element(By.CSS_SELECTOR, "svg.pf-icicle")
        hot = driver.find_element(By.CSS_SELECTOR, "#pf-hot tbody tr").text
        assert "crunch_numbers" in hot
        assert browser.csp_violations(browser.console_messages(driver)) == []
        shot(driver, "profile.png")

        # The next 6 requests of the view on every worker, armed from the view page, merged there.
        driver.get(server.url + "/instrumented/view/?name=shop%3Aburn")
        driver.find_element(By.CSS_SELECTOR, "#pf-arm-form input[name=n]").clear()
        driver.find_element(By.CSS_SELECTOR, "#pf-arm-form input[name=n]").send_keys("6")
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    urllib.request.urlopen(server.url + "/burn/?rounds=30000", timeout=30).read()
                except OSError:  # a busy machine: the next one
                    pass

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)  # every worker has flushed once
            driver.find_element(By.CSS_SELECTOR, "#pf-arm-form button").click()
            wait_until(lambda: "#instr-profiles" in driver.current_url, timeout=30)  # the POST's redirect lands

            def merged() -> bool:
                driver.refresh()
                return bool(driver.find_elements(By.ID, "pf-merged")) and "6 of 6 stored" in driver.page_source

            wait_until(merged, timeout=60, interval=1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert "Merged call tree of 6 requests" in driver.find_element(By.ID, "pf-merged").text
        assert browser.csp_violations(browser.console_messages(driver)) == []
        driver.execute_script("document.getElementById('instr-profiles').scrollIntoView();")
        shot(driver, "view-detail-profiles.png")


def test_command_prints_the_merged_tree(site_server, site_data_dir, key_prefix) -> None:
    """``instrumented_profile --speedscope`` prints a file speedscope opens."""
    server = site_server(workers=2)
    urllib.request.urlopen(server.url + "/fast/", timeout=10).read()
    command = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "instrumented_profile",
            "shop:fast",
            "-n",
            "2",
            "--timeout",
            "60",
            "--speedscope",
        ],
        cwd=EXAMPLE,
        env=server_env(site_data_dir, key_prefix),
        stdout=subprocess.PIPE,
        text=True,
    )
    while command.poll() is None:
        try:
            urllib.request.urlopen(server.url + "/fast/", timeout=30).read()
        except OSError:  # a busy machine: the next one
            pass
        time.sleep(0.05)
    out = command.stdout.read() if command.stdout else ""
    assert command.returncode == 0 and '"exporter": "django-instrumented"' in out
