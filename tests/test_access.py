"""Access rules: who may see stats, tracebacks and the DBA panel; a failing check answers no and is counted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.test import RequestFactory

from instrumented.access import can_control_querylog, can_view_stats, is_technical_user
from instrumented.failopen import failures


def broken(*args: object) -> bool:
    """A site's callback with a bug."""
    raise RuntimeError("callback bug")


def user(**attributes: object) -> SimpleNamespace:
    return SimpleNamespace(**{"is_active": True, "is_staff": True, "is_superuser": False, "is_authenticated": True,
                              **attributes})  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "check", "kind"),
    [
        ("PERMISSION_CALLBACK", can_view_stats, "PERMISSION_CALLBACK failed"),
        ("SUPERUSER_CALLBACK", is_technical_user, "SUPERUSER_CALLBACK failed"),
    ],
)
def test_a_failing_callback_answers_no_and_is_counted(settings, setting, check, kind):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, setting: broken}
    request = RequestFactory().get("/")
    request.user = user()
    before = failures.counts.get(kind, 0)
    assert check(request) is False
    assert failures.counts[kind] == before + 1


def test_querylog_control_needs_the_permission_and_a_broken_backend_answers_no():
    kind = "checking instrumented.control_querylog failed"
    granted = user(has_perm=lambda perm: perm == "instrumented.control_querylog")
    assert can_control_querylog(granted) is True
    assert can_control_querylog(user(has_perm=lambda perm: False)) is False
    assert can_control_querylog(user(is_superuser=True, has_perm=broken)) is True
    assert can_control_querylog(None) is False
    before = failures.counts.get(kind, 0)
    assert can_control_querylog(user(has_perm=broken)) is False
    assert failures.counts[kind] == before + 1
