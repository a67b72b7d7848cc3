"""Checks a Publish request before anything of it is fanned out.

Every rule is here, in one table per event type, so the error a publisher sees
and the rule that produced it are read in one place. Errors are
:class:`~core.errors.InvalidArgument` naming the field as ``events[i].type.field``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from clearpath.realtime.v1 import events_pb2 as pb
from core.codec import enum_names
from core.errors import InvalidArgument
from core.limits import MAX_EVENT_BYTES, MAX_STRING_CHARS
from core.topics import INTERNAL_PAYLOAD_TOPIC, PAYLOAD_TOPIC, topic_name

__all__ = ["Limits", "prepare_events", "valid_traceparent"]

# W3C Trace Context, version 00: version-trace_id-parent_id-flags, lower-case hex.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16

# Timestamp's valid range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799

# Every payload accepted here: the event types, and the internal canary.
_TOPIC_OF: dict[str, int] = {**PAYLOAD_TOPIC, **INTERNAL_PAYLOAD_TOPIC}


@dataclass(frozen=True)
class Limits:
    """Bounds on what one Publish may carry."""

    max_batch: int = 1000
    max_event_bytes: int = MAX_EVENT_BYTES
    max_string_chars: int = MAX_STRING_CHARS
    max_id_chars: int = 128


# Per event type: fields that must be non-empty (any one of a tuple suffices),
# and numeric ranges (inclusive).
_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "package_update": (("package_id", "tracking_number"), ("status",)),
    "anomaly_detected": (("package_id",), ("anomaly_type",), ("severity",)),
    "dashboard_metrics": (),
    "notification": (("title", "message"),),
    "map_update": (("package_id", "vehicle_id"),),
    "agent_activity": (("agent_id",), ("action",)),
    "system_health": (("component",), ("status",)),
    # Internal (see core.topics): who may publish it is the service's rule.
    "canary": (("source",),),
}
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "anomaly_detected": {"confidence_score": (0.0, 1.0)},
    "dashboard_metrics": {"recovery_rate": (0.0, 1.0), "avg_delivery_time": (0.0, math.inf)},
    "map_update": {
        "latitude": (-90.0, 90.0),
        "longitude": (-180.0, 180.0),
        "heading": (0.0, 360.0),
        "speed_kmh": (0.0, math.inf),
    },
    "system_health": {
        "cpu_percent": (0.0, 100.0),
        "memory_percent": (0.0, 100.0),
        "latency_ms": (0.0, math.inf),
        "error_rate": (0.0, math.inf),
    },
}


def prepare_events(
    events: Sequence[pb.Event], limits: Limits, *, copy: bool = True
) -> list[pb.Event]:
    """Validate a batch and return copies ready to publish, or raise InvalidArgument.

    With ``copy=False`` the given messages themselves are made ready (for a
    request the caller owns, such as a deserialized gRPC request); nothing is
    changed unless the whole batch passes.

    A ready event has its payload checked, its topic set from the payload (a
    given topic must match it), an id (a new UUID when empty) and a timestamp
    (now when absent); any position given is cleared, and so is a
    ``traceparent`` that is not valid W3C trace context (ignored, as the W3C
    spec asks). ``published_at`` is the core's to set. Nothing is returned
    unless every event passes, so a batch is published whole or not at all.
    """
    if not events:
        raise InvalidArgument("events: at least one event is required")
    if len(events) > limits.max_batch:
        raise InvalidArgument(
            f"events: {len(events)} events in one call; at most {limits.max_batch}"
        )
    ready = []
    for i, event in enumerate(events):
        _check(event, f"events[{i}]", limits)
    ids = _Ids(len(events))
    for event in events:
        ready.append(_ready(event, copy, ids))
    return ready


class _Ids:
    """New event ids for a batch: 128 random bits each, like a UUID4's hex, from one
    ``os.urandom`` call for the whole batch (made when the first one is needed: a
    call per event was a syscall per event)."""

    __slots__ = ("_hex", "_next", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._hex = ""
        self._next = 0

    def new(self) -> str:
        if not self._hex:
            self._hex = os.urandom(16 * self._size).hex()
        start = self._next
        self._next = start + 32
        return self._hex[start : start + 32]


def _check(event: pb.Event, where: str, limits: Limits) -> None:
    size = event.ByteSize()
    if size > limits.max_event_bytes:
        raise InvalidArgument(
            f"{where}: event is {size} bytes; at most {limits.max_event_bytes} bytes"
        )
    kind = event.WhichOneof("payload")
    if kind is None:
        raise InvalidArgument(f"{where}: no payload; set one of {', '.join(PAYLOAD_TOPIC)}")
    topic = _TOPIC_OF[kind]
    if event.topic not in (pb.TOPIC_UNSPECIFIED, topic):
        try:
            given = topic_name(event.topic)
        except InvalidArgument:
            given = str(event.topic)
        raise InvalidArgument(
            f"{where}.topic: a {kind} payload belongs to {topic_name(topic)}, not {given}"
        )
    if len(event.id) > limits.max_id_chars:
        raise InvalidArgument(f"{where}.id: at most {limits.max_id_chars} characters")
    if event.HasField("timestamp"):
        _check_timestamp(event.timestamp, f"{where}.timestamp")
    payload = getattr(event, kind)
    _check_payload(kind, payload, f"{where}.{kind}", limits, size)


def _ready(event: pb.Event, copy: bool, ids: _Ids) -> pb.Event:
    if copy:
        ready = pb.Event()
        ready.CopyFrom(event)
    else:
        ready = event
    ready.topic = _TOPIC_OF[ready.WhichOneof("payload")]  # type: ignore[index,assignment]
    ready.ClearField("position")
    if ready.traceparent and not valid_traceparent(ready.traceparent):
        ready.traceparent = ""
    if not ready.id:
        ready.id = ids.new()
    if not ready.HasField("timestamp"):
        # Timestamp.GetCurrentTime goes through datetime: 6 % of a batched
        # Publish's cost on the Redis broker (py-spy); the fields directly instead.
        now = time.time_ns()
        stamp = ready.timestamp
        stamp.seconds = now // 1_000_000_000
        stamp.nanos = now % 1_000_000_000
    return ready


def valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a W3C ``traceparent`` of version 00
    (``00-<32 hex>-<16 hex>-<2 hex>``, lower case, neither id all zeros)."""
    match = _TRACEPARENT.fullmatch(value)
    return match is not None and match[1] != _ZERO_TRACE and match[2] != _ZERO_PARENT


