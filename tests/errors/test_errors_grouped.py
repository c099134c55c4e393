"""The grouped error list (Django's test client, real memcached): one row per exception class and raising
location, filters by view and class, every occurrence one click away, times in the site's TIME_ZONE, and the
links to it from the dashboard and each view's page."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from instrumented.errors import capture
from tests.support.faults import with_fault_injection

pytestmark = pytest.mark.django_db

#: Where the demo's /fail/ raises, as the list names it (relative to the sys.path entry, as an import reads).
FAIL_AT = "shop/views.py:65"


@pytest.fixture(autouse=True)
def fault_injection(settings):
    settings.MIDDLEWARE = with_fault_injection(settings.MIDDLEWARE)
    capture.page_budget = capture.PageBudget()


@pytest.fixture
def root(django_user_model) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_user("root", password="pw", is_staff=True, is_superuser=True))
    return client


def provoke() -> dict[str, list[str]]:
    """Three errors of the view /fail/, two of a middleware after auth (on /fast/); their references."""
    stranger = Client(raise_request_exception=False)
    refs: dict[str, list[str]] = {"fail": [], "late": []}
    for _ in range(3):
        refs["fail"].append(stranger.get("/fail/")["X-Error-Reference"])
    for _ in range(2):
        refs["late"].append(stranger.get("/fast/", HTTP_X_TEST_FAULT="late")["X-Error-Reference"])
    return refs


def rows(page: str, table: str) -> list[str]:
    """The body rows of one table of the page, as text with the markup removed."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", row)).split()) for row in body.split("</tr>")[:-1]]


def test_one_row_per_class_and_location_with_count_views_times_and_references(root):
    refs = provoke()
    response = root.get("/instrumented/errors/")
    assert response.status_code == 200
    page = response.content.decode()
    groups = rows(page, "instr-groups")
    assert len(groups) == 2, groups
    fail = next(row for row in groups if "ZeroDivisionError" in row)
    assert f"{FAIL_AT} 3 shop:fail \u00d73" in fail
    late = next(row for row in groups if "InjectedFault" in row)
    assert "tests/support/faults.py:60 2 (no view) \u00d72" in late
    for ref in refs["fail"] + refs["late"]:  # the latest references, linked to their tracebacks
        assert f'href="/instrumented/errors/{ref}/"' in page
    # Times in the site's TIME_ZONE (the demo's is America/Chicago), and the zone named on the page.
    assert "America/Chicago" in page
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d C[SD]T", fail)
    assert 'id="container"' in page and "Live view stats" in page, "in the admin look, with its breadcrumbs"


def test_filter_by_view_and_by_class(root):
    provoke()
    by_view = root.get("/instrumented/errors/", {"view": "shop:fail"}).content.decode()
    assert [("ZeroDivisionError" in row) for row in rows(by_view, "instr-groups")] == [True]
    by_class = root.get("/instrumented/errors/", {"exception": "tests.support.faults.InjectedFault"}).content.decode()
    assert [("InjectedFault" in row) for row in rows(by_class, "instr-groups")] == [True]
    none = root.get("/instrumented/errors/", {"view": "shop:fail", "exception": "KeyError"}).content.decode()
    assert 'id="instr-groups"' not in none and "No errors match these filters" in none


def test_every_occurrence_is_one_click_away(root):
    refs = provoke()
    page = root.get("/instrumented/errors/").content.decode()
    fail_row = next(r for r in page.split("<tr")[1:] if "ZeroDivisionError" in r)
    link = html.unescape(re.search(r'href="([^"]*show=all[^"]*)"', fail_row).group(1))
    occurrences = root.get(link).content.decode()
    listed = rows(occurrences, "instr-occurrences")
    assert len(listed) == 3 and all(FAIL_AT in row and "GET /fail/" in row for row in listed)
    assert [ref for ref in reversed(refs["fail"]) if ref in occurrences] == list(reversed(refs["fail"]))
    everything = root.get("/instrumented/errors/?show=all").content.decode()
    assert len(rows(everything, "instr-occurrences")) == 5


def test_linked_from_the_dashboard_and_each_views_page_for_technical_users(root, staff_client, flush):
    provoke()
    flush()
    dashboard = root.get("/instrumented/").content.decode()
    assert 'id="instr-errors-link"' in dashboard and 'href="/instrumented/errors/"' in dashboard
    detail = root.get("/instrumented/view/", {"name": "shop:fail"}).content.decode()
    assert 'href="/instrumented/errors/?view=shop%3Afail"' in detail
    assert "America/Chicago" in detail
    # Staff may see stats, not tracebacks: no link to a page that would answer 404.
    assert 'id="instr-errors-link"' not in staff_client.get("/instrumented/").content.decode()
    assert staff_client.get("/instrumented/errors/").status_code == 404
