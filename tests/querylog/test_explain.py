"""The view page's Explain (issue 22, app side): real SQLite, MariaDB and PostgreSQL plans of the statements the
stats show for a view, mapped to the models and their indexes; the refusal matrix; the timeout.

Each engine gets a database of its own (``i22a_*`` on MariaDB and PostgreSQL) with the demo's Author and Book
tables made by Django's schema editor (so the foreign key has Django's index); the statements get into the stats
the real way: a request to a view that runs them, then a flush.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from django.db import connections
from django.test import Client
from shop.models import Author, Book

from instrumented.querylog import explain
from instrumented.stats.reader import read_stats
from tests.support import mysql

from .test_dba_panel import database_alias

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "analytics"]),
              pytest.mark.urls("tests.querylog.urls_explain")]  # fmt: skip

URL = "/instrumented/explain/"
AUTHORS = 100
BOOKS = {"sqlite": 3000, "mysql": 3000, "postgresql": 20000}


def _up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _server(engine: str, statement: str) -> None:
    if engine == "postgresql":
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(statement)
    else:
        import pymysql

        conn = pymysql.connect(**{**mysql.MARIADB, "database": None})
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()


def _fill(alias: str, engine: str) -> None:
    Author.objects.using(alias).bulk_create(Author(id=i, name=f"a{i}") for i in range(1, AUTHORS + 1))
    Book.objects.using(alias).bulk_create(
        (Book(id=i, title=f"t{i}", author_id=i % AUTHORS + 1, price=i % 50) for i in range(1, BOOKS[engine] + 1)),
        batch_size=1000,
    )
    with connections[alias].cursor() as cursor:
        if engine == "mysql":
            cursor.execute("ANALYZE TABLE shop_author, shop_book")
            cursor.fetchall()
        elif engine == "postgresql":
            cursor.execute("ANALYZE shop_author, shop_book")


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def engine(request) -> Iterator[tuple[str, str]]:
    """(engine, alias) with the shop's tables filled; MariaDB and PostgreSQL in a database of their own."""
    engine = request.param
    if engine == "sqlite":
        _fill("default", engine)
        yield engine, "default"
        return
    if not _up(5432 if engine == "postgresql" else mysql.PORT):
        pytest.skip(f"{engine} is not reachable")
    name = f"i22a_{uuid.uuid4().hex[:8]}"
    if engine == "postgresql":
        _server(engine, f'CREATE DATABASE "{name}"')
        entry = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": 5432, "USER": "postgres",
                 "NAME": name}  # fmt: skip
    else:
        _server(engine, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        entry = {"ENGINE": "django.db.backends.mysql", "HOST": "127.0.0.1", "PORT": mysql.PORT, "USER": "root",
                 "PASSWORD": "", "NAME": name}  # fmt: skip
    try:
        with database_alias(name, entry):
            with connections[name].schema_editor() as editor:
                editor.create_model(Author)
                editor.create_model(Book)
            _fill(name, engine)
            yield engine, name
    finally:
        connections[name].close() if name in connections._connections.__dict__ else None
        _server(engine, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' if engine == "postgresql"
                else f"DROP DATABASE IF EXISTS `{name}`")  # fmt: skip


def stats_of(flush, path: str, view: str, alias: str = "default") -> dict:
    """Run ``path`` on ``alias`` once, flush, and read back the view's stats."""
    assert Client().get(path, {"alias": alias}).status_code == 200
    flush()
    (found,) = [v for v in read_stats(top_queries=20)["views"] if v["view"] == view]
    return found


def select_of(view: dict) -> str:
    (sql,) = [q["sql"] for q in view["top_queries"] if q["sql"].startswith("SELECT")]
    return sql


def ask(client: Client, view: str, sql: str, params: list | str | None = None, **extra) -> tuple[int, dict]:
    data = {"view": view, "sql": sql, **extra}
    if params is not None:
        data["params"] = params if isinstance(params, str) else json.dumps(params)
    response = client.post(URL, data, HTTP_ACCEPT="application/json")
    assert response["Cache-Control"].startswith("private, no-store")
    return response.status_code, response.json()


def book_count(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM shop_book")
        return cursor.fetchone()[0]


# Real plans on the three engines ---------------------------------------------------------------------------------


def test_unindexed_filter_shows_the_full_scan_the_model_and_its_missing_index(engine, flush, superuser_client, caplog):
    kind, alias = engine
    view = stats_of(flush, "/by-title/", "explain_by_title", alias)
    sql = select_of(view)
    caplog.set_level(logging.INFO, logger="instrumented")
    status, body = ask(superuser_client, "explain_by_title", sql, ["t7"], alias=alias)
    assert status == 200, body
    assert body["engine"] == kind and body["alias"] == alias and body["error"] is None
    assert body["plan"]["full_scans"] == ["shop_book"]
    (table,) = body["tables"]
    assert table["table"] == "shop_book" and table["model"] == "shop.Book" and table["full_scan"] == "full table scan"
    assert table["unindexed"] == [{"field": "Book.title", "column": "title"}]
    assert not any(index["used"] for index in table["indexes"])
    fk = [i for i in table["indexes"] if i["columns"] == ["author_id"]]
    assert fk and fk[0]["in_meta"] and fk[0]["in_database"] and fk[0]["fields"] == ["author"]
    assert any(i["primary_key"] and i["in_meta"] and i["in_database"] for i in table["indexes"])
    assert "user root: Explain of a statement of explain_by_title on " + alias in caplog.text


def test_indexed_filter_shows_the_index_it_uses(engine, flush, superuser_client):
    kind, alias = engine
    sql = select_of(stats_of(flush, "/by-author/", "explain_by_author", alias))
    status, body = ask(superuser_client, "explain_by_author", sql, [3], alias=alias)
    assert status == 200, body
    assert body["plan"]["full_scans"] == []
    (table,) = body["tables"]
    (used,) = [i for i in table["indexes"] if i["used"]]
    assert used["columns"] == ["author_id"] and used["fields"] == ["author"] and used["name"] == table["key"]
    assert table["full_scan"] is None and table["unindexed"] == []
    if kind == "mysql":
        assert used["possible"]


def test_an_in_list_takes_a_list_of_values(engine, flush, superuser_client):
    _kind, alias = engine
    sql = select_of(stats_of(flush, "/by-authors/", "explain_by_authors", alias))
    assert "IN (%s, ...)" in sql and explain.placeholders(sql) == ["list"]
    status, body = ask(superuser_client, "explain_by_authors", sql, [[3, 4, 5]], alias=alias)
    assert status == 200 and body["tables"][0]["model"] == "shop.Book"
    status, body = ask(superuser_client, "explain_by_authors", sql, [3], alias=alias)
    assert status == 400 and "is a list (%s, ...)" in body["error"]


def test_hostile_values_are_parameters_and_change_nothing(engine, flush, superuser_client):
    _kind, alias = engine
    sql = select_of(stats_of(flush, "/by-title/", "explain_by_title", alias))
    before = book_count(alias)
    for value in ["'; DROP TABLE shop_book; --", "x' OR '1'='1", "\\'; DELETE FROM shop_book; #", "%s %% ? $1"]:
        status, body = ask(superuser_client, "explain_by_title", sql, [value], alias=alias)
        assert status == 200, body["error"]
        assert body["plan"]["full_scans"] == ["shop_book"]
    assert book_count(alias) == before


def test_locking_reads_and_writes_from_the_stats_are_refused(engine, flush, superuser_client):
    kind, alias = engine
    view = stats_of(flush, "/writes/", "explain_writes", alias)
    before = book_count(alias)
    statements = [q["sql"] for q in view["top_queries"] if q["sql"].startswith(("UPDATE", "DELETE"))]
    assert statements
    for sql in statements:
        status, body = ask(superuser_client, "explain_writes", sql, [], alias=alias)
        assert status == 400 and "Only a plain SELECT can be explained" in body["error"], body
    if kind != "sqlite":  # SQLite has no FOR UPDATE: Django leaves it out there
        locking = stats_of(flush, "/locking/", "explain_locking", alias)
        (sql,) = [q["sql"] for q in locking["top_queries"] if "FOR UPDATE" in q["sql"]]
        status, body = ask(superuser_client, "explain_locking", sql, ["t7"], alias=alias)
        assert status == 400 and "a locking clause (UPDATE)" in body["error"]
    assert book_count(alias) == before


@pytest.mark.parametrize("engine", ["mysql", "postgresql"], indirect=True)  # SQLite: test_sqlite_progress_handler_cuts
def test_a_plan_past_the_timeout_is_cut(engine, flush, superuser_client, settings):
    kind, alias = engine
    sql = select_of(stats_of(flush, "/by-title/", "explain_by_title", alias))
    # Another session holds the table: EXPLAIN waits for it until the statement timeout cuts it.
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "EXPLAIN_TIMEOUT": 0.5}
    locker = explain.own_connection(alias)
    locker.ensure_connection()
    locker.set_autocommit(False)
    with locker.cursor() as cursor:
        cursor.execute("LOCK TABLE shop_book IN ACCESS EXCLUSIVE MODE" if kind == "postgresql"
                       else "LOCK TABLES shop_book WRITE")  # fmt: skip
    try:
        status, body = ask(superuser_client, "explain_by_title", sql, ["t7"], alias=alias)
    finally:
        if kind == "mysql":
            with locker.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
        locker.rollback()
        locker.close()
    assert status == 504 and body["timed_out"] is True, body
    assert body["error"].startswith("The plan took longer than 0.5 s (EXPLAIN_TIMEOUT) and was cut")
    assert book_count(alias) == BOOKS[kind]


def test_sqlite_progress_handler_cuts(recorded):
    """SQLite's cut: the progress handler interrupts a statement past the deadline (an endless one here)."""
    from django.db.utils import OperationalError

    connection = explain.own_connection("default")
    connection.ensure_connection()
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    try:
        with pytest.raises(OperationalError, match="interrupted"):
            explain._run_sqlite(connection, endless, [], 0.001)
    finally:
        connection.close()


# The refusal matrix (SQLite) -------------------------------------------------------------------------------------


@pytest.fixture
def recorded(flush) -> str:
    Author.objects.create(id=1, name="a1")
    Book.objects.create(id=1, title="t1", author_id=1)
    return select_of(stats_of(flush, "/by-title/", "explain_by_title"))


def test_statements_that_are_not_the_views_are_refused(recorded, superuser_client):
    other = "SELECT COUNT(*) FROM shop_book"
    for view, sql in [
        ("explain_by_title", other),
        ("explain_by_title", recorded + "; DROP TABLE shop_book"),
        ("explain_by_title", recorded.replace("%s", "'t1'")),
        ("explain_by_title", " " + recorded),
        ("explain_by_author", recorded),
        ("no such view", recorded),
    ]:
        status, body = ask(superuser_client, view, sql, ["t1"])
        assert status == 400 and "not a statement the stats show for this view" in body["error"], (view, sql)
    assert Book.objects.count() == 1


def test_a_form_s_crlf_line_breaks_match_the_statement(flush, superuser_client):
    view = stats_of(flush, "/multiline/", "explain_multiline")
    (sql,) = [q["sql"] for q in view["top_queries"] if q["sql"].startswith("SELECT")]
    assert sql == "SELECT id\nFROM shop_book\nWHERE title = %s"
    status, body = ask(superuser_client, "explain_multiline", sql.replace("\n", "\r\n"), ["t7"])
    assert status == 200 and body["sql"] == sql and body["plan"]["full_scans"] == ["shop_book"]
    status, body = ask(superuser_client, "explain_multiline", sql.replace("\n", " "), ["t7"])
    assert status == 400


def test_bad_parameters_are_refused(recorded, superuser_client):
    for params, reason in [
        ([], "1 placeholder(s); 0 value(s)"),
        (["a", "b"], "1 placeholder(s); 2 value(s)"),
        ([{"a": 1}], "must be text, a number"),
        ([["a"]], "must be text, a number"),
        ("not json", "JSON list"),
        ('{"a": 1}', "JSON list"),
        (["x" * (explain.MAX_TEXT + 1)], "longer than"),
        (["nul\x00"], "NUL"),
    ]:
        status, body = ask(superuser_client, "explain_by_title", recorded, params)
        assert status == 400 and reason in body["error"], (params, body)


def test_only_superusers_and_holders_of_the_permission(recorded, client, staff_client, django_user_model, settings):
    for who in (client, staff_client):
        status, body = ask(who, "explain_by_title", recorded, ["t1"])
        assert status == 403 and "instrumented.explain_sql" in body["error"]
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("planner", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="explain_sql", content_type__app_label="instrumented"))
    planner = Client()
    planner.force_login(user)
    status, body = ask(planner, "explain_by_title", recorded, ["t1"])
    assert status == 200 and body["tables"][0]["model"] == "shop.Book"
    # SUPERUSER_CALLBACK decides who counts as a superuser here too
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SUPERUSER_CALLBACK": lambda u: u.username == "staff"}
    status, body = ask(staff_client, "explain_by_title", recorded, ["t1"])
    assert status == 200


