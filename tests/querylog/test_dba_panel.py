"""The DBA panel against the real proxy host in front of the real MariaDB (127.0.0.1:3306, root, no password).

Django reaches the proxy through a "querylog" DATABASES alias added for each test; the proxy's state is
checked directly over the wire (``control``), so "no state change" means what the proxy says, not the page.
"""

from __future__ import annotations

import html
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from django.db.utils import load_backend
from django.test import Client, override_settings
from django.urls import reverse

from tests.support.mysql import MARIADB
from tests.support.ports import free_port
from tests.support.proxy import ProxyProcess, control, start_proxy

pytestmark = pytest.mark.django_db

#: The proxy's cap for PROXY LOG ON in these tests.
MAX_SECONDS = 120


def mysql_alias(port: int) -> dict:
    """A DATABASES entry for MariaDB through a proxy listening on ``port``."""
    return {
        "ENGINE": "django.db.backends.mysql",
        "HOST": "127.0.0.1",
        "PORT": port,
        "USER": MARIADB["user"],
        "PASSWORD": MARIADB["password"],
        "NAME": MARIADB["database"],
        "OPTIONS": {"connect_timeout": 5},
    }


@contextmanager
def database_alias(alias: str, entry: dict) -> Iterator[None]:
    """``DATABASES[alias] = entry`` for the duration, and a connection for it that the test may use.

    The connection is placed in the handler directly, as a dynamically created one: Django's TestCase
    refuses connections to aliases it was not told about at set-up, and this one must not be wrapped in
    the test's transaction (nor flushed) anyway; ``querylog`` closes it after each statement.
    """
    from django.conf import settings

    override = override_settings(DATABASES={**settings.DATABASES, alias: entry})
    with warnings.catch_warnings():  # overriding DATABASES is "complex": the connection is handled below
        warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
        override.enable()
    configured = connections.configure_settings({**settings.DATABASES})[alias]
    setattr(connections._connections, alias, load_backend(configured["ENGINE"]).DatabaseWrapper(configured, alias))
    try:
        yield
    finally:
        connections[alias].close()
        delattr(connections._connections, alias)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Overriding setting DATABASES", UserWarning)
            override.disable()


@pytest.fixture(scope="module")
def mariadb_up() -> None:
    """Skip this module when MariaDB is not reachable; the MySQL driver Django uses must be there."""
    pymysql = pytest.importorskip("pymysql")
    try:
        pymysql.connect(**MARIADB, connect_timeout=2).close()
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB is not reachable on 127.0.0.1:3306 as root: {exc}")


