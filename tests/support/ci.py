"""Under ``CI=true`` a skipped test is a failed test: CI must run everything the README's command runs.

A skip means a missing service or tool (MariaDB, Chromium, tmux, socat, a driver), and ``./bin/test``
installs or starts every one of them; on a developer's machine a skip stays a skip. Loaded by
tests/conftest.py (``pytest_plugins``), for the collection-time skips (``importorskip`` at module level)
as much as for those at setup or in a test.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

MESSAGE = "skipped under CI=true, where every test must run (./bin/test installs and starts what they need): "


def enforced() -> bool:
    """True on CI (the CI runner sets ``CI=true``)."""
    return os.environ.get("CI", "").lower() == "true"


def _reason(longrepr: Any) -> str:
    """The skip's reason out of a report's ``longrepr`` (a (file, line, reason) tuple for skips)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A test skipped at setup or while running fails instead, under CI (xfail is left alone)."""
    outcome = yield
    report = outcome.get_result()
    if enforced() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = MESSAGE + _reason(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A module skipped while being collected (``importorskip``, ``pytest.skip(allow_module_level=True)``) fails."""
    outcome = yield
    report = outcome.get_result()
    if enforced() and report.skipped:
        report.outcome = "failed"
        report.longrepr = MESSAGE + _reason(report.longrepr)
