"""Error references in-process (Django's test client, real memcached): who sees what, lookups, failures.

The test-only fault injection (``tests.support.faults``: a middleware before the session middleware, one after
the auth middleware, a session engine that can break) is switched on with pytest-django's ``settings``.
"""

from __future__ import annotations

import re
import threading
import time
import zlib

import pytest
from django.core.signals import got_request_exception
from django.test import Client

from instrumented import references as records
from instrumented.codec import MAX_VALUE_BYTES, unpack
from instrumented.errors import capture as errors
from instrumented.errors.records import load_meta
from instrumented.failopen import failures
from instrumented.memcached import get_store
from instrumented.references import normalize_reference
from tests.support.faults import SESSION_ENGINE, with_fault_injection

USERS = ["anonymous", "user", "staff", "inactive_superuser", "superuser"]
#: fault -> (path, extra request headers, exception class stored)
FAULTS = {
    "view": ("/fail/", {}, "ZeroDivisionError"),
    "early_middleware": ("/fast/", {"HTTP_X_TEST_FAULT": "early"}, "tests.support.faults.InjectedFault"),
    "late_middleware": ("/fast/", {"HTTP_X_TEST_FAULT": "late"}, "tests.support.faults.InjectedFault"),
    "session_backend": ("/fast/", {"HTTP_X_TEST_FAULT": "session"}, "tests.support.faults.SessionBackendDown"),
}
DEMO_500_MARKER = b"The demo shop tripped over something"


@pytest.fixture(autouse=True)
def fault_injection(settings):
    """The test-only fault-injecting middleware and session engine; a fresh page budget for each test."""
    settings.MIDDLEWARE = with_fault_injection(settings.MIDDLEWARE)
    settings.SESSION_ENGINE = SESSION_ENGINE
    errors.page_budget = errors.PageBudget()


@pytest.fixture
def signal_count():
    """How many times got_request_exception fired (a second exception in the error path would show here)."""
    calls: list[object] = []

    def receiver(sender, request=None, **kwargs):
        calls.append(request)

    got_request_exception.connect(receiver, dispatch_uid="test_errors.count")
    yield calls
    got_request_exception.disconnect(dispatch_uid="test_errors.count")


@pytest.fixture
def users(django_user_model):
    """One user of each kind (the anonymous one is None)."""
    make = django_user_model.objects.create_user
    return {
        "anonymous": None,
        "user": make("user", password="pw"),
        "staff": make("staff", password="pw", is_staff=True),
        "inactive_superuser": make("inactive", password="pw", is_staff=True, is_superuser=True, is_active=False),
        "superuser": make("root", password="pw", is_staff=True, is_superuser=True),
    }


def client_for(users: dict, kind: str) -> Client:
    client = Client(raise_request_exception=False)
    if users[kind] is not None:
        client.force_login(users[kind])
    else:
        client.cookies["sessionid"] = "stale" + "0" * 27  # a stale cookie: the session backend is consulted
    return client


def assert_debug_headers(response, csp_prefix: str) -> None:
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["Content-Security-Policy"].startswith(csp_prefix)
    assert "allow-same-origin" not in response["Content-Security-Policy"]


@pytest.mark.django_db
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kind", USERS)
def test_who_sees_what(users, kind, fault, signal_count):
    path, headers, exception = FAULTS[fault]
    client = client_for(users, kind)
    response = client.get(path, **headers)

    assert response.status_code == 500
    ref = response["X-Error-Reference"]
    assert normalize_reference(ref) == ref
    assert len(signal_count) == 1, "the error path raised a second exception"
    technical = kind == "superuser" and fault in ("view", "late_middleware")
    if technical:
        assert b"Traceback" in response.content and exception.rsplit(".", 1)[-1].encode() in response.content
        assert_debug_headers(response, "sandbox;")
        assert "allow-scripts" not in response["Content-Security-Policy"] and b"<script" not in response.content
        assert b"shows technical error pages to superusers" in response.content
        assert b"DEBUG = True" not in response.content
    else:
        assert DEMO_500_MARKER in response.content, "the site's own 500.html is used"
        assert f'id="error-reference">{ref}<'.encode() in response.content
        assert b"Traceback" not in response.content and b"fault injected" not in response.content
        assert b"cannot split" not in response.content
    meta = load_meta(ref)
    assert meta is not None and meta["exception"] == exception and meta["ref"] == ref
    if fault == "session_backend":
        assert meta["user"] == "unknown (could not load the user)"
    elif fault == "early_middleware" or kind in ("anonymous", "inactive_superuser"):
        assert meta["user"] == "anonymous" and meta["user_id"] is None
    else:
        assert meta["user"] == users[kind].username and meta["user_id"] == str(users[kind].pk)


