"""Work that is not a request, recorded like a view: ``instrumented.record("name")``, management commands
(``command:<name>``), Celery tasks (``task:<name>``, through Celery's signals when Celery is installed) and
Django 6's ``django.tasks`` (``task:<module.function>``, through its ``task_started`` / ``task_finished``).

Each piece of work gets its own probe in the same ContextVar the middleware uses, so the SQL hook counts
its queries; an exception is counted and stored with an error reference, as in a view. Inside a request,
a ``record`` block is counted apart: its queries go to the block, not to the view. Nothing here raises
into the work it records.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from collections.abc import Callable
from contextvars import Token
from time import perf_counter_ns
from types import TracebackType
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction

from . import keys
from .conf import get_config
from .failopen import failures
from .naming import COMMAND_PREFIX, TASK_PREFIX, class_name, is_ignored
from .stats.intake import hand_over
from .stats.probe import Probe, current_probe

F = TypeVar("F", bound=Callable[..., Any])

#: Commands that serve or wait rather than do a piece of work (and the package's own readers): not recorded.
LONG_RUNNING_COMMANDS = frozenset(
    {
        "runserver", "runserver_plus", "testserver", "test", "shell", "shell_plus", "dbshell", "celery",
        "runworker", "instrumented_top", "instrumented_stats", "instrumented_querylog",
        # task queues' workers, run as commands: they serve, and their tasks are recorded one by one
        "rqworker", "rqscheduler", "db_worker", "qcluster", "process_tasks",
    }
)  # fmt: skip


class record:  # used like a function: ``with record("nightly-report"):`` / ``@record("sync")``
    """Record a block (``with``) or every call of a function (decorator, sync or async) under ``name``: time,
    SQL inside, errors counted and stored with a reference. Shown on the dashboard like a view.

    Each distinct ``name`` is a view (a dashboard row, memcached keys, a series of every metric): give a fixed
    name per kind of work, never one built from request data (past MAX_VIEWS, names fold into ``(other)``)."""

    def __init__(self, name: str, *, method: str = "") -> None:
        self.name = str(name)
        self.method = method
        self._probe: Probe | None = None
        self._token: Token[Probe | None] | None = None

    def __enter__(self) -> record:
        try:
            config = get_config()
            if config.enabled and not is_ignored(self.name, config.ignore_views):
                self._probe = Probe(
                    perf_counter_ns(), config.n_plus_one_threshold, config.slow_query_ms, timeline=False
                )
                self._probe.view = self.name  # call sites are known per view: this work's name
                self._token = current_probe.set(self._probe)
        except Exception as exc:  # noqa: BLE001 - fail open: the work runs unrecorded
            failures.record("recording work failed", exc)
        return self

    def fail(self, exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> None:
        """Count the work's exception and store it with a reference (once; before the probe is closed)."""
        probe = self._probe
        if probe is None or probe.exception_class is not None:
            return
        try:
            from .errors.capture import capture

            probe.exception_class = class_name(exc_info[0])
            capture(None, exc_info, view=self.name)
        except Exception as exc:  # noqa: BLE001 - fail open
            failures.record("recording work failed", exc)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        if exc_type is not None and exc is not None and not _is_clean_exit(exc):
            self._probe = probe
            self.fail((exc_type, exc, tb))
            self._probe = None
        end_ns = perf_counter_ns()
        probe.end()
        try:
            if self._token is not None:
                current_probe.reset(self._token)
        except ValueError:  # ended in another context than it began (a signal receiver elsewhere)
            current_probe.set(None)
        self._token = None
        try:
            status = 500 if probe.exception_class is not None else 200
            # The middleware's door (stats/intake.py): queued for the flusher thread, counted there.
            hand_over((self.name, "", self.method, status, end_ns - probe.start_ns, probe, end_ns))
        except Exception as exc2:  # noqa: BLE001 - fail open
            failures.record("recording work failed", exc2)

    def __call__(self, func: F) -> F:
        """As a decorator: each call is recorded (a fresh ``record`` per call, so calls never share state)."""
        name, method = self.name, self.method
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with record(name, method=method):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with record(name, method=method):
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]


def _is_clean_exit(exc: BaseException) -> bool:
    """``sys.exit(0)`` / ``sys.exit()`` end a command without an error."""
    return isinstance(exc, SystemExit) and exc.code in (0, None)


# -- management commands -----------------------------------------------------------------------------------------------


#: The management command this process was started to run (``manage.py test``), or None.
command_line: str | None = None


