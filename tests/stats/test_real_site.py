"""Call sites and hints on a real site: Wagtail pages (images, a snippet, a listing template), a DRF API with a
nested serializer, a Jinja2 template, a filtered related manager, multi-table inheritance, twelve N+1
templates in one view, the Wagtail and Django admins; served by gunicorn started from the virtualenv's
``bin/`` with 3 workers and a WSGI wrapper, on SQLite, PostgreSQL and MariaDB (tests/realsite/).

Ground truth is the site's own per-request CaptureQueriesContext (tests/realsite/blog/capture.py). Every hint
shown is proven: applied to the queryset its view wrote, the N+1's statement no longer repeats
(tests/realsite/prove.py counts the queries).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from instrumented.stats.reader import read_stats
from tests.support import mysql
from tests.support.ports import free_port, wait_for_port, wait_until
from tests.support.servers import ROOT, stop_process

SITE = ROOT / "tests" / "realsite"
VIEWS_PY = SITE / "blog" / "views.py"
REQUESTS = 4
THRESHOLD = 5
#: path -> (view name, tweak name of the queryset its N+1s iterate)
PAGES = {
    "/": ("wagtail_serve", "index-posts"),
    "/news/": ("wagtail_serve", "news-children"),
    "/view-loop/": ("view-loop", "view-loop"),
    "/books/": ("books", "books-template"),
    "/books/response/": ("books-response", "books-response"),
    "/books/jinja/": ("books-jinja", "books-jinja"),
    "/reviews/": ("reviews", "reviews"),
    "/places/": ("places", "places"),
    "/shelves/": ("shelves", "shelves"),
    "/pages/specific/": ("pages-specific", "pages-specific"),
    "/pages/child/": ("pages-child", "pages-child"),
    "/api/books/": ("api-books", "api-books"),
    "/api/books-function/": ("api-books-function", "api-books-function"),
    "/reviews/lists/": ("review-lists", "review-lists"),
    "/api/v2/pages/?type=blog.BlogPage&fields=image,thumbnail": ("wagtailapi:pages:listing", "wagtail-api"),
}
#: Logged-in pages of the libraries' own admin views.
ADMIN = ["/admin/", "/admin/pages/3/", "/admin/snippets/blog/author/", "/admin/images/", "/django-admin/blog/book/"]


def line_of(marker: str, path: Path = VIEWS_PY) -> int:
    (number,) = [i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line]
    return number


def view_line(marker: str, function: str) -> str:
    return f"tests/realsite/blog/views.py:{line_of(marker)} in {function}"


def _server_statement(engine: str, statement: str) -> None:
    """Run one statement on the database server itself (not in a database): CREATE or DROP DATABASE."""
    if engine == "postgresql":
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(statement)
    elif engine == "mysql":
        import pymysql

        conn = pymysql.connect(**{**mysql.MARIADB, "database": None})
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()


def _create_database(engine: str, name: str) -> None:
    quoted = f"`{name}` CHARACTER SET utf8mb4" if engine == "mysql" else f'"{name}"'
    _server_statement(engine, f"CREATE DATABASE {quoted}")


def _drop_database(engine: str, name: str) -> None:
    _server_statement(
        engine,
        f"DROP DATABASE IF EXISTS `{name}`" if engine == "mysql" else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


def _available(engine: str) -> bool:
    import socket

    port = {"postgresql": 5432, "mysql": mysql.PORT}.get(engine)
    if port is None:
        return True
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class RealSite:
    """One database of the real site, migrated and filled once per test session."""

    def __init__(self, engine: str, data_dir: Path, memcached_port: int) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.name = f"instr_realsite_{uuid.uuid4().hex[:8]}"
        self.building: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.realsite.settings",
            "PYTHONPATH": str(ROOT),
            "REALSITE_DB": engine,
            "REALSITE_DB_NAME": self.name,
            "REALSITE_DATA_DIR": str(data_dir),
            "INSTRUMENTED_TEST_MEMCACHED_PORT": str(memcached_port),
            "MARIADB_PORT": str(mysql.PORT),
        }

    def start_build(self) -> None:
        """Create the database, then migrate and fill it in a subprocess (the three databases build at once:
        much of a migration is waiting for the database)."""
        _create_database(self.engine, self.name)
        script = "migrate -v0 --skip-checks && seed_realsite --skip-checks"
        command = " && ".join(f"{sys.executable} -m django {step}" for step in script.split(" && "))
        self.building = subprocess.Popen(["sh", "-c", command], env=self.env, cwd=ROOT)

    def wait_built(self) -> None:
        if self.building is not None:
            assert self.building.wait(600) == 0, f"building the {self.engine} site failed"
            self.building = None

    def drop(self) -> None:
        _drop_database(self.engine, self.name)

    def serve(self, prefix: str) -> subprocess.Popen:
        """gunicorn from the virtualenv's bin/, 3 workers, the site's wrapped WSGI application."""
        for old in self.data_dir.glob("capture-*.jsonl"):
            old.unlink()
        self.port = free_port()
        gunicorn = Path(sys.executable).parent / "gunicorn"
        cmd = [str(gunicorn), "tests.realsite.wsgi:application", "--workers", "3", "--chdir", str(ROOT), "--preload"]
        cmd += ["--bind", f"127.0.0.1:{self.port}", "--log-level", "warning", "--graceful-timeout", "5"]
        proc = subprocess.Popen(cmd, env={**self.env, "INSTRUMENTED_KEY_PREFIX": prefix}, cwd=ROOT)
        wait_for_port(self.port, timeout=60, proc=proc)
        return proc

    def captured(self) -> list[dict]:
        lines = []
        for path in self.data_dir.glob("capture-*.jsonl"):
            lines += [json.loads(line) for line in path.read_text().splitlines()]
        return lines

    def prove(self, cases: list[dict], prefix: str) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "tests.realsite.prove"],
            env={**self.env, "INSTRUMENTED_KEY_PREFIX": prefix + "proof"},
            cwd=ROOT,
            input=json.dumps(cases),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout)


ENGINES = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(scope="session")
def real_sites(tmp_path_factory, memcached) -> Iterator[dict[str, RealSite]]:
    """The real site per reachable database, all built at once on first use, dropped at the session's end."""
    sites: dict[str, RealSite] = {}
    for engine in ENGINES:
        if _available(engine):
            sites[engine] = RealSite(engine, tmp_path_factory.mktemp(f"realsite-{engine}"), memcached.port)
            sites[engine].start_build()
    yield sites
    for site in sites.values():
        if site.building is not None:
            stop_process(site.building)
        site.drop()


