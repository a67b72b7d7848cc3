"""Metrics, the cheap way: plain counters in the code, Prometheus families built
at scrape time.

The hot paths (fan-out, flushes) never touch prometheus-client objects: they
bump ints and fixed-bucket arrays (:class:`Latency`, :class:`Counts`). Each
component registers a *source* — a function returning the metric families of
its current figures — with the process's :class:`Metrics`, whose
:meth:`~Metrics.expose` renders them with prometheus-client (never by hand).
Every family carries the process's ``role`` and ``node`` labels, so the
series of several cores, bridges and bridge workers stay apart.

Names (README "Operations" lists them all) start with ``clearpath_``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = [
    "CONTENT_TYPE_LATEST",
    "LATENCY_BUCKETS",
    "Counts",
    "Family",
    "Latency",
    "Metrics",
    "Source",
]

#: Seconds: 1 ms to 10 s, three buckets a decade.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip

#: What a source yields: finished prometheus-client metric families.
Family = Metric
Source = Callable[[], Iterable[Metric]]


class Latency:
    """A histogram by fixed buckets, one per label set, updated with plain list
    arithmetic: ``observe`` is a bisect and two increments.

    ``key`` is any hashable label tuple (e.g. ``(path, topic)``)."""

    __slots__ = ("_data", "buckets")

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        # key → [count per bucket (+Inf last)..., sum]
        self._data: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], seconds: float, count: int = 1) -> None:
        """``count`` observations of ``seconds`` under ``key``."""
        row = self._data.get(key)
        if row is None:
            row = self._data[key] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, seconds)] += count
        row[-1] += seconds * count

    def family(self, name: str, documentation: str, labels: Sequence[str]) -> HistogramMetricFamily:
        """The histogram as a Prometheus family (cumulative buckets)."""
        family = HistogramMetricFamily(name, documentation, labels=list(labels))
        edges = [*(repr(b) for b in self.buckets), "+Inf"]
        for key, row in sorted(self._data.items()):
            cumulative = 0.0
            buckets = []
            for edge, n in zip(edges, row[:-1], strict=True):
                cumulative += n
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, row[-1])
        return family

    def quantile(self, q: float, keys: Iterable[tuple[str, ...]] | None = None) -> float | None:
        """An upper bound of the ``q`` quantile (the bucket edge it falls in) over
        ``keys`` (all by default); None without observations."""
        rows = [self._data[k] for k in (self._data if keys is None else keys) if k in self._data]
        if not rows:
            return None
        totals = [sum(r[i] for r in rows) for i in range(len(self.buckets) + 1)]
        wanted = q * sum(totals)
        seen = 0.0
        for edge, n in zip((*self.buckets, float("inf")), totals, strict=True):
            seen += n
            if seen >= wanted and n:
                return edge
        return float("inf")


class Counts:
    """Counters by label tuple: ``inc`` is a dict update."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1) -> None:
        self._data[key] = self._data.get(key, 0) + amount

    def get(self, key: tuple[str, ...]) -> float:
        return self._data.get(key, 0)

    def items(self) -> Iterator[tuple[tuple[str, ...], float]]:
        return iter(sorted(self._data.items()))

    def family(self, name: str, documentation: str, labels: Sequence[str]) -> CounterMetricFamily:
        """The counters as a Prometheus counter family (``name`` without ``_total``)."""
        return counter(name, documentation, labels, self._data)


def gauge(
    name: str, documentation: str, labels: Sequence[str], values: Mapping[tuple[str, ...], float]
) -> GaugeMetricFamily:
    """A gauge family of ``values`` by label tuple."""
    return _filled(GaugeMetricFamily(name, documentation, labels=list(labels)), values)


def counter(
    name: str, documentation: str, labels: Sequence[str], values: Mapping[tuple[str, ...], float]
) -> CounterMetricFamily:
    """A counter family of ``values`` by label tuple (``name`` without ``_total``)."""
    return _filled(CounterMetricFamily(name, documentation, labels=list(labels)), values)


_F = TypeVar("_F", GaugeMetricFamily, CounterMetricFamily)


def _filled(family: _F, values: Mapping[tuple[str, ...], float]) -> _F:
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class _Sources(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        names, values = ["role", "node"], [self._metrics.role, self._metrics.node]
        # Families of one name from several sources (the core's and the bridge's
        # delivered events under ``clearpath serve``) are one family: their samples
        # differ by ``path``. One of another type under a taken name is dropped.
        merged: dict[str, Metric] = {}
        for source in list(self._metrics.sources):
            for family in source():
                for sample in family.samples:
                    sample.labels.update(zip(names, values, strict=True))
                first = merged.get(family.name)
                if first is None:
                    merged[family.name] = family
                elif first.type == family.type:
                    seen = {(x.name, tuple(sorted(x.labels.items()))) for x in first.samples}
                    first.samples.extend(
                        x
                        for x in family.samples
                        if (x.name, tuple(sorted(x.labels.items()))) not in seen
                    )  # one series once (clearpath_info from both sides)
        yield from merged.values()


class Metrics:
    """The metrics of one process (a core node, a bridge worker, or both in
    ``clearpath serve``): its sources, and its exposition."""

    def __init__(self, role: str, node: str) -> None:
        self.role = role
        self.node = node
        self.sources: list[Source] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Sources(self))

    def add(self, source: Source) -> None:
        """Add ``source``: called at every scrape, it must be quick and not block."""
        self.sources.append(source)

    def remove(self, source: Source) -> None:
        if source in self.sources:
            self.sources.remove(source)

    def expose(self) -> bytes:
        """The Prometheus text exposition of every source."""
        return generate_latest(self.registry)
