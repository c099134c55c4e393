"""``/instrumented/metrics`` read by Prometheus' own parsers (prometheus_client): the merged window as gauges,
bearer token or dashboard permission, never cached, label values escaped."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from instrumented.conf import load
from instrumented.dashboard.metrics import exposition
from instrumented.display import escape_controls

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789abcdef"


@pytest.fixture
def token(settings) -> str:
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "METRICS_TOKEN": TOKEN}
    return TOKEN


def traffic(flush) -> None:
    site = Client(raise_request_exception=False)
    for _ in range(3):
        site.get("/fast/")
    site.get("/fail/")
    flush()


def samples(families) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_prometheus_parses_the_merged_window_as_gauges(token, flush):
    traffic(flush)
    response = Client().get("/instrumented/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    families = list(text_string_to_metric_families(response.content.decode()))
    assert {f.type for f in families} == {"gauge"}
    found = samples(families)
    fast = (("route", "fast/"), ("view", "shop:fast"))
    assert found[("instrumented_requests", fast)] == 3
    assert found[("instrumented_responses", (*fast[:1], ("status_class", "2xx"), fast[1]))] == 3
    assert found[("instrumented_errors", (("route", "fail/"), ("view", "shop:fail")))] == 1
    fail_exc = (("exception", "ZeroDivisionError"), ("route", "fail/"), ("view", "shop:fail"))
    assert found[("instrumented_exceptions", fail_exc)] == 1
    p95 = found[("instrumented_latency_seconds", (("quantile", "0.95"), *fast))]
    assert 0 < p95 <= found[("instrumented_latency_max_seconds", fast)]
    assert found[("instrumented_window_seconds", ())] == 300 and found[("instrumented_processes", ())] >= 1
    assert found[("instrumented_read_ok", ())] == 1


def test_openmetrics_when_asked(token, flush):
    traffic(flush)
    response = Client().get(
        "/instrumented/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/openmetrics-text"
    )
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    found = samples(openmetrics_families(response.content.decode()))  # raises unless it ends with # EOF
    assert found[("instrumented_requests", (("route", "fast/"), ("view", "shop:fast")))] == 3


def test_token_or_dashboard_permission(token, staff_client, plain_client):
    url = "/instrumented/metrics"
    anonymous = Client().get(url)
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    assert Client().get(url, HTTP_AUTHORIZATION="Bearer " + "x" * len(token)).status_code == 401
    assert Client().get(url, HTTP_AUTHORIZATION=f"Basic {token}").status_code == 401
    assert staff_client.get(url).status_code == 200
    assert plain_client.get(url).status_code == 403
    for response in (anonymous, staff_client.get(url)):
        assert "no-store" in response["Cache-Control"] and "Authorization" in response["Vary"]


def test_without_a_token_only_a_session_opens_it(staff_client):
    assert Client().get("/instrumented/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert staff_client.get("/instrumented/metrics").status_code == 200


def test_hostile_view_names_stay_one_label_value():
    name = 'a"b\\c\nd} x{y="z" \u202e'
    stats = {
        "window_seconds": 300,
        "processes": 1,
        "views": [
            {
                "view": name,
                "route": "r/",
                "requests": 1,
                "errors": 0,
                "status": {"2xx": 1, "3xx": 0, "4xx": 0, "5xx": 0},
                "latency_ms": {"mean": 1.0, "p50": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0},
                "queries": {"total": 0, "mean": 0.0, "max": 0},
                "db_time_ms": 0.0,
                "n_plus_one": 0,
                "exceptions": [{"class": 'Bad"Class\n', "count": 2}],
            }
        ],
    }
    families = {f.name: f for f in text_string_to_metric_families(exposition(stats))}
    assert [s.labels["view"] for s in families["instrumented_requests"].samples] == [escape_controls(name)]
    assert families["instrumented_exceptions"].samples[0].labels["exception"] == escape_controls('Bad"Class\n')


def test_a_short_token_is_refused_by_the_checks():
    assert load({"METRICS_TOKEN": "short"}).metrics_token is None
    assert any("METRICS_TOKEN" in p for p in load({"METRICS_TOKEN": "short"}).problems)
    assert load({"METRICS_TOKEN": TOKEN}).metrics_token == TOKEN
