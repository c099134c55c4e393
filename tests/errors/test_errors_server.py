"""Error references through a real HTTP server (gunicorn, and uvicorn for ASGI) of the demo site.

The server runs ``tests.support.fault_settings``: the test settings plus fault-injecting middleware
(header ``X-Test-Fault``) and a session engine that can break. Users and their sessions are created in
the server's database with ``manage.py shell``; the superuser also logs in through the admin login form.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrumented.memcached import get_store
from instrumented.references import normalize_reference
from tests.support.servers import EXAMPLE, SiteServer, server_env, start_site

USERS = ["anonymous", "user", "staff", "inactive_superuser", "superuser"]
FAULTS = {
    "view": ("/fail/", None),
    "early_middleware": ("/fast/", "early"),
    "late_middleware": ("/fast/", "late"),
    "session_backend": ("/fast/", "session"),
}
DEMO_500_MARKER = b"The demo shop tripped over something"
PLANTED = {
    "SENTRY_DSN": "https://srvdsnpublickey31@o9.ingest.sentry.io/77",
    "DATABASE_URL": "postgres://shop:Srv-DbPass-2718@db.internal/shop",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/T1/B2/SrvWebhookSecret99",
    "DEMO_API_TOKEN": "srv-api-token-1122334455",
    "AWS_SECRET_ACCESS_KEY": "SrvAwsSecret/zyxw9876",
    "DEMO_VALUE_A": "srv-local-password-77",
    "DEMO_VALUE_B": "5500005555555559",
}
NEEDLES = [
    "srvdsnpublickey31",
    "Srv-DbPass-2718",
    "SrvWebhookSecret99",
    "srv-api-token-1122334455",
    "SrvAwsSecret",
    "srv-local-password-77",
    "5500005555555559",
]


def error_env(data_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    return server_env(data_dir, prefix, DJANGO_SETTINGS_MODULE="tests.support.fault_settings", **extra)


@pytest.fixture
def start_error_site(site_data_dir: Path, _isolated_stats: str) -> Iterator:
    """Factory: the demo site with fault injection under gunicorn (or uvicorn), stopped after the test."""
    servers: list[SiteServer] = []

    def start(kind: str = "wsgi", **extra: str) -> SiteServer:
        server = start_site(error_env(site_data_dir, _isolated_stats, **extra), kind, workers=2, quiet=True)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


CREATE_USERS = """
import json, uuid
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
User = get_user_model()
tag = uuid.uuid4().hex[:8]
out = {}
flags = {"user": {}, "staff": {"is_staff": True}, "inactive_superuser": {"is_staff": True, "is_superuser": True},
         "superuser": {"is_staff": True, "is_superuser": True}}
for kind, extra in flags.items():
    user = User.objects.create_user(f"{kind}-{tag}", password=f"pw-{tag}", **extra)
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    out[kind] = {"session": session.session_key, "username": user.username, "password": f"pw-{tag}", "id": user.pk}
User.objects.filter(username=f"inactive_superuser-{tag}").update(is_active=False)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def accounts(site_data_dir: Path) -> dict[str, dict]:
    """Users of every kind in the server's database, each with a logged-in session (inactive: deactivated after)."""
    env = error_env(site_data_dir, "setup")
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", CREATE_USERS],
        cwd=EXAMPLE,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


