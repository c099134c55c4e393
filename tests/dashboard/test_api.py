"""The JSON API (``instrumented:api_views``, ``instrumented:api_view``): schema, permissions, headers, bad input."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.test.utils import override_script_prefix
from django.urls import reverse

from instrumented.stats.reader import read_stats
from tests.support.ports import free_port

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])

VIEW_KEYS = {
    "view", "kind", "route", "queue", "requests", "errors", "status", "latency_ms", "queries", "db_time_ms",
    "n_plus_one", "top_queries", "methods", "databases", "exceptions",
    "n_plus_one_suspects", "slow_queries", "duplicate_queries", "duplicates", "cache", "http", "templates",
    "n_plus_one_suspects_more", "n_plus_one_runs", "n_plus_one_queries", "n_plus_one_unlisted_runs",
    "writes_per_row", "writes_per_row_runs", "writes_per_row_queries", "write_suspects", "write_suspects_more",
    "write_unlisted_runs", "slow_queries_more", "duplicate_queries_more", "sql_comments",
}  # fmt: skip


def traffic(flush, **paths: int) -> None:
    """Send in-process requests (``fast=3`` → GET /fast/ three times) and write them to memcached."""
    client = Client(raise_request_exception=False)
    for name, count in paths.items():
        for _ in range(count):
            client.get(f"/{name.replace('_', '-')}/")
    flush()


def assert_protected(response) -> None:
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("name", ["instrumented:api_views", "instrumented:api_view"])
def test_anonymous_gets_401_json_not_a_redirect(name):
    response = Client().get(reverse(name), {"path": "/fast/"})
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "log in" in response.json()["error"]
    assert "views" not in response.json() and "stats" not in response.json()
    assert_protected(response)


@pytest.mark.parametrize("name", ["instrumented:api_views", "instrumented:api_view"])
def test_logged_in_without_permission_gets_403(plain_client, name, flush):
    traffic(flush, fast=1)
    response = plain_client.get(reverse(name), {"path": "/fast/"})
    assert response.status_code == 403
    assert set(response.json()) == {"error"}
    assert_protected(response)


def test_inactive_staff_is_refused(django_user_model):
    user = django_user_model.objects.create_user("gone", password="pw", is_staff=True, is_active=False)
    client = Client()
    client.force_login(user)
    assert client.get(reverse("instrumented:api_views")).status_code in (401, 403)


def test_permission_callback_decides(plain_client, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "PERMISSION_CALLBACK": "tests.dashboard.test_api.allow_customers"}
    assert plain_client.get(reverse("instrumented:api_views")).status_code == 200
    assert Client().get(reverse("instrumented:api_views")).status_code == 401


def allow_customers(request) -> bool:
    return request.user.is_authenticated and request.user.username == "customer"


def test_api_views_is_the_reader_document(staff_client, flush):
    traffic(flush, fast=3, catalogue=2, n_plus_one=1)
    response = staff_client.get(reverse("instrumented:api_views"))
    assert response.status_code == 200
    assert_protected(response)
    body = response.json()
    expected = read_stats()
    assert set(body) == set(expected)
    assert body["window_seconds"] == expected["window_seconds"] == 300
    assert body["processes"] == 1
    assert body["views"] == expected["views"]
    by_name = {v["view"]: v for v in body["views"]}
    assert by_name["shop:fast"]["requests"] == 3
    assert by_name["shop:catalogue"]["requests"] == 2
    assert by_name["shop:n_plus_one"]["n_plus_one"] == 1
    assert set(by_name["shop:fast"]) == VIEW_KEYS
    # The API's own requests are not recorded (IGNORE_VIEWS covers the instrumented: namespace).
    flush()
    assert not any(v["view"].startswith("instrumented:") for v in read_stats()["views"])


def test_window_parameter(staff_client, flush):
    traffic(flush, fast=1)
    body = staff_client.get(reverse("instrumented:api_views"), {"window": "60"}).json()
    assert body["window_seconds"] == 60
    assert [v["view"] for v in body["views"]] == ["shop:fast"]


@pytest.mark.parametrize("window", ["abc", "0", "-5", "1.5", "1e3", "301", "99999999", "٣", " 60"])
def test_bad_window_is_400_with_a_reason(staff_client, window):
    response = staff_client.get(reverse("instrumented:api_views"), {"window": window})
    assert response.status_code == 400
    assert "window must be" in response.json()["error"]
    assert_protected(response)


def test_api_view_resolves_the_path(staff_client, flush):
    traffic(flush, fast=2, catalogue=1)
    response = staff_client.get(reverse("instrumented:api_view"), {"path": "/fast/?utm=1#top"})
    assert response.status_code == 200
    assert_protected(response)
    body = response.json()
    assert body["view"] == "shop:fast"
    assert body["route"] == "fast/"
    assert body["path"] == "/fast/"
    assert body["no_data"] is False
    assert body["stats"]["requests"] == 2
    assert set(body["stats"]) == VIEW_KEYS
    assert body["detail_url"] == reverse("instrumented:view_detail") + "?name=shop%3Afast"
    assert body["window_seconds"] == 300


def test_api_view_uses_the_route_not_the_raw_path(staff_client, flush):
    client = Client()
    client.get("/books/1/")
    client.get("/books/2/")
    flush()
    body = staff_client.get(reverse("instrumented:api_view"), {"path": "/books/99/"}).json()
    assert body["view"] == "shop:book"
    assert body["route"] == "books/<int:book_id>/"
    assert body["stats"]["requests"] == 2


def test_known_view_without_traffic_is_200_with_zero_stats(staff_client, flush):
    traffic(flush, fast=1)
    response = staff_client.get(reverse("instrumented:api_view"), {"path": "/slow/"})
    assert response.status_code == 200
    body = response.json()
    assert body["no_data"] is True
    assert body["view"] == "shop:slow"
    assert set(body["stats"]) == VIEW_KEYS
    assert body["stats"]["requests"] == 0 and body["stats"]["latency_ms"]["p95"] == 0


def test_unknown_path_is_404_json(staff_client):
    response = staff_client.get(reverse("instrumented:api_view"), {"path": "/no/such/page/"})
    assert response.status_code == 404
    assert response.json()["error"] == "no view serves this path"
    assert_protected(response)


def test_percent_encoded_and_unicode_paths(staff_client):
    # /b%C3%BCcher/ is /bücher/: decoded like Django decodes request paths, then resolved (no such view here).
    response = staff_client.get(reverse("instrumented:api_view"), {"path": "/b%C3%BCcher/"})
    assert response.status_code == 404
    assert response.json()["path"] == "/bücher/"
    # Percent-encoded characters of a real route resolve to that route.
    assert staff_client.get(reverse("instrumented:api_view"), {"path": "/f%61st/"}).json()["view"] == "shop:fast"


@pytest.mark.parametrize(
    "path",
    ["", "fast/", "http://evil.example/fast/", "//evil.example/fast/", "/fa\nst/", "/%FF/", "javascript:alert(1)"],
)
def test_non_path_input_is_400(staff_client, path):
    response = staff_client.get(reverse("instrumented:api_view"), {"path": path})
    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert_protected(response)


def test_missing_or_huge_path_is_400(staff_client):
    assert staff_client.get(reverse("instrumented:api_view")).status_code == 400
    assert staff_client.get(reverse("instrumented:api_view"), {"path": "/" + "a" * 5000}).status_code == 400


def test_script_prefix_is_stripped(staff_client, flush):
    # A site mounted under /shop-site/: the browser's location.pathname carries the prefix, resolve() must not.
    traffic(flush, fast=1)
    url = reverse("instrumented:api_view")
    with override_script_prefix("/shop-site/"):  # what a WSGI server's SCRIPT_NAME does for each request
        response = staff_client.get(url, {"path": "/shop-site/fast/"})
    assert response.json()["view"] == "shop:fast"
    assert response.json()["detail_url"].startswith("/shop-site/instrumented/view/")


def test_post_is_not_allowed(staff_client):
    assert staff_client.post(reverse("instrumented:api_views")).status_code == 405


def test_memcached_down_gives_reason_never_500(staff_client, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    response = staff_client.get(reverse("instrumented:api_views"))
    assert response.status_code == 503
    body = response.json()
    assert body["views"] == [] and body["error"].startswith("memcached unavailable")
    assert_protected(response)
    response = staff_client.get(reverse("instrumented:api_view"), {"path": "/fast/"})
    assert response.status_code == 503
    body = response.json()
    assert body["no_data"] is True and body["error"].startswith("memcached unavailable")
    assert body["view"] == "shop:fast"


@override_settings(STATIC_URL="https://cdn.example.com/static/")
def test_page_csp_allows_a_static_origin():
    from instrumented.dashboard.pages import page_csp

    csp = page_csp()
    assert "script-src 'self' https://cdn.example.com;" in csp
    assert "'unsafe-inline'" not in csp
