"""Errors provoked by an attacker: the request's own secrets, huge values and floods of anonymous errors.

Everything is read back the way an operator would see it (live page, stored page, list, traceback.txt) and
raw from memcached, so a secret masked on one page but stored in clear elsewhere is found.
"""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from instrumented.errors import capture as errors
from instrumented.errors.records import load_meta
from tests.errors.test_errors_secrets import raw_memcached_text

PASSWORD = "the-password-4711"
BEARER = "bearer-credential-9a8b7c6d"
SEED = "Zq7seed"
#: The values the demo view puts under secret-named dict keys (``{"pw": f"{seed}-pw-value", ...}``).
DICT_VALUES = [f"{SEED}-{key}-value" for key in ("pw", "pwd", "passwd", "secret", "token", "auth")]


@pytest.fixture(autouse=True)
def _fresh_budgets() -> None:
    errors.page_budget = errors.PageBudget()
    errors.store_budget = errors.PageBudget()


@pytest.fixture
def root(django_user_model) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.invalid", "pw"))
    return client


def everything_shown(client: Client, ref: str, live: bytes) -> dict[str, str]:
    """Every place an error can be read: the live response, the stored pages, the list, memcached itself."""
    places = {"the live page": live.decode()}
    for url in (f"/instrumented/errors/{ref}/", f"/instrumented/errors/{ref}/traceback.txt", "/instrumented/errors/"):
        response = client.get(url)
        assert response.status_code == 200, url
        places[url] = response.content.decode()
    places["memcached"] = raw_memcached_text(ref)
    return places


@pytest.mark.django_db
def test_request_credentials_never_appear_anywhere(root):
    """``int(request.POST["password"])``, the Authorization header in ``hdr``, the session id in ``sess``."""
    live = root.post(
        "/errors-demo/credentials/", {"password": PASSWORD, "seed": SEED}, HTTP_AUTHORIZATION=f"Bearer {BEARER}"
    )
    assert live.status_code == 500
    ref = live["X-Error-Reference"]
    session_id = root.cookies["sessionid"].value
    body = live.content.decode()
    assert "invalid literal for int()" in body and "hdr" in body and "sess" in body and SEED in body, "a real page"
    for where, text in everything_shown(root, ref, live.content).items():
        for needle in (PASSWORD, BEARER, session_id, *DICT_VALUES):
            assert needle not in text, f"{where} shows {needle}"
    meta = load_meta(ref)
    assert meta["message"] == "invalid literal for int() with base 10: '********************'"
    assert "invalid literal for int() with base 10: '********************'" in meta["text"]


@pytest.mark.django_db
def test_secret_query_values_and_api_keys_echoed_into_the_message_are_masked(root):
    """A secret-named query value and an X-Api-Key header that the view echoes into its exception message."""
    token, api_key = "query-token-5c4b3a29", "api-key-value-31337"
    live = root.post(
        f"/errors-demo/echo/?api_token={token}", {"comment": f"{token} / {api_key}"}, HTTP_X_API_KEY=api_key
    )
    ref = live["X-Error-Reference"]
    assert "cannot store comment" in load_meta(ref)["message"]
    for where, text in everything_shown(root, ref, live.content).items():
        assert token not in text and api_key not in text, where


def test_request_secrets_cover_headers_cookies_and_basic_auth(rf):
    from instrumented.errors.redact import Masker, request_secrets

    basic = base64.b64encode(b"alice:basic-pass-2024").decode()
    request = rf.post(
        "/x/?page=2&access_token=tok-123456789",
        {"new_password1": "posted-pass-abcdef", "comment": "harmless comment text"},
        HTTP_AUTHORIZATION=f"Basic {basic}",
        HTTP_X_API_KEY="x-api-key-0987654321",
    )
    request.COOKIES = {"sessionid": "session-cookie-value-1", "theme": "dark-mode-theme"}
    found = request_secrets(request)
    for value in (basic, "basic-pass-2024", "tok-123456789", "posted-pass-abcdef", "x-api-key-0987654321"):
        assert value in found, value
    assert "session-cookie-value-1" in found
    assert "harmless comment text" not in found and "dark-mode-theme" not in found
    masked = Masker(found).text(f"got {basic!r} and repr {'posted-pass-abcdef'!r} and url tok-123456789")
    assert "basic-pass" not in masked and "posted-pass" not in masked and "tok-1234" not in masked