@pytest.mark.django_db
def test_lookup_only_for_superusers(users):
    response = client_for(users, "user").get("/fail/")
    ref = response["X-Error-Reference"]
    unknown = "0" * 14
    for kind in ("anonymous", "user", "staff", "inactive_superuser"):
        client = client_for(users, kind)
        urls = (f"/instrumented/errors/{ref}/", f"/instrumented/errors/{ref}/traceback.txt", "/instrumented/errors/")
        for url in urls:
            answer = client.get(url)
            assert answer.status_code == 404, (kind, url)
            assert ref.encode() not in answer.content and b"ZeroDivisionError" not in answer.content
        # Same answer whether or not the reference exists.
        existing = client.get(f"/instrumented/errors/{ref}/")
        missing = client.get(f"/instrumented/errors/{unknown}/")
        assert existing.status_code == missing.status_code == 404
        assert existing.content.replace(ref.encode(), b"") == missing.content.replace(unknown.encode(), b"")

    root = client_for(users, "superuser")
    detail = root.get(f"/instrumented/errors/{ref}/")
    assert detail.status_code == 200
    assert b"ZeroDivisionError" in detail.content and b"order_total" in detail.content  # the frame's locals
    assert_debug_headers(detail, "sandbox;")
    assert "allow-scripts" not in detail["Content-Security-Policy"]
    assert root.get(f"/instrumented/errors/{ref.upper()}/").status_code == 200, "references are case-insensitive"

    text = root.get(f"/instrumented/errors/{ref}/traceback.txt")
    assert text.status_code == 200 and text["Content-Type"].startswith("text/plain")
    body = text.content.decode()
    assert f"Error reference: {ref}" in body and "GET /fail/" in body and "User: user (id" in body
    assert "Traceback (most recent call last)" in body and 'raise ZeroDivisionError(f"cannot split' in body
    assert_debug_headers(text, "sandbox;")

    listing = root.get("/instrumented/errors/")
    assert listing.status_code == 200
    assert f"/instrumented/errors/{ref}/".encode() in listing.content and b"shop:fail" in listing.content
    assert_debug_headers(listing, "default-src 'self'")  # an admin page: the page CSP, no inline script


@pytest.mark.django_db
def test_list_is_newest_first_and_complete(users):
    anonymous = client_for(users, "anonymous")
    refs = [anonymous.get("/fail/")["X-Error-Reference"] for _ in range(5)]
    listing = client_for(users, "superuser").get("/instrumented/errors/?show=all").content.decode()
    positions = [listing.index(f"/instrumented/errors/{ref}/") for ref in refs]
    assert positions == sorted(positions, reverse=True)


@pytest.mark.django_db
def test_expired_unknown_and_malformed_references(users, settings, monkeypatch):
    root = client_for(users, "superuser")
    ref = client_for(users, "anonymous").get("/fail/")["X-Error-Reference"]
    store = get_store()
    assert store.delete(store.config.keys.error_meta(ref)) and store.delete(store.config.keys.error_page(ref))
    for url in (f"/instrumented/errors/{ref}/", f"/instrumented/errors/{ref}/traceback.txt"):
        answer = root.get(url)
        assert answer.status_code == 404 and b"Expired or unknown error reference" in answer.content

    calls: list[object] = []
    original = type(store).get_many
    this_thread = threading.get_ident()  # the flusher thread reads memcached too (live slots, armed profiles)

    def spy(self: object, keys: list[str]) -> object:
        if threading.get_ident() == this_thread:
            calls.append(keys)
        return original(self, keys)

    monkeypatch.setattr(type(store), "get_many", spy)
    for bad in ("short", "iiiiiiiiiiiiii", "0" * 15, "a%20b%20c%20d%20e%20", "%3Cscript%3Eabcde", "0123456789abc%00"):
        answer = root.get(f"/instrumented/errors/{bad}/")
        assert answer.status_code == 404 and b"not an error reference" in answer.content, bad
        assert b"<script>" not in answer.content
    for bad in ("abc%2Fdef", "....//....//.."):
        assert root.get(f"/instrumented/errors/{bad}/").status_code == 404
    assert calls == [], "malformed references must not reach memcached"


