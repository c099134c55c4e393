"""Forged error metadata in memcached, and masking that an attacker tries to aim (issue 17, findings 4 and 5).

Values read back from memcached are untrusted: a forged entry written under an error's keys (real memcached,
as the capture writes them) must not turn the superuser's error list or an error's pages into a 500.
A request's secret-named field may hide its own value, not the evidence around it: file names, line numbers
and the group of an error stay what the code says.
"""

from __future__ import annotations

import time

import pytest
from django.test import Client

from instrumented.codec import pack
from instrumented.errors import capture
from instrumented.errors.records import load_meta, recent_errors
from instrumented.keys import ERROR_INDEX_SECONDS
from instrumented.memcached import get_store
from instrumented.references import new_reference
from tests.errors.test_errors_grouped import rows

pytestmark = pytest.mark.django_db

#: Where the demo's /fail/ raises (tests/errors/test_errors_grouped.py).
FAIL_AT = "shop/views.py:65"


@pytest.fixture(autouse=True)
def _fresh_budgets() -> None:
    capture.page_budget = capture.PageBudget()
    capture.store_budget = capture.PageBudget()


@pytest.fixture
def root(django_user_model) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.invalid", "pw"))
    return client


def plant(ref: str, meta: object) -> None:
    """Store ``meta`` under ``ref``'s metadata key and list ``ref`` in this minute's index, as a capture would."""
    store = get_store()
    keys = store.config.keys
    assert store.set(keys.error_meta(ref), pack(meta))
    index = keys.error_index(int(time.time() // ERROR_INDEX_SECONDS))
    assert store.append(index, f" {ref}".encode()) or store.add(index, f" {ref}".encode(), 600)


def test_forged_error_metadata_is_skipped_by_the_list_and_the_pages(root):
    genuine = Client(raise_request_exception=False).get("/fail/")["X-Error-Reference"]
    now = time.time()
    base = {"time": now, "exception": "builtins.KeyError", "location": "x.py:1", "message": "forged", "view": "v"}
    forged = {
        new_reference(): {k: v for k, v in base.items()},  # no "ref": KeyError: 'ref' before
        new_reference(): {**base, "ref": "javascript:alert(1)"},  # NoReverseMatch before
        new_reference(): {**base, "ref": 42},
        new_reference(): {**base, "time": "yesterday"},
        new_reference(): {**base, "message": ["not", "text"]},
        new_reference(): {**base, "user_id": {"pk": 1}},
        new_reference(): ["not", "a", "dict"],
    }
    other = new_reference()
    forged[other] = {**base, "ref": genuine}  # another error's reference: not this entry's
    for ref, meta in forged.items():
        plant(ref, meta)
    nan = new_reference()
    get_store().set(get_store().config.keys.error_meta(nan), b'j{"ref": "%s", "time": NaN}' % nan.encode())
    plant_index = get_store().config.keys.error_index(int(time.time() // ERROR_INDEX_SECONDS))
    assert get_store().append(plant_index, f" {nan}".encode())

    errors, problem = recent_errors()
    assert problem is None
    assert [meta["ref"] for meta in errors] == [genuine]
    for query in ("", "?show=all"):
        page = root.get(f"/instrumented/errors/{query}")
        assert page.status_code == 200, query
        body = page.content.decode()
        assert genuine in body and "javascript:" not in body and "forged" not in body
    for ref in [*forged, nan]:
        assert load_meta(ref) is None
        assert root.get(f"/instrumented/errors/{ref}/").status_code == 404
        assert root.get(f"/instrumented/errors/{ref}/traceback.txt").status_code == 404
    assert root.get(f"/instrumented/errors/{genuine}/traceback.txt").status_code == 200


def test_a_secret_named_field_cannot_blank_file_names_lines_or_the_group(root):
    """The probe's reproduction: ``/fail/?password=shop/views.py`` stored ``File "…/********************", line 65``
    and filed the error under a new group ``********************:65``."""
    stranger = Client(raise_request_exception=False)
    genuine = stranger.get("/fail/")["X-Error-Reference"]
    aimed = stranger.get("/fail/?password=shop/views.py")["X-Error-Reference"]
    source = stranger.get("/fail/", {"token": 'raise ZeroDivisionError(f"cannot split order total'})
    for ref, masked in ((aimed, []), (source["X-Error-Reference"], ["GET token"])):
        meta = load_meta(ref)
        assert meta["location"] == FAIL_AT
        assert 'shop/views.py", line 65, in fail' in meta["text"], meta["text"]
        assert 'raise ZeroDivisionError(f"cannot split order total' in meta["text"]  # the source line stays
        assert "*" * 20 not in meta["text"], meta["text"]
        # A value that is no plain word, name or path is still a secret: masked in the query string the page
        # shows, and the page says so.
        assert meta["masked_fields"] == masked
        page = root.get(f"/instrumented/errors/{ref}/").content.decode()
        assert "shop/views.py" in page and "*" * 20 + ", line" not in page
        assert "ZeroDivisionError(f&quot;cannot split order total {order_total}" in page  # the source line
        assert ("instrumented-masked" in page) == bool(masked)
    groups = [row for row in rows(root.get("/instrumented/errors/").content.decode(), "instr-groups")]
    assert len(groups) == 1 and FAIL_AT in groups[0] and genuine in groups[0], "one group: the code's file and line"
    assert " 3 " in groups[0], groups


def test_the_pages_say_which_request_field_caused_a_mask(root):
    """A real secret is still masked wherever it appears (here in the message), and every page says whose it is."""
    live = root.post("/errors-demo/credentials/", {"password": "the-password-4711", "seed": "Zq7seed"})
    ref = live["X-Error-Reference"]
    meta = load_meta(ref)
    assert "the-password-4711" not in meta["text"] and "POST password" in meta["masked_fields"]
    page = root.get(f"/instrumented/errors/{ref}/").content.decode()
    assert 'id="instrumented-masked"' in page and "POST password" in page.split('id="instrumented-masked"')[1][:300]
    assert "the-password-4711" not in page
    text = root.get(f"/instrumented/errors/{ref}/traceback.txt").content.decode()
    assert "Masked: ******************** is the value of " in text and "POST password" in text
