"""A mergeable log-bucket latency histogram (DDSketch-like) with bounded relative error.

Writers count into a sparse dict; snapshots carry a dense slice packed as ``"offset:base64"``;
readers merge those slices into one fixed-size list with C-level ``map`` additions, which keeps
parsing and merging thousands of per-process histograms cheap.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from operator import add as _add

#: Relative accuracy of every percentile estimate (the design asks for <= 2%).
RELATIVE_ACCURACY = 0.02
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
#: Bins cover 1 µs .. ~3 hours; larger values share the last bin.
SIZE = math.ceil(math.log(1e10) / _LOG_GAMMA) + 1


def bin_index(value_us: float) -> int:
    """Index of the log-scale bin holding ``value_us`` (values below 1 µs share bin 0)."""
    if value_us <= 1.0:
        return 0
    index = math.ceil(math.log(value_us) / _LOG_GAMMA)
    return index if index < SIZE else SIZE - 1  # not min(): a builtin call parses its arguments (~0.1 µs)


def bin_value(index: int) -> float:
    """Representative value of a bin: within RELATIVE_ACCURACY of every value it holds."""
    if index <= 0:
        return 1.0
    return 2.0 * _GAMMA**index / (_GAMMA + 1.0)


def add(bins: dict[int, int], value_us: float) -> None:
    """Count one value into a writer's sparse ``bins``."""
    index = bin_index(value_us)
    bins[index] = bins.get(index, 0) + 1


def _pack(offset: int, counts: list[int]) -> str:
    """``"offset:base64(uint32 little-endian counts)"``: one JSON string parses far faster than a list of ints."""
    packed = array("I", (min(c, 0xFFFFFFFF) for c in counts))
    if sys.byteorder != "little":
        packed.byteswap()
    return f"{offset}:{base64.b64encode(packed.tobytes()).decode('ascii')}"


def encode(bins: dict[int, int]) -> str:
    """A writer's sparse dict as a packed dense slice (empty string when empty)."""
    if not bins:
        return ""
    low, high = min(bins), max(bins)
    return _pack(low, [bins.get(i, 0) for i in range(low, high + 1)])


def encode_dense(dense: list[int]) -> str:
    """A reader's dense list as a packed slice trimmed of empty ends."""
    low = next((i for i, count in enumerate(dense) if count), None)
    if low is None:
        return ""
    high = len(dense) - next(i for i, count in enumerate(reversed(dense)) if count)
    return _pack(low, dense[low:high])


def new() -> list[int]:
    """An empty dense histogram for a reader."""
    return [0] * SIZE


def merge_encoded(into: list[int], encoded: str) -> None:
    """Add a packed slice to a dense histogram; malformed slices are ignored."""
    decoded = decode(encoded)
    if decoded is None:
        return
    offset, counts = decoded
    end = offset + len(counts)
    into[offset:end] = map(_add, into[offset:end], counts)


def merge(into: list[int], other: list[int]) -> None:
    """Add one dense histogram to another."""
    into[:] = map(_add, into, other)


def quantiles(dense: list[int], qs: Iterable[float]) -> list[float]:
    """Estimates of the ``qs`` quantiles (0..1) of a dense histogram, in µs; 0.0 when empty.

    Nearest rank: the bin of the ``ceil(q * n)``-th smallest value, so a percentile is always one of the
    values counted (within RELATIVE_ACCURACY): the p95 of 3 requests is the slowest of them, never the middle one.
    """
    wanted = list(qs)
    cumulative = list(accumulate(dense))
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return [0.0 for _ in wanted]
    return [bin_value(bisect_left(cumulative, max(math.ceil(q * total - 1e-9), 1))) for q in wanted]


def dense(bins: dict[int, int]) -> list[int]:
    """A writer's sparse dict as a reader's dense list (tests and tools)."""
    result = new()
    merge_encoded(result, encode(bins))
    return result


def decode(encoded: str) -> tuple[int, array] | None:
    """A packed slice as (offset, counts); None when malformed or out of range."""
    if not encoded:
        return None
    try:
        offset_text, _, data = encoded.partition(":")
        offset = int(offset_text)
        counts = array("I")
        counts.frombytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None
    if sys.byteorder != "little":
        counts.byteswap()
    if offset < 0 or offset + len(counts) > SIZE:
        return None
    return offset, counts


def pack_columns(encoded: Iterable[str]) -> tuple[bytes, list[int], list[int]]:
    """Many packed slices as one blob of uint32 little-endian counts plus each slice's offset and length
    (a roll-up's histograms: stored beside its JSON, not in it, so a reader neither scans nor base64-decodes
    them, measured as half the parse time of a roll-up)."""
    parts: list[array] = []
    offsets: list[int] = []
    lengths: list[int] = []
    for slice_ in encoded:
        decoded = decode(slice_)
        if decoded is None:
            offsets.append(0)
            lengths.append(0)
            continue
        offsets.append(decoded[0])
        lengths.append(len(decoded[1]))
        parts.append(decoded[1])
    blob = array("I")
    for part in parts:
        blob.extend(part)
    if sys.byteorder != "little":
        blob.byteswap()
    return blob.tobytes(), offsets, lengths


def narrow(blob: bytes) -> tuple[int, bytes]:
    """A :func:`pack_columns` blob in the fewest bytes per count that hold its largest (1, 2 or 4), and that
    width: most counts of a process's window are small, and a reader inflates every byte."""
    counts = array("I", blob)
    if sys.byteorder != "little":
        counts.byteswap()
    top = max(counts, default=0)
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4
    if width == 4:
        return width, blob
    out = bytearray(len(blob) // 4 * width)
    for k in range(width):
        out[k::width] = blob[k::4]
    return width, bytes(out)


def widen(data: bytes, width: int) -> bytes:
    """Inverse of :func:`narrow`: uint32 little-endian counts again (ValueError for a width it does not make)."""
    if width == 4:
        return data
    if width not in (1, 2) or len(data) % width:
        raise ValueError("histogram width")
    out = bytearray(len(data) // width * 4)
    for k in range(width):
        out[k::4] = data[k::width]
    return bytes(out)


def settle_wide(into: list[int], wide: int) -> None:
    """Add a wide integer (a sum of slices read as wide integers, rollup.py) into a dense histogram."""
    if wide <= 0:
        return
    if wide.bit_length() > 32 * SIZE:
        wide &= (1 << (32 * SIZE)) - 1
    counts = array("I")
    counts.frombytes(wide.to_bytes(4 * SIZE, "little"))
    if sys.byteorder != "little":
        counts.byteswap()
    into[:] = map(_add, into, counts) if any(into) else counts
