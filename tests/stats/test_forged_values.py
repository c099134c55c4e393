"""Forged values in memcached cannot blank the stats (issue 17, finding 3).

The probe's roll-ups are planted in the real memcached under the keys a flusher uses, beside one genuine
process: an exception entry whose count is a string, one whose time is ``Infinity`` (valid for
``json.loads``), findings and series points of the wrong types, a call site whose line is "²", and bucket
snapshots with the same. Every reader (``read_stats``, the JSON API, the dashboard and a view's page, the
metrics endpoint, ``instrumented_top``) must still answer with the rest of the data and count what it left
out in ``skipped``.
"""

from __future__ import annotations

import io
import json
import math
import re

import pytest
from django.core.management import call_command

from instrumented.codec import pack
from instrumented.memcached import get_store
from instrumented.references import new_reference
from instrumented.stats.reader import read_stats
from instrumented.stats.rollup import encode_rollup
from tests.stats.test_read_budget import genuine_process

pytestmark = pytest.mark.django_db

INF = float("inf")


def view(**extra: object) -> dict:
    """A stored view whose numbers are well formed (one request), with ``extra`` parts."""
    return {"route": "f/", "n": 1, "s": [1, 0, 0, 0], "lsum": 10.0, "lmax": 10.0, "h": "", **extra}


def forged_rollup(bucket: int) -> bytes:
    """The probe's roll-up, and more of its kind: each view has one good part and bad ones."""
    good_ref = new_reference()
    views = {
        "forged:string-count": view(x={"builtins.ValueError": ["7", "", 1.0], "builtins.OSError": [2, good_ref, 5.0]}),
        "forged:infinite-time": view(x={"builtins.KeyError": [1, "", INF], "builtins.TypeError": [1, "", -1]}),
        "forged:reference": view(x={"builtins.LookupError": [1, "javascript:alert(1)", 1.0]}),
        "forged:findings": view(
            qx=[
                ["SELECT 1", 1, 0, math.nan, [], []],
                ["SELECT 2", 1, 1, 5, [], [["shop/views.py:²", 1, None], ["a.py:3", "many", None], ["b.py:4", 1, {}]]],
            ],
            c={"default": ["1", 0, 0, 0], "other": [1, 2, 1, 0]},
            o={"https://x.example": [1, -5, 0, 0], "https://y.example": [1, 2, 0, 2]},
            t={"bad.html": [1, INF, 0], "worse.html": ["1", 2, 0], "page.html": [2, 300, 100]},  # template time
        ),
    }
    # Far in the future: the roll-up stays current however long the test takes (no series value is needed).
    meta = {"process": "forged", "as_of": bucket + 1000, "at": 0, "buckets": [bucket + 1000], "fin": 1}
    points = [
        ["forged:infinite-time", bucket, "5", 0, ""],
        ["forged:infinite-time", 10**30, 1, 0, ""],
        ["forged:infinite-time", bucket, 1, 0, {}],
        ["forged:string-count", bucket, 1, 0, ""],
    ]
    return encode_rollup(meta, views, points)  # type: ignore[arg-type]


def forged_bucket(bucket: int) -> bytes:
    """A bucket snapshot (read for narrow windows and processes without a roll-up) with the same kinds of values."""
    views = {
        "forged:bucket-bad-count": view(n="1"),
        "forged:bucket-nan": view(lsum=math.nan),
        "forged:bucket-huge": view(n=2**60),
        "forged:bucket-totals": view(dup="9", n1s=-1, w1=3),  # the findings' totals are counts too
        "forged:bucket-ok": view(x={"builtins.KeyError": [1, "", INF]}, m={"GET": 1, "POST": "1"}, qn=1, qmax=1, db=5,
                                 q=[["SELECT 1", 1, 5, 0], ["SELECT 2", True, 5, 0]], a={"default": [1, INF]}),
    }  # fmt: skip
    return pack({"bucket": bucket, "process": "forgedb", "views": views})


@pytest.fixture
def planted() -> int:
    """The genuine process, and the forged ones registered in its bucket's index; the bucket."""
    bucket, _now = genuine_process()
    store = get_store()
    keys = store.config.keys
    assert store.append(keys.bucket_index(bucket), b"forged forgedb ")
    assert store.set(keys.rollup("forged"), forged_rollup(bucket))
    assert store.set(keys.bucket(bucket, "forgedb"), forged_bucket(bucket))
    return bucket


