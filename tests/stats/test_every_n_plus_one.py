"""Every N+1 caught, exact through the merge (issue 18, items 2 and 4), SQL comments out of the templates (issue 17).

- one per-request key for a statement whatever the length of its ``IN (…)`` and ``VALUES`` lists;
- transaction control (BEGIN, SAVEPOINT, RELEASE, COMMIT…) never an N+1 or a duplicate;
- a write per row is its own finding (``write_suspects``, hint ``bulk_create``), not a read N+1;
- the view totals of N+1 runs, duplicates and writes per row are exact whatever the templates kept;
- N+1 call sites and slow-query call sites kept apart;
- comments removed from the templates, counted.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from instrumented.conf import get_config
from instrumented.stats.aggregate import Aggregator
from instrumented.stats.flusher import Flusher
from instrumented.stats.probe import Probe
from instrumented.stats.reader import read_stats
from instrumented.stats.sql import CONTROL, READ, WRITE, kind_of, request_key, template_of
from tests.stats.test_callsite import FINDING_VIEWS_PY, line_of

IN_ONE = 'SELECT "b"."id" FROM "b" WHERE "b"."id" IN (%s)'
IN_THREE = 'SELECT "b"."id" FROM "b" WHERE "b"."id" IN (%s, %s, %s)'


def test_lists_of_any_length_are_one_key():
    assert template_of(IN_ONE) == template_of(IN_THREE) == 'SELECT "b"."id" FROM "b" WHERE "b"."id" IN (%s, ...)'
    assert request_key(IN_ONE) == request_key(IN_THREE) == template_of(IN_THREE)
    assert request_key('SELECT 1 FROM "b" WHERE "b"."id" = %s') == "", "a statement without lists is its own key"
    one = 'INSERT INTO "t" ("a", "b") VALUES (%s, %s) RETURNING "t"."id"'
    many = 'INSERT INTO "t" ("a", "b") VALUES (%s, %s), (%s, %s), (%s, %s) RETURNING "t"."id"'
    assert template_of(one) == template_of(many) == 'INSERT INTO "t" ("a", "b") VALUES (%s, ...) RETURNING "t"."id"'
    single = 'INSERT INTO "t" ("a") VALUES (%s), (%s), (%s)'
    assert template_of(single) == template_of('INSERT INTO "t" ("a") VALUES (%s)')
    arms = 'UPDATE "t" SET "a" = CASE WHEN ("t"."id" = %s) THEN %s WHEN ("t"."id" = %s) THEN %s ELSE NULL END'
    assert template_of(arms) == 'UPDATE "t" SET "a" = CASE WHEN ("t"."id" = %s) THEN %s ELSE NULL END'
    assert template_of('SAVEPOINT "s1_x1"') == template_of('SAVEPOINT "s1_x2"') == "SAVEPOINT %s"


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("BEGIN", CONTROL),
        ("START TRANSACTION", CONTROL),
        ("COMMIT", CONTROL),
        ("ROLLBACK", CONTROL),
        ('SAVEPOINT "s1_x1"', CONTROL),
        ('RELEASE SAVEPOINT "s1_x1"', CONTROL),
        ('ROLLBACK TO SAVEPOINT "s1_x1"', CONTROL),
        ("begin immediate", CONTROL),
        ('INSERT INTO "t" VALUES (%s)', WRITE),
        ('UPDATE "t" SET "a" = %s', WRITE),
        ('DELETE FROM "t" WHERE "id" = %s', WRITE),
        ("/* hello */ DELETE FROM t", WRITE),
        ('SELECT "t"."a" FROM "t"', READ),
        ("(SELECT 1) UNION (SELECT 2)", READ),
        ("WITH x AS (SELECT 1) SELECT * FROM x", READ),
    ],
)
def test_kinds(sql, kind):
    assert kind_of(sql) is kind


@pytest.mark.django_db(databases=["default", "analytics"])
def test_in_list_n_plus_one_is_flagged_with_its_line(flush):
    client = Client()
    client.get("/catalogue/")  # the catalogue exists before the measured traffic
    for _ in range(2):
        assert client.get("/shelves/").status_code == 200
    flush()
    (view,) = [v for v in read_stats()["views"] if v["view"] == "shop:shelves"]
    assert view["n_plus_one"] == 2
    (in_list,) = [s for s in view["n_plus_one_suspects"] if "IN (%s, ...)" in s["sql"]]
    assert in_list["requests"] == 2 and in_list["count"] == 20, "ten authors, lists of 1, 2 and 3 ids"
    (site,) = in_list["call_sites"]
    assert site["site"] == f"shop/finding_views.py:{line_of('# N+1: IN list', FINDING_VIEWS_PY)} in shelves"
    assert site["requests"] == 2
    assert view["n_plus_one_runs"] == 2 * len(view["n_plus_one_suspects"]) == 4
    assert view["n_plus_one_queries"] == 40 and view["n_plus_one_unlisted_runs"] == 0


@pytest.mark.django_db(databases=["default", "analytics"])
def test_write_per_row_is_its_own_finding_and_transactions_are_none(flush):
    client = Client()
    assert client.get("/page-views/").status_code == 200
    flush()
    (view,) = [v for v in read_stats()["views"] if v["view"] == "shop:page_views"]
    assert view["n_plus_one"] == 0 and view["n_plus_one_suspects"] == [], "no read N+1, no BEGIN or SAVEPOINT"
    assert (view["writes_per_row"], view["writes_per_row_runs"], view["writes_per_row_queries"]) == (1, 1, 6)
    (write,) = view["write_suspects"]
    assert write["sql"].startswith('INSERT INTO "shop_pageview"') and write["count"] == 6
    assert (write["hint"], write["hint_model"]) == ("bulk_create(objs)", "PageView")
    (site,) = write["call_sites"]
    assert site["site"] == f"shop/finding_views.py:{line_of('# write per row', FINDING_VIEWS_PY)} in page_views"
    assert site["hint"] is None, "no select_related for a write"
    assert view["duplicates"] == 0 and view["duplicate_queries"] == [], "SAVEPOINT, RELEASE: no cache missing"
    kinds = {kind_of(q["sql"]) for q in view["top_queries"] if q["n_plus_one"]}
    assert kinds == {WRITE}


@pytest.mark.django_db(databases=["default", "analytics"])
def test_sql_comments_are_removed_from_templates_and_counted(flush):
    client = Client()
    for user in ("1", "2", "42"):
        assert client.get(f"/commented/?user={user}").status_code == 200
    flush()
    (view,) = [v for v in read_stats(top_queries=20)["views"] if v["view"] == "shop:commented"]
    counts = [q for q in view["top_queries"] if "shop_book" in q["sql"] and "COUNT" in q["sql"]]
    assert [q["sql"] for q in counts] == ["SELECT COUNT(*) FROM shop_book"], "one template, no comment in it"
    assert counts[0]["count"] == 3 and view["sql_comments"] == 3
    assert "user" not in str(read_stats())


SQL = 'SELECT "t%02d"."a" FROM "t%02d" WHERE "t%02d"."id" = %%s'


def _process(requests: int, templates: int, dups: int) -> Flusher:
    """One process: ``requests`` requests, each running ``templates`` N+1 templates 6 times with ``dups`` exact
    duplicates each; flushed (MAX_QUERIES_PER_VIEW keeps only a few of the templates)."""
    config = get_config()
    aggregator = Aggregator(config)
    for _ in range(requests):
        probe = Probe(0, threshold=5)
        for t in range(templates):
            sql = SQL % (t, t, t)
            probe.add("default", sql, 6, 1000 * (t + 1))
            probe.extra("default", sql)[0] += dups
        aggregator.record("exact", "exact/", "GET", 200, 1_000_000, probe)
    flusher = Flusher(aggregator, config)
    flusher.flush()
    return flusher


def test_totals_are_exact_through_the_merge(settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "MAX_QUERIES_PER_VIEW": 3}
    _process(requests=4, templates=12, dups=2)
    _process(requests=3, templates=12, dups=2)
    (view,) = [v for v in read_stats()["views"] if v["view"] == "exact"]
    assert view["n_plus_one"] == 7
    assert view["n_plus_one_runs"] == 7 * 12 and view["n_plus_one_queries"] == 7 * 12 * 6
    assert view["duplicates"] == 7 * 12 * 2, "every duplicate, not those of the kept templates only"
    listed = sum(s["requests"] for s in view["n_plus_one_suspects"])
    assert 0 < listed < view["n_plus_one_runs"]
    assert view["n_plus_one_unlisted_runs"] == view["n_plus_one_runs"] - listed


def test_n_plus_one_and_slow_call_sites_are_kept_apart():
    """A site found after slow runs never counts toward the N+1's requests, and the other way round."""
    config = get_config()
    aggregator = Aggregator(config)
    sql = 'SELECT "t"."a" FROM "t" WHERE "t"."id" = %s'
    site = "code\tshop/views.py\t9\tloop"
    for n1, slow in ((True, True), (False, True), (False, True), (True, False)):
        probe = Probe(0, threshold=5)
        probe.add("default", sql, 6 if n1 else 1, 1000)
        probe.sites = {("default", sql): (site, None)}
        if slow:
            extra = probe.extra("default", sql)
            extra[1] += 1
            extra[2] = 200_000_000
        aggregator.record("apart", "apart/", "GET", 200, 1_000_000, probe)
    Flusher(aggregator, config).flush()
    (view,) = [v for v in read_stats()["views"] if v["view"] == "apart"]
    (suspect,) = view["n_plus_one_suspects"]
    assert suspect["requests"] == 2 and [s["requests"] for s in suspect["call_sites"]] == [2]
    (slow_query,) = view["slow_queries"]
    assert slow_query["slow"] == 3 and [s["requests"] for s in slow_query["call_sites"]] == [3]


