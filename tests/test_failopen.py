"""The failure log and ``fail_open``: failures are counted, logged once a minute per kind, never raised."""

import pytest

from instrumented.failopen import FailureLog, fail_open, failures


def test_failure_log_rate_limits(caplog):
    log = FailureLog(interval=60)
    for _ in range(5):
        log.record("kind-a")
    log.record("kind-b")
    assert log.counts == {"kind-a": 5, "kind-b": 1}
    assert len([r for r in caplog.records if "kind-a" in r.getMessage()]) == 1


def test_fail_open_swallows_and_counts_exceptions():
    before = failures.counts.get("test kind", 0)
    reached = []
    with fail_open("test kind"):
        reached.append(1)
        raise ValueError("boom")
    assert reached == [1]
    assert failures.counts["test kind"] == before + 1
    with fail_open("test kind"):
        pass
    assert failures.counts["test kind"] == before + 1, "no exception, no failure"


def test_fail_open_lets_interrupts_through():
    with pytest.raises(KeyboardInterrupt), fail_open("test interrupt"):
        raise KeyboardInterrupt
    assert "test interrupt" not in failures.counts


def test_fail_open_keeps_the_error_for_a_fallback():
    def guarded(fail: bool) -> str:
        with fail_open("test fallback") as failed:
            if fail:
                raise LookupError("gone")
            return "value"
        return f"fallback: {type(failed.error).__name__}"

    assert guarded(False) == "value"
    assert guarded(True) == "fallback: LookupError"
