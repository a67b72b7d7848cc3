"""The simulator's model, with plain calls: a seeded run's stream is legal and consistent."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clients.simulator import CENTERS, COMPONENTS, NetworkModel
from core.topics import EVENT_TYPES
from core.validation import Limits, prepare_events

START = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
S = pb.PackageStatus
# Written out here, independently of the model: which status may follow which.
LEGAL: dict[int | None, set[int]] = {
    None: {S.PACKAGE_STATUS_CREATED},
    S.PACKAGE_STATUS_CREATED: {S.PACKAGE_STATUS_IN_TRANSIT},
    S.PACKAGE_STATUS_IN_TRANSIT: {
        S.PACKAGE_STATUS_IN_TRANSIT,
        S.PACKAGE_STATUS_DELAYED,
        S.PACKAGE_STATUS_OUT_FOR_DELIVERY,
    },
    S.PACKAGE_STATUS_DELAYED: {S.PACKAGE_STATUS_IN_TRANSIT, S.PACKAGE_STATUS_OUT_FOR_DELIVERY},
    S.PACKAGE_STATUS_OUT_FOR_DELIVERY: {S.PACKAGE_STATUS_DELAYED, S.PACKAGE_STATUS_DELIVERED},
    S.PACKAGE_STATUS_DELIVERED: set(),
}
MOVING = {S.PACKAGE_STATUS_IN_TRANSIT, S.PACKAGE_STATUS_OUT_FOR_DELIVERY}


def run(seed: int = 7, steps: int = 400, packages: int = 60) -> list[pb.Event]:
    model = NetworkModel(packages, seed)
    events: list[pb.Event] = []
    for i in range(steps):
        events.extend(model.step(START + timedelta(seconds=i)))
    return events


@pytest.fixture(scope="module")
def stream() -> list[pb.Event]:
    return run()


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    first = [e.SerializeToString() for e in run(seed=3, steps=60)]
    assert first == [e.SerializeToString() for e in run(seed=3, steps=60)]
    assert first != [e.SerializeToString() for e in run(seed=4, steps=60)]


def test_every_event_type_appears_and_passes_the_core_rules(stream: list[pb.Event]) -> None:
    kinds = Counter(e.WhichOneof("payload") for e in stream)
    # Every event type; not the internal payloads (the bridges' canary) of the proto.
    assert set(kinds) == set(EVENT_TYPES)
    assert kinds["map_update"] > kinds["dashboard_metrics"]
    for start in range(0, len(stream), 1000):
        prepare_events(stream[start : start + 1000], Limits())


def test_status_transitions_are_legal_and_delays_resume(stream: list[pb.Event]) -> None:
    status: dict[str, int | None] = {}
    before_delay: dict[str, int] = {}
    delivered = 0
    for event in stream:
        if not event.HasField("package_update"):
            continue
        update = event.package_update
        previous = status.get(update.package_id)
        assert update.status in LEGAL[previous], (update.package_id, previous, update.status)
        if update.status == S.PACKAGE_STATUS_DELAYED:
            assert previous is not None
            before_delay[update.package_id] = previous
        elif previous == S.PACKAGE_STATUS_DELAYED:
            assert update.status == before_delay[update.package_id]
        delivered += update.status == S.PACKAGE_STATUS_DELIVERED
        status[update.package_id] = update.status
    assert delivered > 0
    assert before_delay, "a run this long has delays"


def test_metrics_agree_with_the_packages_and_anomalies_sent(stream: list[pb.Event]) -> None:
    status: dict[str, int] = {}
    open_anomalies: set[str] = set()
    recovered = escalated = checked = 0
    for event in stream:
        kind = event.WhichOneof("payload")
        if kind == "package_update":
            status[event.package_update.package_id] = event.package_update.status
        elif kind == "anomaly_detected":
            assert event.anomaly_detected.package_id not in open_anomalies
            open_anomalies.add(event.anomaly_detected.package_id)
        elif kind == "agent_activity" and event.agent_activity.outcome in (
            "succeeded",
            "escalated",
        ):
            open_anomalies.remove(event.agent_activity.package_id)
            recovered += event.agent_activity.outcome == "succeeded"
            escalated += event.agent_activity.outcome == "escalated"
        elif kind == "dashboard_metrics":
            m = event.dashboard_metrics
            counts = Counter(status.values())
            assert m.total_packages == len(status)
            assert m.in_transit == sum(counts[s] for s in MOVING)
            assert m.delivered == counts[S.PACKAGE_STATUS_DELIVERED]
            assert m.delayed == counts[S.PACKAGE_STATUS_DELAYED]
            assert m.anomalies == len(open_anomalies)
            closed = recovered + escalated
            assert m.recovery_rate == pytest.approx(recovered / closed if closed else 0, abs=1e-4)
            assert m.in_transit + m.delivered + m.delayed <= m.total_packages
            assert (m.avg_delivery_time > 0) == (m.delivered > 0)
            checked += 1
    assert checked > 50
    assert recovered > 0


def test_delays_raise_anomalies_and_push_the_eta_back(stream: list[pb.Event]) -> None:
    last_eta: dict[str, int] = {}
    pending_delay: str | None = None
    for event in stream:
        if pending_delay is not None:
            anomaly = event.anomaly_detected
            assert anomaly.package_id == pending_delay
            assert anomaly.anomaly_type == pb.ANOMALY_TYPE_DELAYED_DELIVERY
            assert anomaly.severity != pb.SEVERITY_UNSPECIFIED
            assert 0.5 <= anomaly.confidence_score <= 1
            assert anomaly.recommended_action
            pending_delay = None
        if not event.HasField("package_update"):
            continue
        update = event.package_update
        eta = update.estimated_delivery.seconds
        if update.status == S.PACKAGE_STATUS_DELAYED:
            assert eta >= last_eta[update.package_id] + 2 * 3600  # delays last 2 hours or more
            pending_delay = update.package_id
        elif update.package_id in last_eta and update.status != S.PACKAGE_STATUS_CREATED:
            # Otherwise it only moves back when a recovery cut a delay short.
            assert eta <= last_eta[update.package_id]
        last_eta[update.package_id] = eta


def test_agents_act_on_every_anomaly_pending_first(stream: list[pb.Event]) -> None:
    outcomes: dict[str, list[str]] = {}
    for event in stream:
        if event.HasField("anomaly_detected"):
            outcomes[event.anomaly_detected.package_id] = []
        elif event.HasField("agent_activity"):
            activity = event.agent_activity
            assert activity.agent_type == "recovery"
            assert activity.agent_id.startswith("recovery-agent-")
            outcomes[activity.package_id].append(activity.outcome)
    finished = [o for o in outcomes.values() if o and o[-1] in ("succeeded", "escalated")]
    assert finished
    for sequence in finished:
        assert sequence[0] == "pending"
        assert sequence[1:] in (
            ["succeeded"],
            ["failed", "succeeded"],
            ["failed", "escalated"],
        )


def test_map_updates_follow_routes_across_the_us(stream: list[pb.Event]) -> None:
    maps = [e.map_update for e in stream if e.HasField("map_update")]
    assert maps
    centers = {c.name for c in CENTERS.values()}
    for update in maps:
        assert 24.0 <= update.latitude <= 50.0
        assert -125.0 <= update.longitude <= -66.0
        assert 0 <= update.heading < 360
        assert update.route_id.startswith("RT-")
        assert update.next_stop in centers or update.next_stop.startswith("Delivery address")
        assert update.status in (*MOVING, S.PACKAGE_STATUS_DELAYED)
        if update.status == S.PACKAGE_STATUS_DELAYED:
            assert update.speed_kmh == 0


def test_system_health_is_periodic_for_every_component(stream: list[pb.Event]) -> None:
    reports = Counter(e.system_health.component for e in stream if e.HasField("system_health"))
    assert set(reports) == set(COMPONENTS)
    assert len(set(reports.values())) == 1
    assert next(iter(reports.values())) == 40  # 400 steps, every 10th


def test_the_network_stays_near_its_size() -> None:
    model = NetworkModel(packages=30, seed=1)
    for i in range(200):
        model.step(START + timedelta(seconds=i))
        metrics = model.metrics()
        active = metrics.total_packages - metrics.delivered
        assert active <= 30
    assert metrics.total_packages > 30  # delivered packages were replaced