def test_get_and_missing_csrf_token_are_refused(recorded, django_user_model):
    root = django_user_model.objects.create_superuser("root2", password="pw")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(root)
    response = strict.get(URL, HTTP_ACCEPT="application/json")
    assert response.status_code == 405 and "POST" in response.json()["error"]
    response = strict.post(URL, {"view": "explain_by_title", "sql": recorded, "params": '["t1"]'})
    assert response.status_code == 403 and b"CSRF" in response.content


def test_aliases_not_recorded_for_the_view_are_refused(recorded, superuser_client, settings):
    status, body = ask(superuser_client, "explain_by_title", recorded, ["t1"], alias="analytics")
    assert status == 400 and "alias" in body["error"]
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "EXPLAIN_DATABASE": "analytics"}
    status, body = ask(superuser_client, "explain_by_title", recorded, ["t1"])
    assert body["alias"] == "analytics"  # the replica stands in; it has no shop_book here, which the plan says
    assert status == 422 and "no such table" in body["error"]
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "EXPLAIN_DATABASE": "replica"}
    status, body = ask(superuser_client, "explain_by_title", recorded, ["t1"])
    assert status == 400 and "EXPLAIN_DATABASE is 'replica', which is not a DATABASES alias" in body["error"]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DELETE FROM shop_book", "not DELETE"),
        ("UPDATE shop_book SET price = %s", "not UPDATE"),
        ("INSERT INTO shop_book (title) VALUES (%s)", "INSERT"),
        ("DROP TABLE shop_book", "not DROP"),
        ("CREATE TABLE x (id int)", "not CREATE"),
        ("ALTER TABLE shop_book ADD COLUMN x int", "not ALTER"),
        ("TRUNCATE shop_book", "TRUNCATE"),
        ("SELECT * FROM shop_book FOR UPDATE", "locking clause"),
        ("SELECT * FROM shop_book FOR SHARE", "locking clause"),
        ("SELECT * FROM shop_book FOR NO KEY UPDATE", "locking clause"),
        ("SELECT * FROM shop_book LOCK IN SHARE MODE", "locking clause"),
        ("SELECT * FROM shop_book; DROP TABLE shop_book", "Only one statement"),
        ("SELECT * FROM shop_book;", "';' is not allowed"),
        ("SELECT * INTO OUTFILE '/tmp/x' FROM shop_book", "INTO"),
        ("SELECT * FROM shop_book INTO @x", "INTO"),
        ("SELECT * FROM shop_book /*! FOR UPDATE */", "Executable comments"),
        ("SELECT * FROM shop_book /*M!100000 FOR UPDATE */", "Executable comments"),
        ("WITH d AS (DELETE FROM shop_book RETURNING *) SELECT * FROM d", "DELETE"),
        ("SET SESSION TRANSACTION READ WRITE", "SET"),
        ("CALL p()", "CALL"),
        ("PRAGMA query_only = OFF", "not PRAGMA"),
        ("(SELECT 1) UNION (SELECT 2) FOR UPDATE", "locking clause"),
        ("/* x */ DELETE FROM shop_book", "not DELETE"),
        ("", "empty"),
    ],
)
def test_only_one_plain_select(sql, reason):
    with pytest.raises(explain.Refused) as refused:
        explain.check_select(sql)
    assert reason in str(refused.value)


