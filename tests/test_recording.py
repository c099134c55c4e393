"""Work that is not a request, recorded like a view: ``instrumented.record`` (block, decorator, async), real
``manage.py`` commands in their own process, and Celery tasks run by a real Celery worker (in-process worker
thread, kombu's in-memory broker)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from django.db import connection

import instrumented
from instrumented.errors.records import recent_errors
from instrumented.stats.reader import read_stats
from tests.support.servers import EXAMPLE, server_env


def view_stats(name: str) -> dict | None:
    return next((v for v in read_stats()["views"] if v["view"] == name), None)


def two_queries() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute("SELECT 2")


@pytest.mark.django_db
def test_a_block_is_recorded_with_its_sql(flush):
    with instrumented.record("nightly-report"):
        two_queries()
    flush()
    stats = view_stats("nightly-report")
    assert stats is not None and stats["requests"] == 1 and stats["errors"] == 0
    assert stats["queries"]["total"] == 2


@pytest.mark.django_db
def test_a_decorated_function_counts_each_call_and_its_errors(flush):
    @instrumented.record("sync-prices")
    def sync(fail: bool) -> str:
        two_queries()
        if fail:
            raise LookupError("price list missing")
        return "ok"

    assert sync(False) == "ok"
    with pytest.raises(LookupError):
        sync(True)
    flush()
    stats = view_stats("sync-prices")
    assert stats["requests"] == 2 and stats["errors"] == 1 and stats["queries"]["total"] == 4
    assert [(e["class"], e["count"]) for e in stats["exceptions"]] == [("LookupError", 1)]
    stored = [m for m in recent_errors()[0] if m["view"] == "sync-prices"]
    assert len(stored) == 1 and stored[0]["exception"] == "LookupError"
    assert stored[0]["ref"] == stats["exceptions"][0]["last_reference"]
    assert stored[0]["location"].endswith("test_recording.py:" + str(sync.__wrapped__.__code__.co_firstlineno + 4))


def test_an_async_function_is_recorded(flush):
    @instrumented.record("async-job")
    async def job() -> int:
        await asyncio.sleep(0)
        return 7

    assert asyncio.run(job()) == 7
    flush()
    assert view_stats("async-job")["requests"] == 1


def test_ignore_views_prefixes_switch_it_off(settings, flush):
    settings.INSTRUMENTED = {**settings.INSTRUMENTED, "IGNORE_VIEWS": ["instrumented:", "task:"]}
    with instrumented.record("task:ignored"):
        pass
    with instrumented.record("kept"):
        pass
    flush()
    assert view_stats("task:ignored") is None and view_stats("kept") is not None


def manage(*args: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = server_env(EXAMPLE / "data", prefix)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True)


def test_management_commands_are_recorded_in_their_own_process(request):
    prefix = request.getfixturevalue("_isolated_stats")  # the key prefix this test reads and the command writes
    assert manage("check", prefix=prefix).returncode == 0
    failed = manage("check", "--tag", "no-such-tag", prefix=prefix)
    assert failed.returncode != 0 and "no-such-tag" in failed.stderr
    # The process flushed on exit; this one reads what it wrote.
    stats = view_stats("command:check")
    assert stats is not None and stats["requests"] == 2 and stats["errors"] == 1
    assert stats["methods"] == {"COMMAND": 2}
    assert [e["class"] for e in stats["exceptions"]] == ["django.core.management.base.CommandError"]
    # Commands that serve rather than run (runserver, shell, the package's own readers) are not recorded.
    manage("instrumented_stats", prefix=prefix)
    assert view_stats("command:instrumented_stats") is None


@pytest.mark.django_db(transaction=True)
def test_celery_tasks_run_by_a_real_worker_are_recorded(flush):
    celery = pytest.importorskip("celery")
    from celery.contrib.testing.worker import start_worker

    app = celery.Celery("instrumented_test", broker="memory://", backend="cache+memory://")
    app.conf.update(task_default_queue=f"q-{id(app)}", worker_hijack_root_logger=False)

    @app.task(name="shop.refresh_prices")
    def refresh_prices() -> str:
        two_queries()
        connection.close()
        return "done"

    @app.task(name="shop.send_invoice")
    def send_invoice() -> None:
        raise ConnectionError("smtp down")

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert refresh_prices.delay().get(timeout=20) == "done"
        assert refresh_prices.delay().get(timeout=20) == "done"
        with pytest.raises(ConnectionError):
            send_invoice.delay().get(timeout=20)
    flush()
    ok = view_stats("task:shop.refresh_prices")
    assert ok is not None and ok["requests"] == 2 and ok["errors"] == 0 and ok["queries"]["total"] == 4
    assert ok["methods"] == {"TASK": 2}
    bad = view_stats("task:shop.send_invoice")
    assert bad["requests"] == 1 and bad["errors"] == 1
    assert [e["class"] for e in bad["exceptions"]] == ["ConnectionError"]
    assert any(m["view"] == "task:shop.send_invoice" for m in recent_errors()[0])


def test_a_commands_process_is_not_one_of_the_sites_processes(request):
    # After a Quick start (migrate, createsuperuser, collectstatic) the dashboard said "6 processes" for 3 workers.
    prefix = request.getfixturevalue("_isolated_stats")
    assert manage("check", prefix=prefix).returncode == 0
    stats = read_stats()
    command = next(v for v in stats["views"] if v["view"] == "command:check")
    assert command["kind"] == "command"
    assert (stats["processes"], stats["processes_live"], stats["command_processes"]) == (0, 0, 1)


def test_each_name_says_what_kind_of_work_it_is(flush, client):
    with instrumented.record("nightly-report"):
        pass
    with instrumented.record("command:import_prices", method="COMMAND"):
        pass
    with instrumented.record("task:shop.refresh", method="TASK"):
        pass
    client.get("/fast/")
    flush()
    kinds = {v["view"]: v["kind"] for v in read_stats()["views"]}
    assert kinds == {
        "nightly-report": "work",
        "command:import_prices": "command",
        "task:shop.refresh": "task",
        "shop:fast": "request",
    }


@pytest.mark.django_db
def test_django_tasks_are_recorded_like_celery_tasks(flush, client):
    import django

    from instrumented.recording import connect_django_tasks

    if django.VERSION < (6,):  # Django 5.2 has no django.tasks: nothing is connected, nothing happens
        assert connect_django_tasks() is False
        return
    from tests import django_tasks

    assert connect_django_tasks() is True  # again: connected once (dispatch_uid)
    assert django_tasks.refresh_prices.enqueue().status == "SUCCESSFUL"  # ImmediateBackend: runs here, now
    assert django_tasks.refresh_prices.enqueue().status == "SUCCESSFUL"
    assert django_tasks.send_invoice.enqueue().status == "FAILED"
    client.get("/fast/")  # a request around them is counted as a request, apart
    flush()
    ok = view_stats("task:tests.django_tasks.refresh_prices")
    assert ok is not None and ok["kind"] == "task" and ok["methods"] == {"TASK": 2}
    assert ok["requests"] == 2 and ok["errors"] == 0 and ok["queries"]["total"] == 4
    bad = view_stats("task:tests.django_tasks.send_invoice")
    assert bad["requests"] == 1 and bad["errors"] == 1
    assert [e["class"] for e in bad["exceptions"]] == ["ConnectionError"]
    stored = [m for m in recent_errors()[0] if m["view"] == "task:tests.django_tasks.send_invoice"]
    assert len(stored) == 1 and stored[0]["ref"] == bad["exceptions"][0]["last_reference"]
    assert view_stats("shop:fast")["queries"]["total"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_full_celery_task_map_says_so_in_the_log_and_the_stats(flush, monkeypatch, caplog):
    """Issue 17: after MAX_RUNNING_TASKS lost ``task_postrun`` signals the map stopped recording, silently."""
    celery = pytest.importorskip("celery")
    from celery import signals
    from celery.contrib.testing.worker import start_worker

    from instrumented import recording

    monkeypatch.setattr(recording, "MAX_RUNNING_TASKS", 2)
    monkeypatch.setattr(recording, "_tasks", {})
    app = celery.Celery("instrumented_test_full", broker="memory://", backend="cache+memory://")
    app.conf.update(task_default_queue=f"q-{id(app)}", worker_hijack_root_logger=False)

    @app.task(name="shop.lost_postrun")
    def lost_postrun() -> str:
        return "done"

    @app.task(name="shop.after_the_map_filled")
    def after() -> str:
        return "done"

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert signals.task_postrun.disconnect(dispatch_uid="instrumented.task_postrun")
        try:  # two tasks whose postrun signal is lost: the map holds them for ever
            assert lost_postrun.delay().get(timeout=20) == "done"
            assert lost_postrun.delay().get(timeout=20) == "done"
        finally:
            assert recording.connect_celery()
        for _ in range(3):
            assert after.delay().get(timeout=20) == "done"
    flush()
    assert view_stats("task:shop.after_the_map_filled") is None  # not recorded: the map is full
    gap = view_stats(recording.UNRECORDED_TASKS)
    assert gap is not None and gap["requests"] == 3
    assert recording.unrecorded_tasks >= 3
    logged = [r.getMessage() for r in caplog.records if "Celery tasks not recorded" in r.getMessage()]
    assert len(logged) == 1, logged  # once, not once per task
