"""One time zone everywhere: the site's TIME_ZONE, named, on the dashboard, the per-view page and in the CLI
(the error list and the DBA panel have theirs in tests/errors and tests/querylog)."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from django.test import Client

from instrumented.display import local_time

pytestmark = pytest.mark.django_db
SITE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d C[SD]T")  # the demo's TIME_ZONE is America/Chicago


def test_local_time_follows_the_setting(settings):
    assert local_time(0) == "1969-12-31 18:00:00 CST"
    assert local_time("2024-07-01T12:00:00+00:00") == "2024-07-01 07:00:00 CDT"
    settings.TIME_ZONE = "Europe/Paris"
    assert local_time(0) == "1970-01-01 01:00:00 CET"
    assert local_time(None) == local_time("not a time") == "-"


def test_dashboard_and_view_page_name_the_zone(staff_client, flush):
    Client().get("/fast/")
    flush()
    dashboard = staff_client.get("/instrumented/").content.decode()
    assert 'data-tz="America/Chicago"' in dashboard and SITE_TIME.search(dashboard)
    assert "America/Chicago" in dashboard.split('class="instr-help"', 1)[1]
    detail = staff_client.get("/instrumented/view/", {"name": "shop:fast"}).content.decode()
    assert 'id="instr-tz">times in America/Chicago<' in detail and SITE_TIME.search(detail)


def test_the_terminal_table_shows_site_time():
    out = io.StringIO()
    call_command("instrumented_stats", stdout=out)
    assert SITE_TIME.search(out.getvalue()), out.getvalue()
