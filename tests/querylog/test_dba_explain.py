"""The DBA panel's Explain buttons, its digest columns and host filter, and ``instrumented_querylog explain``: the
real proxy in front of the real MariaDB (issue 22)."""

from __future__ import annotations

import io
import logging
import re

import pymysql
import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client

from tests.querylog.test_dba_panel import (
    admin_client,
    assert_protected,
    database_alias,
    login,
    mariadb_up,
    mysql_alias,
    proxy,
    qlog,
    section,
    text_of,
    url,
)
from tests.support.mysql import MARIADB
from tests.support.proxy import control

__all__ = ["admin_client", "database_alias", "login", "mariadb_up", "mysql_alias", "proxy", "qlog", "url"]

pytestmark = pytest.mark.django_db

BOOK = "instr_dbx_book"


@pytest.fixture(scope="module")
def books(mariadb_up):
    conn = pymysql.connect(**MARIADB, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE TABLE {BOOK} (id INT PRIMARY KEY, author_id INT, title VARCHAR(80),"
                    " KEY author (author_id))")  # fmt: skip
        cur.execute(f"INSERT INTO {BOOK} SELECT seq, seq % 40, CONCAT('t', seq) FROM seq_1_to_1000")
    yield
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {BOOK}")
    conn.close()


def app_traffic(statements: list[tuple[str, list]]) -> None:
    """Statements of the site through the proxy (the querylog alias)."""
    with connections["querylog"].cursor() as cursor:
        for sql, params in statements:
            try:
                cursor.execute(sql, params)
            except Exception:  # noqa: BLE001 - logged by the proxy either way
                pass
    connections["querylog"].close()


def explain_forms(response) -> list[dict[str, str]]:
    """The Explain buttons' forms on the page: their hidden fields."""
    body = response.content.decode()
    forms = re.findall(r'<form method="post" action="" class="instr-explain-form">(.*?)</form>', body)
    return [dict(re.findall(r'name="(\w+)" value="([^"]*)"', form)) for form in forms]


def count_books() -> int:
    conn = pymysql.connect(**MARIADB)
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {BOOK}")
        (n,) = cur.fetchone()
    conn.close()
    return n


def test_explain_button_shows_the_full_scan(qlog, books, admin_client, url, caplog):
    caplog.set_level(logging.INFO, logger="instrumented")
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"SELECT * FROM {BOOK} WHERE title = %s", [f"t{i}"]) for i in range(3)])
    page = admin_client.get(url)
    digest = section(page, "instr-digest")
    assert "Total time / share / load" in digest and "p50 / p95 / p99" in digest and "<svg" in digest
    shares = [float(v) for v in re.findall(r'<span class="instr-share">([\d.]+) %</span>', digest)]
    assert shares and abs(sum(shares) - 100) <= 0.05 * len(shares)  # of the digest's total (rounded to 0.1 each)
    forms = explain_forms(page)
    assert forms and all(f["action"] == "explain" and f["alias"] == "querylog" and f["id"].isdigit() for f in forms)
    row = next(r for r in control(qlog.port, "PROXY LOG DIGEST 100") if "title = ?" in r["digest"])

    response = admin_client.post(url, {"action": "explain", "alias": "querylog", "id": str(row["id"])})
    assert response.status_code == 200
    assert_protected(response)
    plan = section(response, "instr-plan")
    assert f"{BOOK}</code> <span" in plan and "full table scan" in plan and "no key used" in plan
    assert "· no possible keys ·" in plan.split(BOOK)[1].split("</li>")[0]  # title has no index at all
    assert f"Full scans: {BOOK} (full table scan, no index could be used)." in text_of(response)
    assert f"SELECT *\nFROM {BOOK}\nWHERE title = 't" in section(response, "instr-explained-sql")
    assert any(
        r.getMessage() == f"django-instrumented: user dba-admin: explain of digest row {row['id']} on querylog"
        for r in caplog.records
    )
    assert control(qlog.port, "PROXY LOG STATUS")[0]["logging"] == "on"  # nothing else changed


def test_explain_from_a_recent_row_and_an_index(qlog, books, admin_client, url):
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"SELECT title FROM {BOOK} WHERE author_id = %s", [7])])
    page = admin_client.get(url)
    tail = section(page, "instr-tail")
    assert ">127.0.0.1<" in tail  # the client column
    latest = str(control(qlog.port, "PROXY LOG TAIL 1")[0]["digest_id"])  # the recent row's digest row
    form = [f for f in explain_forms(page) if f["id"] == latest][-1]  # the tail's button (after the digest's)
    response = admin_client.post(url, form)
    plan = section(response, "instr-plan")
    assert "key <code>author</code> (author_id)" in plan and "full table scan" not in plan


