"""bench's W2w, W6 and L1: their pure parts (payloads, positions, figures, tables)
with plain calls. The workloads themselves run in ``make bench-smoke``."""

from __future__ import annotations

from typing import Any

import pytest

from bench import config
from bench.alerts import VARIANTS, group_metrics
from bench.catchup import catchup_metrics, history_size, position_of, resume_path
from bench.events import MARKER, anomaly_publish_request, map_publish_requests
from bench.report import Run, summarize, to_markdown
from bench.run import plan_runs
from bench.targets import TARGETS, get_targets
from bench.targets.base import TargetFailed
from bench.workloads import WORKLOADS, timeout_for
from clearpath.realtime.v1 import events_pb2, service_pb2


def test_every_target_names_known_workloads_and_every_workload_has_a_time_limit() -> None:
    for target in TARGETS:
        assert target.workloads <= set(WORKLOADS), target.name
    for params in (config.full(), config.quick()):
        for workload in WORKLOADS:
            assert 0 < timeout_for(workload, params) < float("inf"), workload
        for workload in ("W2w", "W6", "L1"):
            assert timeout_for(workload, params) < 300, workload


def test_clearpath_targets_lift_the_per_address_cap_for_the_harness() -> None:
    """Every bench subscriber connects from 127.0.0.1: with the bridge's default
    per-address cap (1,000) W3's 5,000 sockets were refused with 429."""
    for target in get_targets(["clearpath", "clearpath-batch", "clearpath-redis"]):
        cap = int(target.env["CLEARPATH_BRIDGE_MAX_CONNECTIONS_PER_ADDRESS"])
        assert cap >= config.full().w3_connections


def test_new_workloads_take_part_where_they_apply() -> None:
    by_name = {t.name: t.workloads for t in TARGETS}
    assert {"W2w", "W6", "L1"} <= by_name["clearpath"]
    assert {"W2w", "W6"} <= by_name["clearpath-batch"]
    assert {"W2w", "W6", "L1"} <= by_name["clearpath-baseline"]
    assert {"W1", "W2", "W2w"} <= by_name["nats-server"]
    assert not {"W6", "L1"} & by_name["nats-server"]  # no resume, no topics: n/a
    # W1l: what Redis and the cluster add to the path's latency, beside the memory broker.
    for name in ("clearpath", "clearpath-redis", "clearpath-cluster", "nats-server"):
        assert "W1l" in by_name[name], name
    assert config.full().w1l_subscribers * config.full().w1_rate <= 20_000  # nothing saturated


def test_quick_sizes_stay_small() -> None:
    q, f = config.quick(), config.full()
    assert q.w2w_ahead == f.w2w_ahead == 20_000
    assert q.w6_subscribers <= 10
    assert q.w6_back <= 2_000
    assert q.w6_limit_s <= 6
    assert q.l1_subscribers <= 10
    assert q.l1_duration_s <= 2
    assert q.l1_variants == ("lanes",)
    assert f.l1_variants == tuple(name for name, _ in VARIANTS)


def test_map_flood_names_every_key_and_carries_no_latency_marker() -> None:
    requests = map_publish_requests(batch=100, keys=250)
    ids = set()
    for raw in requests:
        req = service_pb2.PublishRequest.FromString(raw)
        assert len(req.events) == 100
        assert all(e.topic == events_pb2.TOPIC_MAP_UPDATES for e in req.events)
        ids |= {e.map_update.package_id for e in req.events}
        assert MARKER not in raw
    assert len(requests) == 3
    assert len(ids) == 250


def test_alert_carries_the_marker_in_its_description() -> None:
    req = service_pb2.PublishRequest.FromString(anomaly_publish_request())
    (event,) = req.events
    assert event.topic == events_pb2.TOPIC_ANOMALIES
    assert MARKER.decode() in event.anomaly_detected.description


def test_history_covers_the_resume_and_never_shrinks_below_the_default() -> None:
    assert history_size(10_000, 2_000) == 24_000
    assert history_size(10, 10) == 10_000


def test_position_of_reads_the_last_result() -> None:
    resp = service_pb2.PublishResponse(
        results=[
            service_pb2.PublishResult(position=events_pb2.StreamPosition(offset=o, epoch="e1"))
            for o in (4, 5)
        ]
    )
    assert position_of(resp.SerializeToString()) == ("e1", 5)
    with pytest.raises(TargetFailed, match="no result"):
        position_of(b"")


