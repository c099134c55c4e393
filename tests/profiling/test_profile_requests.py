"""One request profiled in-process (Django's test client): who gets a profile, what it costs the others, the pages."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from instrumented.profiling import engines, runner
from instrumented.profiling.runner import REFERENCE_HEADER, REFUSED_HEADER
from instrumented.profiling.store import load_profile, watch

HEADER = {"HTTP_X_INSTRUMENTED_PROFILE": "1"}

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["pyinstrument", "builtin"])
def engine(request: pytest.FixtureRequest, settings) -> str:
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "PROFILE_ENGINE": request.param}
    return request.param


def test_anonymous_header_costs_no_query_and_gets_nothing(django_assert_num_queries) -> None:
    client = Client()
    with django_assert_num_queries(0):
        response = client.get("/fast/", **HEADER)
    assert response.status_code == 200
    assert REFERENCE_HEADER not in response.headers and REFUSED_HEADER not in response.headers


@pytest.mark.parametrize("who", ["plain_client", "staff_client"])
def test_other_users_get_no_profile(who: str, request: pytest.FixtureRequest, monkeypatch) -> None:
    saved: list = []
    monkeypatch.setattr(runner, "save_profile", lambda store, profile: saved.append(profile) or True)
    client = request.getfixturevalue(who)
    response = client.get("/burn/?rounds=1000", **HEADER)
    assert response.status_code == 200
    assert REFERENCE_HEADER not in response.headers and REFUSED_HEADER not in response.headers
    assert saved == []


def test_superuser_profile_shows_the_burning_function(superuser_client, engine: str) -> None:
    plain = superuser_client.get("/burn/?rounds=200000")
    response = superuser_client.get("/burn/?rounds=200000", **HEADER)
    assert response.content == plain.content  # the body is the same, only a header is added
    ref = response.headers[REFERENCE_HEADER]
    profile = load_profile(ref)
    assert profile is not None and profile["engine"] == engine and profile["view"] == "shop:burn"
    tree = profile["tree"]
    own: dict[str, int] = {}
    for fi, _parent, _total, self_us in tree["nodes"]:
        name = tree["frames"][fi][0]
        own[name] = own.get(name, 0) + self_us
    assert max(own, key=own.__getitem__) == "crunch_numbers"

    page = superuser_client.get(f"/instrumented/profiles/{ref}/")
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"] and "private" in page["Cache-Control"]
    assert "'unsafe-inline'" not in page["Content-Security-Policy"]
    body = page.content.decode()
    assert "crunch_numbers" in body and 'class="pf-icicle"' in body and "<script>" not in body
    speed = superuser_client.get(f"/instrumented/profiles/{ref}.json")
    assert speed.status_code == 200 and "no-store" in speed["Cache-Control"]
    doc = json.loads(speed.content)
    assert doc["profiles"][0]["type"] == "evented"
    assert "crunch_numbers" in {f["name"] for f in doc["shared"]["frames"]}


def test_profile_pages_are_404_for_everyone_else(superuser_client, staff_client, plain_client) -> None:
    ref = superuser_client.get("/burn/?rounds=1000", **HEADER).headers[REFERENCE_HEADER]
    for client in (staff_client, plain_client, Client()):
        assert client.get(f"/instrumented/profiles/{ref}/").status_code == 404
        assert client.get(f"/instrumented/profiles/{ref}.json").status_code == 404
    assert superuser_client.get("/instrumented/profiles/not-a-ref/").status_code == 404
    assert superuser_client.get("/instrumented/profiles/0000000000000a/").status_code == 404


def test_async_view_is_profiled_in_its_event_loop(superuser_client, engine: str) -> None:
    response = superuser_client.get("/async-burn/", **HEADER)
    assert response.status_code == 200
    profile = load_profile(response.headers[REFERENCE_HEADER])
    assert profile is not None
    assert profile["engine"] == "builtin"  # under WSGI only the built-in sampler follows asgiref's loop thread
    names = {profile["tree"]["frames"][n[0]][0] for n in profile["tree"]["nodes"]}
    assert {"async_burn", "crunch_numbers", "(await)"} <= names


def test_streaming_body_is_profiled_until_closed(superuser_client, engine: str) -> None:
    response = superuser_client.get("/stream/", **HEADER)
    ref = response.headers[REFERENCE_HEADER]
    assert load_profile(ref) is None  # still running: the body has not been read
    assert b"".join(response.streaming_content) == b"".join(f"chunk {i}\n".encode() for i in range(5))
    response.close()
    profile = load_profile(ref)
    assert profile is not None and profile["ms"] >= 150  # five chunks, 40 ms apart: the body is in it


def test_a_failing_profiler_fails_open(superuser_client, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no profiler today")

    monkeypatch.setattr(engines, "start", broken)
    response = superuser_client.get("/burn/?rounds=1000", **HEADER)
    assert response.status_code == 200 and response.content.startswith(b"burnt")
    assert REFERENCE_HEADER not in response.headers
    assert "profiler failed" in response.headers[REFUSED_HEADER]


def test_arming_needs_a_superuser_and_csrf(django_user_model) -> None:
    root = django_user_model.objects.create_superuser("armer", password="pw")
    staff = django_user_model.objects.create_user("staffer", password="pw", is_staff=True)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(root)
    assert strict.post("/instrumented/profiles/arm/", {"view": "shop:burn", "n": "5"}).status_code == 403  # no token
    page = strict.get("/instrumented/view/?name=shop%3Aburn")
    assert page.status_code == 200 and b'id="pf-arm-form"' in page.content
    token = page.context["profiling"]["csrf_token"]
    assert (
        strict.post(
            "/instrumented/profiles/arm/", {"view": "shop:burn", "n": "51", "csrfmiddlewaretoken": token}
        ).status_code
        == 400
    )
    done = strict.post("/instrumented/profiles/arm/", {"view": "shop:burn", "n": "5", "csrfmiddlewaretoken": token})
    assert done.status_code == 302 and "no-store" in done["Cache-Control"]
    armed = strict.get("/instrumented/view/?name=shop%3Aburn")
    assert b'id="pf-arm"' in armed.content and b"the next 5 requests" in armed.content
    other = Client()
    other.force_login(staff)
    assert other.post("/instrumented/profiles/arm/", {"view": "shop:burn", "n": "5"}).status_code == 404
    assert b"pf-arm-form" not in other.get("/instrumented/view/?name=shop%3Aburn").content
    assert not watch.armed  # learnt at the next flush, not here


def test_other_requests_never_enter_the_profiler(client, monkeypatch) -> None:
    """Without the header and with nothing armed, the middleware does not call into profiling at all."""

    def entered(*args, **kwargs):
        raise AssertionError("profiling entered")

    monkeypatch.setattr("instrumented.middleware.profile_sync", entered)
    monkeypatch.setattr("instrumented.middleware.profile_async", entered)
    assert client.get("/fast/").status_code == 200
    assert client.get("/async/").status_code == 200


def test_disabled_instrumentation_profiles_nothing(superuser_client, settings) -> None:
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "ENABLED": False}
    response = superuser_client.get("/burn/?rounds=1000", **HEADER)
    assert REFERENCE_HEADER not in response.headers and REFUSED_HEADER not in response.headers


def test_a_profile_memcached_does_not_take_says_so(superuser_client, monkeypatch) -> None:
    monkeypatch.setattr(runner, "save_profile", lambda store, profile: False)
    response = superuser_client.get("/burn/?rounds=1000", **HEADER)
    assert response.status_code == 200 and REFERENCE_HEADER not in response.headers
    assert response.headers[REFUSED_HEADER] == "memcached did not store the profile"


def test_the_profiler_starting_is_not_in_the_profile(superuser_client, settings) -> None:
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "PROFILE_ENGINE": "builtin"}
    for _ in range(3):
        ref = superuser_client.get("/burn/?rounds=100000", **HEADER).headers[REFERENCE_HEADER]
        profile = load_profile(ref)
        assert profile is not None
        files = {frame[1] for frame in profile["tree"]["frames"]}
        assert not any("instrumented/profiling" in f for f in files), files