def test_refused_explain_says_why_and_changes_nothing(qlog, books, admin_client, url):
    before = count_books()
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"UPDATE {BOOK} SET title = title WHERE id = %s", [1]),
                 (f"SELECT * FROM {BOOK} WHERE id = %s FOR UPDATE", [1])])  # fmt: skip
    for row in control(qlog.port, "PROXY LOG DIGEST 100"):
        if BOOK not in row["digest"]:
            continue
        response = admin_client.post(url, {"action": "explain", "alias": "querylog", "id": str(row["id"])})
        assert response.status_code == 200
        error = section(response, "instr-explain-error")
        assert "PROXY LOG EXPLAIN: refused: " in error
        assert "it is not a SELECT (it starts with update)" in error or "locking clause (FOR UPDATE)" in error
        assert 'id="instr-plan"' not in response.content.decode()
    assert count_books() == before


def test_statement_and_plan_are_escaped(qlog, books, admin_client, url):
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"SELECT id FROM {BOOK} WHERE title = %s", ["<script>alert(1)</script>"])])
    row = next(r for r in control(qlog.port, "PROXY LOG DIGEST 100") if "title = ?" in r["digest"])
    response = admin_client.post(url, {"action": "explain", "alias": "querylog", "id": str(row["id"])})
    body = response.content.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "explain", "alias": "querylog", "id": "abc"}, "must be a whole number"),
        ({"action": "explain", "alias": "querylog", "id": "0"}, "must be a whole number"),
        ({"action": "explain", "alias": "querylog", "id": "1" * 13}, "must be a whole number"),
        ({"action": "explain", "alias": "default", "id": "1"}, "unknown database alias"),
        ({"action": "explain", "id": "1"}, "unknown database alias"),
    ],
)
def test_bad_explain_input_is_refused(qlog, admin_client, url, data, message):
    response = admin_client.post(url, data)
    assert response.status_code == 400 and message in section(response, "instr-form-error")


def test_only_admins_and_only_posts_explain(qlog, books, login, url):
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"SELECT * FROM {BOOK} WHERE title = %s", ["x"])])
    row = next(r for r in control(qlog.port, "PROXY LOG DIGEST 100") if "title = ?" in r["digest"])
    data = {"action": "explain", "alias": "querylog", "id": str(row["id"])}
    assert login("staff").post(url, data).status_code == 403
    anonymous = Client().post(url, data)
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
    strict = login("granted", csrf=True)
    page = strict.get(url, data)  # a GET never explains
    assert page.status_code == 200 and 'id="instr-explained"' not in page.content.decode()
    assert strict.post(url, data).status_code == 403  # no CSRF token
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', strict.get(url).content.decode()).group(1)
    response = strict.post(url, {**data, "csrfmiddlewaretoken": token})
    assert response.status_code == 200 and 'id="instr-plan"' in response.content.decode()


def test_host_filter(qlog, books, admin_client, url):
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"SELECT * FROM {BOOK} WHERE id = %s", [3])])
    page = admin_client.get(url + "?host=127.0.0.1")
    assert BOOK in section(page, "instr-digest") and "127.0.0.1" in section(page, "instr-host-filter")
    page = admin_client.get(url + "?host=10.9.9.9")
    assert 'id="instr-digest-empty"' in page.content.decode() and 'id="instr-tail-empty"' in page.content.decode()
    assert admin_client.get(url + "?host=" + "a%27%3B").status_code == 200  # not one word: no filter


def test_command_explain_and_digest(qlog, books):
    control(qlog.port, "PROXY LOG ON 60")
    app_traffic([(f"SELECT * FROM {BOOK} WHERE title = %s", ["x"])] * 2)
    out = io.StringIO()
    call_command("instrumented_querylog", "digest", stdout=out)
    assert "share" in out.getvalue() and "load" in out.getvalue() and "p99" in out.getvalue()
    row = next(r for r in control(qlog.port, "PROXY LOG DIGEST 100") if "title = ?" in r["digest"])
    out = io.StringIO()
    call_command("instrumented_querylog", "explain", "--id", str(row["id"]), stdout=out)
    text = out.getvalue()
    assert f"table {BOOK} · access ALL · FULL TABLE SCAN · no key" in text and f"full scans: {BOOK}" in text
    out = io.StringIO()
    call_command("instrumented_querylog", "explain", "--id", str(row["id"]), "--json", stdout=out)
    assert '"access_type": "ALL"' in out.getvalue()
    out = io.StringIO()
    heaviest = control(qlog.port, "PROXY LOG DIGEST 1")[0]["digest"]  # under load, Django's SET NAMES may be
    if heaviest.startswith("select"):
        call_command("instrumented_querylog", "explain", stdout=out)
        assert "rank 1" in out.getvalue()
    else:
        with pytest.raises(CommandError, match="refused: it is not a SELECT"):
            call_command("instrumented_querylog", "explain", stdout=out)