def test_plain_selects_pass_and_in_lists_widen():
    for sql in [
        'SELECT "shop_book"."id" FROM "shop_book" WHERE "shop_book"."title" = %s LIMIT 21',
        "WITH t AS (SELECT 1 AS n) SELECT n FROM t",
        '(SELECT "shop_book"."id" FROM "shop_book") UNION (SELECT "shop_author"."id" FROM "shop_author")',
        "-- a leading comment\nSELECT 1",
        "SELECT COUNT(*), demo_sleep(%s) FROM shop_book /* a comment */",
        "SELECT `shop_book`.`id` FROM `shop_book` WHERE `shop_book`.`author_id` IN (%s, ...) AND title LIKE %s",
    ]:
        explain.check_select(sql)
    sql = "SELECT a FROM t WHERE b IN (%s, ...) AND c = %s AND d LIKE '%%x'"
    assert explain.placeholders(sql) == ["list", "value"]
    widened = "SELECT a FROM t WHERE b IN (%s, %s, %s) AND c = %s AND d LIKE '%%x'"
    assert explain.bind(sql, [[1, 2, 3], "v"]) == (widened, [1, 2, 3, "v"])


# The page -------------------------------------------------------------------------------------------------------


def test_the_page_shows_the_plan_escaped_private_and_under_the_csp(recorded, superuser_client):
    response = superuser_client.post(URL, {"view": "explain_by_title", "sql": recorded, "param": ["t1"],
                                           "alias": "default"})  # fmt: skip
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="instr-plan"' in html and "full table scan" in html and "shop.Book" in html
    assert "No index starts with the filtered <code>Book.title</code>" in html
    assert response["Cache-Control"].startswith("private, no-store")
    assert "script-src 'self'" in response["Content-Security-Policy"] and response["X-Frame-Options"] == "DENY"
    response = superuser_client.post(URL, {"view": "<script>alert(1)</script>", "sql": "<b>SELECT</b>"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>SELECT" not in html


def test_the_view_page_offers_explain_to_superusers_only(recorded, superuser_client, staff_client):
    from instrumented.pages import detail_url

    page = superuser_client.get(detail_url("explain_by_title")).content.decode()
    assert page.count('action="/instrumented/explain/"') >= 1 and 'name="param"' in page
    assert 'name="csrfmiddlewaretoken"' in page and 'name="alias" value="default"' in page
    page = staff_client.get(detail_url("explain_by_title")).content.decode()
    assert "/instrumented/explain/" not in page


def test_the_view_page_offers_explain_on_selects_only(flush, superuser_client):
    from instrumented.pages import detail_url

    view = stats_of(flush, "/writes/", "explain_writes")
    assert {q["sql"].split()[0] for q in view["top_queries"]} >= {"UPDATE", "DELETE"}
    page = superuser_client.get(detail_url("explain_writes")).content.decode()
    assert "/instrumented/explain/" not in page


def test_a_statement_the_stats_cut_is_not_explained(flush, superuser_client, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "MAX_SQL_LENGTH": 60}
    view = stats_of(flush, "/by-title/", "explain_by_title")
    sql = select_of(view)
    assert len(sql) == 60
    status, body = ask(superuser_client, "explain_by_title", sql, [])
    assert status == 400 and "MAX_SQL_LENGTH" in body["error"]
    from instrumented.pages import detail_url

    page = superuser_client.get(detail_url("explain_by_title")).content.decode()
    assert "not for this statement, cut at MAX_SQL_LENGTH" in page and "/instrumented/explain/" not in page


@pytest.mark.parametrize("engine", ["mysql", "postgresql"], indirect=True)
def test_explain_analyze_only_when_allowed_and_still_read_only(engine, flush, superuser_client, settings):
    kind, alias = engine
    sql = select_of(stats_of(flush, "/by-title/", "explain_by_title", alias))
    status, body = ask(superuser_client, "explain_by_title", sql, ["t7"], alias=alias)
    measured = "r_rows" if kind == "mysql" else "Actual Rows"
    assert status == 200 and body["analyze"] is False and measured not in body["raw_plan"]
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "EXPLAIN_ANALYZE": True}
    status, body = ask(superuser_client, "explain_by_title", sql, ["t7"], alias=alias)
    assert status == 200 and body["analyze"] is True and body["plan"]["full_scans"] == ["shop_book"]
    assert measured in body["raw_plan"]
    assert book_count(alias) == BOOKS[kind]


def test_forged_stats_cannot_make_it_run_anything_but_a_select(recorded, superuser_client, monkeypatch):
    """What memcached holds is untrusted: a forged statement of a view is checked like any other."""
    from instrumented.querylog import explain_views

    forged = ["SELECT 1; DROP TABLE shop_book", "DELETE FROM shop_book", "SELECT * FROM shop_book FOR UPDATE",
              "SELECT 1 /*!50000 INTO OUTFILE '/tmp/x' */"]  # fmt: skip
    document = {"window_seconds": 300, "views": [{"view": "forged", "databases": {"default": {"queries": 1}},
                                                  "top_queries": [{"sql": sql} for sql in forged]}]}  # fmt: skip
    monkeypatch.setattr(explain_views, "read", lambda **kwargs: document)
    for sql in forged:
        status, body = ask(superuser_client, "forged", sql, [])
        assert status == 400 and ("plain SELECT" in body["error"] or "Executable" in body["error"]
                                  or "one statement" in body["error"]), body  # fmt: skip
    assert Book.objects.count() == 1


def test_a_failing_database_is_an_answer_not_a_500(recorded, superuser_client, monkeypatch):
    def broken(*args, **kwargs):
        raise explain.Failed("The database refused the EXPLAIN: gone")

    monkeypatch.setattr(explain, "run", broken)
    status, body = ask(superuser_client, "explain_by_title", recorded, ["t1"])
    assert status == 422 and "gone" in body["error"]


def test_concurrent_explains_do_not_share_a_connection(recorded, superuser_client):
    """Each EXPLAIN has a connection of its own, closed afterwards: the request's stays as it was."""
    from django.db import connection

    before = connection.connection
    results = []

    def one() -> None:
        results.append(explain.run("default", recorded, ["t1"], timeout=2.0)[1])

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["sqlite"] * 3 and connection.connection is before