@pytest.mark.django_db
def test_references_expire_with_the_window(users, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "WINDOW_SECONDS": 1, "BUCKET_SECONDS": 1}
    root = client_for(users, "superuser")
    ref = client_for(users, "anonymous").get("/fail/")["X-Error-Reference"]
    assert root.get(f"/instrumented/errors/{ref}/").status_code == 200
    deadline = time.monotonic() + 8
    while root.get(f"/instrumented/errors/{ref}/").status_code == 200:
        assert time.monotonic() < deadline, "the stored error outlived window + 2 buckets"
        time.sleep(0.5)
    assert b"Expired or unknown" in root.get(f"/instrumented/errors/{ref}/traceback.txt").content


@pytest.mark.django_db
def test_lookups_are_rate_limited_per_user(users, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "ERROR_LOOKUPS_PER_MINUTE": 3}
    ref = client_for(users, "anonymous").get("/fail/")["X-Error-Reference"]
    root = client_for(users, "superuser")
    statuses = [root.get(f"/instrumented/errors/{ref}/traceback.txt").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.django_db
def test_page_budget_keeps_metadata_and_text(users, settings):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "ERROR_PAGES_PER_MINUTE": 1}
    anonymous = client_for(users, "anonymous")
    first, second = (anonymous.get("/fail/")["X-Error-Reference"] for _ in range(2))
    assert load_meta(first)["page"] is True and load_meta(second)["page"] is False
    root = client_for(users, "superuser")
    fallback = root.get(f"/instrumented/errors/{second}/")
    assert fallback.status_code == 200 and b"was not stored" in fallback.content
    assert b"Traceback (most recent call last)" in fallback.content and b"cannot split order total" in fallback.content


@pytest.mark.django_db
def test_stats_count_the_error_with_its_reference(users, flush):
    from instrumented.stats.reader import read_stats

    ref = client_for(users, "anonymous").get("/fail/")["X-Error-Reference"]
    flush()
    view = next(v for v in read_stats()["views"] if v["view"] == "shop:fail")
    assert view["exceptions"][0]["class"] == "ZeroDivisionError"
    assert view["exceptions"][0]["last_reference"] == ref


@pytest.mark.django_db
def test_memcached_down_still_serves_a_fast_500(users, settings, signal_count):
    closed = socket_closed_port()
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": [f"127.0.0.1:{closed}"]}
    for kind, technical in (("anonymous", False), ("superuser", True)):
        client = client_for(users, kind)
        signal_count.clear()
        started = time.perf_counter()
        response = client.get("/fail/")
        elapsed = time.perf_counter() - started
        assert response.status_code == 500 and normalize_reference(response["X-Error-Reference"])
        assert len(signal_count) == 1
        assert elapsed < 1.5, f"{elapsed:.2f} s"
        assert (b"Traceback" in response.content) is technical
        assert (DEMO_500_MARKER in response.content) is not technical
    listing = client_for(users, "superuser").get("/instrumented/errors/")
    assert listing.status_code == 200 and b"No data" in listing.content


@pytest.mark.django_db
def test_memcached_hanging_costs_at_most_a_timeout(users, settings, signal_count):
    import socket

    with socket.socket() as hang:  # accepts connections (kernel backlog) but never answers
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        port = hang.getsockname()[1]
        settings.INSTRUMENTED = {**settings.INSTRUMENTED, "SERVERS": [f"127.0.0.1:{port}"], "TIMEOUT": 0.3}
        client = client_for(users, "anonymous")
        durations = []
        for _ in range(5):
            started = time.perf_counter()
            response = client.get("/fail/")
            durations.append(time.perf_counter() - started)
            assert response.status_code == 500 and DEMO_500_MARKER in response.content
    assert len(signal_count) == 5
    print("[measure] hanging memcached, 500 durations (s):", [round(d, 3) for d in durations])
    assert max(durations) < 1.0, durations  # one memcached call per error at most, bounded by TIMEOUT
    assert sum(durations) < 2.0, durations  # and the circuit breaker stops even that