@pytest.mark.django_db(databases=["default", "analytics"])
def test_pages_and_cli_show_writes_apart_and_every_suspect(staff_client, flush):
    """The demo's N+1 page (its first request seeds the catalogue): only the read N+1, no BEGIN, no seeding
    INSERTs; the writes page's amber badge and bulk_create fix on the dashboard, the view page and the CLI."""
    client = Client()
    assert client.get("/n-plus-one/").status_code == 200
    assert client.get("/page-views/").status_code == 200
    flush()
    views = {v["view"]: v for v in read_stats()["views"]}
    (suspect,) = views["shop:n_plus_one"]["n_plus_one_suspects"]
    assert "shop_author" in suspect["sql"] and views["shop:n_plus_one"]["writes_per_row"] == 0
    page = staff_client.get("/instrumented/view/?name=shop%3An_plus_one").content.decode()
    assert "BEGIN" not in page and "writes per row in" not in page

    dashboard = staff_client.get("/instrumented/").content.decode()
    assert '<span class="instr-flag instr-flag-write">writes per row \u00d71</span>' in dashboard
    page = staff_client.get("/instrumented/view/?name=shop%3Apage_views").content.decode()
    assert 'id="instr-writes"' in page and "PageView.objects.bulk_create(objs)" in page
    assert '<span class="instr-flag instr-flag-write">writes per row in 1 request</span>' in page
    assert "SAVEPOINT" not in page.split('id="instr-writes"')[0].split("<h2>N+1 suspects</h2>")[1]

    out = io.StringIO()
    call_command("instrumented_stats", "--view", "shop:page_views", stdout=out)
    printed = out.getvalue()
    assert "writes per row in 1 request(s), 6 runs: INSERT INTO" in printed
    assert "fix: one PageView.objects.bulk_create(objs)" in printed
    assert f"finding_views.py:{line_of('# write per row', FINDING_VIEWS_PY)} in page_views" in printed


@pytest.mark.parametrize(
    ("vendor", "sql", "expected", "comments"),
    [
        ("postgresql", "SELECT a /* user 42 */ FROM t WHERE b = 7 -- note\n", "SELECT a FROM t WHERE b = %s", 2),
        ("mysql", "SELECT a FROM t # user 42\nWHERE b = 'x'", "SELECT a FROM t \nWHERE b = %s", 1),
        ("sqlite", "SELECT a FROM t WHERE b = '/* not a comment */'", "SELECT a FROM t WHERE b = %s", 0),
        ("mysql", "SELECT /*!40001 SQL_NO_CACHE */ a FROM t /* x */", "SELECT /*!%s SQL_NO_CACHE */ a FROM t", 1),
        (
            "mysql",
            "SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t",
            "SELECT /*+ MAX_EXECUTION_TIME(%s) */ a FROM t",
            0,
        ),
    ],
)
def test_comments_removed_values_stripped(vendor, sql, expected, comments):
    from instrumented.stats.literals import strip_for_stats

    assert strip_for_stats(sql, vendor) == (expected, comments)
