"""Merging the C load generators' reports (W4, W5): pure, tested with plain values.

Each ``wsgen`` process ends with one JSON report (see ``bench/loadgen/c/wsgen.c``):
counters (numbers), tallies by key (``{"503": 2}``) and histograms as sorted
``[[value, count], ...]`` pairs (milliseconds, offsets, attempts). Merging sums the
counters and tallies, adds the histograms, and keeps the earliest start and the
latest welcome, so figures over several processes read as one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "HISTOGRAMS",
    "TALLIES",
    "Hist",
    "hist_count",
    "hist_max",
    "hist_quantile",
    "merge_hists",
    "merge_reports",
    "spread",
]

#: A histogram: (value, count) pairs sorted by value.
Hist = list[tuple[int, int]]

#: The report's histograms and tallies; every other number is a counter (summed),
#: except the instants below.
HISTOGRAMS = (
    "open_ms",
    "marker_ms",
    "back_ms",
    "resumed_ms",
    "live_ms",
    "back_attempts",
    "last_offsets",
)
TALLIES = ("connect_errors", "http_status", "close_codes", "error_codes")
_EARLIEST = ("start_ns", "first_welcome_ns")
_LATEST = ("last_welcome_ns", "marker_max_us")


def merge_hists(hists: Iterable[Iterable[Sequence[int]]]) -> Hist:
    """One histogram of several: counts of equal values added, sorted by value."""
    total: Counter[int] = Counter()
    for hist in hists:
        for value, n in hist:
            total[int(value)] += int(n)
    return sorted((v, n) for v, n in total.items() if n)


def hist_count(hist: Hist) -> int:
    """How many values the histogram holds."""
    return sum(n for _, n in hist)


def hist_quantile(hist: Hist, q: float) -> float | None:
    """The ``q``-th percentile (0-100), nearest rank as :func:`bench.stats.percentile`;
    None when empty."""
    total = hist_count(hist)
    if not total:
        return None
    rank = max(0, min(total - 1, round(q / 100 * total + 0.5) - 1))
    seen = 0
    for value, n in hist:
        seen += n
        if seen > rank:
            return float(value)
    return float(hist[-1][0])  # pragma: no cover - rank < total always lands above


def hist_max(hist: Hist) -> int | None:
    """The largest value; None when empty."""
    return hist[-1][0] if hist else None


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The reports of several load-generator processes as one.

    Counters are summed; tallies are summed by key; histograms are merged;
    ``start_ns`` and ``first_welcome_ns`` take the earliest non-zero value,
    ``last_welcome_ns`` and ``marker_max_us`` the largest. ``processes`` says how
    many reports were merged.
    """
    out: dict[str, Any] = {"processes": len(reports)}
    for key in TALLIES:
        tally: Counter[str] = Counter()
        for r in reports:
            tally.update({k: int(v) for k, v in r.get(key, {}).items()})
        out[key] = dict(sorted(tally.items()))
    for key in HISTOGRAMS:
        out[key] = merge_hists(r.get(key, []) for r in reports)
    for key in _EARLIEST:
        values = [int(r[key]) for r in reports if int(r.get(key, 0)) > 0]
        out[key] = min(values) if values else 0
    for key in _LATEST:
        values = [int(r[key]) for r in reports if key in r]
        out[key] = max(values) if values else 0
    skip = {"event", *TALLIES, *HISTOGRAMS, *_EARLIEST, *_LATEST}
    for r in reports:
        for key, value in r.items():
            if key in skip or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            out[key] = out.get(key, 0) + value
    if "cpu_s" in out:
        out["cpu_s"] = round(float(out["cpu_s"]), 3)
    return out


def spread(values: Sequence[int]) -> dict[str, float]:
    """How evenly ``values`` (e.g. sockets per worker) are spread: min, max, and the
    largest one over the mean (1.0: perfectly even)."""
    if not values:
        return {"min": 0, "max": 0, "max_over_mean": 0.0}
    mean = sum(values) / len(values)
    return {
        "min": min(values),
        "max": max(values),
        "max_over_mean": round(max(values) / mean, 3) if mean else 0.0,
    }
