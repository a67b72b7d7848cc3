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
    "grpc_publish_request",
    "grpc_stream_message",
    "json_event",
    "stamp",
]

MARKER = b"bench-t="
PLACEHOLDER = MARKER + b"0" * 19
MARKER_RE = re.compile(rb"bench-t=(\d{19})")


def stamp(template: bytes, now_ns: int | None = None) -> bytes:
    """Return ``template`` with every placeholder replaced by the current time in ns."""
    ns = time.time_ns() if now_ns is None else now_ns
    return template.replace(PLACEHOLDER, MARKER + b"%019d" % ns)


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
