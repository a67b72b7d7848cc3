"""Workload sizes for a full run and for the ``--quick`` smoke run."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Params", "full", "quick"]


@dataclass(frozen=True)
class Params:
    """Every size and time limit of one run; each loop in the suite is bounded by these."""

    # W1: many subscribers, paced publisher
    w1_subscribers: int
    w1_rate: float
    w1_duration_s: float
    #: Scrapes of /metrics a second in W1's second variant (0: no such variant).
    w1_scrape_hz: float
    # W1l: W1's rate to few subscribers, so that no server is saturated: the
    # publish-to-deliver latency of the path itself (what a broker adds to it)
    w1l_subscribers: int
    # W2: fewer subscribers, publisher as fast as delivered
    w2_subscribers: int
    w2_duration_s: float
    w2_concurrency: int
    # events per Publish call in W2 for targets that publish over gRPC (HTTP targets take one)
    w2_batch: int
    # W2 publishes while fewer than this many events are on their way to the slowest
    # subscriber: "as fast as delivered", for servers whose Publish returns before fan-out
    w2_ahead: int
    # W3: idle connections
    w3_connections: int
    # G1: gRPC Publish throughput per batch size
    g1_batches: tuple[int, ...]
    g1_duration_s: float
    # G2: gRPC Subscribe fan-out per stream count
    g2_streams: tuple[int, ...]
    g2_duration_s: float
    g2_batch: int
    # common
    drain_s: float
    quiet_s: float
    max_in_flight: int = 64
    g1_concurrency: int = 8
    g2_concurrency: int = 2
    #: G2's publisher stays at most this many events ahead of the slowest stream,
    #: shared by the streams and at least 500 each (bench.workloads.g2_allowance;
    #: below the core's default per-subscriber queue of 4096 events).
    g2_ahead: int = 2000
    latency_conns: int = 100
    # W2 delivers ~10x more per connection than W1: latency is read on fewer
    # connections, so reading it does not make the load generator the bottleneck
    w2_latency_conns: int = 10
    settle_s: float = 0.5
    # W2w: W2 with the publisher allowed this many events ahead of the slowest subscriber
    w2w_ahead: int = 20_000
    # W6: catch-up. Subscribers resume from a position w6_back events back while a
    # paced live publisher goes on until every subscriber caught up, at most
    # w6_limit_s; caught up = every back event read
    # and the newest event read is less than w6_fresh_ms old.
    w6_subscribers: int = 100
    w6_back: int = 10_000
    w6_live_rate: float = 200.0
    w6_limit_s: float = 60.0
    w6_fresh_ms: float = 250.0
    # L1: alerts under a map flood. l1_slowed of l1_subscribers read at most
    # l1_slow_bytes_per_s; map_updates flood at l1_map_rate events/s (batches of
    # l1_map_batch over l1_map_keys package ids); one anomaly every l1_alert_every_s.
    l1_subscribers: int = 50
    l1_slowed: int = 10
    l1_slow_bytes_per_s: int = 128 * 1024
    #: The slowed readers' kernel receive buffer (SO_RCVBUF; 0: autotuned, up to
    #: tcp_rmem's several MiB). A screen on a slow link holds about a bandwidth-delay
    #: product in flight; with megabytes of receive buffer the backlog sits on the
    #: client's machine, already delivered, where no server can reorder it.
    l1_slow_rcvbuf: int = 64 * 1024
    l1_map_rate: float = 2_000.0
    l1_map_batch: int = 100
    l1_map_keys: int = 1000
    l1_alert_every_s: float = 0.1
    l1_duration_s: float = 8.0
    #: Which of ``bench.alerts.VARIANTS`` to run (each on a fresh server).
    l1_variants: tuple[str, ...] = ("lanes", "no lanes", "no conflation")


def full() -> Params:
    return Params(
        w1_subscribers=1000,
        w1_rate=200.0,
        w1_duration_s=15.0,
        w1_scrape_hz=10.0,
        w1l_subscribers=100,
        w2_subscribers=100,
        w2_duration_s=6.0,
        w2_concurrency=8,
        w2_batch=20,
        w2_ahead=2000,
        w3_connections=5000,
        g1_batches=(1, 100),
        g1_duration_s=4.0,
        g2_streams=(1, 10, 100),
        g2_duration_s=4.0,
        g2_batch=100,
        drain_s=5.0,
        quiet_s=1.5,
    )


def quick() -> Params:
    return Params(
        w1_subscribers=100,
        w1_rate=100.0,
        w1_duration_s=1.5,
        w1_scrape_hz=10.0,
        w1l_subscribers=20,
        w2_subscribers=20,
        w2_duration_s=1.0,
        w2_concurrency=4,
        w2_batch=20,
        w2_ahead=2000,
        w3_connections=200,
        g1_batches=(1, 100),
        g1_duration_s=0.7,
        g2_streams=(1, 10),
        g2_duration_s=0.7,
        g2_batch=100,
        drain_s=2.0,
        quiet_s=0.5,
        w6_subscribers=10,
        w6_back=2000,
        w6_limit_s=6.0,
        l1_subscribers=10,
        l1_slowed=3,
        l1_map_rate=1000.0,
        l1_duration_s=1.5,
        l1_variants=("lanes",),
    )
