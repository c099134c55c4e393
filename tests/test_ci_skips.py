"""Under CI=true a test skipped for a missing service fails; elsewhere it stays a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT

SAMPLE = """
import pytest


def test_needs_a_service():
    pytest.skip("MariaDB is not reachable on 127.0.0.1:3306 as root")


@pytest.mark.skipif(True, reason="tmux is not installed")
def test_needs_a_tool():
    pass


def test_runs():
    pass
"""


def run_pytest(directory: Path, ci: str | None, *args: str, netns: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "pytest", "-p", "tests.support.ci", "-q", "-p", "no:cacheprovider", *args]
    if netns:
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True, timeout=300)


def test_skips_fail_under_ci_and_stay_skips_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "test_module_skip.py").write_text('import pytest\n\npytest.importorskip("a_module_nobody_has")\n')
    alone = ["-p", "no:django", "-c", os.devnull, "--rootdir", str(tmp_path)]
    local = run_pytest(tmp_path, None, *alone)
    assert local.returncode == 0, local.stdout
    assert "1 passed, 3 skipped" in local.stdout
    ci = run_pytest(tmp_path, "true", *alone, "test_sample.py")
    assert ci.returncode == 1, ci.stdout
    assert "skipped under CI=true" in ci.stdout and "MariaDB is not reachable" in ci.stdout
    assert "tmux is not installed" in ci.stdout and "1 failed, 1 passed, 1 error" in ci.stdout  # setup: error
    ci = run_pytest(tmp_path, "true", *alone, "test_module_skip.py")
    assert ci.returncode != 0 and "skipped under CI=true" in ci.stdout and "a_module_nobody_has" in ci.stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")
def test_mysql_tests_fail_under_ci_when_mariadb_is_missing(tmp_path: Path) -> None:
    """In a network namespace of its own nothing answers on 127.0.0.1:3306: the MySQL tests fail, not skip."""
    test = "tests/proxy/test_proxy_robustness.py"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    assert probe.returncode == 0, f"cannot make a network namespace here: {probe.stderr!r}"
    elsewhere = run_pytest(ROOT, None, test, "-x", netns=True)
    assert elsewhere.returncode == 0 and "skipped" in elsewhere.stdout, elsewhere.stdout
    ci = run_pytest(ROOT, "true", test, "-x", netns=True)
    assert ci.returncode == 1, ci.stdout
    assert "skipped under CI=true" in ci.stdout and "MariaDB is not reachable" in ci.stdout
