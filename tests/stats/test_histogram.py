"""The latency histogram: bounded relative error, exact merging."""

import math
import random

import pytest

from instrumented.stats import histogram


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def test_relative_error_within_two_percent():
    rng = random.Random(7)
    values = [rng.lognormvariate(8, 1.5) for _ in range(20_000)]
    bins: dict[int, int] = {}
    for value in values:
        histogram.add(bins, value)
    estimates = histogram.quantiles(histogram.dense(bins), (0.5, 0.95, 0.99))
    for q, estimate in zip((0.5, 0.95, 0.99), estimates, strict=True):
        exact = exact_quantile(values, q)
        assert abs(estimate - exact) / exact <= 0.02, (q, estimate, exact)


def test_merge_equals_single_histogram():
    rng = random.Random(3)
    values = [rng.uniform(10, 1e6) for _ in range(5000)]
    whole: dict[int, int] = {}
    parts: list[dict[int, int]] = [{}, {}, {}]
    for i, value in enumerate(values):
        histogram.add(whole, value)
        histogram.add(parts[i % 3], value)
    merged = histogram.new()
    for part in parts:
        histogram.merge_encoded(merged, histogram.encode(part))
    assert merged == histogram.dense(whole)


def test_empty_and_tiny_values():
    assert histogram.quantiles(histogram.new(), (0.5,)) == [0.0]
    bins: dict[int, int] = {}
    histogram.add(bins, 0.0)
    histogram.add(bins, 0.5)
    assert histogram.quantiles(histogram.dense(bins), (0.99,)) == [1.0]
    huge: dict[int, int] = {}
    histogram.add(huge, 1e15)
    assert histogram.encode(huge).startswith(f"{histogram.SIZE - 1}:")


def test_malformed_slices_are_ignored():
    dense = histogram.new()
    histogram.merge_encoded(dense, f"{histogram.SIZE}:AQAAAA==")
    histogram.merge_encoded(dense, "-5:AQAAAA==")
    histogram.merge_encoded(dense, "3")
    histogram.merge_encoded(dense, "3:not base64!")
    histogram.merge_encoded(dense, "x:AQAAAA==")
    histogram.merge_encoded(dense, histogram.encode({3: 1})[:-4])
    assert sum(dense) == 0
    histogram.merge_encoded(dense, histogram.encode({3: 2, 5: 1}))
    assert dense[3:6] == [2, 0, 1]


def test_encode_dense_roundtrip():
    dense = histogram.dense({10: 4, 12: 1})
    again = histogram.new()
    histogram.merge_encoded(again, histogram.encode_dense(dense))
    assert again == dense
    assert histogram.encode_dense(histogram.new()) == ""


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([10_000, 20_000, 300_000], 0.95, 300_000),  # p95 of 3 requests is the slowest
        ([10_000, 20_000, 300_000], 0.99, 300_000),
        ([10_000, 20_000, 300_000], 0.50, 20_000),
        ([10_000, 20_000], 0.50, 10_000),
        ([5_000] * 19 + [900_000], 0.95, 5_000),  # 19 of 20 at or below 5 ms
        ([5_000] * 18 + [900_000] * 2, 0.95, 900_000),
        ([7_000], 0.99, 7_000),
    ],
)
def test_small_samples_nearest_rank(values, q, expected):
    """Nearest rank over the histogram: a percentile of few requests is one of them, within the bins' 2 %."""
    bins: dict[int, int] = {}
    for value in values:
        histogram.add(bins, value)
    (estimate,) = histogram.quantiles(histogram.dense(bins), (q,))
    assert abs(estimate - expected) / expected <= histogram.RELATIVE_ACCURACY, (estimate, expected)
    assert exact_quantile(values, q) == expected
