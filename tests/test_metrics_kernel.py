"""core.metrics with plain calls: buckets, merging sources, one series once."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from core.metrics import Counts, Latency, Metrics, gauge


def families(metrics: Metrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    found: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.expose().decode()):
        found[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return found


def test_latency_buckets_are_inclusive_and_cumulative() -> None:
    latency = Latency(buckets=(0.001, 0.01))
    latency.observe(("ws",), 0.001)  # on the edge: le="0.001"
    latency.observe(("ws",), 0.005, count=2)
    latency.observe(("ws",), 3.0)
    metrics = Metrics("bridge", "n1")
    metrics.add(lambda: [latency.family("clearpath_x_seconds", "x", ["path"])])
    samples = families(metrics)["clearpath_x_seconds"]
    buckets = {s[1]["le"]: s[2] for s in samples if s[0].endswith("_bucket")}
    assert buckets == {"0.001": 1, "0.01": 3, "+Inf": 4}
    assert latency.quantile(0.5) == 0.01
    assert latency.quantile(0.99) == float("inf")


def test_same_named_families_of_two_sources_are_merged_and_labelled() -> None:
    core, bridge = Counts(), Counts()
    core.inc(("grpc", "anomalies"), 3)
    bridge.inc(("websocket", "anomalies"), 5)
    metrics = Metrics("serve", "host:1")
    for counts in (core, bridge):
        metrics.add(
            lambda c=counts: [  # type: ignore[misc]
                c.family("clearpath_events_delivered", "d", ["path", "topic"]),
                gauge("clearpath_info", "i", ["version"], {("1",): 1}),
            ]
        )
    found = families(metrics)
    delivered = {s[1]["path"]: s[2] for s in found["clearpath_events_delivered"]}
    assert delivered == {"grpc": 3, "websocket": 5}
    assert all(
        s[1]["role"] == "serve" and s[1]["node"] == "host:1" for s in found["clearpath_info"]
    )
    assert len(found["clearpath_info"]) == 1  # the same series twice would break a scrape