class _Plan:
    """What to check of one payload type, worked out once from its descriptor."""

    __slots__ = ("doubles", "enums", "stamps", "strings")

    def __init__(self, kind: str) -> None:
        descriptor = getattr(pb.Event(), kind).DESCRIPTOR
        ranges = _RANGES.get(kind, {})
        self.enums: list[tuple[str, dict[int, str]]] = []
        self.strings: list[str] = []
        self.doubles: list[tuple[str, float, float]] = []
        self.stamps: list[str] = []
        for field in descriptor.fields:
            if field.enum_type is not None:
                self.enums.append((field.name, enum_names(field.enum_type)))
            elif field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
                self.strings.append(field.name)
            elif field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
                low, high = ranges.get(field.name, (-_FINITE, _FINITE))
                self.doubles.append((field.name, max(low, -_FINITE), min(high, _FINITE)))
            elif field.message_type is not None:
                self.stamps.append(field.name)


_FINITE = sys.float_info.max
_PLANS = {kind: _Plan(kind) for kind in _TOPIC_OF}


def _check_payload(kind: str, payload: Message, where: str, limits: Limits, size: int) -> None:
    plan = _PLANS[kind]
    for name, names in plan.enums:
        value = getattr(payload, name)
        if value not in names:
            allowed = ", ".join(n for k, n in names.items() if k)
            raise InvalidArgument(f"{where}.{name}: unknown value {value}; one of: {allowed}")
    most = limits.max_string_chars
    # A string has no more characters than the event has bytes: short events skip this.
    for name in plan.strings if size > most else ():
        if len(getattr(payload, name)) > most:
            raise InvalidArgument(f"{where}.{name}: at most {most} characters")
    for name, low, high in plan.doubles:
        number = getattr(payload, name)
        if not low <= number <= high:  # also false for NaN and infinities
            if not math.isfinite(number):
                raise InvalidArgument(f"{where}.{name}: must be a finite number")
            raise InvalidArgument(f"{where}.{name}: {number} is out of range {_span(low, high)}")
    for name in plan.stamps:
        if payload.HasField(name):
            _check_timestamp(getattr(payload, name), f"{where}.{name}")
    for alternatives in _REQUIRED[kind]:
        if not any(getattr(payload, name) for name in alternatives):
            raise InvalidArgument(f"{where}.{' or '.join(alternatives)}: required")


def _span(low: float, high: float) -> str:
    return f"[{low}, {'inf' if high == _FINITE else high}]"


def _check_timestamp(stamp: Timestamp, where: str) -> None:
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS:
        raise InvalidArgument(f"{where}: outside 0001-01-01 .. 9999-12-31")
    if not 0 <= stamp.nanos <= 999_999_999:
        raise InvalidArgument(f"{where}.nanos: {stamp.nanos} is out of range [0, 999999999]")
