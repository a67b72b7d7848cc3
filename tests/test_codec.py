"""The JSON frame mapping, with plain calls."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearpath.realtime.v1 import events_pb2 as pb
from core.codec import encode_frame, enum_names, event_from_frame, event_to_frame
from core.errors import InvalidArgument
from core.topics import EVENT_TYPES, TOPIC_NAMES, topic_from_name
from tests.events import SAMPLES, sample


def test_frames_match_the_documented_examples_exactly() -> None:
    event = sample("package_update")
    event.id = "e1"
    frame = orjson.loads(encode_frame(event_to_frame(event)))
    assert frame["type"] == "package_update"
    assert frame["subscription_type"] == "package_updates"
    assert frame["timestamp"] == "2024-01-15T10:30:00Z"
    assert frame["data"] == SAMPLES["package_update"]
    for kind in ("anomaly_detected", "dashboard_metrics"):
        assert event_to_frame(sample(kind))["data"] == SAMPLES[kind]


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_round_trips(kind: str) -> None:
    event = sample(kind)
    frame = orjson.loads(encode_frame(event_to_frame(event)))
    assert frame["data"] == SAMPLES[kind]
    back = event_from_frame({"type": frame["type"], "data": frame["data"]})
    assert getattr(back, kind) == getattr(event, kind)


def test_numbers_stay_numbers_and_unset_timestamps_are_null() -> None:
    data = event_to_frame(event_from_frame({"type": "anomaly_detected", "data": {}}))["data"]
    assert data["confidence_score"] == 0.0
    assert data["detected_at"] is None
    metrics = event_to_frame(sample("dashboard_metrics"))["data"]
    assert isinstance(metrics["total_packages"], int)


def test_enum_names_strip_the_prefix() -> None:
    assert enum_names(pb.PackageStatus.DESCRIPTOR)[pb.PACKAGE_STATUS_OUT_FOR_DELIVERY] == (
        "out_for_delivery"
    )
    assert enum_names(pb.Severity.DESCRIPTOR)[pb.SEVERITY_CRITICAL] == "critical"
    assert TOPIC_NAMES[pb.TOPIC_ANOMALIES] == "anomalies"
    assert topic_from_name("TOPIC_ANOMALIES") == topic_from_name("anomalies")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"type": "parcel"}, "event.type: 'parcel' is not an event type"),
        ({"type": "package_update", "data": {"status": "lost_at_sea"}}, "data.status"),
        ({"type": "package_update", "data": {"colour": "red"}}, "unknown field 'colour'"),
        ({"type": "dashboard_metrics", "data": {"delivered": -1}}, "data.delivered"),
        ({"type": "dashboard_metrics", "data": {"delivered": "many"}}, "not an integer"),
        ({"type": "anomaly_detected", "data": {"confidence_score": "high"}}, "not a number"),
        ({"type": "anomaly_detected", "data": {"detected_at": "yesterday"}}, "RFC 3339"),
        ({"type": "package_update", "data": []}, "must be a JSON object"),
        ({"type": "package_update", "extra": 1}, "unknown key(s) extra"),
    ],
)
def test_bad_frames_name_the_field(frame: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        event_from_frame(frame)


def test_enum_errors_list_the_allowed_values() -> None:
    with pytest.raises(InvalidArgument, match="in_transit") as info:
        event_from_frame({"type": "package_update", "data": {"status": "flying"}})
    assert "unspecified" not in str(info.value)


@given(
    total=st.integers(0, 2**32 - 1),
    rate=st.floats(0, 1, allow_nan=False),
    avg=st.floats(0, 1e6, allow_nan=False),
)
def test_metrics_round_trip(total: int, rate: float, avg: float) -> None:
    frame = {
        "type": "dashboard_metrics",
        "data": {"total_packages": total, "recovery_rate": rate, "avg_delivery_time": avg},
    }
    out = orjson.loads(encode_frame(event_to_frame(event_from_frame(frame))))["data"]
    assert (out["total_packages"], out["recovery_rate"], out["avg_delivery_time"]) == (
        total,
        rate,
        avg,
    )
