"""The benchmark's event payloads and the latency marker embedded in them.

Every published event carries ``bench-t=<19-digit wall-clock ns>`` in
``package_update.location``. Receivers find it with one C-level regex scan over a
whole buffer, so they never decode JSON or protobuf per event, and the marker
count is also the event count (it works for JSON arrays of frames too).
"""

from __future__ import annotations

import re
import time

import orjson

__all__ = [
    "MARKER",
    "MARKER_RE",
    "PLACEHOLDER",
    "anomaly_publish_request",
    "grpc_publish_request",
    "grpc_stream_message",
    "json_event",
    "map_publish_requests",
    "nats_publish",
    "newest_stamp",
    "stamp",
]

MARKER = b"bench-t="
PLACEHOLDER = MARKER + b"0" * 19
MARKER_RE = re.compile(rb"bench-t=(\d{19})")


def stamp(template: bytes, now_ns: int | None = None) -> bytes:
    """Return ``template`` with every placeholder replaced by the current time in ns."""
    ns = time.time_ns() if now_ns is None else now_ns
    return template.replace(PLACEHOLDER, MARKER + b"%019d" % ns)


def newest_stamp(buf: bytes | bytearray) -> int:
    """The wall-clock ns of the last complete marker in ``buf``; 0 if there is none."""
    end = len(buf)
    width = len(PLACEHOLDER)
    while (at := buf.rfind(MARKER, 0, end)) >= 0:
        digits = buf[at + len(MARKER) : at + width]
        if len(digits) == width - len(MARKER) and digits.isdigit():
            return int(digits)
        end = at
    return 0


def json_event(seq: int = 42) -> bytes:
    """A ~300-byte (JSON) package_update frame in the shape the ClearPath bridge sends."""
    frame = {
        "type": "package_update",
        "data": {
            "package_id": f"pkg-{seq:08d}",
            "tracking_number": "PKG123456789",
            "status": "in_transit",
            "location": PLACEHOLDER.decode(),
            "carrier": "FedEx",
        },
        "timestamp": "2026-11-26T09:12:44.123Z",
        "subscription_type": "package_updates",
        "id": "0b7c6f1e5d0a",
        "position": {"offset": seq, "epoch": "e1a2b3c4"},
    }
    return orjson.dumps(frame)


def _pb_event(seq: int) -> object:
    from google.protobuf.timestamp_pb2 import Timestamp

    from clearpath.realtime.v1 import events_pb2

    return events_pb2.Event(
        topic=events_pb2.TOPIC_PACKAGE_UPDATES,
        package_update=events_pb2.PackageUpdate(
            package_id=f"pkg-{seq:08d}",
            tracking_number="PKG123456789",
            status=events_pb2.PACKAGE_STATUS_IN_TRANSIT,
            location=PLACEHOLDER.decode() + " Chicago Distribution Center",
            estimated_delivery=Timestamp(seconds=1_795_885_200),
            last_scan_time=Timestamp(seconds=1_795_684_364),
            carrier="FedEx",
        ),
    )


def grpc_publish_request(batch: int) -> bytes:
    """A serialized ``PublishRequest`` of ``batch`` package updates, with placeholders."""
    from clearpath.realtime.v1 import service_pb2

    events = [_pb_event(i) for i in range(batch)]
    return bytes(service_pb2.PublishRequest(events=events).SerializeToString())  # type: ignore[arg-type]


def grpc_stream_message() -> bytes:
    """A serialized ``SubscribeResponse`` carrying one event as the core would send it."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from clearpath.realtime.v1 import events_pb2, service_pb2

    event = _pb_event(42)
    assert isinstance(event, events_pb2.Event)
    event.id = "0b7c6f1e-5d0a-4f7e-9a51-3f2d1c0b9e8a"
    event.timestamp.CopyFrom(Timestamp(seconds=1_795_684_364, nanos=123_456_789))
    event.position.CopyFrom(events_pb2.StreamPosition(offset=42, epoch="e1a2b3c4d5e6f708"))
    return bytes(service_pb2.SubscribeResponse(event=event).SerializeToString())


def map_publish_requests(batch: int, keys: int) -> list[bytes]:
    """Serialized ``PublishRequest`` s of ``batch`` map updates each, **without** the
    latency marker, cycling over ``keys`` package ids: ``ceil(keys / batch)`` requests
    that together name every id once (a flood of latest-state events to conflate)."""
    from clearpath.realtime.v1 import events_pb2, service_pb2

    out = []
    for first in range(0, max(1, keys), batch):
        events = [
            events_pb2.Event(
                topic=events_pb2.TOPIC_MAP_UPDATES,
                map_update=events_pb2.MapUpdate(
                    package_id=f"pkg-{(first + i) % max(1, keys):08d}",
                    vehicle_id="truck-042",
                    latitude=41.8781 + i * 1e-4,
                    longitude=-87.6298,
                    heading=90.0,
                    speed_kmh=62.5,
                    route_id="route-7",
                    next_stop="Chicago Distribution Center",
                    status=events_pb2.PACKAGE_STATUS_IN_TRANSIT,
                ),
            )
            for i in range(batch)
        ]
        out.append(bytes(service_pb2.PublishRequest(events=events).SerializeToString()))
    return out


def anomaly_publish_request() -> bytes:
    """A serialized ``PublishRequest`` of one anomaly whose ``description`` carries the
    latency placeholder (an alert: the only event of L1 that is timed)."""
    from clearpath.realtime.v1 import events_pb2, service_pb2

    event = events_pb2.Event(
        topic=events_pb2.TOPIC_ANOMALIES,
        anomaly_detected=events_pb2.AnomalyDetected(
            package_id="pkg-00000042",
            anomaly_type=events_pb2.ANOMALY_TYPE_DELAYED_DELIVERY,
            severity=events_pb2.SEVERITY_HIGH,
            description="Package delayed by 4 hours " + PLACEHOLDER.decode(),
            recommended_action="reroute_through_alternative_center",
            confidence_score=0.87,
        ),
    )
    return bytes(service_pb2.PublishRequest(events=[event]).SerializeToString())


def nats_publish(subject: str, batch: int) -> bytes:
    """``batch`` NATS ``PUB`` commands of :func:`json_event` (the ~300-byte frame the
    clearpath targets deliver), then ``PING``: the server's ``PONG`` says it has
    processed them. Stamping keeps every length (the placeholder has the marker's)."""
    out = bytearray()
    for i in range(batch):
        payload = json_event(i)
        out += b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
    return bytes(out + b"PING\r\n")