@pytest.fixture(scope="module")
def proxy(mariadb_up: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """instrumented-proxy running query_log.lua in front of MariaDB, for this module."""
    tmp: Path = tmp_path_factory.mktemp("dba-proxy")
    process = start_proxy(tmp, PROXY_LOG_ADMINS="root", PROXY_LOG_MAX_SECONDS=str(MAX_SECONDS))
    yield process
    assert process.stop() == 0, process.stderr()


def proxy_status(proxy: ProxyProcess) -> dict:
    """What the proxy itself says, over a connection of its own."""
    return control(proxy.port, "PROXY LOG STATUS")[0]


@pytest.fixture
def login(django_user_model) -> Callable[..., Client]:
    """Factory of logged-in clients: ``login("admin" | "staff" | "granted", csrf=False)``."""

    def make(kind: str, csrf: bool = False) -> Client:
        name = f"dba-{kind}"
        if kind == "admin":
            user = django_user_model.objects.create_superuser(name, "a@example.invalid", "pw")
        else:
            user = django_user_model.objects.create_user(name, "s@example.invalid", "pw", is_staff=True)
            if kind == "granted":
                permission = Permission.objects.get(content_type__app_label="instrumented", codename="control_querylog")
                user.user_permissions.add(permission)
        client = Client(enforce_csrf_checks=csrf)
        client.force_login(user)
        return client

    return make


@pytest.fixture
def qlog(proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    """The proxy with logging off and nothing recorded, reachable as the "querylog" alias during the test."""
    control(proxy.port, "PROXY LOG OFF")
    control(proxy.port, "PROXY LOG RESET")
    with database_alias("querylog", mysql_alias(proxy.port)):
        yield proxy
    control(proxy.port, "PROXY LOG OFF")
    control(proxy.port, "PROXY LOG RESET")


@pytest.fixture
def url() -> str:
    return reverse("instrumented:dba")


@pytest.fixture
def admin_client(login) -> Client:
    return login("admin")


def text_of(response) -> str:
    """The page's text with tags removed and entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def section(response, element_id: str) -> str:
    """The HTML of the element with this id up to the end of its table/paragraph (enough to look inside)."""
    body = response.content.decode()
    start = body.index(f'id="{element_id}"')
    end = min(i for i in (body.find("</table>", start), body.find("</p>", start), len(body)) if i != -1)
    return html.unescape(body[start:end])


def assert_protected(response) -> None:
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert response["X-Frame-Options"] == "DENY"
    assert "Cookie" in response["Vary"]


# -- who ---------------------------------------------------------------------------------------
def test_superuser_sees_status_off_with_headers(qlog, admin_client, url):
    response = admin_client.get(url)
    assert response.status_code == 200
    assert_protected(response)
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert re.search(r'id="instr-logging">off<', response.content.decode())
    assert 'id="instr-seconds-left"' not in response.content.decode()
    assert str(qlog.log_file) in text_of(response)
    assert "<script>" not in response.content.decode()  # the countdown is a static file
    assert "instrumented/dba.js" in response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in response.content.decode()


def test_anonymous_is_sent_to_login_and_cannot_post(qlog, url):
    client = Client()
    response = client.get(url)
    assert response.status_code == 302 and "login" in response["Location"] and "next=" in response["Location"]
    assert_protected(response)
    response = client.post(url, {"action": "on", "seconds": "60"})
    assert response.status_code == 302 and "login" in response["Location"]
    assert proxy_status(qlog)["logging"] == "off"


def test_staff_without_permission_gets_403(qlog, login, url):
    client = login("staff")
    response = client.get(url)
    assert response.status_code == 403
    assert_protected(response)
    assert "instrumented.control_querylog" in text_of(response)
    assert "instr-digest" not in response.content.decode()
    response = client.post(url, {"action": "on", "seconds": "60"})
    assert response.status_code == 403
    assert proxy_status(qlog)["logging"] == "off"
    dashboard = client.get(reverse("instrumented:dashboard"))
    assert dashboard.status_code == 200 and 'id="instr-dba-link"' not in dashboard.content.decode()


def test_staff_with_permission_may_switch(qlog, login, url, caplog):
    caplog.set_level(logging.INFO, logger="instrumented")
    client = login("granted")
    dashboard = client.get(reverse("instrumented:dashboard"))
    assert f'href="{url}"' in dashboard.content.decode() and 'id="instr-dba-link"' in dashboard.content.decode()
    response = client.post(url, {"action": "on", "seconds": "30"})
    assert response.status_code == 302 and response["Location"] == url
    assert proxy_status(qlog)["logging"] == "on"
    assert any("dba-granted" in r.getMessage() and "on" in r.getMessage() and "seconds=30" in r.getMessage()
               for r in caplog.records if r.name == "instrumented" and r.levelno == logging.INFO)  # fmt: skip


def test_superuser_sees_the_dashboard_link(qlog, admin_client, url, flush):
    admin_client.get("/fast/")
    flush()
    dashboard = admin_client.get(reverse("instrumented:dashboard"))
    assert 'id="instr-dba-link"' in dashboard.content.decode() and f'href="{url}"' in dashboard.content.decode()
    view_page = admin_client.get(reverse("instrumented:view_detail"), {"name": "shop:fast"}).content.decode()
    assert 'id="instr-dba-view-link"' in view_page and f'href="{url}?view=shop%3Afast"' in view_page


# -- what ---------------------------------------------------------------------------------------
def test_on_traffic_off_reset(qlog, admin_client, url, caplog):
    caplog.set_level(logging.INFO, logger="instrumented")
    response = admin_client.post(url, {"action": "on", "seconds": "60"})
    assert response.status_code == 302 and response["Location"] == url
    assert_protected(response)
    status = proxy_status(qlog)
    assert status["logging"] == "on" and 55 <= status["seconds_left"] <= 60
    [record] = [r for r in caplog.records if r.name == "instrumented" and r.levelno == logging.INFO]
    assert record.getMessage() == "django-instrumented: user dba-admin: query log on (seconds=60)"
    assert (record.querylog_user, record.querylog_action, record.querylog_seconds) == ("dba-admin", "on", 60)

    page = admin_client.get(url)
    assert "Query log turned on for 60 s." in text_of(page)  # the message after the redirect
    assert re.search(r'id="instr-logging">on<', page.content.decode())
    left = int(re.search(r'data-seconds-left="(\d+)"', page.content.decode()).group(1))
    assert 55 <= left <= 60

    # Traffic through the Django alias is logged by the proxy and appears in both tables.
    with connections["querylog"].cursor() as cursor:
        for n in range(3):
            cursor.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = %s", [f"dba_mark{n}"])
    connections["querylog"].close()
    page = admin_client.get(url)
    tail = section(page, "instr-tail")
    assert "WHERE table_name = 'dba_mark2'" in tail and "dba_mark0" in tail
    assert tail.index("dba_mark2") < tail.index("dba_mark0")  # newest first
    assert ">root<" in tail and ">test<" in tail and ">ok<" in tail
    # Times in the site's TIME_ZONE (the demo's America/Chicago), named in the column head.
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d C[SD]T<", tail) and "Time (America/Chicago)" in tail
    digest = section(page, "instr-digest")
    # sqlparse re-indents the normalised statement: one line per clause, keywords upper case; the proxy's ?
    # is shown as %s, the placeholder of every other page.
    assert "SELECT count(*)\nFROM information_schema.tables\nWHERE TABLE_NAME = %s" in digest
    assert re.search(r"\d\d:\d\d:\d\d C[SD]T<br>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d C[SD]T<", digest), "first/last seen"
    # ... under a head that names that zone (issue 23: it said "(UTC)" over Chicago times).
    assert "First / last seen (America/Chicago)" in digest and "(UTC)" not in digest
    row = digest[digest.index("information_schema.tables") :]
    host = r'<a class="instr-host" href="\?host=127.0.0.1">127.0.0.1</a> \(3\)'
    assert re.search(r'</pre><form method="post" action="" class="instr-explain-form">.*?</form></td>'
                     rf'<td class="instr-left">test / root<br>{host}</td><td>3</td>', row)  # fmt: skip

    page = admin_client.post(url, {"action": "off"}, follow=True)
    assert page.status_code == 200 and "Query log turned off" in text_of(page)
    assert proxy_status(qlog)["logging"] == "off"
    assert re.search(r'id="instr-logging">off<', page.content.decode())
    assert "dba_mark2" in section(page, "instr-tail")  # turning off keeps what was recorded

    page = admin_client.post(url, {"action": "reset"}, follow=True)
    assert "Recent statements and digest cleared." in text_of(page)
    assert control(qlog.port, "PROXY LOG TAIL") == [] and control(qlog.port, "PROXY LOG DIGEST") == []
    assert 'id="instr-tail-empty"' in page.content.decode() and 'id="instr-digest-empty"' in page.content.decode()


def test_get_never_changes_state(qlog, admin_client, url):
    for query in ("?action=on&seconds=60", "?action=reset", "?action=off"):
        assert admin_client.get(url + query).status_code == 200
        assert proxy_status(qlog)["logging"] == "off"
    control(qlog.port, "PROXY LOG ON 60")
    assert admin_client.get(url + "?action=off").status_code == 200
    assert proxy_status(qlog)["logging"] == "on"


def test_post_without_csrf_token_is_rejected(qlog, login, url):
    client = login("granted", csrf=True)
    response = client.post(url, {"action": "on", "seconds": "60"})
    assert response.status_code == 403 and b"CSRF" in response.content
    assert proxy_status(qlog)["logging"] == "off"
    # The page's own form carries a token that passes the same check.
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(url).content.decode()).group(1)
    response = client.post(url, {"action": "on", "seconds": "60", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert proxy_status(qlog)["logging"] == "on"


@pytest.mark.parametrize("seconds", ["0", "-5", "abc", "", "1.5", "9" * 11])
def test_bad_seconds_are_refused_without_state_change(qlog, admin_client, url, seconds):
    response = admin_client.post(url, {"action": "on", "seconds": seconds})
    assert response.status_code == 400
    assert_protected(response)
    error = section(response, "instr-form-error")
    assert "Seconds must" in error and ("whole number of 1 or more" in error or "at most 10 digits" in error)
    assert proxy_status(qlog)["logging"] == "off"


def test_huge_seconds_are_capped_by_the_proxy(qlog, admin_client, url):
    page = admin_client.post(url, {"action": "on", "seconds": str(10**9)}, follow=True)
    assert (
        f"Query log turned on for {MAX_SECONDS} s (asked for 1000000000 s; the proxy caps it at {MAX_SECONDS} s)."
        in (text_of(page))
    )
    status = proxy_status(qlog)
    assert status["logging"] == "on" and MAX_SECONDS - 5 <= status["seconds_left"] <= MAX_SECONDS


def test_unknown_action_is_refused(qlog, admin_client, url):
    response = admin_client.post(url, {"action": "drop"})
    assert response.status_code == 400 and "Unknown action" in text_of(response)
    assert proxy_status(qlog)["logging"] == "off"


# -- when the proxy cannot be reached ------------------------------------------------------------------
def test_alias_missing_shows_the_reason(admin_client, url):
    response = admin_client.get(url)
    assert response.status_code == 200
    assert_protected(response)
    assert "No database alias 'querylog': add one to DATABASES" in text_of(response)
    page = admin_client.post(url, {"action": "on", "seconds": "60"}, follow=True)
    assert page.status_code == 200 and "Query log on failed: No database alias 'querylog'" in text_of(page)


def test_proxy_down_shows_the_reason(admin_client, url):
    with database_alias("querylog", mysql_alias(free_port())):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert "Can't connect" in text_of(response) and 'id="instr-error"' in response.content.decode()
        page = admin_client.post(url, {"action": "off"}, follow=True)
        assert page.status_code == 200 and "Query log off failed: OFF (querylog):" in text_of(page)


def test_counts_agree_with_their_nouns():
    from instrumented.display import count_of

    assert [count_of(n, "statement") for n in (0, 1, 2, "1", None)] == [
        "0 statements", "1 statement", "2 statements", "1 statement", "None statements",
    ]  # fmt: skip
