"""Call sites and hints for N+1 and slow SQL, and exact duplicates, through the demo site's real views."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from shop.models import Author, Book

from instrumented.stats import callsite
from instrumented.stats.reader import read_stats

VIEWS_PY = Path(__file__).resolve().parents[2] / "example" / "shop" / "views.py"
FINDING_VIEWS_PY = VIEWS_PY.with_name("finding_views.py")
pytestmark = pytest.mark.django_db(databases=["default", "analytics"])


def line_of(marker: str, path: Path = VIEWS_PY) -> int:
    """The line of ``path`` that carries ``marker`` (the tests name lines, not numbers)."""
    lines = enumerate(path.read_text().splitlines(), 1)
    (number,) = [i for i, line in lines if marker in line and "line_of(" not in line]
    return number


def view_stats(flush, name: str, url: str, times: int = 1) -> dict:
    client = Client(raise_request_exception=False)
    for _ in range(times):
        assert client.get(url).status_code == 200
    flush()
    (view,) = [v for v in read_stats(top_queries=20)["views"] if v["view"] == name]
    return view


@pytest.fixture(autouse=True)
def _fresh_sites():
    from shop.views import ensure_catalogue

    ensure_catalogue()  # its first run inserts in a loop: an N+1 of its own
    callsite.forget()
    yield
    callsite.forget()


def test_n_plus_one_through_a_foreign_key(flush):
    view = view_stats(flush, "shop:n_plus_one", "/n-plus-one/", times=3)
    (suspect,) = view["n_plus_one_suspects"]
    assert '"shop_author"' in suspect["sql"] and suspect["requests"] == 3 and suspect["count"] == 45
    (site,) = suspect["call_sites"]
    line = line_of("# N+1: author")
    assert site == {
        "site": f"shop/views.py:{line} in n_plus_one",
        "where": [{"kind": "code", "file": "shop/views.py", "line": line, "function": "n_plus_one"}],
        "in_site_code": True,
        "requests": 3,
        "hint": 'select_related("author")',
        "hint_model": "Book",
    }


def test_n_plus_one_through_a_reverse_relation(flush):
    view = view_stats(flush, "shop:authors", "/authors/")
    (suspect,) = view["n_plus_one_suspects"]
    assert '"shop_book"."author_id"' in suspect["sql"] and suspect["count"] == 10
    (site,) = suspect["call_sites"]
    assert site["site"] == f"shop/finding_views.py:{line_of('# N+1: books', FINDING_VIEWS_PY)} in authors"
    assert site["hint"] == 'prefetch_related("books")'


def raw_loop(request: HttpRequest) -> HttpResponse:
    """An N+1 the model graph cannot explain: raw SQL in a loop over plain numbers."""
    with connection.cursor() as cursor:
        for pk in range(6):
            cursor.execute("SELECT name FROM shop_author WHERE id = %s", [pk])  # raw loop
    return HttpResponse("ok")


def helper_loop(request: HttpRequest) -> HttpResponse:
    """Two loops issue the same template with books on the stack; one of them holds an author too."""
    names = [book.author.name for book in Book.objects.order_by("id")[:6]]  # helper loop
    return HttpResponse(", ".join(names))


def test_no_hint_when_the_model_graph_cannot_tell(flush, settings):
    settings.ROOT_URLCONF = "tests.stats.test_callsite"
    view = view_stats(flush, "raw", "/raw/")
    (suspect,) = view["n_plus_one_suspects"]
    (site,) = suspect["call_sites"]
    assert site["site"] == f"tests/stats/test_callsite.py:{line_of('# raw loop', Path(__file__))} in raw_loop"
    assert (site["requests"], site["hint"], site["hint_model"]) == (1, None, None)


def test_known_site_is_not_looked_up_again_in_the_bucket(flush, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "BUCKET_SECONDS": 86400, "WINDOW_SECONDS": 86400}
    settings.ROOT_URLCONF = "tests.stats.test_callsite"
    before = callsite.walks
    view = view_stats(flush, "helper", "/helper/", times=5)
    assert callsite.walks - before == 1, "one stack walk for the view, template and bucket"
    (site,) = view["n_plus_one_suspects"][0]["call_sites"]
    assert site["requests"] == 5 and site["hint"] == 'select_related("author")'
    assert site["site"] == f"tests/stats/test_callsite.py:{line_of('# helper loop', Path(__file__))} in helper_loop"


def test_call_site_skip_setting(flush, settings):
    settings.ROOT_URLCONF = "tests.stats.test_callsite"
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "CALL_SITE_SKIP": ["tests.stats.test_callsite"]}
    view = view_stats(flush, "raw", "/raw/")
    # Past the skipped module only Django is on the stack up to the view: no line of the site's, the view named.
    (site,) = view["n_plus_one_suspects"][0]["call_sites"]
    assert site["site"] == "view raw" and site["where"] == [{"kind": "view", "view": "raw"}]


def test_slow_query_and_its_call_site(flush):
    view = view_stats(flush, "shop:slow_query", "/slow-query/", times=2)
    (slow,) = view["slow_queries"]
    assert "demo_sleep" in slow["sql"] and slow["slow"] == 2 and slow["max_ms"] >= 100
    (site,) = slow["call_sites"]
    where = f"shop/finding_views.py:{line_of('# slow', FINDING_VIEWS_PY)} in slow_query"
    assert (site["site"], site["requests"], site["hint"]) == (where, 2, None)
    assert view["n_plus_one_suspects"] == []


def test_exact_duplicates_apart_from_n_plus_one(flush):
    view = view_stats(flush, "shop:duplicates", "/duplicates/", times=2)
    assert view["n_plus_one"] == 0, "three runs are below the N+1 threshold"
    by_sql = {d["sql"]: d for d in view["duplicate_queries"]}
    (lookup,) = [d for sql, d in by_sql.items() if '"shop_author"."id" = %s' in sql]
    assert lookup["duplicates"] == 4 and lookup["count"] == 6, "2 of 3 runs per request repeat the first"
    assert view["duplicates"] == sum(d["duplicates"] for d in view["duplicate_queries"])
    # The N+1 view runs one template with 15 books' author ids: 5 distinct authors, 10 exact repeats.
    n1 = view_stats(flush, "shop:n_plus_one", "/n-plus-one/")
    (repeats,) = [d for d in n1["duplicate_queries"] if '"shop_author"' in d["sql"]]
    assert repeats == {"sql": repeats["sql"], "duplicates": 10, "count": 15}


def test_parameters_never_leave_the_process(flush):
    Author.objects.create(name="sentinel-author-7d1f")
    view = view_stats(flush, "shop:duplicates", "/duplicates/")
    assert "sentinel-author-7d1f" not in str(view)
    assert "sentinel-author-7d1f" not in str(read_stats())


def test_relation_is_read_from_the_model_graph():
    from instrumented.stats.hints import relation_for_sql

    sql = 'SELECT "shop_author"."id" FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT 21'
    assert relation_for_sql(Book, sql) == "author"
    assert relation_for_sql(Author, sql) is None, "Author has no relation to its own primary key"
    reverse = 'SELECT "shop_book"."id" FROM "shop_book" WHERE "shop_book"."author_id" = %s'
    assert relation_for_sql(Author, reverse) == "books"
    assert relation_for_sql(Book, reverse) is None
    assert relation_for_sql(Book, "SELECT 1") is None


urlpatterns = [path("raw/", raw_loop, name="raw"), path("helper/", helper_loop, name="helper")]
