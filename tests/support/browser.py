"""Drive Debian's headless Chromium from the tests: selenium with the system chromedriver, never a download.

Also the helpers the browser tests share: users in the demo site's database, logging in through the
admin form, running a bookmarklet the way a bookmark click does, and reading CSP violations.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.servers import EXAMPLE, server_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            return f"{binary} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@contextmanager
def chrome(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A fresh headless Chromium (own profile, so no cookies leak between tests), quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="instr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def create_user(data_dir: Path, username: str, password: str, *, staff: bool, superuser: bool = False) -> str:
    """Create (or reset) a user in the demo site's database; return a logged-in session key for it."""
    code = (
        "from importlib import import_module\n"
        "from django.conf import settings\n"
        "from django.contrib.auth import get_user_model, SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY\n"
        f"u, _ = get_user_model().objects.get_or_create(username={username!r})\n"
        f"u.is_staff = {staff!r}; u.is_superuser = {superuser!r}; u.is_active = True\n"
        f"u.set_password({password!r}); u.save()\n"
        "s = import_module(settings.SESSION_ENGINE).SessionStore()\n"
        "s[SESSION_KEY] = str(u.pk)\n"
        "s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
        "s[HASH_SESSION_KEY] = u.get_session_auth_hash()\n"
        "s.create()\n"
        "print(s.session_key)\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=EXAMPLE,
        env=server_env(data_dir, "users"),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def login(driver: Any, base_url: str, username: str, password: str) -> None:
    """Log in through the admin's login form, as a person would."""
    from selenium.webdriver.common.by import By

    driver.get(base_url + "/admin/login/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    deadline = time.monotonic() + 10
    while "/admin/login/" in driver.current_url:
        if driver.find_elements(By.CSS_SELECTOR, ".errornote") or time.monotonic() > deadline:
            raise AssertionError(f"login as {username} failed")
        time.sleep(0.05)


def use_session(driver: Any, base_url: str, session_key: str) -> None:
    """Become the user of ``session_key`` (for accounts the admin form refuses, e.g. non-staff)."""
    driver.get(base_url + "/fast/")
    driver.add_cookie({"name": "sessionid", "value": session_key, "path": "/"})


@contextmanager
def superuser_chrome(base_url: str, data_dir: Path, username: str) -> Iterator[Any]:
    """Chromium logged in to the site at ``base_url`` as a new active superuser named ``username``."""
    session = create_user(data_dir, username, f"{username}-pw-1", staff=True, superuser=True)
    with chrome() as driver:
        use_session(driver, base_url, session)
        yield driver


def click_bookmarklet(driver: Any, href: str) -> None:
    """Run a ``javascript:`` URL the way a bookmark-bar click does (browser-initiated, not page script)."""
    driver.execute_cdp_cmd("Page.navigate", {"url": href})


def overlay_text(driver: Any) -> str | None:
    """The text inside the overlay's open shadow root; None when there is no overlay."""
    return driver.execute_script(
        "const h = document.getElementById('instrumented-overlay');"
        "return h && h.shadowRoot ? h.shadowRoot.textContent : null;"
    )


def console_messages(driver: Any) -> list[str]:
    """Console messages since the last call (Chromium reports CSP violations there)."""
    return [entry["message"] for entry in driver.get_log("browser")]


def csp_violations(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m]
