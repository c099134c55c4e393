"""The outgoing-HTTP probe: urllib, requests and httpx calls from a view, per origin, errors, no paths."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import requests
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path

from instrumented.stats.reader import read_stats
from tests.support.ports import free_port

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])
SECRET = "token-5f0c1e"


class Upstream(BaseHTTPRequestHandler):
    """200 on /ok, 503 on /down."""

    def do_GET(self) -> None:
        status = 503 if self.path.startswith("/down") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call_out(request: HttpRequest) -> JsonResponse:
    """Calls ?base= with each client: three successes, one 503, one refused connection."""
    base, closed = request.GET["base"], request.GET["closed"]
    with urllib.request.urlopen(f"{base}/ok?key={SECRET}", timeout=5) as response:
        response.read()
    requests.get(f"{base}/ok/path/{SECRET}", timeout=5)
    httpx.get(f"{base}/ok?{SECRET}=1", timeout=5)
    try:
        urllib.request.urlopen(f"{base}/down", timeout=5)
    except urllib.error.HTTPError:
        pass
    try:
        requests.get(f"http://user:{SECRET}@127.0.0.1:{closed}/", timeout=5)
    except requests.ConnectionError:
        pass
    return JsonResponse({"ok": True})


urlpatterns = [path("call-out/", call_out, name="call_out")]


def test_calls_per_origin_with_errors_and_no_paths(settings, flush, upstream):
    settings.ROOT_URLCONF = "tests.stats.test_http_probe"
    closed = free_port()
    response = Client().get("/call-out/", {"base": upstream, "closed": closed})
    assert response.status_code == 200
    flush()
    document = read_stats()
    (view,) = [v for v in document["views"] if v["view"] == "call_out"]
    by_origin = {o["origin"]: o for o in view["http"]["origins"]}
    assert set(by_origin) == {upstream, f"http://127.0.0.1:{closed}"}
    assert (by_origin[upstream]["calls"], by_origin[upstream]["errors"]) == (4, 1), "the 503 is an error"
    refused = by_origin[f"http://127.0.0.1:{closed}"]
    assert refused["calls"] >= 1 and refused["errors"] == refused["calls"], "a refused connection is an error"
    assert view["http"]["calls"] == sum(o["calls"] for o in by_origin.values())
    assert view["http"]["time_ms"] >= by_origin[upstream]["max_ms"] > 0
    assert SECRET not in str(document) and "/ok" not in str(document) and "/down" not in str(document)


def test_nothing_recorded_outside_requests(upstream):
    with urllib.request.urlopen(f"{upstream}/ok", timeout=5) as response:
        assert response.status == 200
    assert requests.get(f"{upstream}/ok", timeout=5).status_code == 200
    assert httpx.get(f"{upstream}/ok", timeout=5).status_code == 200
