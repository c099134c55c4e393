"""Naming: one rule for view names (middleware, errors, API), shortening, exception class names."""

from django.urls import resolve

from instrumented.naming import NOT_FOUND_VIEW, UNRESOLVED_VIEW, class_name, shorten, unresolved_name, view_name


def test_view_name_prefers_the_url_name_and_falls_back_to_the_dotted_path():
    assert view_name(resolve("/instrumented/")) == "instrumented:dashboard"
    assert unresolved_name(404) == NOT_FOUND_VIEW
    assert unresolved_name(500) == UNRESOLVED_VIEW


def test_shorten_keeps_names_unique_and_bounded():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert shorten("short", 200) == "short"
    assert len(shorten(a, 200)) == 200 - 10 + 1 + 8
    assert shorten(a, 200) != shorten(b, 200)


def test_class_name():
    class Local(Exception):
        pass

    assert class_name(ValueError) == "ValueError"
    assert class_name(Local) == f"{__name__}.test_class_name.<locals>.Local"


def test_static_files_answered_before_any_url_resolves_are_named(settings):
    from instrumented.naming import static_prefix, unresolved_name

    settings.STATIC_URL = "/static/"
    assert static_prefix() == "/static/"
    assert unresolved_name(200, "/static/instrumented/dashboard.css", "/static/") == "(static files)"
    assert unresolved_name(200, "/shop/", "/static/") == "(unresolved)"
    assert unresolved_name(404, "/nowhere/", "/static/") == "(not found)"
    settings.STATIC_URL = "static/"  # Django adds the script prefix: still a path of this site
    assert static_prefix() == "/static/"
    settings.STATIC_URL = "https://cdn.example.com/static/"  # another host: nothing of it reaches us
    assert static_prefix() == ""
