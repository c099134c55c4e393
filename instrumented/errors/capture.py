"""Error references: capture every unhandled exception of a request, store its traceback in memcached.

A ``got_request_exception`` receiver (so Django's logging, ADMINS mail and Sentry keep working) gives each
error a random reference, notes it on the request and on the stats probe, and stores for the window:

* metadata and the plain-text traceback (always, cheap);
* the rendered technical 500 page (at most ``ERROR_PAGES_PER_MINUTE`` per process);
* an index of the minute's references, grown with memcached ``append`` (atomic on the server: concurrent
  writers never lose each other's entries; bounded by the item size). The keys are in :mod:`instrumented.keys`.

Everything is scrubbed by :mod:`instrumented.reporter` before it leaves the process. Nothing here raises.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import threading
import time
import traceback
from types import TracebackType
from typing import Any

import django
from django.core.signals import got_request_exception
from django.http import HttpRequest

from ..access import get_user
from ..codec import MAX_VALUE_BYTES, pack
from ..conf import Config, get_config
from ..failopen import fail_open, failures
from ..keys import ERROR_INDEX_SECONDS
from ..memcached import Store, get_store
from ..naming import class_name, view_name
from ..references import new_reference
from ..stats.probe import current_probe, paused
from .redact import Masker, masker_for
from .reporter import BoundedExceptionReporter

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

#: The attribute of the request that carries its error reference.
REQUEST_ATTRIBUTE = "instrumented_error_reference"
#: Longest exception message / path / plain-text traceback stored (characters).
MAX_MESSAGE_CHARS = 2000
MAX_PATH_CHARS = 500
MAX_TEXT_CHARS = 100_000


class PageBudget:
    """At most ``per_minute`` uses per process and minute, counted apart for anonymous and authenticated
    requests: rendering costs CPU, and a stranger's flood of errors must not spend the budget of real users."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute = -1
        self._used = [0, 0]

    def take(self, per_minute: int, *, anonymous: bool = False) -> bool:
        """Use one of this minute's budget (of anonymous requests, or of the others); False when it is spent."""
        minute = int(time.time() // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self._used = minute, [0, 0]
            if self._used[anonymous] >= per_minute:
                return False
            self._used[anonymous] += 1
            return True


page_budget = PageBudget()
#: Errors stored per process and minute: a flood of 500s must not evict the stats from memcached (or keep the
#: failing requests waiting on it). Beyond it, errors are still counted in the stats, with their references.
STORED_ERRORS_PER_MINUTE = 120
store_budget = PageBudget()


#: Code that is not the site's own: a location inside it says nothing about where the site went wrong.
_LIBRARY_DIRS = tuple(
    os.path.join(os.path.realpath(d), "")
    for d in {
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
        os.path.dirname(django.__file__),
        os.path.dirname(os.path.dirname(__file__)),
    }
)
MAX_LOCATION_CHARS = 300


def _short_path(filename: str) -> str:
    """``filename`` relative to the longest ``sys.path`` entry it is under (``shop/views.py``), as an import reads."""
    best = ""
    for entry in sys.path:
        root = os.path.join(os.path.realpath(entry or "."), "")
        if filename.startswith(root) and len(root) > len(best):
            best = root
    return filename[len(best) :] if best else filename


_realpath = functools.lru_cache(maxsize=1024)(os.path.realpath)


def raising_location(tb: TracebackType | None) -> str:
    """Where an exception was raised, as ``file:line``: the innermost frame of the site's own code (the standard
    library, site-packages, Django and this package skipped), else the innermost frame; "" without a traceback."""
    innermost = own = None
    for frame, lineno in traceback.walk_tb(tb):
        filename = _realpath(frame.f_code.co_filename)
        innermost = (filename, lineno)
        if not filename.startswith(_LIBRARY_DIRS):
            own = innermost
    chosen = own or innermost
    if chosen is None:
        return ""
    return f"{_short_path(chosen[0])}:{chosen[1]}"[-MAX_LOCATION_CHARS:]


def _describe_request(request: HttpRequest | None) -> dict[str, Any]:
    """View, route, method, path and user of a request; fields that cannot be read are left empty."""
    info: dict[str, Any] = {"view": "", "route": "", "method": "", "path": "", "user_id": None, "user": "anonymous"}
    if request is None:
        return info
    try:
        match = getattr(request, "resolver_match", None)
        if match is not None:
            info["view"] = view_name(match)[:200]
            info["route"] = str(match.route or "")[:200]
        info["method"] = str(request.method or "")[:16]
        info["path"] = str(request.path)  # cut after masking (in _store)
    except Exception:  # noqa: BLE001 - a half-built request still gets the rest recorded
        pass
    user = get_user(request)
    if user is None and hasattr(request, "user"):
        info["user"] = "unknown (could not load the user)"
    elif user is not None and getattr(user, "is_authenticated", False):
        try:
            info["user_id"] = str(user.pk)[:64]
            info["user"] = str(user.get_username())[:150]
        except Exception:  # noqa: BLE001 - a custom user model that fails to describe itself
            info["user"] = "authenticated (unreadable)"
    return info


#: The attribute of the request that carries the full-size technical page rendered for storing it, so the
#: live page of a superuser's request is the same page, rendered once.
PAGE_ATTRIBUTE = "_instrumented_technical_html"
#: Smaller renderings tried in turn when a page is too big to store; the last has no local variables.
SMALLER: tuple[dict[str, Any], ...] = (
    {"max_frames": 20, "max_vars": 15, "max_var_chars": 300},
    {"max_frames": 10, "max_vars": 0},
)


def _is_anonymous(request: HttpRequest | None) -> bool:
    """No authenticated user (or none that can be loaded): anyone on the internet can send such requests."""
    user = get_user(request) if request is not None else None
    return not bool(getattr(user, "is_authenticated", False))


def technical_page(request: HttpRequest | None, exc_info: ExcInfo) -> bytes | None:
    """The technical page, packed for memcached; re-rendered smaller when too big; None when it never fits.

    When the first rendering is far over the limit (twice), only the smallest one is tried after it.

    Not the page frame (``pages.render_page``), on purpose: this is Django's technical 500 page as the bounded
    reporter renders it (its own HTML and styles, no template of ours), stored and later shown sandboxed; and it
    runs inside the request that failed, where the frame's admin context, URL reversing, user and session may
    be what broke. errors/views.py serves it under its own CSP (the live page LIVE_TECHNICAL_CSP, the stored one
    ``sandbox``), not the frame's.
    """
    html = BoundedExceptionReporter(request, *exc_info).get_traceback_html()
    if request is not None:
        try:
            setattr(request, PAGE_ATTRIBUTE, html)
        except Exception:  # noqa: BLE001 - the live page is rendered again instead
            pass
    packed = pack({"html": html})
    retries = SMALLER if len(packed) <= 2 * MAX_VALUE_BYTES else SMALLER[-1:]
    for limits in retries:
        if len(packed) <= MAX_VALUE_BYTES:
            break
        packed = pack({"html": BoundedExceptionReporter(request, *exc_info, **limits).get_traceback_html()})
    if len(packed) <= MAX_VALUE_BYTES:
        return packed
    failures.record("technical page too large to store", None)
    return None


def _frame_lines(top: traceback.TracebackException) -> tuple[set[str], set[str]]:
    """The lines of every frame of ``top`` and of the exceptions chained to it: the ``File "…", line N, in f``
    headers, and the source and caret lines under them."""
    headers: set[str] = set()
    code: set[str] = set()
    seen: set[int] = set()
    pending = [top]
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        for chunk in exc.stack.format():
            first, *rest = chunk.splitlines(keepends=True) or [""]
            headers.add(first)
            code.update(rest)
        pending.extend(e for e in (exc.__cause__, exc.__context__, *(getattr(exc, "exceptions", None) or ())) if e)
    return headers, code


def _segments(summary: traceback.TracebackException) -> list[tuple[str, str]]:
    """The traceback's text as runs of lines of one kind: ``header`` (a frame's file, line and function),
    ``code`` (its source lines) and ``text`` (messages, notes, the lines between chained exceptions)."""
    headers, code = _frame_lines(summary)
    runs: list[tuple[str, list[str]]] = []
    for chunk in summary.format():  # a frame, a message, or one line of them (Python 3.11+)
        for line in chunk.splitlines(keepends=True):
            kind = "header" if line in headers else "code" if line in code else "text"
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(line)
            else:
                runs.append((kind, [line]))
    return [(kind, "".join(lines)) for kind, lines in runs]


def _mask(kind: str, text: str, masker: Masker) -> str:
    """One run of :func:`_segments` masked as what it is (see :func:`plain_traceback`)."""
    return text if kind == "header" else masker.code(text) if kind == "code" else masker.text(text)


def _masked(segments: list[tuple[str, str]], masker: Masker, limit: int, from_end: bool) -> str:
    """Up to ``limit`` characters of the traceback from its start (or end), each run masked as what it is: a
    frame's file, line and function never, its source lines only for the settings' secrets, the rest whole."""
    parts: list[str] = []
    left = limit
    for kind, text in reversed(segments) if from_end else segments:
        if left <= 0:
            break
        if kind == "text" and len(text) > left:
            piece = masker.tail(text, left) if from_end else masker.head(text, left)[0]
        else:
            piece = _mask(kind, text, masker)
            piece = piece[-left:] if from_end else piece[:left]
        parts.append(piece)
        left -= len(piece)
    return "".join(reversed(parts) if from_end else parts)


def plain_traceback(exc_info: ExcInfo, masker: Masker) -> str:
    """Python's own traceback text (no locals), masked, bounded: the head and the tail when it is very long.

    A request's secret-named value is masked in messages, never in a frame's file name, line number or
    function, nor in its source lines (only the settings' secrets are): whoever sends a request must not be
    able to blank the evidence (issue 17)."""
    segments = _segments(traceback.TracebackException(exc_info[0], exc_info[1], exc_info[2]))
    total = sum(len(text) for _kind, text in segments)
    if total <= MAX_TEXT_CHARS:
        return "".join(_mask(kind, text, masker) for kind, text in segments)
    half = MAX_TEXT_CHARS // 2
    head, tail = _masked(segments, masker, half, False), _masked(segments, masker, half, True)
    return f"{head}\n[... {total - MAX_TEXT_CHARS} characters omitted ...]\n{tail}"


def capture(request: HttpRequest | None, exc_info: ExcInfo | None = None, *, view: str = "") -> str:
    """Give the exception being handled a reference, note it on the request and probe, store it; never raises.

    ``view`` names work that is not a request (``task:…``, ``command:…``, :func:`instrumented.record`).
    """
    ref = new_reference()
    with fail_open("capturing an error failed"):  # capturing must never turn one error into two
        if request is not None:
            setattr(request, REQUEST_ATTRIBUTE, ref)
        probe = current_probe.get()
        if probe is not None:
            probe.error_reference = ref
        if exc_info is None:
            current = sys.exc_info()
            if current[0] is None or current[1] is None:
                return ref
            exc_info = (current[0], current[1], current[2])
        config = get_config()
        if config.enabled:
            with paused():  # loading the user and rendering the page run queries: ours, not the failing view's
                _store(get_store(), config, ref, request, exc_info, view)
    return ref


def _store(
    store: Store, config: Config, ref: str, request: HttpRequest | None, exc_info: ExcInfo, view: str = ""
) -> None:
    """Render the page (budget permitting), then write the metadata and text, the page, the index entry."""
    if not store.available:
        return
    anonymous = _is_anonymous(request)
    if not store_budget.take(STORED_ERRORS_PER_MINUTE, anonymous=anonymous):
        failures.record("more errors than are stored per minute", None)
        return
    now = time.time()
    exc_type, exc_value = exc_info[0], exc_info[1]
    try:
        message = str(exc_value)
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises
        message = "<unprintable exception message>"
    masker = masker_for(request)  # the request's own secrets too: masked in the data, before anything is stored
    meta: dict[str, Any] = {
        "ref": ref,
        "time": now,
        **_describe_request(request),
        "exception": class_name(exc_type),
        # Never masked: it is the group's key, and where the code raised is no request's secret (issue 17).
        "location": raising_location(exc_info[2]),
        "message": masker.head(message, MAX_MESSAGE_CHARS)[0],
        "text": plain_traceback(exc_info, masker),
        "page": False,
    }
    meta["path"] = masker.head(meta["path"], MAX_PATH_CHARS)[0]
    if view:
        meta["view"] = view[:200]
    page: bytes | None = None
    if page_budget.take(config.error_pages_per_minute, anonymous=anonymous):
        with fail_open("rendering a technical page failed"):  # optional: metadata and text are still stored
            page = technical_page(request, exc_info)
    meta["page"] = page is not None
    # Which request fields' values were masked (the pages say so: a mask is evidence too).
    meta["masked_fields"] = sorted(masker.masked)
    # Metadata first: when memcached is down this is the only call that waits for it.
    keys = config.keys
    if not store.set(keys.error_meta(ref), pack(meta)):
        return
    if page is not None:
        store.set(keys.error_page(ref), page)
    _index(store, keys.error_index(int(now // ERROR_INDEX_SECONDS)), ref)


def _index(store: Store, key: str, ref: str) -> None:
    """Append `` ref`` to the minute's index: append, else add, else (someone added it meanwhile) append."""
    entry = f" {ref}".encode()
    if store.append(key, entry):
        return
    ttl = store.ttl + ERROR_INDEX_SECONDS
    if store.add(key, entry, ttl) is False:
        store.append(key, entry)


def on_got_request_exception(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: capture the exception being handled."""
    capture(request)


def connect_receivers() -> None:
    """Connect the capture receiver (called from ``InstrumentedConfig.ready``); idempotent."""
    got_request_exception.connect(on_got_request_exception, dispatch_uid="instrumented.errors.capture")
