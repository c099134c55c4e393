"""No secret from settings, the environment or secret-named locals reaches a traceback page or memcached."""

from __future__ import annotations

import sys
import time
import zlib

import pytest
from django.test import Client
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from instrumented.errors import capture as errors
from instrumented.errors import records
from instrumented.errors.records import load_meta
from instrumented.errors.redact import is_secret_name, mask_credentials
from instrumented.errors.reporter import BoundedExceptionReporter
from instrumented.keys import ERROR_INDEX_SECONDS
from instrumented.memcached import get_store

SETTINGS_SECRETS = {
    "SENTRY_DSN": "https://f00dfacepublickey42@o123.ingest.sentry.io/4567",
    "DATABASE_URL": "postgres://shop:Db-Passw0rd-9f8e7d@db.internal:5432/shop",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/T0AAA/B0BBB/WebhookSecret123xyz",
    "PAYMENT_PROVIDER": {"ENDPOINT": "https://pay.example", "PRIVATE_PEM": "pem-private-material-77"},
}
ENV_SECRETS = {
    "DEMO_API_TOKEN": "env-api-token-5566778899",
    "AWS_SECRET_ACCESS_KEY": "AwsSecretValue/abcdEFGH1234",
    "REDIS_URL": "redis://:RedisPass-31415@cache.internal:6379/0",
}
#: Innocently named variables the demo view reads into locals: only the local's name (``password``) or
#: ``@sensitive_variables`` (``card_number``) can hide them.
LOCAL_SOURCES = {"DEMO_VALUE_A": "demo-local-password-42", "DEMO_VALUE_B": "4111111111111111"}
#: Values that must never be found, raw or inside a larger string.
NEEDLES = [
    "f00dfacepublickey42",
    "Db-Passw0rd-9f8e7d",
    "WebhookSecret123xyz",
    "pem-private-material-77",
    "env-api-token-5566778899",
    "AwsSecretValue",
    "RedisPass-31415",
    "demo-local-password-42",
    "4111111111111111",
    "demo-db-password",
]


@pytest.fixture
def planted(settings, monkeypatch):
    for name, value in SETTINGS_SECRETS.items():
        setattr(settings, name, value)
    for name, value in {**ENV_SECRETS, **LOCAL_SOURCES}.items():
        monkeypatch.setenv(name, value)
    errors.page_budget = errors.PageBudget()


@pytest.fixture
def root_client(django_user_model):
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.invalid", "pw"))
    return client


