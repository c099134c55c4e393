"""The DBA panel's digest and tail fit a 1 280 px wide window, however long the statements (headless Chromium).

The page comes from the real panel (the proxy in front of MariaDB, real long statements through it), and
is served with the static files it links to, as collectstatic would lay them out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.db import connections

from tests.querylog.test_dba_panel import admin_client, database_alias, login, mariadb_up, mysql_alias, proxy, qlog, url
from tests.support import browser
from tests.support.ports import free_port, wait_for_port

__all__ = ["admin_client", "database_alias", "login", "mariadb_up", "mysql_alias", "proxy", "qlog", "url"]

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing())),
]

LONG_ALIAS = "a_rather_long_column_alias_that_a_report_query_might_use_" * 4  # 228 characters, no space


def served_snapshot(html: str, directory: Path) -> tuple[subprocess.Popen, str]:
    """The page and every /static/ file it links to, under a plain HTTP server; (server, page URL)."""
    # http.server names no charset; Django's response does (utf-8): say it in the page instead.
    (directory / "page.html").write_text(html.replace("<head>", '<head><meta charset="utf-8">', 1), encoding="utf-8")
    for path in set(re.findall(r'(?:href|src)="/static/([^"?#]+)"', html)):
        found = finders.find(path)
        if found:
            target = directory / "static" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, target)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc=server)
    return server, f"http://127.0.0.1:{port}/page.html"


def test_digest_and_tail_fit_1280_pixels(qlog, admin_client, url, tmp_path):
    assert admin_client.post(url, {"action": "on", "seconds": "60"}).status_code == 302
    with connections["querylog"].cursor() as cursor:
        cursor.execute(f"SELECT 1 AS `{LONG_ALIAS}`, %s AS `{LONG_ALIAS[::-1]}`", ["x" * 300])
        long_where = " OR ".join("table_name = %s AND table_schema = %s" for _ in range(12))
        cursor.execute(f"SELECT COUNT(*) FROM information_schema.tables WHERE {long_where}", ["t", "s"] * 12)
    connections["querylog"].close()
    page = admin_client.get(url).content.decode()
    assert 'id="instr-digest"' in page and LONG_ALIAS in page
    server, page_url = served_snapshot(page, tmp_path)
    try:
        with browser.chrome(width=1280, height=900) as driver:
            driver.get(page_url)
            # A site's log file path with no hyphen to break at (the test's own has some).
            driver.execute_script(
                "document.querySelector('#instr-log-file code').textContent = arguments[0];",
                "/var/log/mysqlproxy/querylog_of_the_production_database_cluster_primary_2026_12_07.jsonl",
            )
            if os.environ.get("INSTRUMENTED_SHOTS_DIR"):
                driver.save_screenshot(os.path.join(os.environ["INSTRUMENTED_SHOTS_DIR"], "dba-1280.png"))
            sizes = driver.execute_script(
                "const d = document.getElementById('instr-digest').getBoundingClientRect();"
                "const t = document.getElementById('instr-tail').getBoundingClientRect();"
                "return {view: document.documentElement.clientWidth, page: document.documentElement.scrollWidth,"
                " digest: d.right, tail: t.right,"
                " forms: Math.max(...[...document.querySelectorAll('#instr-dba-forms form, #instr-dba-forms input')]"
                "   .map((e) => e.getBoundingClientRect().right)),"
                " file: [document.querySelector('#instr-log-file code').getBoundingClientRect().right,"
                "   document.querySelector('#instr-log-file').closest('div').getBoundingClientRect().right],"
                " styled: getComputedStyle(document.getElementById('instr-static-missing')).display,"
                " overflowing: [...document.querySelectorAll('#instr-digest td, #instr-tail td')]"
                "   .filter((td) => td.scrollWidth > td.clientWidth + 1).map((td) => td.textContent.slice(0, 40))};"
            )
    finally:
        server.terminate()
        server.wait(5)
    assert sizes["styled"] == "none", sizes  # the stylesheets loaded
    assert sizes["page"] <= sizes["view"], sizes  # no horizontal scrolling
    assert sizes["digest"] <= sizes["view"] and sizes["tail"] <= sizes["view"], sizes
    assert sizes["overflowing"] == [], sizes  # and every value fits its cell: wrapped, never drawn over the next
    # The switch form and the log file's path stay inside the page and their card (issue 23: both overflowed).
    assert sizes["forms"] <= sizes["view"] and sizes["file"][0] <= sizes["file"][1], sizes
