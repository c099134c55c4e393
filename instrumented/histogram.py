"""A mergeable log-bucket latency histogram (DDSketch-like) with bounded relative error."""

from __future__ import annotations

import math
from collections.abc import Iterable

#: Relative accuracy of every percentile estimate (1%; the design asks for <= 2%).
RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def bin_index(value_us: float) -> int:
    """Index of the log-scale bin holding ``value_us`` (values below 1 µs share bin 0)."""
    if value_us <= 1.0:
        return 0
    return math.ceil(math.log(value_us) / _LOG_GAMMA)


def bin_value(index: int) -> float:
    """Representative value of a bin: within RELATIVE_ACCURACY of every value it holds."""
    if index <= 0:
        return 1.0
    return 2.0 * _GAMMA**index / (_GAMMA + 1.0)


def add(bins: dict[int, int], value_us: float) -> None:
    """Count one value into ``bins`` (a plain dict, so it serialises and merges trivially)."""
    index = bin_index(value_us)
    bins[index] = bins.get(index, 0) + 1


def merge(into: dict[int, int], other: dict[int, int]) -> None:
    """Add ``other``'s counts to ``into``."""
    for index, count in other.items():
        into[index] = into.get(index, 0) + count


def quantiles(bins: dict[int, int], qs: Iterable[float]) -> list[float]:
    """Estimates of the ``qs`` quantiles (0..1), in µs; 0.0 when empty."""
    wanted = list(qs)
    total = sum(bins.values())
    if total == 0:
        return [0.0 for _ in wanted]
    ordered = sorted(bins.items())
    results: list[float] = []
    for q in wanted:
        rank = q * (total - 1)
        seen = 0
        value = bin_value(ordered[-1][0])
        for index, count in ordered:
            seen += count
            if seen > rank:
                value = bin_value(index)
                break
        results.append(value)
    return results


def encode(bins: dict[int, int]) -> list[int]:
    """Flat ``[index, count, index, count, ...]`` list for JSON."""
    flat: list[int] = []
    for index, count in bins.items():
        flat.append(index)
        flat.append(count)
    return flat


def decode(flat: list[int]) -> dict[int, int]:
    """Inverse of :func:`encode`; ignores malformed trailing data."""
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
