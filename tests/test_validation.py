"""Publish validation, with plain calls: every rule gives a message naming its field."""

from __future__ import annotations

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument
from core.topics import EVENT_TYPES
from core.validation import Limits, prepare_events
from tests.events import package, sample

LIMITS = Limits()


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_valid_samples_are_prepared(kind: str) -> None:
    (ready,) = prepare_events([sample(kind, timestamp=None)], LIMITS)
    assert ready.topic != pb.TOPIC_UNSPECIFIED
    assert len(ready.id) == 32
    assert ready.timestamp.seconds > 0


def test_a_batch_gets_distinct_random_ids_where_none_was_given() -> None:
    events = [package(f"p{i}") for i in range(LIMITS.max_batch)]
    for i, event in enumerate(events):
        event.id = f"given-{i}" if i % 3 == 0 else ""
    ready = prepare_events(events, LIMITS)
    new = [e.id for i, e in enumerate(ready) if i % 3]
    assert [e.id for i, e in enumerate(ready) if i % 3 == 0] == [
        f"given-{i}" for i in range(0, LIMITS.max_batch, 3)
    ]
    assert len(set(new)) == len(new)  # 128 random bits each
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in new)
    again = prepare_events([package("x"), package("y")], LIMITS)
    assert not set(new) & {e.id for e in again}


def test_given_id_and_timestamp_are_kept_and_position_cleared() -> None:
    event = package()
    event.id = "mine"
    event.position.offset = 99
    (ready,) = prepare_events([event], LIMITS)
    assert ready.id == "mine"
    assert ready.timestamp.seconds == event.timestamp.seconds
    assert not ready.HasField("position")
    assert event.position.offset == 99  # the caller's message is not changed


def bad(event: pb.Event, message: str, limits: Limits = LIMITS) -> None:
    with pytest.raises(InvalidArgument, match=message):
        prepare_events([package("ok"), event], limits)


def test_missing_payload() -> None:
    bad(pb.Event(), r"events\[1\]: no payload")


def test_payload_not_of_the_topic() -> None:
    event = package()
    event.topic = pb.TOPIC_ANOMALIES
    bad(event, r"events\[1\]\.topic: a package_update payload belongs to package_updates")


def test_unknown_enum_value() -> None:
    event = package()
    event.package_update.status = 42  # type: ignore[assignment]
    bad(event, r"events\[1\]\.package_update\.status: unknown value 42")


def test_unspecified_required_enum() -> None:
    event = package()
    event.package_update.status = pb.PACKAGE_STATUS_UNSPECIFIED
    bad(event, r"package_update\.status: required")


def test_confidence_out_of_range() -> None:
    bad(sample("anomaly_detected", confidence_score=1.5), r"confidence_score: 1\.5 is out of range")


def test_nan_is_refused() -> None:
    event = sample("map_update")
    event.map_update.latitude = float("nan")
    bad(event, "latitude: must be a finite number")


def test_coordinates_out_of_range() -> None:
    bad(sample("map_update", latitude=91), r"latitude: 91\.0 is out of range")


def test_oversized_event_and_string() -> None:
    bad(package(location="x" * 5000), "location: at most 4096 characters")
    bad(
        package(location="x" * 900),
        "event is .* bytes; at most 512 bytes",
        Limits(max_event_bytes=512),
    )


def test_batch_bounds() -> None:
    with pytest.raises(InvalidArgument, match="at least one event"):
        prepare_events([], LIMITS)
    with pytest.raises(InvalidArgument, match="3 events in one call; at most 2"):
        prepare_events([package()] * 3, Limits(max_batch=2))


def test_required_fields() -> None:
    bad(package(package_id="", tracking_number=""), "package_id or tracking_number: required")
    bad(sample("agent_activity", agent_id=""), "agent_activity.agent_id: required")


def test_long_id() -> None:
    event = package()
    event.id = "i" * 200
    bad(event, r"events\[1\]\.id: at most 128 characters")
