"""The gates of :mod:`instrumented.access`: every page of the package has one, and each refuses the same way on sync
and async views."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpRequest, HttpResponse
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from instrumented.access import (
    GATE_ATTRIBUTE,
    metrics_access,
    querylog_control,
    stats_api,
    stats_page,
    technical,
)

GATES = {
    "stats_page": stats_page,
    "stats_api": stats_api,
    "technical": technical,
    "querylog_control": querylog_control,
    "metrics_access": metrics_access,
}
#: Gates made per page (their refusal is drawn in the page's own look).
MADE_GATES = {"explain_access"}


def _patterns(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


def test_every_page_of_the_package_has_its_gate():
    """A page added without a gate (or with the old inline check) fails here, whoever adds it."""
    resolver = next(
        r for r in get_resolver().url_patterns if isinstance(r, URLResolver) and r.namespace == "instrumented"
    )
    gates = {f"{route} ({pattern.name})": getattr(pattern.callback, GATE_ATTRIBUTE, None) for route, pattern in
             _patterns(resolver)}  # fmt: skip
    assert gates, "instrumented.urls is not mounted in the test site"
    assert {route: name for route, name in gates.items() if name not in GATES.keys() | MADE_GATES} == {}
    expected = {
        "dashboard": "stats_page",
        "view_detail": "stats_page",
        "bookmarklet": "stats_page",
        "api_views": "stats_api",
        "api_view": "stats_api",
        "api_samples": "stats_api",
        "metrics": "metrics_access",
        "error_list": "technical",
        "error_detail": "technical",
        "error_text": "technical",
        "profile": "technical",
        "profile_json": "technical",
        "profile_arm": "technical",
        "dba": "querylog_control",
        "explain": "explain_access",
    }
    by_name = {pattern.name: getattr(pattern.callback, GATE_ATTRIBUTE) for _, pattern in _patterns(resolver)}
    assert {name: by_name.get(name) for name in expected} == expected


def _user(**attributes: Any) -> SimpleNamespace:
    """A fake user: logged in, active, nothing more unless ``attributes`` say so."""

    def no(*args: Any) -> bool:
        return False

    values = {"is_active": True, "is_staff": False, "is_superuser": False, "is_authenticated": True, "pk": 1}
    methods = {"has_perm": no, "has_module_perms": no, "get_username": lambda: "someone"}
    return SimpleNamespace(**{**values, **methods, **attributes})


def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("inside")


async def async_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("inside")


def _call(gated: Any, request: HttpRequest) -> Any:
    return async_to_sync(gated)(request) if iscoroutinefunction(gated) else gated(request)


@pytest.mark.parametrize("view", [sync_view, async_view], ids=["sync", "async"])
@pytest.mark.parametrize("name", sorted(GATES))
def test_a_gate_keeps_the_view_sync_or_async_and_lets_the_allowed_user_in(name, view):
    gated = GATES[name](view)
    assert iscoroutinefunction(gated) is iscoroutinefunction(view)
    assert getattr(gated, GATE_ATTRIBUTE) == name
    request = RequestFactory().get("/instrumented/")
    request.user = _user(is_staff=True, is_superuser=True)
    response = _call(gated, request)
    assert response.status_code == 200
    assert response.content == b"inside"


@pytest.mark.parametrize("view", [sync_view, async_view], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("name", "anonymous", "logged_in"),
    [
        ("stats_page", 302, 302),
        ("stats_api", 401, 403),
        ("technical", 404, 404),
        ("querylog_control", 302, 403),
        ("metrics_access", 401, 403),
    ],
)
def test_each_gate_refuses_with_its_own_answer_on_sync_and_async_views(name, anonymous, logged_in, view):
    gated = GATES[name](view)
    for user, status in ((AnonymousUser(), anonymous), (_user(), logged_in)):
        request = RequestFactory().get("/instrumented/somewhere/?x=1")
        request.user = user
        if status == 404:
            with pytest.raises(Http404):
                _call(gated, request)
            continue
        response = _call(gated, request)
        assert response.status_code == status, (name, user)
        assert b"inside" not in response.content
        assert "no-store" in response["Cache-Control"]
        if status == 302:
            assert "next=/instrumented/somewhere/%3Fx%3D1" in response["Location"]