def assert_clean(data: bytes | str, where: str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    leaked = [needle for needle in NEEDLES if needle in text]
    assert not leaked, f"{where} leaks {leaked}"


def raw_memcached_text(ref: str) -> str:
    """Everything stored for one error, read as raw bytes and decompressed by hand (not through unpack)."""
    store = get_store()
    chunks = []
    for key in (store.config.keys.error_meta(ref), store.config.keys.error_page(ref)):
        raw = store.get(key)
        assert raw is not None, key
        chunks.append(zlib.decompress(raw[1:]) if raw[:1] == b"z" else raw[1:])
    return b"\n".join(chunks).decode("utf-8")


@pytest.mark.django_db
def test_no_secret_in_responses_or_memcached(planted, root_client):
    # request.META carries os.environ under WSGI dev servers (runserver, wsgiref): do the same here.
    environ = {name: value for name, value in ENV_SECRETS.items()}
    live = root_client.get("/errors-demo/secret/?api_token=query-token-abcdef123&page=2", **environ)
    assert live.status_code == 500
    ref = live["X-Error-Reference"]
    body = live.content.decode()
    # The page is a real technical page with locals (so a leak would show up) ...
    assert "visible-local-marker" in body and "ConnectionError" in body and "AWS_SECRET_ACCESS_KEY" in body
    assert "postgres://********************@db.internal:5432/shop" in body, "credentials masked, URL kept"
    # ... and shows none of the secrets.
    assert_clean(live.content, "the live technical page")
    assert "query-token-abcdef123" not in body

    stored = raw_memcached_text(ref)
    assert "visible-local-marker" in stored
    assert_clean(stored, "memcached")
    assert "query-token-abcdef123" not in stored

    text = root_client.get("/errors-demo/secret/", HTTP_ACCEPT="text/plain", **environ)
    assert "ConnectionError" in text.content.decode()
    assert_clean(text.content, "the live text page")

    for url in (f"/instrumented/errors/{ref}/", f"/instrumented/errors/{ref}/traceback.txt", "/instrumented/errors/"):
        page = root_client.get(url)
        assert page.status_code == 200 and b"ConnectionError" in page.content, url
        assert_clean(page.content, url)
    store = get_store()
    minute = int(time.time() // ERROR_INDEX_SECONDS)
    index = store.get_many([store.config.keys.error_index(m) for m in (minute - 1, minute)])
    assert index and ref.encode() in b"".join(index.values())
    assert_clean(b"".join(index.values()), "the index")
    assert load_meta(ref)["message"].startswith("cannot connect to postgres://********************@db.internal")


@pytest.mark.django_db
def test_sensitive_variables_are_honoured_even_with_debug_on(planted, settings):
    settings.DEBUG = True  # Django's own filter is inactive now; the stored page must still mask card_number
    response = Client(raise_request_exception=False).get("/errors-demo/secret/")
    assert response.status_code == 500
    ref = next(iter(records.recent_errors()[0]))["ref"]
    stored = raw_memcached_text(ref)
    assert "visible-local-marker" in stored
    assert_clean(stored, "memcached (DEBUG on)")


@pytest.mark.django_db
def test_djangos_default_filter_would_leak(planted, rf):
    """The control experiment: what the strict filter is for (so the tests above can fail)."""
    request = rf.get("/x/", **ENV_SECRETS)
    try:
        api_token = ENV_SECRETS["DEMO_API_TOKEN"]
        raise ValueError(SETTINGS_SECRETS["DATABASE_URL"])
    except ValueError:
        exc_info = sys.exc_info()
    reporter = ExceptionReporter(request, *exc_info)
    reporter.filter = SafeExceptionReporterFilter()
    default_html = reporter.get_traceback_html()
    for leaked in [*NEEDLES[:3], api_token]:  # no literals here: this frame's source is on the page too
        assert leaked in default_html
    strict_html = BoundedExceptionReporter(request, *exc_info).get_traceback_html()  # masked in data, not HTML
    assert_clean(strict_html, "the strict filter's page")


def test_secret_names_and_credential_urls():
    for name in ("password", "api_token", "apiToken", "secret", "api_key", "signing_key", "DB_PASSWORD", "webhook_url"):
        assert is_secret_name(name), name
    for name in ("author", "key", "monkey", "order_total", "request", "books", "keyboard"):
        assert not is_secret_name(name), name
    assert mask_credentials("see https://user:p%40ss@host/x and ftp://anon@h") == (
        "see https://********************@host/x and ftp://********************@h"
    )
    assert mask_credentials("mysql://u:p@ss@db/x") == "mysql://********************@db/x"
    assert mask_credentials("https://example.com/a@b and mail me@example.com") == (
        "https://example.com/a@b and mail me@example.com"
    )


@pytest.mark.django_db
def test_posted_secrets_never_appear_even_in_innocent_locals(root_client):
    errors.page_budget = errors.PageBudget()
    posted = {"password": "Hunter2-Secret!x", "new_password1": "Another-Secret-77", "username": "alice"}
    live = root_client.post("/errors-demo/login/", posted)
    assert live.status_code == 500
    body = live.content.decode()
    assert "login backend down" in body and "alice" in body
    stored = raw_memcached_text(live["X-Error-Reference"])
    for where, text in (("the live page", body), ("memcached", stored)):
        assert "Hunter2-Secret!x" not in text and "Hunter2-Secret!x".replace("!", "&#x27;") not in text, where
        assert "Another-Secret-77" not in text, where
    assert is_secret_name("new_password1") and is_secret_name("pw1") and not is_secret_name("page2")


@pytest.mark.django_db
def test_tokens_in_the_url_path_are_masked(root_client):
    errors.page_budget = errors.PageBudget()
    token = "cx9a1b-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    live = root_client.get(f"/errors-demo/reset/MQ/{token}/")
    assert live.status_code == 500
    ref = live["X-Error-Reference"]
    assert token not in live.content.decode()
    assert token not in raw_memcached_text(ref)
    assert load_meta(ref)["path"] == "/errors-demo/reset/MQ/********************/"
