"""Issue 12 end to end: Django views named in the proxy's digest, a quiet panel and command, two proxies.

Real MariaDB behind real instrumented-proxy processes; the fixtures are the DBA panel tests' (conftest.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from tests.querylog.test_dba_panel import database_alias, mysql_alias, section, text_of
from tests.support.proxy import ProxyProcess, control, start_proxy

pytestmark = pytest.mark.django_db


def instrumented(**extra: object) -> override_settings:
    return override_settings(INSTRUMENTED={**settings.INSTRUMENTED, **extra})


def test_a_views_statements_name_it_in_the_digest_tail_and_log(qlog: ProxyProcess, admin_client, url):
    with instrumented(SQL_COMMENT=["querylog"]), override_settings(ROOT_URLCONF="tests.querylog.urls_sqlcomment"):
        control(qlog.port, "PROXY LOG ON 60")
        for book_id in (3, 4):
            assert admin_client.get(f"/shop/books/{book_id}/").content == b"ok"
        digest = {row["digest"]: row for row in control(qlog.port, "PROXY LOG DIGEST 100")}
        assert digest["select ? + ? as n"]["views"] == "book" and digest["select ? + ? as n"]["count"] == 2
        assert digest["select ? as p"]["views"] == "book"
        # transaction.atomic's savepoints: one row each, whatever their names (s140234_x1, ...).
        assert digest["savepoint ?"]["count"] == 2 and digest["release savepoint ?"]["count"] == 2
        assert digest["savepoint ?"]["views"] == "book"
        tail = [row for row in control(qlog.port, "PROXY LOG TAIL 100") if row["view"] == "book"]
        assert "SELECT 4 + 1 AS n" in [row["query"] for row in tail]  # the comment is cut off the statement
        control(qlog.port, "PROXY LOG STATUS")  # flushes the file
        lines = [json.loads(line) for line in qlog.log_file.read_text().splitlines()]
        mine = [line for line in lines if line["view"] == "book"]
        assert {line["route"] for line in mine} == {"shop/books/<int:book_id>/"}  # with and without parameters
        assert {"SELECT 3 + 1 AS n", "SELECT 'no parameters' AS p"} <= {line["query"] for line in mine}
        # The panel shows that view's statements only, when asked to.
        page = admin_client.get(url + "?view=book")
        assert 'id="instr-view-filter">book<' in page.content.decode()
        rows = section(page, "instr-digest")
        assert "%s + %s AS n" in rows and 'href="?view=book"' in rows
        other = admin_client.get(url + "?view=shop:nothing")
        assert "instr-digest-empty" in other.content.decode()


def test_without_sql_comment_statements_have_no_view(qlog: ProxyProcess, admin_client):
    with override_settings(ROOT_URLCONF="tests.querylog.urls_sqlcomment"):
        control(qlog.port, "PROXY LOG ON 60")
        assert admin_client.get("/shop/books/5/").content == b"ok"
    rows = [row for row in control(qlog.port, "PROXY LOG TAIL 100") if "+ 1 AS n" in row["query"]]
    assert rows and all(row["view"] is None for row in rows)


def test_the_panel_and_the_command_leave_no_statement_in_the_log(qlog: ProxyProcess, admin_client, url):
    control(qlog.port, "PROXY LOG ON 60")
    assert admin_client.get(url).status_code == 200  # STATUS, DIGEST, TAIL
    assert admin_client.post(url, {"action": "on", "seconds": "60", "slow": "", "sample": ""}).status_code == 302
    for args in (("status",), ("tail", "-n", "3"), ("digest", "-n", "3"), ("on", "--seconds", "60")):
        call_command("instrumented_querylog", *args, stdout=io.StringIO())
    assert control(qlog.port, "PROXY LOG TAIL 100") == []  # nothing of their own: no SET NAMES, no autocommit
    assert control(qlog.port, "PROXY LOG DIGEST 100") == []
    assert control(qlog.port, "PROXY LOG STATUS")[0]["logged"] == 0


def test_filters_from_the_panel_and_the_command(qlog: ProxyProcess, admin_client, url):
    response = admin_client.post(url, {"action": "on", "seconds": "60", "slow": "5", "user": "root", "db": "test",
                                       "errors": "on", "sample": "0.5"}, follow=True)  # fmt: skip
    assert "slow 5 ms, user root, db test, errors, sample 0.5" in text_of(response)
    assert control(qlog.port, "PROXY LOG STATUS")[0]["filters"] == "slow 5 ms, user root, db test, errors, sample 0.5"
    out = io.StringIO()
    call_command("instrumented_querylog", "on", "--seconds", "30", "--slow", "2.5", "--user", "app", stdout=out)
    assert "slow 2.5 ms, user app" in out.getvalue()
    bad = admin_client.post(url, {"action": "on", "seconds": "60", "user": "x y"}, follow=True)
    assert "must be one word" in text_of(bad)
    assert control(qlog.port, "PROXY LOG STATUS")[0]["filters"] == "slow 2.5 ms, user app"


def test_small_and_large_numbers_reach_the_proxy_as_plain_decimals(qlog: ProxyProcess, admin_client, url):
    """Issue 17: the panel sent ``SAMPLE 1e-05`` (``:g``), which the proxy refuses, and ``SLOW 1.23457e+08``."""
    response = admin_client.post(url, {"action": "on", "seconds": "60", "slow": "123456789", "sample": "0.00001"})
    assert response.status_code == 302
    status = control(qlog.port, "PROXY LOG STATUS")[0]
    assert status["logging"] != "off" and "slow" in status["filters"] and "sample" in status["filters"], status
    control(qlog.port, "PROXY LOG OFF")
    call_command("instrumented_querylog", "on", "--seconds", "30", "--slow", "0.0001", "--sample", "0.0000005",
                 stdout=io.StringIO())  # fmt: skip
    status = control(qlog.port, "PROXY LOG STATUS")[0]
    assert status["logging"] != "off" and "sample" in status["filters"], status


@pytest.fixture
def two_proxies(qlog: ProxyProcess, tmp_path: Path) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    """A second proxy as the alias "querylog2"; QUERYLOG_DATABASES names both."""
    second = start_proxy(tmp_path, PROXY_LOG_ADMINS="root", PROXY_LOG_MAX_SECONDS="120")
    try:
        with (
            database_alias("querylog2", mysql_alias(second.port)),
            instrumented(QUERYLOG_DATABASES=["querylog", "querylog2"]),
        ):
            yield qlog, second
    finally:
        assert second.stop() == 0


def test_two_proxies_are_switched_and_read_together(two_proxies, admin_client, url):
    first, second = two_proxies
    assert admin_client.post(url, {"action": "on", "seconds": "60"}).status_code == 302
    assert control(first.port, "PROXY LOG STATUS")[0]["logging"] == "on"
    assert control(second.port, "PROXY LOG STATUS")[0]["logging"] == "on"
    for proxy_process, n in ((first, 1), (second, 2), (second, 3)):
        control(proxy_process.port, f"SELECT {n} AS two_proxies")
    page = admin_client.get(url)
    assert 'id="instr-proxies"' in page.content.decode() and "querylog2" in section(page, "instr-proxies")
    digest = section(page, "instr-digest")
    merged = '<td class="instr-left">test / root<br><a class="instr-host" href="?host=127.0.0.1">127.0.0.1</a> (3)</td>'
    assert "two_proxies" in digest and merged + "<td>3</td>" in digest  # merged, the host's counts added
    tail = section(page, "instr-tail")
    assert all(f"SELECT {n} AS two_proxies" in tail for n in (1, 2, 3))
    out = io.StringIO()
    call_command("instrumented_querylog", "status", stdout=out)
    assert "querylog: on" in out.getvalue() and "querylog2: on" in out.getvalue()
    assert admin_client.post(url, {"action": "off"}).status_code == 302
    assert {control(p.port, "PROXY LOG STATUS")[0]["logging"] for p in (first, second)} == {"off"}
