"""Percentiles and medians."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["median", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")
