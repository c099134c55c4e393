"""Django through the proxy: the ORM with logging off and on, the querylog API and the management command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.ports import free_port
from tests.support.proxy import ROOT

pytest.importorskip("MySQLdb")


@pytest.fixture
def django_run(qlog, mariadb):
    import pymysql

    conn = pymysql.connect(**mariadb)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS instr_proxy_test")
    conn.close()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "proxy" / "django_project.py"), str(qlog.port), str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), qlog


def test_orm_through_proxy_with_logging_off_and_on(django_run):
    result, proxy = django_run
    assert result["off_count"] == 1
    assert result["off_status"]["logging"] == "off" and result["off_status"]["logged"] == 0
    assert result["on_status"]["logging"] == "on" and 0 < result["on_status"]["seconds_left"] <= 20
    assert result["on_models"] == sorted(f"m{i}" for i in range(1, 51))
    assert result["on_first"] == "m7"
    queries = [row["query"] for row in result["tail"]]
    assert any(q.startswith("INSERT INTO `django_content_type`") for q in queries), queries
    assert any("`django_content_type`.`model` = 'm7'" in q for q in queries), queries
    orm_rows = [row for row in result["tail"] if "django_content_type" in row["query"]]
    assert orm_rows and all(row["user"] == "root" and row["db"] == "instr_proxy_test" for row in orm_rows)
    assert all(isinstance(row["response_time_us"], int) for row in result["tail"])
    delete = [row for row in result["tail"] if row["query"].startswith("DELETE")]
    assert delete and delete[-1]["status"] == "ok"
    digests = {row["digest"]: row for row in result["digest"]}
    assert any(d.startswith("insert into `django_content_type`") and "values (?+)" in d for d in digests), digests
    assert result["digest"] == sorted(result["digest"], key=lambda r: -r["sum_us"])
    assert result["status_after"]["logged"] >= 3
    lines = [json.loads(line) for line in proxy.log_file.read_text().splitlines()]
    assert any(line["query"].startswith("INSERT INTO `django_content_type`") for line in lines)


def test_management_command_output(django_run):
    result, _ = django_run
    assert "query log on" in result["cmd_status"] and "statements logged" in result["cmd_status"]
    assert "user@db" in result["cmd_tail"] and "root@" in result["cmd_tail"] and "µs" in result["cmd_tail"]
    assert "count" in result["cmd_digest"] and "statement" in result["cmd_digest"]
    assert result["cmd_off"].startswith("query log off")
    assert "query log on, 5 s left" in result["cmd_on"]


def test_querylog_errors_are_clear(django_run):
    result, _ = django_run
    assert "No database alias 'nosuchalias'" in result["err_missing_alias"]
    assert "STATUS" in result["err_dead_proxy"] and "Can't connect" in result["err_dead_proxy"]
    assert "sqlite, not MySQL" in result["err_sqlite"]
    assert "positive integer" in result["err_bad_n"]
    assert "Can't connect" in result["err_cmd_dead"]
    assert "really going through instrumented-proxy" in result["err_not_proxy"]
