"""The view page's "Slowest requests", the samples API and ``instrumented_stats --view X --samples``."""

from __future__ import annotations

import json
import re
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from instrumented.conf import get_config
from instrumented.memcached import get_store
from instrumented.stats.samples import read_samples
from tests.support.samples import forge, stored


@pytest.fixture
def planted(flush) -> None:
    from shop.views import ensure_catalogue

    ensure_catalogue()
    client = Client()
    for ms in (2, 5, 40, 150):  # 40 % 7 + 1 = 6 lookups: an N+1
        assert client.get(f"/planted/?ms={ms}").status_code == 200
    flush()


@pytest.mark.django_db(databases=["default", "analytics"])
def test_view_page_shows_a_waterfall_per_slow_request(planted, staff_client):
    response = staff_client.get("/instrumented/view/?name=shop:planted")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("private, no-store")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    assert 'id="samples"' in html and html.count('<svg class="iwf"') == 4
    durations = [float(d) for d in re.findall(r"<strong>([\d.]+) ms</strong>", html)]
    assert len(durations) == 4 and durations == sorted(durations, reverse=True), "slowest first"
    assert durations[0] >= 150
    assert "6\N{MULTIPLICATION SIGN} default: SELECT" in html, "the N+1 run is one row"
    assert 'rect class="iwf-template"' in html and "shop/planted_footer.html" in html
    assert "sample_views.py" in html, "the N+1's call site, on hover"
    assert 'id="instr-p99-samples"' in html
    above = (durations[0] + durations[1]) / 2  # a loaded machine may slow any request: a range from what was seen
    tail = staff_client.get(f"/instrumented/view/?name=shop:planted&min_ms={above}").content.decode()
    assert re.findall(r"<strong>([\d.]+) ms</strong>", tail) == [f"{durations[0]:.1f}"], "that latency range only"
    # The histogram's bars link to the samples of their range: the rightmost, to the slowest request.
    bars = re.findall(r'<a class="ichart-link" href="([^"]+)">', html)
    assert bars, "the latency histogram's bars are links"
    tail = staff_client.get(bars[-1].replace("&amp;", "&")).content.decode()
    assert re.findall(r"<strong>([\d.]+) ms</strong>", tail)[0] == f"{durations[0]:.1f}"
    bad = staff_client.get("/instrumented/view/?name=shop:planted&min_ms=abc")
    assert bad.status_code == 200 and b"min_ms must be a number" in bad.content


@pytest.mark.django_db(databases=["default", "analytics"])
def test_a_forged_sample_is_escaped(planted, staff_client):
    bucket = int(time.time() // get_config().bucket_seconds)
    evil = "<script>alert(1)</script>"
    sample = {
        "at": time.time(),
        "ms": 9000.0,
        "status": 200,
        "method": "GET",
        "error": None,
        "user": "staff",
        "q": 1,
        "db": 1.0,
        "sql": [["default", f"SELECT '{evil}'", f"code\t{evil}.py\t1\tf"]],
        "ev": [["q", 0, 10, 0, 1], ["t", 0, 10, evil, 0], ["h", 1, 2, evil, True], ["c", 1, 2, evil, evil]],
        "cut": {},
    }
    forge(
        get_store(),
        get_config(),
        "shop:planted",
        [stored("shop:planted", bucket, [sample])],
    )
    html = staff_client.get("/instrumented/view/?name=shop:planted").content.decode()
    assert "9000" in html.replace(",", "")
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.django_db(databases=["default", "analytics"])
def test_samples_api_and_access(planted, staff_client, plain_client):
    response = staff_client.get("/instrumented/api/samples?name=shop:planted&limit=2")
    assert response.status_code == 200 and response["Cache-Control"].startswith("private, no-store")
    found = response.json()
    assert found["view"] == "shop:planted" and len(found["samples"]) == 2
    first = found["samples"][0]
    assert set(first) == {
        "start", "duration_ms", "status", "method", "error_reference", "user", "queries", "db_time_ms",
        "timeline", "truncated", "cut",
    }  # fmt: skip
    sql = [e for e in first["timeline"] if e["kind"] == "sql"]
    assert sql and set(sql[0]) == {
        "kind", "offset_ms", "duration_ms", "alias", "sql", "n_plus_one", "duplicate", "call_site",
    }  # fmt: skip
    assert Client().get("/instrumented/api/samples?name=shop:planted").status_code == 401
    assert plain_client.get("/instrumented/api/samples?name=shop:planted").status_code == 403
    assert staff_client.get("/instrumented/api/samples").status_code == 400
    assert staff_client.get("/instrumented/api/samples?name=x&limit=0").status_code == 400
    assert Client().get("/instrumented/view/?name=shop:planted").status_code == 302


@pytest.mark.django_db(databases=["default", "analytics"])
def test_command_prints_the_samples(planted):
    out = StringIO()
    call_command("instrumented_stats", "--view", "shop:planted", "--samples", "--json", stdout=out)
    found = json.loads(out.getvalue())
    assert len(found["samples"]) == 4
    out = StringIO()
    call_command("instrumented_stats", "--view", "shop:planted", "--samples", stdout=out)
    text = out.getvalue()
    assert "Slowest requests of shop:planted" in text and "[N+1]" in text and "template shop/planted.html" in text


@pytest.mark.django_db(databases=["default", "analytics"])
def test_the_error_list_links_a_500s_sample(flush, superuser_client):
    client = Client(raise_request_exception=False)
    response = client.get("/fail/")
    assert response.status_code == 500
    ref = response["X-Error-Reference"]
    flush()
    listing = superuser_client.get("/instrumented/errors/?show=all").content.decode()
    link = f"/instrumented/view/?name=shop%3Afail&amp;error={ref}#samples"
    assert link in listing
    page = superuser_client.get(link.replace("&amp;", "&")).content.decode()
    assert page.count('<svg class="iwf"') == 1 and "· 500 ·" in page
    assert f'<a href="/instrumented/errors/{ref}/">{ref}</a>' in page or f">{ref}</a>" in page
    other = superuser_client.get(f"/instrumented/view/?name=shop:fail&error={'0' * 14}").content.decode()
    assert 'id="instr-no-samples"' in other and "not among the view" in other
    assert superuser_client.get("/instrumented/api/samples?name=shop:fail&error=nope").status_code == 400


@pytest.mark.django_db(databases=["default", "analytics"])
def test_samples_off(flush, staff_client, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SAMPLES_PER_VIEW": 0}
    Client().get("/planted/?ms=1")
    flush()
    page = staff_client.get("/instrumented/view/?name=shop:planted").content.decode()
    assert 'id="instr-samples-off"' in page and '<svg class="iwf"' not in page
    assert read_samples("shop:planted", store=get_store())["samples"] == []
