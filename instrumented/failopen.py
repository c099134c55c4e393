"""Failing open, in one place: the failure log, and the ``fail_open(kind)`` context manager.

Instrumentation never breaks the site it watches: every failure of its own is counted per kind,
logged at most once a minute per kind, and swallowed. ``with fail_open("kind"):`` is how code says so
(sentry-python's ``capture_internal_exceptions()`` is the model); ``BaseException``s that are not
``Exception``s (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``) still propagate.

A fallback value is the code after the block: ``return`` the result inside it, the fallback after it.
Where the fallback says what went wrong, ``with fail_open("kind") as failed:`` keeps the exception in
``failed.error``::

    with fail_open("reading stats failed") as failed:
        return read_stats()
    return no_data(reason=type(failed.error).__name__)
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

logger = logging.getLogger("instrumented")


class FailureLog:
    """Counts failures per kind and logs each kind at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Kinds (by prefix) counted but not logged: what a system check has already told the person.
        self.quiet: tuple[str, ...] = ()

    def record(self, kind: str, exc: BaseException | None = None) -> None:
        """Count one failure of ``kind``; log it unless this kind was logged recently (or is quiet)."""
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if kind.startswith(self.quiet) and self.quiet:
                return
            last = self._last_logged.get(kind)
            if last is not None and now - last < self.interval:
                return
            self._last_logged[kind] = now
            count = self.counts[kind]
        logger.warning("django-instrumented: %s (%d so far): %r", kind, count, exc)


#: Process-wide failure counters (the middleware, flusher, readers and error capture share them).
failures = FailureLog()


class fail_open:  # a class named like a function: it is used as ``with fail_open("kind"):``
    """Context manager: an ``Exception`` inside is recorded as a failure of ``kind`` and swallowed.

    A class rather than ``@contextmanager``, which costs about twice as much. Still ~0.15-0.25 µs a use
    against ~0.03 µs for a bare ``try``: the middleware's once-per-request block stays hand-written.
    """

    __slots__ = ("error", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        #: The exception swallowed, for a fallback that says why (None while nothing failed).
        self.error: Exception | None = None

    def __enter__(self) -> fail_open:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.error = exc
        failures.record(self.kind, exc)
        return True