def install_command_recording() -> None:
    """Wrap ``BaseCommand.execute`` once, so every command (``manage.py``, ``call_command``) is ``command:<name>``."""
    from django.core.management.base import BaseCommand

    original = BaseCommand.execute
    if getattr(original, "_instrumented", False):
        return

    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        name = type(self).__module__.rpartition(".")[2]
        if name in LONG_RUNNING_COMMANDS:
            return original(self, *args, **options)
        with record(COMMAND_PREFIX + name, method="COMMAND"):
            return original(self, *args, **options)

    execute._instrumented = True  # type: ignore[attr-defined]
    BaseCommand.execute = execute

    original_run = BaseCommand.run_from_argv

    @functools.wraps(original_run)
    def run_from_argv(self: BaseCommand, argv: list[str]) -> None:
        # Only manage.py / django-admin come through here (never call_command in a worker): this process runs
        # one command and ends; its id says so, and readers do not count it among the site's processes.
        global command_line
        command_line = type(self).__module__.rpartition(".")[2]
        if command_line not in LONG_RUNNING_COMMANDS:
            keys.command_process = True
        original_run(self, argv)

    BaseCommand.run_from_argv = run_from_argv


# -- Celery ------------------------------------------------------------------------------------------------------------

_tasks: dict[str, record] = {}
_tasks_lock = threading.Lock()
#: Tasks being recorded at once at most (a lost postrun signal must not grow the map forever).
MAX_RUNNING_TASKS = 10_000
#: Where the tasks that found the map full are counted (one request each): the dashboard shows the gap.
UNRECORDED_TASKS = TASK_PREFIX + "(not recorded: 10 000 tasks open)"
#: Tasks of this process not recorded because the map was full.
unrecorded_tasks = 0


def _task_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if task_id is not None:
        _start_task(task_id, TASK_PREFIX + str(getattr(task or sender, "name", "") or "?"))


def _start_task(key: str, name: str) -> None:
    """Begin recording a task under ``key`` in the map Celery and django.tasks share (full: said, not recorded)."""
    global unrecorded_tasks
    work = record(name, method="TASK")
    with _tasks_lock:
        full = len(_tasks) >= MAX_RUNNING_TASKS
        if full:
            unrecorded_tasks += 1
        else:
            _tasks[key] = work
    if full:
        _count_unrecorded(name)
    else:
        work.__enter__()


def _count_unrecorded(name: str) -> None:
    """Say that a task was not recorded (the map is full: MAX_RUNNING_TASKS ``task_postrun`` signals were lost):
    a log line (at most once a minute, with the count so far) and a request of UNRECORDED_TASKS in the stats."""
    failures.record(
        f"Celery tasks not recorded: {MAX_RUNNING_TASKS} are open (task_postrun lost?), counted as {UNRECORDED_TASKS}",
        None,
    )
    with record(UNRECORDED_TASKS, method="TASK"):
        pass


def _task_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **kwargs: Any
) -> None:
    work = _tasks.get(task_id or "")
    if work is not None and exception is not None:
        work.fail((type(exception), exception, kwargs.get("traceback")))


def _task_postrun(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    with _tasks_lock:
        work = _tasks.pop(task_id or "", None)
    if work is not None:
        work.__exit__(None, None, None)


def _connect(module: str, receivers: dict[str, Callable[..., None]]) -> bool:
    """Connect each receiver to the signal of its name in ``module`` (once: its dispatch_uid is ``instrumented.``
    and the receiver's name without the underscore); False when ``module`` cannot be imported."""
    try:
        signals = importlib.import_module(module)
    except ImportError:
        return False
    for name, receiver in receivers.items():
        uid = "instrumented." + receiver.__name__.lstrip("_")
        getattr(signals, name).connect(receiver, weak=False, dispatch_uid=uid)
    return True


def connect_celery() -> bool:
    """Record Celery tasks through ``task_prerun`` / ``task_failure`` / ``task_postrun``; False without Celery."""
    return _connect(
        "celery.signals", {"task_prerun": _task_prerun, "task_failure": _task_failure, "task_postrun": _task_postrun}
    )


# -- django.tasks (Django 6) -----------------------------------------------------------------------------------------


def _django_task_started(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    try:
        name = TASK_PREFIX + str(task_result.task.module_path)
        key = "django.tasks:" + str(task_result.id)
    except Exception as exc:  # noqa: BLE001 - fail open: a result of another shape is not recorded
        failures.record("recording work failed", exc)
        return
    _start_task(key, name)  # the map is shared with Celery's: a full one is said the same way


def _django_task_finished(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    with _tasks_lock:
        work = _tasks.pop("django.tasks:" + str(getattr(task_result, "id", "")), None)
    if work is None:
        return
    # Sent inside the backend's exception handler when the task failed: the exception is the one being handled.
    exc_info = sys.exc_info()
    if exc_info[0] is not None and exc_info[1] is not None and str(getattr(task_result, "status", "")) == "FAILED":
        work.fail(exc_info)
    work.__exit__(None, None, None)


def connect_django_tasks() -> bool:
    """Record ``django.tasks`` tasks (Django 6) through ``task_started`` / ``task_finished``; False before Django 6."""
    return _connect(
        "django.tasks.signals", {"task_started": _django_task_started, "task_finished": _django_task_finished}
    )


def install() -> None:
    """Work that is not a request (from ``AppConfig.ready``): commands, Celery tasks, ``django.tasks`` tasks."""
    install_command_recording()  # command:<name>
    connect_celery()  # task:<name>, when Celery is installed
    connect_django_tasks()  # task:<module.function>, Django 6's django.tasks
