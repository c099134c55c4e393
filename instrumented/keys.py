"""Every memcached key this package reads or writes, and the process ids inside them.

Changing the key scheme means editing this file only. Keys are ASCII, far below memcached's 250 bytes,
and never contain user input unhashed; the prefix carries the schema version, so processes of an old
and a new release never read each other's values.

``<prefix><version>:<bucket>:<process>``   one process's aggregate of one bucket
``<prefix><version>:<bucket>:procs``       the processes that wrote a bucket (``add``, then ``append``)
``<prefix><version>:roll:<process>``       one process's whole-window roll-up, columnar (what readers read first)
``<prefix><version>:ser:<process>``        its per-view series of the finished buckets, one section per view
``<prefix><version>:mark:<process>``       on every server: it still holds what this process wrote
``<prefix><version>:live:<slot>``          the processes that flushed in one flush interval (``processes_live``)
``<prefix><version>:hist:<bucket>``        every process's aggregate of one finished bucket, merged once (history)
``<prefix><version>:hist<level>:<bucket>``  the 2**level buckets from ``bucket`` merged (built from two halves)
``<prefix><version>:hist:<bucket>:ok``     the length of the bucket's index that merge holds (merged is current)
``<prefix><version>:hist:<bucket>:<length>:claim``  who merges the bucket at that index length (``add``)
``<prefix><version>:smp:<bucket>:<view hash>:<process>``  one process's slowest requests of a view in a bucket
``<prefix><version>:err:<ref>:m`` / ``:p`` an error's metadata and text traceback / its technical page
``<prefix><version>:err:i:<minute>``       the references captured in one minute
``<prefix><version>:err:rl:<user hash>``   error lookups of one user this minute
``<prefix><version>:prof:<ref>``           one stored profile (call tree and the request's totals)
``<prefix><version>:prof:arms``            the views armed for "profile the next N requests"
``<prefix><version>:prof:<arm>:n`` / ``:r`` an arm's claimed profiles (counter) / their references
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from dataclasses import dataclass

#: Bumped whenever the stored format changes, so old and new processes never read each other's values.
SCHEMA_VERSION = 4
#: Seconds covered by one error index key.
ERROR_INDEX_SECONDS = 60
#: Seconds covered by one lookup rate-limit counter.
RATE_LIMIT_SECONDS = 60


#: Ends the id of a process that runs a one-off management command (``manage.py migrate``): readers count
#: such processes apart from the site's workers. ``+`` never occurs in a host name as kept below.
COMMAND_PROCESS_SUFFIX = "+cmd"
#: Set (by the command wrapper) before the process's flusher starts, when the process runs a one-off command.
command_process = False


def make_process_id() -> str:
    """An ASCII id unique to this process across servers and restarts (host, pid, random; a marker for the
    process of a one-off management command)."""
    host = "".join(c for c in socket.gethostname() if c.isascii() and (c.isalnum() or c in "-_."))[:32]
    suffix = COMMAND_PROCESS_SUFFIX if command_process else ""
    return f"{host or 'host'}.{os.getpid()}.{secrets.token_hex(3)}{suffix}"


def is_command_process(process_id: str) -> bool:
    """Whether ``process_id`` is the process of a one-off management command (not one of the site's workers)."""
    return process_id.endswith(COMMAND_PROCESS_SUFFIX)


@dataclass(frozen=True, slots=True)
class Keys:
    """The key scheme under one configured ``KEY_PREFIX``."""

    key_prefix: str

    @property
    def prefix(self) -> str:
        """The configured prefix with the schema version appended."""
        return f"{self.key_prefix}{SCHEMA_VERSION}"

    # -- stats ----------------------------------------------------------------------------------
    def bucket(self, bucket: int, process_id: str) -> str:
        """One process's aggregate for one bucket."""
        return f"{self.prefix}:{bucket}:{process_id}"

    def bucket_index(self, bucket: int) -> str:
        """The space-separated list of processes that wrote a bucket."""
        return f"{self.prefix}:{bucket}:procs"

    def rollup(self, process_id: str) -> str:
        """One process's whole-window aggregate."""
        return f"{self.prefix}:roll:{process_id}"

    def series(self, process_id: str) -> str:
        """One process's per-view series of its finished buckets (read for one view's charts)."""
        return f"{self.prefix}:ser:{process_id}"

    def marker(self, process_id: str) -> str:
        """Written on every server by one process: missing means the server lost its keys (restart, flush_all)."""
        return f"{self.prefix}:mark:{process_id}"

    def live(self, slot: int) -> str:
        """The processes that flushed in one flush interval (``slot`` = unix time // FLUSH_INTERVAL)."""
        return f"{self.prefix}:live:{slot}"

    def history(self, bucket: int) -> str:
        """Every process's aggregate of one finished bucket, merged once by one elected process (history.py)."""
        return f"{self.prefix}:hist:{bucket}"

    def history_block(self, level: int, first: int) -> str:
        """The history of 2**level buckets from ``first`` (a multiple of 2**level); level 0 is :meth:`history`."""
        return f"{self.prefix}:hist{level}:{first}" if level else self.history(first)

    def history_done(self, bucket: int) -> str:
        """The bucket index's length in bytes that the bucket's stored history holds (its processes' writes)."""
        return f"{self.prefix}:hist:{bucket}:ok"

    def history_claim(self, bucket: int, index_length: int) -> str:
        """Taken (``add``) by the one process that merges ``bucket`` as its index stands at ``index_length`` bytes."""
        return f"{self.prefix}:hist:{bucket}:{index_length}:claim"

    def samples(self, bucket: int, view_hash: str, process_id: str) -> str:
        """One process's slowest requests of one view (``view_hash``: samples.view_hash) in one bucket."""
        return f"{self.prefix}:smp:{bucket}:{view_hash}:{process_id}"

    # -- errors ---------------------------------------------------------------------------------
    def error_meta(self, ref: str) -> str:
        """An error's metadata and plain-text traceback."""
        return f"{self.prefix}:err:{ref}:m"

    def error_page(self, ref: str) -> str:
        """An error's rendered technical page."""
        return f"{self.prefix}:err:{ref}:p"

    def error_index(self, minute: int) -> str:
        """The references captured in one minute (``minute`` = unix time // ERROR_INDEX_SECONDS)."""
        return f"{self.prefix}:err:i:{minute}"

    def error_lookups(self, user_pk: object) -> str:
        """The lookup counter of one user (the primary key is hashed: it may be any string)."""
        who = hashlib.sha256(str(user_pk).encode()).hexdigest()[:16]
        return f"{self.prefix}:err:rl:{who}"

    # -- profiles -------------------------------------------------------------------------------
    def profile(self, ref: str) -> str:
        """One stored profile."""
        return f"{self.prefix}:prof:{ref}"

    def profile_arms(self) -> str:
        """The armed views (read by every process at each flush)."""
        return f"{self.prefix}:prof:arms"

    def profile_claims(self, arm: str) -> str:
        """How many profiles processes have stored for one arm (``incr``: the N is for all processes)."""
        return f"{self.prefix}:prof:{arm}:n"

    def profile_refs(self, arm: str) -> str:
        """The references of one arm's profiles, space-separated (``add``, then ``append``)."""
        return f"{self.prefix}:prof:{arm}:r"

    # -- health ---------------------------------------------------------------------------------
    def ping(self) -> str:
        """A key that is never written: reading it tells whether memcached answers."""
        return f"{self.prefix}:ping"