def test_resume_path_adds_since_to_any_query() -> None:
    assert resume_path("/ws/packages", "package_updates", "ab12", 7) == (
        "/ws/packages?since=package_updates:ab12:7"
    )
    assert resume_path("/ws/packages?batch=1", "anomalies", "a b", 0) == (
        "/ws/packages?batch=1&since=anomalies:a%20b:0"
    )


def test_catchup_figures() -> None:
    # [ms to caught up or -1, events then, events now, ms to the back events or -1]
    rows = [[1000, 10_200, 10_400, 900], [2000, 10_400, 10_400, 1800], [-1, 0, 5000, -1]]
    m = catchup_metrics(rows, 10_000)
    assert (m["caught_up"], m["not_caught_up"], m["back_read"]) == (2, 1, 2)
    assert m["catchup_max_ms"] == 2000
    assert m["per_sub_catchup_min_ev_s"] == 5200  # 10,400 events in 2 s
    assert m["total_catchup_ev_s"] == 10_300  # 20,600 events by the slowest's 2 s
    assert catchup_metrics([[-1, 0, 0, -1]], 10)["caught_up"] == 0


def _worker_result(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "connections": 2,
        "total": 38,
        "latency_us": [1000, 3000, 200_000],
        "latency_max_us": 200_000,
        "also_in_window": [4000, 0],
        "also_total": [5000, 7],
        "cut_off": 1,
        "cpu_window_s": 0.5,
    }
    return {**base, **over}


def test_group_figures() -> None:
    m = group_metrics([_worker_result()], alerts=20, seconds=2.0)
    assert m["alerts_lost"] == 2
    assert m["map_per_sub_s"] == 1000
    assert m["map_deliveries_per_s"] == 2000
    assert m["conflated_frames"] == 7
    assert m["cut_off"] == 1
    assert m["max_ms"] == 200.0
    assert m["loadgen_cpu_pct"] == 25.0


def _doc(runs: list[Run]) -> dict[str, Any]:
    machine = {
        "cpu_model": "cpu",
        "cores": 2,
        "cores_usable": 2,
        "memory_gib": 1,
        "kernel": "6",
        "loadavg_at_start": [0.0, 0.0, 0.0],
        "implementation": "CPython",
        "python": "3",
        "git_commit": "abc",
    }
    meta = {"mode": "quick", "date": "d", "elapsed_s": 1.0, "machine": machine}
    meta |= {"pinning": "p", "workers": 1, "repeat": 1, "command": "c"}
    return {"meta": meta, "targets": [], "summary": summarize(runs)}


def test_tables_show_cut_offs_catch_up_and_alert_latency() -> None:
    runs = [
        Run("nats-server", "W2w", "100 subs", 1, "ok", {"deliveries_per_s": 9, "cut_off": 3}),
        Run(
            "clearpath",
            "W6",
            "100 subs",
            1,
            "ok",
            {"caught_up": 99, "subscribers": 100, "catchup_p99_ms": 1234, "cut_off": 0},
        ),
        Run("clearpath", "L1", "no lanes: …", 1, "ok", {"slow_p99_ms": 812.5, "fast_cut_off": 0}),
    ]
    md = to_markdown(_doc(runs))
    assert "### W2w" in md
    assert "| cut off |" in md
    assert "| `nats-server` | 100 subs | 9 | - | - | - | 3 |" in md
    assert "### W6" in md
    assert "| 99 / 100 |" in md
    assert "1,234" in md
    assert "### L1" in md
    assert "812.5" in md


def test_a_quick_run_gives_every_workload_its_clearpath_run_first() -> None:
    targets = get_targets(["naive", "nats-server", "clearpath", "clearpath-batch"])
    workloads = ["W1", "W2w", "W6"]
    full = [(w, t.name) for w, t in plan_runs(workloads, targets, breadth_first=False)]
    assert full[:4] == [
        ("W1", "naive"),
        ("W1", "nats-server"),
        ("W1", "clearpath"),
        ("W1", "clearpath-batch"),
    ]
    quick = [(w, t.name) for w, t in plan_runs(workloads, targets, breadth_first=True)]
    assert quick[:3] == [("W1", "clearpath"), ("W2w", "clearpath"), ("W6", "clearpath")]
    assert sorted(quick) == sorted(full)  # the same runs, in another order


def test_g2_allowance_lifts_one_stream_and_keeps_many_short() -> None:
    from bench.workloads import g2_allowance

    assert g2_allowance(2000, 1) == 2000  # 500 per 20 ms report capped one stream ~25k/s
    assert g2_allowance(2000, 10) == 500
    assert g2_allowance(2000, 100) == 500