def test_secret_named_dict_keys_are_masked_at_any_depth():
    from instrumented.errors.redact import Masker

    masker = Masker()
    data = masker.data({"pw": "a1", "pwd": "a2", "passwd": "a3", "secret": "a4", "token": "a5", "auth": "a6", "n": 1})
    assert data == {k: "********************" for k in ("pw", "pwd", "passwd", "secret", "token", "auth")} | {"n": 1}
    nested = masker.data([{"user": "bob", "credentials": {"pw": "x"}}])
    assert nested == [{"user": "bob", "credentials": "********************"}]


def test_megabyte_locals_are_masked_over_what_a_page_shows_only():
    """A 4 MB local in each of 300 recursive frames was masked whole: ~5 s per error. Now its shown head."""
    from instrumented.errors.redact import Masker

    masker = Masker(["very-secret-token-1"])
    huge = "very-secret-token-1 " + "x" * 4_000_000
    for value in (huge, [huge], {"blob": huge}, huge.encode()):
        masked = masker.data(value)
        text = str(masked)
        assert "very-secret-token-1" not in text and "****" in text
        assert len(text) < 20_000, "masked and cut to what a page can show"


@pytest.mark.django_db
def test_a_huge_posted_value_is_capped_and_rendered_once(root, monkeypatch):
    """2.4 MB echoed into the message used to be rendered four times (three to store it, one live) in full."""
    renders: list[int] = []
    original = errors.BoundedExceptionReporter.get_traceback_html

    def counting(self):
        html = original(self)
        renders.append(len(html))
        return html

    monkeypatch.setattr(errors.BoundedExceptionReporter, "get_traceback_html", counting)
    comment = "A" * 2_400_000
    live = root.post("/errors-demo/echo/", {"comment": comment})
    assert live.status_code == 500
    assert len(renders) == 1, f"rendered {len(renders)} times"
    assert len(live.content) < 200_000, f"the live page is {len(live.content)} bytes"
    assert "trimmed 2400" in live.content.decode(), "the cut is marked"
    ref = live["X-Error-Reference"]
    assert load_meta(ref)["page"] is True
    stored = root.get(f"/instrumented/errors/{ref}/")
    assert stored.status_code == 200 and len(stored.content) < 200_000


@pytest.mark.django_db
def test_a_page_far_over_the_limit_is_rendered_only_once_more(root, monkeypatch):
    renders: list[dict] = []
    original = errors.BoundedExceptionReporter.__init__

    def noting(self, *args, **kwargs):
        renders.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(errors.BoundedExceptionReporter, "__init__", noting)
    monkeypatch.setattr(errors, "MAX_VALUE_BYTES", 1000)  # every page is now far over the limit
    Client(raise_request_exception=False).get("/fail/")
    assert len(renders) == 2 and renders[0] == {} and renders[1].get("max_vars") == 0, renders


@pytest.mark.django_db
def test_anonymous_errors_do_not_spend_the_page_budget_of_users(django_user_model, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "ERROR_PAGES_PER_MINUTE": 2}
    stranger = Client(raise_request_exception=False)
    flood = [stranger.get("/fail/")["X-Error-Reference"] for _ in range(5)]
    assert [load_meta(ref)["page"] for ref in flood] == [True, True, False, False, False]
    user = Client(raise_request_exception=False)
    user.force_login(django_user_model.objects.create_user("customer", password="pw"))
    ref = user.get("/fail/")["X-Error-Reference"]
    assert load_meta(ref)["page"] is True, "a signed-in user's error still gets its page"
