"""Template time per view: the outermost Django and Jinja2 renders, with the SQL run inside them apart."""

from __future__ import annotations

from time import perf_counter_ns

import pytest
from django.template import Context, Template
from django.test import AsyncClient, Client

from instrumented.memcached import get_store
from instrumented.stats.probe import Probe, current_probe
from instrumented.stats.reader import read_stats
from instrumented.stats.samples import read_samples


def recorded(render) -> Probe:
    """Run ``render`` as a recorded request would (a probe in the ContextVar)."""
    probe = Probe(perf_counter_ns())
    token = current_probe.set(probe)
    try:
        render()
    finally:
        current_probe.reset(token)
    return probe


@pytest.mark.django_db(databases=["default", "analytics"])
def test_a_template_loop_that_queries_counts_its_sql_apart():
    from shop.models import Book
    from shop.views import ensure_catalogue

    ensure_catalogue()
    loop = Template("{% for b in books %}{{ b.author.name }} {% include 'shop/planted_footer.html' %}{% endfor %}")
    loop.name = "loop.html"
    probe = recorded(lambda: loop.render(Context({"books": Book.objects.order_by("id")[:6], "titles": []})))
    ((name, (renders, ns, sql_ns)),) = probe.renders.items()
    assert (name, renders) == ("loop.html", 1), "includes are inside the outermost render, not counted again"
    sql = [event for event in probe.timeline if len(event) == 4]
    assert len(sql) == 7, "the books, then one author each"
    assert sql_ns == sum(event[1] for event in sql) and 0 < sql_ns < ns
    includes = [event for event in probe.timeline if len(event) == 5 and event[3] == "shop/planted_footer.html"]
    assert len(includes) == 6 and all(event[4] == 1 for event in includes)


def test_jinja2_renders_are_timed():
    import jinja2
    from django.template.backends.jinja2 import Jinja2

    engine = Jinja2(
        {
            "NAME": "jinja2",
            "DIRS": [],
            "APP_DIRS": False,
            "OPTIONS": {"loader": jinja2.DictLoader({"page.jinja": "{% for i in items %}{{ i }}{% endfor %}"})},
        }
    )
    template = engine.get_template("page.jinja")
    probe = recorded(lambda: [template.render({"items": range(3)}) for _ in range(2)])
    assert probe.renders["page.jinja"][0] == 2
    assert [event[3] for event in probe.timeline] == ["page.jinja", "page.jinja"]


def test_no_probe_no_work():
    template = Template("{{ x }}")
    assert template.render(Context({"x": 1})) == "1"


@pytest.mark.django_db(databases=["default", "analytics"])
def test_template_time_per_view(flush):
    from shop.views import ensure_catalogue

    ensure_catalogue()
    client = Client()
    for ms in (1, 2, 3):
        client.get(f"/planted/?ms={ms}")
    client.get("/fast/")
    flush()
    views = {v["view"]: v for v in read_stats()["views"]}
    templates = views["shop:planted"]["templates"]
    assert templates["renders"] == 3 and templates["time_ms"] > 0 and templates["mean_ms"] > 0
    assert [t["name"] for t in templates["names"]] == ["shop/planted.html"]
    assert views["shop:fast"]["templates"] == {"time_ms": 0.0, "sql_ms": 0.0, "mean_ms": 0.0, "renders": 0, "names": []}


@pytest.mark.django_db(databases=["default", "analytics"])
def test_an_async_view_is_sampled(flush):
    from asgiref.sync import async_to_sync

    for _ in range(3):
        assert async_to_sync(AsyncClient().get)("/async/").status_code == 200
    flush()
    found = read_samples("shop:async", store=get_store())
    assert len(found["samples"]) == 3
    assert all([e["kind"] for e in s["timeline"]] == ["sql"] for s in found["samples"]), "its ORM query, in a thread"


@pytest.mark.django_db(databases=["default", "analytics"])
def test_dashboard_column_and_view_page(flush, staff_client):
    client = Client()
    for ms in (1, 2):
        client.get(f"/planted/?ms={ms}")
    flush()
    table = staff_client.get("/instrumented/").content.decode()
    assert "Template ms/req" in table and 'data-optional="template">' in table, "shown: a view rendered templates"
    page = staff_client.get("/instrumented/view/?name=shop:planted").content.decode()
    assert 'id="instr-template-time"' in page and 'id="instr-templates"' in page
    assert "<code>shop/planted.html</code></td><td>2</td>" in page
