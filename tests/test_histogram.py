"""The latency histogram: bounded relative error, exact merging."""

import random

from instrumented import histogram


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def test_relative_error_within_two_percent():
    rng = random.Random(7)
    values = [rng.lognormvariate(8, 1.5) for _ in range(20_000)]
    bins: dict[int, int] = {}
    for value in values:
        histogram.add(bins, value)
    for q, estimate in zip((0.5, 0.95, 0.99), histogram.quantiles(bins, (0.5, 0.95, 0.99)), strict=True):
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
    merged: dict[int, int] = {}
    for part in parts:
        histogram.merge(merged, histogram.decode(histogram.encode(part)))
    assert merged == whole


def test_empty_and_tiny_values():
    assert histogram.quantiles({}, (0.5,)) == [0.0]
    bins: dict[int, int] = {}
    histogram.add(bins, 0.0)
    histogram.add(bins, 0.5)
    assert histogram.quantiles(bins, (0.99,)) == [1.0]


def test_decode_ignores_malformed_tail():
    assert histogram.decode([1, 2, 3]) == {1: 2}