def _get(opener: urllib.request.OpenerDirector, url: str) -> int:
    try:
        with opener.open(url, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _log_in(base: str) -> tuple[urllib.request.OpenerDirector, str]:
    """A logged-in superuser's opener (Wagtail's login form, its CSRF token and session cookie)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base}/admin/login/", timeout=30) as response:
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"username": "admin", "password": "pw", "csrfmiddlewaretoken": token}).encode()
    request = urllib.request.Request(f"{base}/admin/login/", data=data, headers={"Referer": f"{base}/admin/login/"})
    with opener.open(request, timeout=30) as response:
        assert "/admin/login/" not in response.geturl(), "logged in"
    return opener, next(cookie.value for cookie in jar if cookie.name == "sessionid")


def _look_at_the_view_page(base: str, session_key: str, shots: Path) -> str:
    """The Wagtail pages' view page in headless Chromium, as a user sees it: its N+1 call sites' text (and a PNG)."""
    from selenium.webdriver.common.by import By

    from tests.support.browser import chrome, missing, use_session

    reason = missing()
    if reason:
        pytest.skip(reason)
    with chrome(1280, 2000) as driver:
        use_session(driver, base, session_key)
        driver.get(f"{base}/instrumented/view/?name=wagtail_serve")
        text = driver.find_element(By.ID, "instr-suspects").text
        driver.save_screenshot(str(shots / "view-detail-wagtail.png"))
        if os.environ.get("INSTRUMENTED_SCREENSHOTS"):  # docs/screenshots/make.py: the README's picture
            from PIL import Image

            with Image.open(shots / "view-detail-wagtail.png") as image:
                image.crop((0, 0, 1280, 1420)).save(ROOT / "docs" / "screenshots" / "view-detail-wagtail.png")
    return text


_IN_LIST = re.compile(r"\bIN \((?:%s, )*%s\)")
_NOT_READS = ("BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "INSERT", "UPDATE", "DELETE")


def _n_plus_one_requests(captured: list[dict]) -> Counter:
    """Per view, the requests in which one read statement ran THRESHOLD times or more, whatever the length of its
    IN lists (the ground truth: transaction control and writes are no read N+1)."""
    found: Counter = Counter()
    for request in captured:
        reads = [
            _IN_LIST.sub("IN (…)", sql) for sql in request["sql"] if not sql.lstrip().upper().startswith(_NOT_READS)
        ]
        if reads and max(Counter(reads).values()) >= THRESHOLD:
            found[request["view"]] += 1
    return found


def _site_of(views: dict, view: str, sql_part: str, template: str | None = None) -> dict:
    """The one call site of ``view``'s N+1 on ``sql_part`` (in ``template`` when given)."""
    found = []
    for suspect in views[view]["n_plus_one_suspects"]:
        if sql_part in suspect["sql"]:
            found += [
                {**site, "sql": suspect["sql"]}
                for site in suspect["call_sites"]
                if template is None or template in site["site"]
            ]
    assert len(found) == 1, (view, sql_part, found)
    return found[0]


def _check_expected_sites(views: dict) -> list[tuple[str, dict]]:
    """Every N+1 of the site's pages names the line to edit and offers the hint that works; (path, site) back."""
    proofs: list[tuple[str, dict]] = []

    def expect(path: str, sql_part: str, site: str, hint: str | None, model: str | None, template=None) -> None:
        found = _site_of(views, PAGES[path][0], sql_part, template)
        if site.startswith("re:"):
            assert re.fullmatch(site[3:], found["site"]), found
        else:
            assert found["site"] == site, found
        assert (found["hint"], found["hint_model"]) == (hint, model), found
        if hint is not None:
            proofs.append((path, found))

    author, publisher = "blog_author", "blog_publisher"
    expect(
        "/",
        "wagtailimages_image",
        r"re:in wagtail/images/templatetags/wagtailimages_tags\.py:\d+ in ImageNode\.\w+, from "
        r"blog/blog_index_page\.html:9 \{% image post\.image fill-80x80 %\}, view wagtail_serve",
        'select_related("image")',
        "BlogPage",
    )
    expect(
        "/",
        "wagtailimages_rendition",
        r"re:in wagtail/images/models\.py:\d+ in AbstractImage\.find_existing_renditions, from "
        r"blog/blog_index_page\.html:9 \{% image post\.image fill-80x80 %\}, view wagtail_serve",
        'prefetch_related("image__renditions")',
        "BlogPage",
    )
    expect(
        "/",
        author,
        "blog/blog_index_page.html:10 {{ post.author.name }}, view wagtail_serve",
        'select_related("author")',
        "BlogPage",
        template="blog_index_page",
    )
    expect(
        "/news/",
        author,
        "blog/news_index_page.html:6 {{ child.author.name }}, view wagtail_serve",
        'select_related("author", for_specific_subqueries=True)',
        "Page",
        template="news_index_page",
    )
    expect("/view-loop/", author, view_line("# N+1 in the view", "view_loop"), 'select_related("author")', "Book")
    expect(
        "/books/",
        author,
        f"blog/books.html:6 {{{{ book.author.name }}}}, from {view_line('# renders books.html', 'books_template')}",
        'select_related("author")',
        "Book",
    )
    expect(
        "/books/response/",
        publisher,
        "blog/books_response.html:4 {{ book.publisher.name }}, view books-response",
        'select_related("publisher")',
        "Book",
    )
    expect(
        "/books/jinja/",
        publisher,
        "blog/books.jinja:5 <li>{{ book.title }}: {{ book.publisher.name }}</li>, from "
        + view_line("# renders books.jinja", "books_jinja"),
        'select_related("publisher")',
        "Book",
    )
    expect(
        "/reviews/",
        "blog_review",
        "blog/reviews.html:5 {% for review in book.approved_reviews %}, from "
        + view_line("# renders reviews.html", "reviews"),
        'prefetch_related(Prefetch("reviews", queryset=Review.objects.filter(approved=…), '
        'to_attr="approved_reviews_list"))',
        "Book",
    )
    expect(
        "/places/",
        "blog_restaurant",
        view_line("# N+1 through the child table", "places"),
        'select_related("restaurant")',
        "Place",
    )
    expect(
        "/pages/child/",
        "blog_author",
        "blog/pages_child.html:4 {{ page.blogpage.author.name }}, from "
        + view_line("# renders pages_child", "pages_child"),
        'select_related("blogpage__author")',
        "Page",
    )
    expect(
        "/pages/child/",
        "blog_blogpage",
        "blog/pages_child.html:4 {{ page.blogpage.author.name }}, from "
        + view_line("# renders pages_child", "pages_child"),
        'select_related("blogpage")',
        "Page",
    )
    # .specific on a base Page queryset: no lookup of the Page queryset can express it, so no hint.
    expect(
        "/pages/specific/",
        "blog_author",
        "blog/pages_specific.html:4 {{ page.specific.author.name }}, from "
        + view_line("# renders pages_specific", "pages_specific"),
        None,
        None,
    )
    expect(
        "/api/books/",
        author,
        r"re:in rest_framework/fields\.py:\d+ in get_attribute, BookSerializer\(ModelSerializer\), field author, "
        r"view api-books",
        'select_related("author")',
        "Book",
    )
    expect(
        "/api/books-function/",
        author,
        r"re:in rest_framework/fields\.py:\d+ in get_attribute, BookSerializer\(ModelSerializer\), field author, "
        rf"from tests/realsite/blog/views\.py:{line_of('# serialized here')} in book_list_function",
        'select_related("author")',
        "Book",
    )
    # An IN list of 1, 2 or 3 ids per book: never THRESHOLD times the same statement, one N+1 all the same.
    expect("/reviews/lists/", "IN (%s, ...)", view_line("# IN list of any length", "review_lists"), None, None)
    shelves = views["shelves"]["n_plus_one_suspects"]
    assert views["shelves"]["n_plus_one"] == REQUESTS
    assert len(shelves) == 12 and all(s["call_sites"] for s in shelves), "twelve N+1 templates, each its call site"
    for suspect in shelves:
        number = int(re.search(r"blog_label(\d\d)", suspect["sql"]).group(1))
        (site,) = suspect["call_sites"]
        where = f"blog/shelves.html:{4 + number} {{{{ shelf.label{number:02d}.name }}}}"
        assert site["site"] == f"{where}, from {view_line('# shelves', 'shelves')}"
        assert (site["hint"], site["hint_model"]) == (f'select_related("label{number:02d}")', "Shelf")
        proofs.append(("/shelves/", {**site, "sql": suspect["sql"]}))
    return proofs


def _check_no_launcher(views: dict) -> None:
    """No call site anywhere is a launcher, server, WSGI wrapper or the site's own middleware; each names a line
    of the site's code or template, or a library and the view."""
    for name, view in views.items():
        for suspect in view["n_plus_one_suspects"] + view["write_suspects"] + view["slow_queries"]:
            for site in suspect["call_sites"]:
                text = site["site"]
                for wrong in ("gunicorn", "/bin/", "wsgi.py", "capture.py", "runpy", "site-packages", "__main__"):
                    assert wrong not in text, (name, text)
                kinds = [part["kind"] for part in site["where"]]
                assert "code" in kinds or "template" in kinds or kinds[-2:] == ["library", "view"], (name, site)


def _serve_and_read(site: RealSite, key_prefix: str, everything: bool) -> tuple[dict, list[dict]]:
    """Every page REQUESTS times (3 at a time), the admins' pages too with ``everything``; the stats once every
    request is counted, and the ground truth. With ``everything``, the view page is looked at in Chromium."""
    proc = site.serve(key_prefix)
    try:
        base = f"http://127.0.0.1:{site.port}"
        plain = urllib.request.build_opener()
        with ThreadPoolExecutor(3) as pool:
            statuses = list(pool.map(lambda path: (path, _get(plain, base + path)), list(PAGES) * REQUESTS))
        assert {status for _path, status in statuses} == {200}, statuses
        if everything:
            admin, session_key = _log_in(base)
            for path in ADMIN:
                assert _get(admin, base + path) == 200, path
        captured = site.captured()
        expected = Counter(line["view"] for line in captured)

        def merged():
            views = {v["view"]: v for v in read_stats(top_queries=20)["views"]}
            got = {name: views.get(name, {}).get("requests", 0) for name in expected}
            return views if got == dict(expected) else None

        views = wait_until(merged, timeout=15)
        if everything:
            shown = _look_at_the_view_page(base, session_key, site.data_dir)
            assert "template blog/blog_index_page.html:9 {% image post.image fill-80x80 %}" in shown
            assert 'fix: add .prefetch_related("image__renditions") to the BlogPage queryset the loop iterates' in shown
            assert "inside wagtail: wagtail/images/models.py:" in shown and "gunicorn" not in shown
            assert 'add .select_related("author", for_specific_subqueries=True) to the Page queryset' in shown
        return views, captured
    finally:
        stop_process(proc)


def _prove_hints(site: RealSite, proofs: list[tuple[str, dict]], key_prefix: str) -> None:
    """Every hint shown, applied to the queryset its view wrote (an elided value filled in as the developer
    would), leaves the N+1's statement run at most once, and fewer statements in all."""
    cases = []
    for path, found in proofs:
        tweak = PAGES[path][1]
        cases.append({"path": path, "tweak": tweak, "hint": found["hint"].replace("…", "True"), "sql": found["sql"]})
    for result in site.prove(cases, key_prefix):
        before, after = result["before"], result["after"]
        assert before[2] == after[2] == 200, result
        assert before[0] >= THRESHOLD, ("the N+1 ran before the hint", result)
        assert after[0] <= 1 and after[1] < before[1], ("the hint removed the repeats", result)


@pytest.mark.timeout(600)  # the first waits for the sites' migrations (Wagtail's ~200), on a loaded machine too
@pytest.mark.parametrize("engine", ENGINES)
def test_real_site_under_gunicorn(engine, real_sites, key_prefix):
    """The same pages on each database; the libraries' admins, the view page in Chromium and the hints' proofs on
    SQLite (what they check does not depend on the database)."""
    if engine not in real_sites:
        pytest.skip(f"{engine} is not reachable on 127.0.0.1")
    site = real_sites[engine]
    site.wait_built()
    everything = engine == "sqlite"
    views, captured = _serve_and_read(site, key_prefix, everything)

    # The numbers are the ground truth's: requests, statements, N+1 requests (the site's pages; the admins'
    # pages may run IN lists of varying length, counted per statement as run).
    assert read_stats()["processes"] >= 2, "the requests were spread over several gunicorn workers"
    totals: Counter = Counter()
    for line in captured:
        totals[line["view"]] += line["count"]
        assert line["count"] == len(line["sql"])
    n_plus_one = _n_plus_one_requests(captured)
    for path, (name, _tweak) in PAGES.items():
        assert views[name]["queries"]["total"] == totals[name], (path, name)
        assert views[name]["n_plus_one"] == n_plus_one[name], (path, name)
    _check_no_launcher(views)
    proofs = _check_expected_sites(views)
    if everything:
        _prove_hints(site, proofs, key_prefix)
