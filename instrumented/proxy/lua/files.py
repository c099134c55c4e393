"""The files a script may open (its log): never through a link, only the proxy's own regular file, made 0600.

Lua 5.1's ``io.open`` is C's ``fopen``: it follows a symbolic link planted at the log's name (after a rotation,
say) and leaves the descriptor to child processes. So the host opens the file itself (``O_NOFOLLOW``,
``O_CLOEXEC``, ``O_NONBLOCK`` so that a FIFO cannot block the event loop), checks with ``fstat`` what it got (a
regular file owned by the proxy's user, with one link), and lends Lua exactly that file: ``fopen`` reopens the
open descriptor through ``/proc/self/fd/N``, not the name, so a link planted in between changes nothing.
"""

from __future__ import annotations

import errno
import os
import stat

#: Where an open descriptor can be reopened by name (Linux; the BSDs and macOS have /dev/fd).
FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


class RefusedFile(OSError):
    """The file at the name is not one the proxy may write (a link, another user's, not a regular file)."""


def _flags(mode: str) -> int:
    """``open(2)`` flags for an ``fopen`` mode, without truncation (``fopen`` truncates, after the checks)."""
    access = os.O_RDWR if "+" in mode else os.O_RDONLY if mode[:1] == "r" else os.O_WRONLY
    if mode[:1] == "r":
        return access
    if mode[:1] == "w":
        return access | os.O_CREAT
    if mode[:1] == "a":
        return access | os.O_CREAT | os.O_APPEND
    raise ValueError(f"invalid mode {mode!r}")


def refusal(st: os.stat_result, euid: int) -> str | None:
    """Why an opened file must not be used, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != euid:
        return f"it is owned by uid {st.st_uid}, not by the proxy's user (uid {euid})"
    if st.st_nlink != 1:
        return f"it has {st.st_nlink} names (a hard link)"
    return None


def open_checked(path: str, mode: str) -> tuple[str, int]:
    """Open ``path`` for ``io.open(path, mode)``: the name Lua reopens the checked file by, and its descriptor
    (close it once Lua has its own). A new file is created ``0600``: it holds every statement's literals.

    Raises ``RefusedFile`` with the reason, ``OSError`` as ``open`` does, ``ValueError`` for a bad mode.
    """
    flags = _flags(mode) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: FreeBSD's answer to O_NOFOLLOW on a link
            message = f"refused: {path} is a symbolic link (the log directory must be private)"
            raise RefusedFile(exc.errno, message) from None
        raise
    try:
        why = refusal(os.fstat(fd), os.geteuid())
    except OSError:
        os.close(fd)
        raise
    if why is not None:
        os.close(fd)
        raise RefusedFile(errno.EPERM, f"refused: {path}: {why} (the log directory must be private)")
    return f"{FD_DIR}/{fd}", fd


def shared_directory(path: str) -> str | None:
    """A warning when others may write in the file's directory (and so plant a link or a file at its name)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)
    except OSError:
        return None
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"the directory of {path} is writable by other users: they can stop the log (a link or another"
                " file at its name is refused); make it private")  # fmt: skip
    return None
