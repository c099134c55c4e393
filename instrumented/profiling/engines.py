"""The two profilers behind one small interface: pyinstrument (the ``[profile]`` extra) and the built-in sampler.

Either is started in the middleware's frame (the *anchor*) and stopped when the response is complete;
``stop()`` gives the call tree below the anchor (:class:`.tree.Node`), the sample count and why it is
incomplete, if it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .sampler import Sampler
from .tree import AWAIT, ROOT, Frame, Node, add_stack

#: Django's WSGI handler: the server iterates a streamed body from the frame that called it.
WSGI_HANDLER = os.path.join("django", "core", "handlers", "wsgi.py")


@dataclass(slots=True)
class Result:
    """What a stopped profiler gives."""

    root: Node
    samples: int
    truncated: str | None
    engine: str


def pyinstrument_available() -> bool:
    """Whether the ``[profile]`` extra (pyinstrument) is installed."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        return False
    return True


class BuiltinSession:
    """The built-in sampler (a thread reading ``sys._current_frames()``), which exists only while it runs."""

    engine = "builtin"

    def __init__(self, anchor: FrameType, interval: float, max_seconds: float, in_loop: bool) -> None:
        self.sampler = Sampler(anchor, interval, max_seconds, in_loop=in_loop)
        self.sampler.start()

    def follow_body(self, frame: FrameType | None) -> None:
        """A streamed body is iterated by the server after the view returned: sample below the server's frame."""
        while frame is not None:
            code = frame.f_code
            if code.co_name == "__call__" and code.co_filename.endswith(WSGI_HANDLER):
                if frame.f_back is not None:
                    self.sampler.anchor = frame.f_back
                return
            frame = frame.f_back

    def stop(self) -> Result:
        root = self.sampler.stop()
        if self.sampler.error is not None:
            raise self.sampler.error
        return Result(root, self.sampler.samples, self.sampler.truncated, self.engine)


class PyinstrumentSession:
    """pyinstrument's profiler (its C sampler, and its async mode under ASGI), records kept for ``max_seconds``."""

    engine = "pyinstrument"

    def __init__(self, anchor: FrameType, interval: float, max_seconds: float, in_loop: bool) -> None:
        from pyinstrument import Profiler

        outer = self

        class Capped(Profiler):
            """Stops recording (not sampling: that belongs to the thread that started it) after ``max_seconds``."""

            def _sampler_saw_call_stack(self, call_stack: Any, time_since_last_sample: float, async_state: Any) -> None:
                outer.elapsed += time_since_last_sample
                if outer.elapsed > max_seconds:
                    outer.truncated = f"stopped after {max_seconds:g} s (PROFILE_MAX_SECONDS)"
                    return
                super()._sampler_saw_call_stack(call_stack, time_since_last_sample, async_state)

        self.elapsed = 0.0
        self.in_loop = in_loop
        self.truncated: str | None = None
        self.profiler = Capped(interval=interval, async_mode="enabled" if in_loop else "disabled")
        self.profiler.start(caller_frame=anchor)

    def follow_body(self, frame: FrameType | None) -> None:
        """pyinstrument samples this thread whatever runs: a streamed body's samples are kept below the server."""

    def stop(self) -> Result:
        from pyinstrument.frame_info import frame_info_get_identifier

        session = self.profiler.stop()
        start = [frame_info_get_identifier(info) for info in session.start_call_stack]
        root = Node(ROOT)
        memo: dict[str, Frame] = {}
        for stack, seconds in session.frame_records:
            ids = [frame_info_get_identifier(info) for info in stack]
            common = 0  # below the frame that started it (a streamed body: below what it shares with it)
            for mine, theirs in zip(ids, start, strict=False):
                if mine != theirs:
                    break
                common += 1
            if self.in_loop and common < len(start):  # the loop ran something else, or nothing: this task waited
                frames = [AWAIT]
            else:
                frames = [_frame(i, memo) for i in ids[common:]]
            add_stack(root, frames, int(seconds * 1_000_000))
        return Result(root, len(session.frame_records), self.truncated, self.engine)


def _frame(identifier: str, memo: dict[str, Frame]) -> Frame:
    """pyinstrument's ``function\\0file\\0line`` identifier as a frame; its ``[await]`` as ours."""
    frame = memo.get(identifier)
    if frame is None:
        if identifier == "[await]":
            frame = AWAIT
        else:
            parts = identifier.split("\x00")
            line = parts[2] if len(parts) > 2 else ""
            frame = (parts[0], parts[1] if len(parts) > 1 else "", int(line) if line.isdigit() else 0)
        memo[identifier] = frame
    return frame


def start(engine: str, anchor: FrameType, interval: float, max_seconds: float, in_loop: bool) -> Any:
    """A running profiler of the chosen kind ("pyinstrument" or "builtin")."""
    kind = PyinstrumentSession if engine == "pyinstrument" else BuiltinSession
    return kind(anchor, interval, max_seconds, in_loop)
