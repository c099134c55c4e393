"""The built-in sampling profiler: a thread that reads one request's stack every interval, only while it runs.

Each sample is the time since the previous one, given to the stack found now (so a sample the GIL
delayed still counts its real time). Stacks are taken below an *anchor* frame (the profiler's own
call in the middleware), so the tree starts at the request and not at the server's loop. Two cases
follow the request where it goes:

* an async view under WSGI runs in an event loop that asgiref starts in another thread; while the
  request's thread waits for it (``CurrentThreadExecutor.run_until_future``), the loop thread's stack is
  taken instead, from asgiref's ``main_wrap`` down;
* under ASGI the request is a task among others in the loop's thread: a sample counts for this request
  only when the anchor (the middleware's coroutine frame) is on the stack, else it is ``(await)`` time.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import CodeType, FrameType
from typing import Any

from .tree import AWAIT, Frame, Node, add_stack

#: asgiref's functions the sampler recognises (by code name and file), see the module docstring.
_ASGIREF_FILES = ("asgiref/current_thread_executor.py", "asgiref/sync.py")


#: The profiler's own code below the anchor (starting, stopping): never a sample of the request.
_OWN_FILE = os.path.join("instrumented", "profiling", "runner.py")

#: Profiles running in this process, and the switch interval to put back when the last one ends.
_switch_lock = threading.Lock()
_running = 0
_saved_switch = 0.005


def _shorten_switch_interval(interval: float) -> None:
    global _running, _saved_switch
    with _switch_lock:
        if _running == 0:
            _saved_switch = sys.getswitchinterval()
        _running += 1
        sys.setswitchinterval(min(_saved_switch, interval))


def _restore_switch_interval() -> None:
    global _running
    with _switch_lock:
        _running -= 1
        if _running == 0:
            sys.setswitchinterval(_saved_switch)


def _frame_of(code: CodeType, memo: dict[CodeType, Frame]) -> Frame:
    frame = memo.get(code)
    if frame is None:
        frame = memo[code] = (getattr(code, "co_qualname", code.co_name), code.co_filename, code.co_firstlineno)
    return frame


class Sampler:
    """Samples one thread's stack below ``anchor`` every ``interval`` seconds, for at most ``max_seconds``."""

    def __init__(self, anchor: FrameType, interval: float, max_seconds: float, *, in_loop: bool = False) -> None:
        self.anchor = anchor
        self.thread_id = threading.get_ident()
        self.interval = interval
        self.max_seconds = max_seconds
        #: Under ASGI: samples without the anchor on the loop thread's stack are the request awaiting.
        self.in_loop = in_loop
        self.root = Node(("(request)", "", 0))
        self.samples = 0
        self.truncated: str | None = None
        self.error: BaseException | None = None
        self._memo: dict[CodeType, Frame] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="instrumented-profiler", daemon=True)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._started = self._last
        # A thread holding the GIL keeps it for the switch interval (5 ms) before another may run: shorten it
        # while the profile runs, or a busy request would be sampled every 5 ms at best, late.
        _shorten_switch_interval(self.interval)
        try:
            self._thread.start()
        except BaseException:
            _restore_switch_interval()
            raise

    def stop(self) -> Node:
        """End sampling (the thread is joined: it exists only while a profile runs); the tree so far."""
        if self._stop.is_set():
            return self.root
        self._stop.set()
        self._thread.join()
        _restore_switch_interval()
        return self.root

    def _run(self) -> None:
        self._last = time.perf_counter()  # the thread's start-up is the profiler's time, not the request's
        try:
            while not self._stop.wait(self.interval):
                self._sample()
                if self._last - self._started > self.max_seconds:
                    self.truncated = f"stopped after {self.max_seconds:g} s (PROFILE_MAX_SECONDS)"
                    return
        except Exception as exc:  # noqa: BLE001 - a sampler that fails leaves the request alone
            self.error = exc

    def _sample(self) -> None:
        now = time.perf_counter()
        us = int((now - self._last) * 1_000_000)
        self._last = now
        frame = sys._current_frames().get(self.thread_id)
        if self._stop.is_set():  # read while the request's thread stops us: its stack is the profiler's own
            return
        stack = self._stack(frame) if frame is not None else None
        if stack is None:
            return
        self.samples += 1
        add_stack(self.root, stack, us)

    def _stack(self, leaf: FrameType) -> list[Frame] | None:
        """The frames below the anchor, outermost first; ``[AWAIT]`` when the request is not running."""
        codes: list[CodeType] = []
        frame: FrameType | None = leaf
        anchor = self.anchor
        waiting_at = -1
        while frame is not None and frame is not anchor:
            code = frame.f_code
            if waiting_at < 0 and code.co_name == "run_until_future" and code.co_filename.endswith(_ASGIREF_FILES[0]):
                waiting_at = len(codes)
            codes.append(code)
            frame = frame.f_back
        if frame is None:  # the anchor is not on this stack
            return [AWAIT] if self.in_loop else None
        if codes and codes[-1].co_filename.endswith(_OWN_FILE):  # the request is still starting this profiler
            return None
        memo = self._memo
        if waiting_at == 0 or (waiting_at > 0 and codes[waiting_at - 1].co_name != "run"):
            # The request's thread waits for asgiref's event loop thread: sample that one under this frame.
            outer = [_frame_of(c, memo) for c in reversed(codes[waiting_at:])]
            return outer + self._loop_stack()
        return [_frame_of(c, memo) for c in reversed(codes)]

    def _loop_stack(self) -> list[Frame]:
        """The stack of the event loop asgiref runs for this thread, from ``main_wrap`` down; else ``(await)``."""
        try:
            from asgiref.sync import AsyncToSync

            loops = [
                loop
                for loop, executor in list(AsyncToSync.loop_thread_executors.items())
                if getattr(getattr(executor, "_work_thread", None), "ident", None) == self.thread_id
            ]
        except Exception:  # noqa: BLE001 - another asgiref: the wait shows as it is
            return [AWAIT]
        frames = sys._current_frames()
        for loop in loops:
            leaf = frames.get(getattr(loop, "_thread_id", None) or -1)
            codes: list[CodeType] = []
            frame: Any = leaf
            while frame is not None:
                code = frame.f_code
                codes.append(code)
                if code.co_name == "main_wrap" and code.co_filename.endswith(_ASGIREF_FILES[1]):
                    return [_frame_of(c, self._memo) for c in reversed(codes)]
                frame = frame.f_back
        return [AWAIT]
