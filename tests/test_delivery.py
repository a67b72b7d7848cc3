"""Delivery classes and conflation keys (core.delivery), and the settings that
choose them: a bad value stops ``clearpath bridge`` / ``serve`` with exit 2 naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import CONFLATE_AFTER_BYTES, BridgeSettings
from bridge.frames import CONTROL_LANE, control, event_frame
from clearpath.realtime.v1 import events_pb2 as pb
from core.delivery import (
    CONFLATION_KEYS,
    DELIVERY,
    URGENT_TOPICS,
    DeliveryClass,
    key_function,
    parse_conflation,
)
from core.errors import InvalidArgument
from tests.clients_helpers import run_cli
from tests.events import sample


def test_urgent_topics_are_anomalies_and_notifications_and_only_latest_ones_conflate() -> None:
    assert frozenset({pb.TOPIC_ANOMALIES, pb.TOPIC_NOTIFICATIONS}) == URGENT_TOPICS
    for topic in CONFLATION_KEYS:
        assert DELIVERY[topic] is DeliveryClass.LATEST


def test_parse_conflation_names_what_is_wrong() -> None:
    assert parse_conflation("default") == CONFLATION_KEYS
    assert CONFLATION_KEYS[pb.TOPIC_MAP_UPDATES] == ("package_id", "vehicle_id")
    assert parse_conflation("none") == parse_conflation(" ") == {}
    assert parse_conflation("map_updates:vehicle_id+route_id") == {
        pb.TOPIC_MAP_UPDATES: ("vehicle_id", "route_id")
    }
    for spec, named in (
        ("anomalies", "anomalies is never conflated"),
        ("package_updates", "package_updates is never conflated"),
        ("map_updates:latitude", "'latitude' is not a key"),
        ("map_updates;map_updates", "given twice"),
        ("parcels", "unknown subscription type 'parcels'"),
    ):
        with pytest.raises(InvalidArgument, match=named):
            parse_conflation(spec)


def test_keys_are_per_package_per_component_and_one_for_the_dashboard() -> None:
    key_of = key_function(CONFLATION_KEYS)
    map_updates = pb.TOPIC_MAP_UPDATES
    alone = sample("map_update", package_id="p1", vehicle_id="")
    assert key_of(alone) == (map_updates, "p1", "")
    # A vehicle alone, and a package on a vehicle, are things of their own.
    trucks = {key_of(sample("map_update", package_id="", vehicle_id=f"t{v}")) for v in range(3)}
    assert trucks == {(map_updates, "", f"t{v}") for v in range(3)}
    on_truck = sample("map_update", package_id="p1", vehicle_id="t1")
    assert key_of(on_truck) == (map_updates, "p1", "t1")
    assert key_of(sample("system_health", component="db")) == (pb.TOPIC_SYSTEM_HEALTH, "db")
    assert key_of(sample("dashboard_metrics")) == pb.TOPIC_DASHBOARD_METRICS
    assert key_of(sample("anomaly_detected")) is None
    assert key_of(sample("package_update")) is None


def test_a_frame_carries_its_key_and_a_control_frame_none() -> None:
    event = sample("map_update", package_id="p9")
    event.topic = pb.TOPIC_MAP_UPDATES
    assert event_frame(event).key == (pb.TOPIC_MAP_UPDATES, "p9", event.map_update.vehicle_id)
    assert control("pong").key is None


def test_a_frame_travels_in_its_topics_lane_a_control_frame_in_the_one_it_concerns() -> None:
    event = sample("anomaly_detected")
    event.topic = pb.TOPIC_ANOMALIES
    assert event_frame(event).lane == pb.TOPIC_ANOMALIES
    assert control("subscribed", about=pb.TOPIC_ANOMALIES).lane == pb.TOPIC_ANOMALIES
    assert control("subscribed", about=pb.TOPIC_ANOMALIES).topic == 0  # no position
    assert control("welcome").lane == CONTROL_LANE


def test_bridge_settings_defaults_and_bounds() -> None:
    settings = BridgeSettings.model_validate({})
    assert settings.priority_lanes
    assert settings.conflation == CONFLATION_KEYS
    assert settings.conflate_after == CONFLATE_AFTER_BYTES
    small = BridgeSettings.model_validate({"send_queue_bytes": 256 * 1024})
    assert small.conflate_after == 128 * 1024  # at most half the queue: before overflow


@pytest.mark.parametrize(
    ("env", "value", "named", "said"),
    [
        ("CLEARPATH_BRIDGE_CONFLATE", "anomalies", "conflate", "anomalies is never conflated"),
        ("CLEARPATH_BRIDGE_CONFLATE", "map_updates:speed", "conflate", "'speed' is not a key"),
        ("CLEARPATH_BRIDGE_CONFLATE_AFTER_BYTES", "-1", "conflate_after_bytes", ""),
    ],
)
async def test_a_bad_conflation_setting_exits_2_naming_it(
    env: str,
    value: str,
    named: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(env, value)
    assert await run_cli("bridge") == 2
    err = capsys.readouterr().err
    assert f"clearpath: {named}:" in err
    assert said in err
    assert "Traceback" not in err


async def test_the_readmes_start_up_error_is_the_real_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = readme.split("$ CLEARPATH_BRIDGE_CONFLATE=anomalies clearpath bridge\n", 1)[1]
    monkeypatch.setenv("CLEARPATH_BRIDGE_CONFLATE", "anomalies")
    assert await run_cli("bridge") == 2
    assert capsys.readouterr().err == shown.split("```", 1)[0]


async def test_a_bad_conflate_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("bridge", "--conflate", "notifications") == 2
    assert "clearpath: conflate: " in capsys.readouterr().err
