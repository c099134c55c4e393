"""Dashboard pages in-process: who sees them, their headers, their content, and "no data" instead of a 500."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import include, path, reverse

from instrumented import pages
from instrumented.dashboard import api, views
from instrumented.dashboard import urls as dashboard_urls
from instrumented.failopen import failures
from instrumented.stats import reading
from tests.support.ports import free_port
from tests.support.stats import spread_requests

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])


# A site without the admin and without the error pages (used through ROOT_URLCONF = "tests.dashboard.test_dashboard").
urlpatterns = [path("instrumented/", include((dashboard_urls.urlpatterns, "instrumented")))]


def traffic(flush, *paths: str) -> None:
    client = Client(raise_request_exception=False)
    for p in paths:
        client.get(p)
    flush()


def assert_page_headers(response) -> None:
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]
    assert response["X-Frame-Options"] == "DENY"
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp


def assert_no_inline_script(html: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert " src=" in tag, f"inline script: {tag}"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=", html), "inline style attribute"
    assert "<style" not in html


@pytest.mark.parametrize(
    "url", ["/instrumented/", "/instrumented/view/?name=shop%3Afast", "/instrumented/bookmarklet/"]
)
def test_anonymous_is_redirected_to_the_admin_login(url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    assert "no-store" in response["Cache-Control"]


def test_non_staff_is_redirected_too(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("customer", password="pw"))
    response = client.get("/instrumented/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_dashboard_lists_every_view(staff_client, flush):
    traffic(flush, "/fast/", "/fast/", "/catalogue/", "/n-plus-one/", "/fail/")
    response = staff_client.get(reverse("instrumented:dashboard"))
    assert response.status_code == 200
    assert_page_headers(response)
    html = response.content.decode()
    assert_no_inline_script(html)
    assert 'data-api="/instrumented/api/views"' in html
    assert '<script src="/static/instrumented/dashboard.js" defer>' in html
    assert 'href="/static/admin/css/base.css"' in html  # inside the admin's look
    assert re.search(r'<tr data-view="shop:fast" data-requests="2"', html)
    assert 'href="/instrumented/view/?name=shop%3Afast"' in html
    assert re.search(r'<tr data-view="shop:fail" data-requests="1" class="instr-bad"', html)
    assert re.search(r'<tr data-view="shop:n_plus_one" data-requests="1" class="instr-warn"', html)
    assert 'href="javascript:' in html  # the bookmarklet to drag


def test_dashboard_rates_are_over_the_span_the_data_covers(staff_client):
    """60 requests in the last ~35 s: about 100 a minute on the page, not 60 / 5 min = 12 (and it says so)."""
    spread_requests("shop:fast", "fast/", 60, 35)
    page = staff_client.get(reverse("instrumented:dashboard")).content.decode()
    covered = float(re.search(r"Last 300 s \(data for (\d+) s\)", page).group(1))
    row = page[page.index('data-view="shop:fast"') :]
    per_minute = float(re.findall(r"<td>([\d.]+)</td>", row)[1])
    assert per_minute == pytest.approx(60 * 60 / covered, rel=0.05) and per_minute > 60


def test_no_query_log_link_on_a_site_without_a_querylog_alias(superuser_client, settings, flush):
    """A superuser may use the DBA panel, but with no DATABASES alias through the proxy it has nothing to show."""
    assert "querylog" not in settings.DATABASES
    page = superuser_client.get(reverse("instrumented:dashboard")).content.decode()
    assert "instr-dba-link" not in page and "MySQL query log" not in page
    # Nor on a view's page (issue 23: it linked "its statements at the MySQL proxy", leading to an error).
    traffic(flush, "/fast/")
    view_page = superuser_client.get(reverse("instrumented:view_detail"), {"name": "shop:fast"}).content.decode()
    assert "instr-dba-view-link" not in view_page and "MySQL proxy" not in view_page


def test_dashboard_says_no_data_when_memcached_is_down(staff_client, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    response = staff_client.get(reverse("instrumented:dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "No data: memcached unavailable" in html
    # Said once: not also "No requests recorded", as if the site had had no traffic (issue 23).
    assert "No requests recorded" not in html


def test_the_demo_home_page_links_the_dashboard(client):
    html = client.get("/").content.decode()
    assert '<a href="/instrumented/" id="demo-dashboard">' in html


def test_view_detail_shows_charts_sql_and_n_plus_one(staff_client, flush):
    traffic(flush, *["/n-plus-one/"] * 3)
    response = staff_client.get(reverse("instrumented:view_detail"), {"name": "shop:n_plus_one"})
    assert response.status_code == 200
    assert_page_headers(response)
    html = response.content.decode()
    assert_no_inline_script(html)
    assert html.count('<svg class="ichart"') == 3
    assert "latency distribution" in html and "requests per 10 s" in html and "p95 latency" in html
    assert 'id="instr-suspects"' in html and "N+1 in 3 requests" in html
    # sqlparse's reindent puts FROM on its own line and upper-cases keywords.
    assert re.search(r'<pre class="instr-sql">SELECT .*\nFROM ', html)
    throughput = re.search(r"requests per 10 s.*?</svg>", html, re.S).group(0)
    assert re.findall(r'class="ichart-bar"[^>]*><title>(\d+)</title>', throughput) == ["3"]


def fake_errors_document() -> dict:
    view = {**api.zero_view("shop:fail", "fail/"), "requests": 2, "errors": 2, "series": []}
    view["exceptions"] = [
        {"class": "ZeroDivisionError", "count": 2, "last_reference": "Ab3-x_9", "last_at": "2026-01-01T00:00:00+00:00"}
    ]
    return {"window_seconds": 300, "generated_at": "2026-01-01T00:00:05+00:00", "processes": 1, "views": [view]}


def test_error_references_link_to_tracebacks_for_superusers_only(staff_client, superuser_client, monkeypatch):
    monkeypatch.setattr(reading, "read_stats", lambda *a, **k: fake_errors_document())
    url = reverse("instrumented:view_detail")
    traceback_url = reverse("instrumented:error_detail", kwargs={"ref": "Ab3-x_9"})
    super_html = superuser_client.get(url, {"name": "shop:fail"}).content.decode()
    assert f'<a href="{traceback_url}">Ab3-x_9</a>' in super_html
    staff_html = staff_client.get(url, {"name": "shop:fail"}).content.decode()
    assert "ZeroDivisionError" in staff_html and "Ab3-x_9" in staff_html
    assert traceback_url not in staff_html


def test_error_references_without_the_error_pages(superuser_client, monkeypatch, settings):
    # Sites (or versions) without instrumented:error_detail: the reference is shown, not linked, and no 500.
    monkeypatch.setattr(reading, "read_stats", lambda *a, **k: fake_errors_document())
    settings.ROOT_URLCONF = "tests.dashboard.test_dashboard"
    response = superuser_client.get("/instrumented/view/", {"name": "shop:fail"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Ab3-x_9" in html and "/errors/" not in html


def test_view_names_with_colons_and_unicode_round_trip(staff_client, flush):
    name = "bücher:liste — ünïcødé"
    response = staff_client.get(pages.detail_url(name))
    assert response.status_code == 200
    html = response.content.decode()
    assert "bücher:liste — ünïcødé" in html
    assert "No requests for this view" in html


def test_view_detail_escapes_hostile_names(staff_client):
    response = staff_client.get(reverse("instrumented:view_detail"), {"name": "<img src=x onerror=alert(1)>"})
    html = response.content.decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_view_detail_without_name_is_400(staff_client):
    response = staff_client.get(reverse("instrumented:view_detail"))
    assert response.status_code == 400
    assert "?name=" in response.content.decode()


def test_view_detail_when_memcached_is_down(staff_client, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    response = staff_client.get(reverse("instrumented:view_detail"), {"name": "shop:fast"})
    assert response.status_code == 200
    assert "No data: memcached unavailable" in response.content.decode()


def test_without_the_admin_a_standalone_page_is_used(staff_client, settings, flush):
    traffic(flush, "/fast/")
    settings.ROOT_URLCONF = "tests.dashboard.test_dashboard"
    response = staff_client.get("/instrumented/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "instr-standalone" in html and "admin/css/base.css" not in html
    assert 'data-view="shop:fast"' in html
    assert_no_inline_script(html)


def test_derived_numbers():
    view = {**api.zero_view("v", ""), "requests": 30, "errors": 3, "db_time_ms": 15.0}
    view["latency_ms"] = {**view["latency_ms"], "mean": 2.0}
    view["cache"] = {**view["cache"], "hit_rate": 0.75}
    view["http"] = {**view["http"], "time_ms": 60.0}
    d = views.derived(view, 300)
    assert d == {"per_minute": 6.0, "error_rate": 0.1, "db_share": 0.25, "cache_hit_rate": 0.75, "http_ms": 2.0}
    zero = {"per_minute": 0.0, "error_rate": 0.0, "db_share": 0.0, "cache_hit_rate": None, "http_ms": 0.0}
    assert views.derived(api.zero_view("v", ""), 300) == zero


def test_a_failing_reader_is_no_data_not_a_500(staff_client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("reader bug")

    monkeypatch.setattr(reading, "read_stats", broken)
    before = failures.counts.get("reading stats failed", 0)
    response = staff_client.get(reverse("instrumented:dashboard"))
    assert response.status_code == 200
    assert "No data: reading stats failed: RuntimeError" in response.content.decode()
    response = staff_client.get(reverse("instrumented:api_views"))
    assert response.status_code == 503 and response.json()["error"] == "reading stats failed: RuntimeError"
    assert staff_client.get(reverse("instrumented:view_detail"), {"name": "shop:fast"}).status_code == 200
    assert failures.counts["reading stats failed"] == before + 3, "counted (and logged once a minute)"


def test_head_requests_are_answered(staff_client):
    assert staff_client.head(reverse("instrumented:dashboard")).status_code == 200
    assert staff_client.head(reverse("instrumented:api_views")).status_code == 200


def test_latency_chart_draws_the_merged_histogram():
    from instrumented.dashboard import charts

    latency = {"mean": 5.0, "p50": 4.0, "p95": 9.0, "p99": 20.0, "max": 30.0}
    histogram = [{"le_ms": 4.0, "count": 50}, {"le_ms": 9.0, "count": 45}, {"le_ms": 29.0, "count": 5}]
    svg = str(charts.latency_distribution(latency, 100, histogram))
    assert svg.count('class="ichart-bar"') == 3
    assert "50 requests (50 %)" in svg and "5 requests (5 %)" in svg
    # Without a histogram, the percentile bands are drawn instead.
    assert "ichart-band" in str(charts.latency_distribution(latency, 100))


def test_latency_chart_says_below_axis_requests_are_below_it():
    """Requests faster than the axis start land in the first bar, titled "< its end", never "from 10 ms"."""
    from instrumented.dashboard import charts

    latency = {"mean": 20.0, "p50": 20.0, "p95": 60.0, "p99": 80.0, "max": 80.0}  # the axis starts at 10 ms
    histogram = [{"le_ms": 2.0, "count": 40}, {"le_ms": 20.0, "count": 50}, {"le_ms": 80.0, "count": 10}]
    svg = str(charts.latency_distribution(latency, 100, histogram))
    assert "<title>&lt; 10.4 ms: 40 requests (40 %)</title>" in svg
    assert "from 10 ms" not in svg
    assert "<title>19.8 to 20.5 ms: 50 requests (50 %)</title>" in svg


def quick_start_document() -> dict:
    """A site just set up: two views, and the one-off commands of its Quick start (slow, with repeated SQL)."""

    def entry(name: str, requests: int, p95: float, n_plus_one: int = 0) -> dict:
        view = {**api.zero_view(name, ""), "requests": requests, "n_plus_one": n_plus_one}
        view["latency_ms"] = {**view["latency_ms"], "p50": p95 / 2, "p95": p95, "p99": p95, "max": p95}
        return view

    views = [
        entry("shop:fast", 40, 3.0),
        entry("shop:catalogue", 12, 41.0),
        entry("command:migrate", 1, 701.9, n_plus_one=1),
        entry("command:createsuperuser", 1, 912.0),
    ]
    return {
        "window_seconds": 300,
        "generated_at": "2026-01-01T00:00:05+00:00",
        "processes": 4,
        "processes_live": 3,
        "command_processes": 2,
        "views": views,
    }


def test_commands_are_apart_from_the_views(staff_client, monkeypatch):
    monkeypatch.setattr(reading, "read_stats", lambda *a, **k: quick_start_document())
    html = staff_client.get(reverse("instrumented:dashboard")).content.decode()
    views_table, work_table = html.split('id="instr-table"')[1].split("</table>")[0], html.split('id="instr-work"')[1]
    assert "command:" not in views_table and "instr-flag" not in views_table
    assert "command:migrate" in work_table and "command:createsuperuser" in work_table
    assert "instr-worst" not in work_table and "instr-flag" not in work_table
    # The worst p95 is the worst view's, not a one-off command's.
    # (few requests: the cell also says how many the p95 rests on, issue 18)
    assert re.search(r'<td class="instr-worst">41\.0(?: <span class="instr-few"[^>]*>n=\d+</span>)?</td>', views_table)
    # The live workers, and every process with data in the window (commands not among them).
    assert "3 live processes (4 in the window)" in html


def test_names_break_after_separators_never_mid_word(staff_client, monkeypatch):
    # Issue 23: a narrow column showed "command:collectst|atic".
    from instrumented.templatetags.instrumented_display import breakable

    assert breakable("command:collectstatic") == "command:<wbr>collectstatic"
    assert breakable("<b>x.y</b>") == "&lt;b&gt;x.<wbr>y&lt;/<wbr>b&gt;"
    monkeypatch.setattr(reading, "read_stats", lambda *a, **k: quick_start_document())
    html = staff_client.get(reverse("instrumented:dashboard")).content.decode()
    assert ">shop:<wbr>catalogue</a>" in html and ">command:<wbr>createsuperuser</a>" in html


@pytest.mark.parametrize(
    "latency",
    [
        {"p50": 9.5, "p95": 10.2, "p99": 10.9, "max": 11.3, "mean": 10.0},
        {"p50": 0.4, "p95": 0.45, "p99": 120.0, "max": 130.0, "mean": 3.0},
        {"p50": 1500.0, "p95": 1600.0, "p99": 1700.0, "max": 1800.0, "mean": 1550.0},
        {"p50": 0.011, "p95": 0.012, "p99": 0.013, "max": 0.014, "mean": 0.012},
    ],
)
def test_percentile_labels_never_collide(latency):
    # Issue 23: close percentiles put their labels over each other and their lines through the labels.
    from instrumented.dashboard import charts

    svg = str(charts.latency_distribution(latency, 100))
    labels = []
    for x, y, anchor, text in re.findall(
        r'<text class="ichart-marker-label" x="([\d.]+)" y="([\d.]+)" text-anchor="(\w+)">([^<]+)</text>', svg
    ):
        width = 6.8 * len(text)
        left = float(x) - {"end": width, "middle": width / 2}.get(anchor, 0)
        labels.append((left, left + width, float(y) - 10, float(y)))
    lines = [
        (float(x), float(y1), float(y2))
        for x, y1, y2 in re.findall(
            r'<line class="ichart-marker" x1="([\d.]+)" y1="([\d.]+)" x2="[\d.]+" y2="([\d.]+)"', svg
        )
    ]
    assert len(labels) == len(lines) == 4
    for i, (l1, r1, t1, b1) in enumerate(labels):
        assert l1 >= 0 and r1 <= charts.WIDTH, labels
        for l2, r2, t2, b2 in labels[i + 1 :]:
            assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1, labels  # no two labels overlap
        for x, y1, y2 in lines:
            assert not (l1 < x < r1 and y1 < b1 and y2 > t1), (labels, lines)  # no line through a label