class Browser:
    """urllib with a cookie jar: what a person's browser would send and get back."""

    def __init__(self, base: str, session: str | None = None) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.session = session

    def request(self, path: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers=dict(headers or {}))
        if self.session:
            request.add_header("Cookie", f"sessionid={self.session}")
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def admin_login(self, username: str, password: str) -> None:
        status, _, page = self.request("/admin/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert status == 200 and token, page[:300]
        form = {"username": username, "password": password, "csrfmiddlewaretoken": token[1].decode(), "next": "/admin/"}
        status, _, page = self.request("/admin/login/?next=/admin/", form, {"Referer": self.base + "/admin/login/"})
        assert status == 200 and b"Log out" in page, page[:500]


def browser_for(server: SiteServer, accounts: dict, kind: str) -> Browser:
    if kind == "anonymous":
        return Browser(server.url, session="stale" + "0" * 27)
    if kind == "superuser":
        browser = Browser(server.url)
        browser.admin_login(accounts[kind]["username"], accounts[kind]["password"])
        return browser
    return Browser(server.url, session=accounts[kind]["session"])


def test_matrix_and_lookups_over_gunicorn(start_error_site, accounts):
    server = start_error_site()
    browsers = {kind: browser_for(server, accounts, kind) for kind in USERS}

    # One error, looked up by everyone.
    status, headers, body = browsers["user"].request("/fail/")
    ref = headers["X-Error-Reference"]
    assert status == 500 and normalize_reference(ref) == ref and ref.encode() in body
    for kind in ("anonymous", "user", "staff", "inactive_superuser"):
        for url in (
            f"/instrumented/errors/{ref}/",
            f"/instrumented/errors/{ref}/traceback.txt",
            "/instrumented/errors/",
        ):
            status, _, answer = browsers[kind].request(url)
            assert status == 404 and ref.encode() not in answer and b"ZeroDivision" not in answer, (kind, url)
    root = browsers["superuser"]
    status, headers, page = root.request(f"/instrumented/errors/{ref}/")
    assert status == 200 and b"ZeroDivisionError" in page and b"order_total" in page
    assert headers["Content-Security-Policy"].startswith("sandbox;") and headers["X-Frame-Options"] == "DENY"
    assert "no-store" in headers["Cache-Control"] and "Cookie" in headers["Vary"]
    status, headers, text = root.request(f"/instrumented/errors/{ref}/traceback.txt")
    assert status == 200 and f"User: {accounts['user']['username']}".encode() in text
    status, _, listing = root.request("/instrumented/errors/")
    assert status == 200 and f"/instrumented/errors/{ref}/".encode() in listing
    status, _, missing = root.request(f"/instrumented/errors/{'0' * 14}/")
    assert status == 404 and b"Expired or unknown" in missing

    # Who sees what, for an error in a view, a middleware before auth, one after auth, the session backend.
    store = get_store()
    for kind in USERS:
        for fault, (path, header) in FAULTS.items():
            status, headers, body = browsers[kind].request(path, headers={"X-Test-Fault": header} if header else {})
            ref = headers.get("X-Error-Reference", "")
            assert status == 500 and normalize_reference(ref) == ref, (kind, fault, status)
            if kind == "superuser" and fault in ("view", "late_middleware"):
                assert b"Traceback" in body and headers["Content-Security-Policy"].startswith("sandbox;")
                assert headers["X-Frame-Options"] == "DENY" and "no-store" in headers["Cache-Control"]
            else:
                assert DEMO_500_MARKER in body and ref.encode() in body, (kind, fault)
                assert b"Traceback" not in body and b"fault injected" not in body, (kind, fault)
            assert store.get(store.config.keys.error_meta(ref)) is not None, (kind, fault, "metadata stored")


def test_no_secrets_over_gunicorn(start_error_site, accounts):
    server = start_error_site(**PLANTED)
    root = browser_for(server, accounts, "superuser")
    status, headers, body = root.request("/errors-demo/secret/?api_token=srv-query-token-99&x=1")
    assert status == 500 and b"visible-local-marker" in body and b"ConnectionError" in body
    ref = headers["X-Error-Reference"]
    pages = {"live": body}
    for url in (f"/instrumented/errors/{ref}/", f"/instrumented/errors/{ref}/traceback.txt", "/instrumented/errors/"):
        status, _, pages[url] = root.request(url)
        assert status == 200 and b"ConnectionError" in pages[url], url
    store = get_store()
    for key in (store.config.keys.error_meta(ref), store.config.keys.error_page(ref)):
        raw = store.get(key)
        assert raw is not None
        pages[key] = zlib.decompress(raw[1:]) if raw[:1] == b"z" else raw[1:]
    assert b"visible-local-marker" in pages[store.config.keys.error_page(ref)]
    for where, data in pages.items():
        leaked = [n for n in [*NEEDLES, "srv-query-token-99"] if n.encode() in data]
        assert not leaked, f"{where} leaks {leaked}"


def test_asgi_under_uvicorn(start_error_site, accounts):
    server = start_error_site(kind="asgi")
    root = browser_for(server, accounts, "superuser")
    status, headers, body = root.request("/fail/")
    assert status == 500 and b"Traceback" in body and b"ZeroDivisionError" in body, body[:300]
    ref = headers["X-Error-Reference"]
    status, _, page = root.request(f"/instrumented/errors/{ref}/")
    assert status == 200 and b"order_total" in page
    status, headers, body = root.request("/errors-demo/async/")
    assert status == 500 and b"TimeoutError" in body and b"pending_orders" in body, "async view: locals shown"
    status, _, text = root.request(f"/instrumented/errors/{headers['X-Error-Reference']}/traceback.txt")
    assert status == 200 and b"async demo failure with 3 pending orders" in text
    status, headers, body = root.request("/fast/", headers={"X-Test-Fault": "session"})
    assert status == 500 and DEMO_500_MARKER in body and headers["X-Error-Reference"].encode() in body
    status, headers, body = browser_for(server, accounts, "staff").request("/fail/")
    assert status == 500 and DEMO_500_MARKER in body and b"Traceback" not in body
