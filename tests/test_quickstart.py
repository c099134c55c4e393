"""The README's Quick start, line for line, on a brand-new ``django-admin startproject`` site.

The settings and urls.py lines are parsed out of README.md and appended to the generated files; the
site then runs under gunicorn with ``DEBUG = False``, as in production. Without its static files served
the dashboard must say so (on the page and in ``manage.py check``); with the README's fix (collectstatic
and WhiteNoise) it must work: styled, and refreshed by its JavaScript.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import browser
from tests.support.ports import free_port, wait_for_port, wait_until
from tests.support.servers import ROOT, Memcached

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

STAFF = ("quickstart-staff", "quickstart-pw-1")


def quick_start_lines() -> dict[str, str]:
    """The README's Quick start Python block, split at its ``# settings.py`` and ``# urls.py`` comments."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start on your site", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "no ```python block in the README's Quick start"
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in block.group(1).splitlines():
        header = re.match(r"# (settings\.py|urls\.py)\b", line)
        if header:
            current = parts.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    assert set(parts) == {"settings.py", "urls.py"}, parts.keys()
    return {name: "\n".join(lines) + "\n" for name, lines in parts.items()}


def test_the_readme_names_the_static_files_step() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start on your site", 1)[1].split("\n## ", 1)[0]
    assert "collectstatic" in section and "WhiteNoise" in section and "DEBUG = False" in section


