"""The rules behind a call site: which frames are never one (launchers, servers, wrappers), a template's line
found only at the N+1 threshold (once per template per request, never on a request without an N+1), and a
stored site read back from memcached whatever it holds."""

from __future__ import annotations

import os
import sys
from types import CodeType

import pytest
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.template.loader import render_to_string
from django.test import Client
from django.urls import path
from django.utils.functional import SimpleLazyObject
from shop.models import Book

from instrumented.stats import callsite, frames, sites
from instrumented.stats.reader import read_stats

pytestmark = pytest.mark.django_db(databases=["default", "analytics"])


def code_of(source: str, filename: str) -> CodeType:
    """The code of the first function defined in ``source``, as if it lived in ``filename``."""
    module = compile(source, filename, "exec")
    return next(c for c in module.co_consts if isinstance(c, CodeType))


@pytest.fixture(autouse=True)
def _fresh():
    callsite.forget()
    yield
    callsite.forget()


def judge(source: str, filename: str, module: str) -> frames.Verdict:
    return frames._judge(code_of(source, filename), module, frames.rules())


def test_launchers_servers_and_wrappers_are_never_a_call_site():
    scripts = os.path.join(sys.prefix, "bin", "gunicorn")
    assert judge("def main(): pass", scripts, "__main__") == frames.SKIP, "the virtualenv's bin/ script"
    assert judge("def _run_module_as_main(): pass", "/usr/lib/python3.11/runpy.py", "runpy") == frames.SKIP
    library = next(d for d in frames.rules().library_dirs)
    for server in ("gunicorn.workers.sync", "uvicorn.protocols.http", "celery.app.trace", "daphne.server"):
        filename = os.path.join(library, *server.split(".")) + ".py"
        assert judge("def handle(): pass", filename, server) == frames.SKIP, server
    wrapper = "def app(environ, start_response):\n    return inner(environ, start_response)\n"
    assert judge(wrapper, "/srv/site/middleware.py", "site.middleware") == frames.SKIP, "a WSGI wrapper"
    assert judge("def app(scope, receive, send): pass", "/srv/site/asgi.py", "site.asgi") == frames.SKIP
    assert judge("def make(): pass", "/srv/site/demo/wsgi.py", "demo.wsgi") == frames.SKIP, "WSGI_APPLICATION's"


def test_the_sites_own_code_and_libraries():
    # A site deployed under the interpreter's prefix (sys.prefix /usr, the site in /usr/src/app) is the site's.
    inside_prefix = os.path.join(sys.prefix, "src", "app", "shop", "views.py")
    found = judge("def index(request): pass", inside_prefix, "shop.views")
    assert isinstance(found, frames.Site) and found.function == "index"
    library = frames.rules().library_dirs[0]
    found = judge("def to_representation(self): pass", f"{library}rest_framework/serializers.py", "rest_framework.x")
    assert found == frames.Library("rest_framework", "rest_framework/serializers.py", "to_representation")
    assert judge("def getattr(self): pass", f"{library}jinja2/environment.py", "jinja2.environment") == frames.FRAMEWORK


N_BOOKS = 8


def template_loop(request: HttpRequest) -> HttpResponse:
    template = engines["django"].from_string("{% for b in books %}{{ b.author.name }}{% endfor %}")
    books = Book.objects.order_by("id")[: int(request.GET.get("n", N_BOOKS))]
    return HttpResponse(template.render({"books": books}))  # render the loop


def two_loops(request: HttpRequest) -> HttpResponse:
    template = engines["django"].from_string(
        "{% for b in books %}{{ b.author.name }}{% endfor %}{% for b in books %}{{ b.author.books.count }}{% endfor %}"
    )
    return HttpResponse(template.render({"books": Book.objects.order_by("id")[:N_BOOKS]}))


def lazy_loop(request: HttpRequest) -> HttpResponse:
    """The N+1 runs while a lazy object is being set up: the walk must not set it up again."""

    def authors() -> list[str]:
        return [b.author.name for b in Book.objects.order_by("id")[:N_BOOKS]]  # lazy loop

    lazy = SimpleLazyObject(authors)
    return HttpResponse(", ".join(lazy))


def one_view_two_templates(request: HttpRequest) -> HttpResponse:
    """One view, two templates running the same statement (as Wagtail's one view serves every page type)."""
    source = "{% for b in books %}{{ b.author.name }}{% endfor %}"
    if request.GET.get("which") == "second":
        source = "<p>\n" + source
    books = Book.objects.order_by("id")[:N_BOOKS]
    return HttpResponse(engines["django"].from_string(source).render({"books": books}))


urlpatterns = [
    path("places/", one_view_two_templates, name="places"),
    path("loop/", template_loop, name="loop"),
    path("two/", two_loops, name="two"),
    path("lazy/", lazy_loop, name="lazy"),
]


