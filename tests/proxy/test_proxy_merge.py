"""proxy/merge.py: the answers of several proxies or workers as one (plain data; no Django, no proxy)."""

from __future__ import annotations

import subprocess
import sys

from instrumented.proxy.merge import merge_digests, merge_status, merge_tail, top_digests


def test_status_sums_counts_and_says_partly_on():
    rows = [
        {"logging": "on", "seconds_left": "30", "logged": "5", "log_file": "/l", "filters": "slow 1 ms", "digests": 2,
         "evicted": 0, "total_us": "1500", "span_seconds": 20, "load": "0.25"},
        {"logging": "off", "seconds_left": 0, "logged": 7, "log_file": "/l", "filters": "", "digests": "3",
         "evicted": "1", "total_us": 500, "span_seconds": "10", "load": 0.5},
    ]  # fmt: skip
    merged = merge_status(rows)
    assert merged == {"logging": "partly on", "seconds_left": 30, "logged": 12, "log_file": "/l",
                      "filters": "slow 1 ms", "digests": 5, "evicted": 1, "total_us": 2000, "span_seconds": 20,
                      "load": 0.75}  # fmt: skip
    assert merge_status([{**rows[0], "logged": "many", "load": "nan?"}])["logged"] == 0  # an answer is untrusted
    assert merge_status([rows[0], {**rows[0], "log_file": "/m"}])["log_file"] == "/l; /m"


def test_tail_is_oldest_first_and_keeps_each_answers_order_within_a_second():
    a = [{"ts": "2026-12-07T10:00:01Z", "query": "a1"}, {"ts": "2026-12-07T10:00:02Z", "query": "a2"}]
    b = [{"ts": "2026-12-07T10:00:01Z", "query": "b1"}, {"ts": "2026-12-07T10:00:00Z", "query": "b0"}]
    assert [r["query"] for r in merge_tail([a, b])] == ["b0", "a1", "b1", "a2"]


def test_digests_are_summed_per_statement_schema_and_user_and_ordered():
    a = [{"digest": "select ?", "db": "d", "user": "u", "count": 2, "sum_us": 10, "min_us": 3, "max_us": 7,
          "p95_us": 7, "rows_sent": 2, "rows_affected": 0, "errors": 0, "warnings": 0, "first_seen": "t1",
          "last_seen": "t2", "views": "v1"}]  # fmt: skip
    b = [{**a[0], "count": "3", "sum_us": "30", "min_us": "1", "max_us": "20", "p95_us": "20", "first_seen": "t0",
          "last_seen": "t3", "views": "v2, v1"},
         {**a[0], "user": "other", "count": 9, "sum_us": 9}]  # fmt: skip
    rows = merge_digests([a, b])
    assert len(rows) == 2
    one = next(r for r in rows if r["user"] == "u")
    figures = (one["count"], one["sum_us"], one["min_us"], one["max_us"], one["p95_us"], one["avg_us"])
    assert figures == (5, 40, 1, 20, 20, 8)
    assert (one["first_seen"], one["last_seen"], one["views"]) == ("t0", "t3", "v1, v2")
    assert [r["user"] for r in top_digests(rows, "count")] == ["other", "u"]
    assert [r["user"] for r in top_digests(rows, "sum", 1)] == ["u"]


def test_the_merge_imports_no_django():
    code = "import sys, instrumented.proxy.merge, instrumented.proxy.workers; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