def socket_closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_capture_failure_never_raises(users, monkeypatch, signal_count):
    def broken(*args, **kwargs):
        raise MemoryError("rendering blew up")

    monkeypatch.setattr(errors, "technical_page", broken)
    before = failures.counts.get("rendering a technical page failed", 0)
    response = client_for(users, "anonymous").get("/fail/")
    assert response.status_code == 500 and len(signal_count) == 1
    meta = load_meta(response["X-Error-Reference"])
    assert meta is not None and meta["page"] is False and "ZeroDivisionError" in meta["text"]
    assert failures.counts["rendering a technical page failed"] == before + 1


@pytest.mark.django_db
def test_500_template_fallbacks(users, monkeypatch):
    from django.template import loader

    real = loader.get_template

    def site_template_broken(name, *args, **kwargs):
        if name == "500.html":
            raise RuntimeError("template engine broke")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(loader, "get_template", site_template_broken)
    response = client_for(users, "anonymous").get("/fail/")
    ref = response["X-Error-Reference"]
    assert response.status_code == 500 and b"Server Error (500)" in response.content
    assert f"Error reference: <code>{ref}</code>".encode() in response.content

    def all_broken(name, *args, **kwargs):
        raise RuntimeError("template engine broke")

    monkeypatch.setattr(loader, "get_template", all_broken)
    response = client_for(users, "anonymous").get("/fail/")
    ref = response["X-Error-Reference"]
    assert response.status_code == 500 and response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == f"Server Error (500)\nError reference: {ref}\n"


@pytest.mark.django_db
def test_superuser_asking_for_text_gets_the_text_page(users):
    response = client_for(users, "superuser").get("/fail/", HTTP_ACCEPT="text/plain")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/plain")
    assert "ZeroDivisionError" in response.content.decode() and "<html" not in response.content.decode()


@pytest.mark.django_db
def test_large_errors_fit_in_memcached(users, capsys):
    client = client_for(users, "anonymous")
    started = time.perf_counter()
    response = client.get("/errors-demo/big/")
    elapsed = time.perf_counter() - started
    ref = response["X-Error-Reference"]
    store = get_store()
    raw = store.get(store.config.keys.error_page(ref))
    assert raw is not None and len(raw) <= MAX_VALUE_BYTES
    assert load_meta(ref)["page"] is True and "RecursionError" in load_meta(ref)["exception"]
    html = unpack(raw)["html"]
    assert "trimmed" in html, "large locals are cut"
    small = client.get("/fail/")
    small_raw = store.get(store.config.keys.error_page(small["X-Error-Reference"]))
    with capsys.disabled():
        print(
            f"\n[measure] big error: request {elapsed * 1000:.0f} ms, stored page {len(raw) / 1024:.0f} KiB "
            f"({len(html) / 1024:.0f} KiB HTML); /fail/ page {len(small_raw) / 1024:.1f} KiB "
            f"({len(zlib.decompress(small_raw[1:])) / 1024:.0f} KiB uncompressed JSON)"
        )


@pytest.mark.django_db
def test_capture_cost(users, settings, capsys):
    """Measured, not asserted tightly: the cost of a 500 with and without the page rendering."""
    client = client_for(users, "anonymous")
    client.get("/fail/")

    def timed(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            client.get("/fail/")
        return (time.perf_counter() - started) / n * 1000

    errors.page_budget = errors.PageBudget()
    with_page = timed(5)
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "ERROR_PAGES_PER_MINUTE": 0}  # metadata and text only
    without_page = timed(20)
    with capsys.disabled():
        print(f"\n[measure] /fail/ 500 with stored page {with_page:.1f} ms, metadata+text only {without_page:.1f} ms")
    assert without_page < with_page