def test_template_line_found_at_the_threshold_only(flush, settings):
    from shop.views import ensure_catalogue

    ensure_catalogue()
    settings.ROOT_URLCONF = __name__
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "BUCKET_SECONDS": 86400, "WINDOW_SECONDS": 86400}
    client = Client()
    before = callsite.walks
    assert client.get("/loop/?n=4").status_code == 200
    assert callsite.walks == before, "four runs: below the threshold, no stack is read"
    for _ in range(3):
        assert client.get("/loop/").status_code == 200
    assert callsite.walks == before + 1, "found once, then known for the view, its place and the bucket"
    assert client.get("/two/").status_code == 200
    assert callsite.walks == before + 3, "two N+1 templates in one request: once each"
    flush()
    views = {v["view"]: v for v in read_stats()["views"]}
    (suspect,) = views["loop"]["n_plus_one_suspects"]
    (site,) = suspect["call_sites"]
    assert site["requests"] == 3 and site["where"][0] == {
        "kind": "template",
        "template": "<unknown source>",
        "line": 1,
        "node": "{{ b.author.name }}",
        "engine": "django",
    }
    assert site["where"][1]["kind"] == "code" and site["where"][1]["function"] == "template_loop"
    assert (site["hint"], site["hint_model"]) == ('select_related("author")', "Book")


def test_one_view_two_places_each_its_line(flush, settings):
    from shop.views import ensure_catalogue

    ensure_catalogue()
    settings.ROOT_URLCONF = __name__
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "BUCKET_SECONDS": 86400, "WINDOW_SECONDS": 86400}
    client = Client()
    for which in ("first", "second", "first", "second", "second"):
        assert client.get(f"/places/?which={which}").status_code == 200
    flush()
    (suspect,) = {v["view"]: v for v in read_stats()["views"]}["places"]["n_plus_one_suspects"]
    lines = {site["where"][0]["line"]: site["requests"] for site in suspect["call_sites"]}
    assert lines == {1: 2, 2: 3}, "each template's line, with its own requests"


def test_the_walk_runs_none_of_the_sites_code(flush, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from shop.views import ensure_catalogue

    ensure_catalogue()
    settings.ROOT_URLCONF = __name__
    with CaptureQueriesContext(connection) as captured:
        assert Client().get("/lazy/").status_code == 200
    assert len(captured) == 1 + N_BOOKS, "the lazy object was set up once: finding the call site ran no query"
    flush()
    (suspect,) = {v["view"]: v for v in read_stats()["views"]}["lazy"]["n_plus_one_suspects"]
    assert (
        suspect["count"] == N_BOOKS and suspect["call_sites"][0]["where"][0]["function"] == "lazy_loop.<locals>.authors"
    )


FORGED = [
    None,
    42,
    ["code", "x"],
    "",
    "x" * 5000,
    "\t\t\t",
    "code\tonly-two\tfields",
    "code\tf.py\tnot-a-number\tf",
    "template\t<script>alert(1)</script>\t99999999999999\t{{ x }}\tdjango",
    "nonsense\ta\tb\nview\t<b>v</b>",
    "library\tlib\tf.py\t1\tfn\t" + "o" * 500,
]


@pytest.mark.parametrize("stored", FORGED)
def test_a_forged_site_reads_back_safely(stored):
    described = sites.describe(stored)
    assert isinstance(described["site"], str) and isinstance(described["where"], list)
    for part in described["where"]:
        assert part["kind"] in sites.ROLES
        assert all(len(str(v)) <= sites.MAX_FIELD for v in part.values())
        assert part.get("line") is None or isinstance(part["line"], int)
    assert sites.hint(stored) in ((None, None),) or all(
        v is None or len(v) <= sites.MAX_FIELD for v in sites.hint(stored)
    )
    html = render_to_string(
        "instrumented/dashboard/_call_site.html",
        {"s": {**described, "requests": 1, "hint": "<i>x</i>", "hint_model": "<u>M</u>"}},
    )
    assert "<script>" not in html and "<b>v</b>" not in html and "<i>x</i>" not in html and "<u>" not in html


def test_stored_site_round_trip():
    stored = sites.encode(
        [
            ("library", "rest_framework", "rest_framework/fields.py", "99", "get_attribute", "A(B), field c"),
            ("template", "blog/x.html", "3", "{{ a\tb }}\n", "django"),
            ("view", "api:books"),
        ]
    )
    described = sites.describe(stored)
    assert described["site"] == (
        "in rest_framework/fields.py:99 in get_attribute, A(B), field c, from blog/x.html:3 {{ a b }}, view api:books"
    )
    assert described["in_site_code"] is True
    assert sites.describe("shop/views.py:45 in n_plus_one")["where"] == [
        {"kind": "code", "file": "shop/views.py", "line": 45, "function": "n_plus_one"}
    ], "a site stored before parts"
    assert sites.hint(sites.encode_hint('select_related("a")', "Book")) == ('select_related("a")', "Book")


def test_the_search_for_the_loops_rows_is_bounded():
    from types import SimpleNamespace

    from instrumented.stats import hints

    def rows(n: int, children: list) -> list:
        return [
            SimpleNamespace(_prefetched_objects_cache={"c": SimpleNamespace(_result_cache=children)}) for _ in range(n)
        ]

    # 1000 rows, each prefetching 1000 rows, each prefetching 1000: a billion paths without a bound.
    deep = rows(1000, rows(1000, rows(1000, [])))
    root = hints.Root(None, deep, None)
    visits = [hints.MAX_VISITS]
    assert hints._claim(root, object(), visits) is None and visits[0] <= 0
    target = deep[0]._prefetched_objects_cache["c"]._result_cache[3]
    assert hints._claim(root, target, [hints.MAX_VISITS]) == (deep[0], ["c"])
