"""The process index, writer and reader side in one place: which processes wrote which buckets, which flushed
lately, and this process's flush generation.

- ``<prefix>:<bucket>:procs`` (keys.bucket_index): each process that wrote a bucket, once, space-separated
  (``add``, else ``append``): :func:`register` writes it, :func:`writers` reads it back.
- ``<prefix>:live:<slot>`` (keys.live, ``slot`` = unix time // FLUSH_INTERVAL): the processes that flushed in
  one flush interval (:func:`announce`); readers count the last few slots (:func:`live_keys`, :func:`live`).
- :data:`generation`: bumped by every flush of this process (:func:`bump`); a reader's shared merge older than
  a local flush is not used.

Everything read back is bounded: a forged index could list millions of processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..keys import Keys
from ..memcached import Store

#: Processes one read asks memcached about (a forged index could list millions); the rest are skipped.
MAX_PROCESSES_PER_READ = 2000
#: Bytes of one live-slot list read back.
MAX_LIVE_BYTES = 65536
#: Flush slots a reader counts as live (the current one and the two before it).
LIVE_SLOTS = 3

#: Bumped by every flush of this process: a reader's cached document older than a local flush is not used.
generation = 0


def bump() -> None:
    """One more flush of this process (the flusher calls it first thing)."""
    global generation
    generation += 1


def register(store: Store, keys: Keys, bucket: int, process_id: str) -> bool:
    """Add ``process_id`` to ``bucket``'s index (``add``, else ``append``); False when memcached did not take it."""
    entry = f"{process_id} ".encode()
    added = store.add(keys.bucket_index(bucket), entry)
    if added is None:
        return False
    return bool(added) or store.append(keys.bucket_index(bucket), entry)


def register_write(registered: set[int], store: Store, keys: Keys, bucket: int, process_id: str, *, late: bool) -> bool:
    """After a write of ``bucket``: register the writer once (``registered``: the buckets it is in), and again
    for each write made after the bucket ended (``late``): a merged history of the bucket that was read before
    then holds a shorter index, so readers and mergers see that it lacks this write (history.py)."""
    if bucket in registered and not late:
        return True
    if not register(store, keys, bucket, process_id):
        return False
    registered.add(bucket)
    if len(registered) > 64:
        registered.intersection_update({b for b in registered if b >= bucket - 40})
    return True


def announce(store: Store, keys: Keys, slot: int, process_id: str, interval: float) -> bool:
    """Add ``process_id`` to flush slot ``slot``'s list (kept three intervals); False when it was not written."""
    key, entry = keys.live(slot), f"{process_id} ".encode()
    added = store.add(key, entry, int(3 * interval) + 2)
    return bool(added) or (added is False and store.append(key, entry))


def live_keys(keys: Keys, now: float, interval: float, slots: int = LIVE_SLOTS) -> list[str]:
    """The live-slot keys a reader asks for at ``now`` (the last ``slots`` flush intervals)."""
    slot = int(now // interval)
    return [keys.live(s) for s in range(slot - slots + 1, slot + 1)]


def live(values: dict[str, bytes], wanted: list[str]) -> set[str]:
    """The processes listed in the live slots ``wanted`` (keys of ``values``), each list read up to MAX_LIVE_BYTES."""
    found: set[str] = set()
    for key in wanted:
        found.update((values.get(key) or b"")[:MAX_LIVE_BYTES].decode("ascii", "replace").split())
    return found


@dataclass(slots=True)
class Writers:
    """Which processes wrote which buckets (each process's buckets oldest first), and what reading it cost."""

    buckets: dict[str, list[int]] = field(default_factory=dict)
    #: Index bytes read (a reader's byte budget pays for them).
    bytes_read: int = 0
    #: Processes past MAX_PROCESSES_PER_READ, not read.
    skipped: int = 0

    def oldest(self) -> int | None:
        """The oldest bucket any process wrote (None when none did)."""
        return min((b for found in self.buckets.values() for b in found), default=None)


def writers(values: dict[str, bytes], keys: Keys, buckets: list[int], max_bytes: int) -> Writers:
    """Which processes wrote which of ``buckets``, from their indexes in ``values`` (at most ``max_bytes`` of
    index read, at most MAX_PROCESSES_PER_READ processes)."""
    found = Writers()
    wanted = found.buckets
    for bucket in buckets:
        raw = values.get(keys.bucket_index(bucket))
        if not raw:
            continue
        found.bytes_read += len(raw)
        for process_id in raw[: max(max_bytes - found.bytes_read, 0)].decode("ascii", "replace").split():
            if process_id not in wanted and len(wanted) >= MAX_PROCESSES_PER_READ:
                found.skipped += 1
                continue
            process_buckets = wanted.setdefault(process_id, [])
            if bucket not in process_buckets:
                process_buckets.append(bucket)
    return found


def pairs(values: dict[str, bytes], keys: Keys, buckets: list[int]) -> list[tuple[int, str]]:
    """(bucket, process) pairs of ``buckets`` from their indexes (each index cut at 64 KiB, at most four times
    MAX_PROCESSES_PER_READ pairs): a read that fetches one value per bucket and process (samples)."""
    found: list[tuple[int, str]] = []
    for bucket in buckets:
        raw = (values.get(keys.bucket_index(bucket)) or b"")[: 64 * 1024]
        for process_id in dict.fromkeys(raw.decode("ascii", "replace").split()):
            if len(found) < MAX_PROCESSES_PER_READ * 4:
                found.append((bucket, process_id))
    return found