class FreshSite:
    """A ``startproject`` site with the Quick start applied, its database migrated and a staff user."""

    def __init__(self, directory: Path, memcached: Memcached, urls_before: str = "") -> None:
        self.directory = directory
        self.name = "site_" + uuid.uuid4().hex[:8]
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": f"{self.name}.settings", "PYTHONPATH": str(ROOT)}
        self.env.pop("INSTRUMENTED_TEST_MEMCACHED_PORT", None)
        directory.mkdir()
        bare_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        cmd = [sys.executable, "-m", "django", "startproject", self.name, str(directory)]
        subprocess.run(cmd, env=bare_env, check=True)
        lines = quick_start_lines()
        package = directory / self.name
        with (package / "settings.py").open("a") as settings:
            settings.write("\n# -- the README's Quick start --\n" + lines["settings.py"])
            # The test's own: production mode, and this run's memcached under a key prefix of its own.
            settings.write(
                "\n# -- the test's production settings --\n"
                "DEBUG = False\n"
                'ALLOWED_HOSTS = ["127.0.0.1"]\n'
                f'INSTRUMENTED["SERVERS"] = ["{memcached.address}"]\n'
                f'INSTRUMENTED["KEY_PREFIX"] = "q{uuid.uuid4().hex[:8]}"\n'
                'INSTRUMENTED["FLUSH_INTERVAL"] = 0.2\n'
            )
        with (package / "urls.py").open("a") as urls:
            # A site's own patterns come first (a CMS's catch-all, say); the README's lines are added after.
            urls.write(urls_before)
            urls.write("\n# -- the README's Quick start --\n" + lines["urls.py"])
        self.manage(["migrate", "-v0"])
        self.manage(["shell", "-c", "from django.contrib.auth.models import User; "
                     f"User.objects.create_user({STAFF[0]!r}, password={STAFF[1]!r}, is_staff=True)"])  # fmt: skip

    def manage(self, args: list[str]) -> str:
        """Run ``manage.py ARGS`` in the site; its output, stderr included."""
        cmd = [sys.executable, "manage.py", *args]
        done = subprocess.run(cmd, cwd=self.directory, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def get_as_staff(self, path: str) -> tuple[int, str]:
        """GET ``path`` in-process (Django's test client, logged in as the staff user): status and body."""
        code = (
            "from django.contrib.auth.models import User; from django.test import Client; c = Client(); "
            f"c.force_login(User.objects.get(username={STAFF[0]!r})); r = c.get({path!r}, HTTP_HOST='127.0.0.1'); "
            "print('STATUS', r.status_code); print(r.content.decode())"
        )
        status, _, body = self.manage(["shell", "-c", code]).partition("STATUS ")[2].partition("\n")
        return int(status), body

    def append_settings(self, text: str) -> None:
        with (self.directory / self.name / "settings.py").open("a") as settings:
            settings.write("\n" + text)

    def gunicorn(self) -> Iterator[str]:
        """The site under gunicorn (2 workers); yields its base URL."""
        port = free_port()
        cmd = [sys.executable, "-m", "gunicorn", f"{self.name}.wsgi:application", "--workers", "2",
               "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=self.directory, env=self.env)
        try:
            wait_for_port(port, timeout=30, proc=proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(15)


@pytest.fixture
def fresh_site(tmp_path: Path, memcached: Memcached) -> FreshSite:
    return FreshSite(tmp_path / "project", memcached)


def dashboard_state(base_url: str) -> dict[str, object]:
    """Log in as staff in a real browser, open the dashboard; what a person sees of it."""
    from selenium.webdriver.common.by import By

    with browser.chrome() as driver:
        browser.login(driver, base_url, *STAFF)
        driver.get(base_url + "/instrumented/")
        banner = driver.find_element(By.ID, "instr-static-missing")
        state: dict[str, object] = {"title": driver.title, "banner": banner.is_displayed()}
        if not banner.is_displayed():
            # The JavaScript ran: it replaced the server-rendered status line after its first refresh.
            status = driver.find_element(By.ID, "instr-status")
            state["refreshed"] = wait_until(lambda: "updated" in status.text and status.text, timeout=15)
            state["styled"] = driver.execute_script(
                "return getComputedStyle(document.getElementById('instr-static-missing')).display"
            )
        return state


def stats_views(site: FreshSite) -> dict[str, int]:
    """The site's recorded views and their requests (``instrumented_stats --json`` in the site)."""
    import json

    document = json.loads(site.manage(["instrumented_stats", "--json"]))
    return {view["view"]: view["requests"] for view in document["views"]}


def test_quick_start_without_static_files_says_so_on_the_page_and_in_check(fresh_site: FreshSite) -> None:
    check = fresh_site.manage(["check"])
    assert "instrumented.W004" in check and "collectstatic" in check and "WhiteNoise" in check
    # Not in the site's test runs (issue 23: printed in every one): tests serve no static files.
    test_run = fresh_site.manage(["test"])
    assert "Found 0 test(s)" in test_run and "instrumented.W004" not in test_run
    for base_url in fresh_site.gunicorn():
        state = dashboard_state(base_url)
        assert "Live view stats" in str(state["title"]) and state["banner"] is True


def test_quick_start_with_collectstatic_and_whitenoise_works(fresh_site: FreshSite) -> None:
    fresh_site.append_settings(
        "# -- the README's static files step --\n"
        'STATIC_ROOT = BASE_DIR / "static"\n'
        'MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")\n'
    )
    fresh_site.manage(["collectstatic", "--noinput", "-v0"])
    assert "instrumented.W004" not in fresh_site.manage(["check"])
    for base_url in fresh_site.gunicorn():
        state = dashboard_state(base_url)
        assert state["banner"] is False and state["styled"] == "none" and state["refreshed"]
        # The dashboard's CSS and JavaScript, served by WhiteNoise before any URL resolves, are one named row
        # (issue 23: they were "(unresolved)", a row no doc explained).
        names = wait_until(lambda: set(stats_views(fresh_site)) >= {"(static files)"} and stats_views(fresh_site))
        assert names["(static files)"] >= 2 and "(unresolved)" not in names
        # The Quick start's own commands (migrate, collectstatic) are there, apart; their processes are not workers.
        import json

        document = json.loads(fresh_site.manage(["instrumented_stats", "--json"]))
        kinds = {view["view"]: view["kind"] for view in document["views"]}
        assert kinds["command:migrate"] == kinds["command:collectstatic"] == "command"
        assert document["processes"] <= 2 and document["command_processes"] >= 2, document


def test_the_app_left_out_of_installed_apps_is_reported_with_the_line_to_add(fresh_site: FreshSite) -> None:
    # Issue 23: `check` said "no issues" and /instrumented/ answered a bare 500 (TemplateDoesNotExist).
    fresh_site.append_settings('INSTALLED_APPS.remove("instrumented")\n')
    check = fresh_site.manage(["check"])
    assert "instrumented.W005" in check and 'INSTALLED_APPS += ["instrumented"]' in check
    status, body = fresh_site.get_as_staff("/instrumented/")
    assert status == 503 and 'INSTALLED_APPS += ["instrumented"]' in body


#: A CMS's URLconf ends with a catch-all (Wagtail's own pattern) before the README's lines are added.
CMS_CATCH_ALL = """
from django.http import HttpResponseNotFound
from django.urls import re_path

def cms_page(request, path):
    return HttpResponseNotFound("no such page in the CMS")

urlpatterns += [re_path(r"^((?:[\\w\\-]+/)*)$", cms_page, name="cms_serve")]
"""


def test_the_readme_urls_line_works_on_a_cms_site(tmp_path: Path, memcached: Memcached) -> None:
    # Issue 23: `urlpatterns += [...]` put the dashboard after Wagtail's catch-all: /instrumented/ was its 404.
    site = FreshSite(tmp_path / "cms", memcached, urls_before=CMS_CATCH_ALL)
    assert "instrumented.W006" not in site.manage(["check"])
    status, body = site.get_as_staff("/instrumented/")
    assert status == 200 and "Live view stats" in body
    assert site.get_as_staff("/some/cms/page/")[0] == 404
