"""The Server-Timing header: for whoever may see stats (default staff), never a query for anonymous requests."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext

from instrumented.stats.reader import read_stats

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])
HEADER = re.compile(r'^app;dur=[\d.]+, db;dur=[\d.]+;desc="(\d+) queries"(, cache;dur=[\d.]+;desc="\d+ calls")?$')


@pytest.fixture(autouse=True)
def _catalogue():
    from shop.views import ensure_catalogue

    ensure_catalogue()


def mode(settings, value: str) -> None:
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVER_TIMING": value}


def test_staff_see_it_on_json_and_html(staff_client):
    response = staff_client.get("/duplicates/")
    assert response["Content-Type"] == "application/json"
    match = HEADER.match(response["Server-Timing"])
    assert match and int(match.group(1)) == 7, response["Server-Timing"]
    assert HEADER.match(staff_client.get("/cached/")["Server-Timing"]).group(2), "cache time when there was any"
    assert "Server-Timing" in staff_client.get("/")


def test_anonymous_requests_get_none_and_pay_no_query(settings):
    def queries(path: str, **cookies: str) -> tuple[int, bool]:
        client = Client()
        client.cookies.load(cookies)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        return len(captured), "Server-Timing" in response

    mode(settings, "off")
    baseline = queries("/duplicates/")
    mode(settings, "staff")
    assert queries("/duplicates/") == baseline == (7, False)
    assert queries("/duplicates/", csrftoken="x" * 32) == (7, False), "only the session cookie is worth a look"


def test_plain_users_get_none(plain_client):
    assert "Server-Timing" not in plain_client.get("/duplicates/")


def test_all_and_off(settings, staff_client):
    mode(settings, "all")
    assert HEADER.match(Client().get("/duplicates/")["Server-Timing"])
    mode(settings, "off")
    assert "Server-Timing" not in staff_client.get("/duplicates/")


def test_the_permission_check_is_not_counted_as_the_views_sql(staff_client, flush):
    with CaptureQueriesContext(connections["default"]) as captured:
        assert "Server-Timing" in staff_client.get("/fast/")
    assert len(captured) >= 2, "the header loaded the session and the user"
    flush()
    (fast,) = [v for v in read_stats()["views"] if v["view"] == "shop:fast"]
    assert fast["queries"]["total"] == 0


def test_async_views_get_it_too(staff_client):
    client = AsyncClient()
    client.cookies = staff_client.cookies
    response = async_to_sync(client.get)("/async/")
    assert response.status_code == 200
    assert int(HEADER.match(response["Server-Timing"]).group(1)) == 1
    assert "Server-Timing" not in async_to_sync(AsyncClient().get)("/async/")


def test_a_response_with_the_staff_header_varies_on_the_cookie_and_is_private(settings, staff_client):
    """Issue 17: a shared cache must not serve the staff variant (with Server-Timing) to everyone."""
    response = staff_client.get("/duplicates/")
    assert "Server-Timing" in response
    assert "Cookie" in [v.strip() for v in response["Vary"].split(",")]
    assert "private" in response["Cache-Control"]
    anonymous = Client().get("/duplicates/")
    assert "Server-Timing" not in anonymous and "Cache-Control" not in anonymous and "Vary" not in anonymous
    mode(settings, "all")  # the same header for everyone: nothing to vary on
    everyone = Client().get("/duplicates/")
    assert "Server-Timing" in everyone and "Vary" not in everyone and "Cache-Control" not in everyone