def check_document(stats: dict) -> dict[str, dict]:
    """The document kept the genuine view and the good parts of the forged ones, and says what it left out."""
    assert "error" not in stats, stats.get("error")
    views = {v["view"]: v for v in stats["views"]}
    assert views["genuine:view"]["requests"] == 1
    assert stats["skipped"] >= 10 and "malformed" in stats["note"]
    json.dumps(stats, allow_nan=False)  # no NaN or Infinity anywhere in the answer
    return views


def test_read_stats_keeps_the_good_parts_and_counts_the_bad(planted):
    views = check_document(read_stats(series=True))
    string_count = {e["class"]: e for e in views["forged:string-count"]["exceptions"]}
    assert list(string_count) == ["builtins.OSError"] and string_count["builtins.OSError"]["count"] == 2
    assert views["forged:infinite-time"]["exceptions"] == [] and views["forged:infinite-time"]["requests"] == 1
    assert views["forged:reference"]["exceptions"] == []
    findings = views["forged:findings"]
    assert [q["sql"] for q in findings["slow_queries"]] == ["SELECT 2"]
    assert [s["requests"] for s in findings["slow_queries"][0]["call_sites"]] == [1]  # "²": a site without a line
    assert list(findings["cache"]["aliases"]) == ["other"]
    assert [o["origin"] for o in findings["http"]["origins"]] == ["https://y.example"]
    assert [t["name"] for t in findings["templates"]["names"]] == ["page.html"]
    assert [p["requests"] for p in views["forged:string-count"]["series"]] == [1]
    assert "forged:bucket-ok" in views  # the bucket snapshot of a process without a roll-up
    for bad in ("forged:bucket-bad-count", "forged:bucket-nan", "forged:bucket-huge"):
        assert bad not in views  # a view whose numbers are malformed is dropped, not shown with zeros
    ok = views["forged:bucket-ok"]
    assert ok["methods"] == {"GET": 1} and [q["sql"] for q in ok["top_queries"]] == ["SELECT 1"]
    assert ok["databases"] == {} and ok["exceptions"] == []
    totals = views["forged:bucket-totals"]
    assert (totals["duplicates"], totals["n_plus_one_runs"], totals["writes_per_row"]) == (0, 0, 3)


def test_every_reader_still_answers(planted, staff_client):
    api = staff_client.get("/instrumented/api/views")
    assert api.status_code == 200
    check_document(api.json())
    narrow = staff_client.get("/instrumented/api/views?window=10")  # bucket snapshots only
    assert narrow.status_code == 200 and "genuine:view" in narrow.content.decode()

    dashboard = staff_client.get("/instrumented/")
    assert dashboard.status_code == 200 and "genuine:view" in dashboard.content.decode()
    for name in ("forged:infinite-time", "forged:findings", "genuine:view"):
        detail = staff_client.get("/instrumented/view/", {"name": name})
        assert detail.status_code == 200, name

    metrics = staff_client.get("/instrumented/metrics")
    assert metrics.status_code == 200
    text = metrics.content.decode()
    assert 'instrumented_requests{view="genuine:view",route="g/"} 1.0' in text
    assert "instrumented_read_ok 1.0" in text
    assert not re.search(r" [-+]?(inf|nan)$", text, flags=re.MULTILINE | re.IGNORECASE)

    out = io.StringIO()
    call_command("instrumented_top", "--once", stdout=out)
    shown = out.getvalue()
    assert "genuine:view" in shown and "malformed" in shown


def test_instrumented_top_draws_no_data_rather_than_dying(monkeypatch):
    """Should a document still hold something the table cannot draw, the frame says so and the command goes on."""
    from instrumented.management.commands import instrumented_top

    document = {"window_seconds": 300, "generated_at": "2026-12-07T15:00:00+00:00", "processes": 1}
    monkeypatch.setattr(instrumented_top, "read_stats", lambda window: {**document, "views": [{"view": "v"}]})
    out = io.StringIO()
    call_command("instrumented_top", "--once", stdout=out)
    assert "no data: the stats could not be drawn (KeyError)" in out.getvalue()
