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