def test_reference_format():
    refs = {records.new_reference() for _ in range(2000)}
    assert len(refs) == 2000
    assert all(re.fullmatch(r"[0-9a-hjkmnp-tv-z]{14}", ref) for ref in refs)
    assert len(records.ALPHABET) ** records.REFERENCE_LENGTH >= 2**64


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Django 2028 will not have a default mailer")  # Django 6.1, the site's config
def test_django_logging_and_admins_mail_keep_working(users, settings, caplog, mailoutbox):
    import logging

    import django

    settings.ADMINS = ["ops@example.invalid"] if django.VERSION >= (6,) else [("Ops", "ops@example.invalid")]
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client_for(users, "superuser").get("/fail/")
    assert response.status_code == 500
    logged = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
    assert logged and logged[0].exc_info[0] is ZeroDivisionError
    assert len(mailoutbox) == 1 and "ZeroDivisionError" in mailoutbox[0].subject + mailoutbox[0].body
    assert "Traceback" in mailoutbox[0].body


def test_reporter_bounds_locals_and_survives_broken_reprs(rf):
    import sys

    from instrumented.errors.reporter import BoundedExceptionReporter

    class Broken:
        def __repr__(self):
            raise RuntimeError("repr exploded")

    def fail():
        broken = Broken()  # noqa: F841 - shown (or not) as a local on the page
        huge = list(range(100_000))  # noqa: F841
        text = "x" * 50_000  # noqa: F841
        raise ValueError("bounded")

    try:
        fail()
    except ValueError:
        exc_info = sys.exc_info()
    html = BoundedExceptionReporter(rf.get("/x/"), *exc_info, max_var_chars=500).get_traceback_html()
    assert "&lt;unprintable Broken: repr raised RuntimeError&gt;" in html  # names the object whose __repr__ raised
    deep_item = str(50_000 + 4_321)  # computed: this frame's source lines are on the page too
    assert deep_item not in html and "x" * 600 not in html, "huge locals are cut"
    assert "ValueError" in html and "bounded" in html


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["user", "superuser"])
def test_the_500_pages_own_queries_are_not_the_failing_views(users, flush, kind):
    # Issue 23: handler500's superuser check loaded the session and the user, counted as /fail/'s SQL.
    from instrumented.stats.reader import read_stats

    assert client_for(users, kind).get("/fail/").status_code == 500
    flush()
    view = next(v for v in read_stats()["views"] if v["view"] == "shop:fail")
    assert view["queries"]["total"] == 0 and view["top_queries"] == [], view["top_queries"]


@pytest.mark.django_db
def test_technical_pages_say_which_error_they_are(users):
    # Issue 23: the stored page had no frame (reference, when, who, back to the list); the live page no reference.
    live = client_for(users, "superuser").get("/fail/")
    ref = live["X-Error-Reference"]
    html = live.content.decode()
    assert html.index('<div id="instr-error-frame"') > html.index("<body")
    assert f"<strong>Error reference {ref}</strong>" in html
    user_ref = client_for(users, "user").get("/fail/")["X-Error-Reference"]
    stored = client_for(users, "superuser").get(f"/instrumented/errors/{user_ref}/").content.decode()
    frame = stored[stored.index('<div id="instr-error-frame"') :].split("</div>", 1)[0]
    assert f"Error reference {user_ref}" in frame and "user user (id" in frame
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d C[SD]T", frame)  # when, in the site's time zone
    assert 'href="/instrumented/errors/"' in frame and "Back to the error list" in frame


def test_the_frame_escapes_what_it_shows():
    from instrumented.errors.views import framed

    page = framed("<html><body class='x'><h1>Boom</h1></body></html>", "AbC", "<when>", "user <b>x</b>", "/e/?a=1&b=2")
    assert page.startswith("<html><body class='x'><div id=\"instr-error-frame\"")
    assert "&lt;when&gt;" in page and "user &lt;b&gt;x&lt;/b&gt;" in page and 'href="/e/?a=1&amp;b=2"' in page
    assert framed("no body here", "R").startswith('<div id="instr-error-frame"')
