"""JSON frames for events: the one mapping between protobuf events and JSON.

The WebSocket bridge, the CLI and the SDK all speak this shape::

    {"type": "package_update", "subscription_type": "package_updates",
     "id": "…", "position": {"offset": 12, "epoch": "…"},
     "data": {"package_id": "…", "status": "in_transit", …},
     "timestamp": "2024-01-15T10:30:00Z",
     "published_at": "2024-01-15T10:30:00.042Z",
     "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

``published_at`` (when the core accepted the event, RFC 3339 UTC with
milliseconds) and ``traceparent`` (W3C trace context of the publishing call)
are present only when the event has them.

Payload fields keep their proto (snake_case) names and natural JSON types:
enums are lower-case names without their prefix (``PACKAGE_STATUS_IN_TRANSIT``
→ ``"in_transit"``), timestamps are RFC 3339 UTC strings ending in ``Z`` (or
null when unset), numbers stay numbers. Every payload field is present.

The converters are built once per message type from the descriptors, so a
field added to ``protos/`` appears here with no code change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument
from core.topics import PAYLOAD_TOPIC, TOPIC_NAMES, topic_name

__all__ = [
    "encode_frame",
    "enum_names",
    "event_from_frame",
    "event_to_frame",
    "millis_text",
    "parse_timestamp",
    "payload_to_dict",
]

_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_INTS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS = {FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT}


def enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Number → JSON name of each value of ``enum``, the prefix stripped, lower case."""
    cached = _ENUM_NAMES.get(enum.full_name)
    if cached is None:
        prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum.name))
        prefix = prefix.upper() + "_"
        cached = {v.number: v.name.removeprefix(prefix).lower() for v in enum.values}
        _ENUM_NAMES[enum.full_name] = cached
    return cached


_ENUM_NAMES: dict[str, dict[int, str]] = {}


def parse_timestamp(value: str, field: str) -> Timestamp:
    """A Timestamp from RFC 3339 text or ``now``; InvalidArgument names ``field``."""
    ts = Timestamp()
    if value.strip().lower() == "now":
        ts.GetCurrentTime()
        return ts
    try:
        ts.FromJsonString(value.strip())
    except ValueError:
        try:  # also accept offsets other than Z, as datetime reads them
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidArgument(
                f"{field}: {value!r} is not an RFC 3339 timestamp "
                "(e.g. 2024-01-15T10:30:00Z) or 'now'"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts.FromDatetime(parsed)
    return ts


# --- proto → JSON --------------------------------------------------------------

# Descriptor objects come from the C (upb) or Python implementation; both quack alike.
Descriptor = Any
EnumDescriptor = Any
_Converter = Callable[[Message], dict[str, Any]]
_TO_DICT: dict[str, _Converter] = {}


def _field_reader(field: Any) -> Callable[[Any], Any]:
    if field.message_type is not None and field.message_type.full_name == _TIMESTAMP:
        return lambda ts: ts.ToJsonString() if (ts.seconds or ts.nanos) else None
    if field.message_type is not None:
        return _converter(field.message_type)
    if field.enum_type is not None:
        names = enum_names(field.enum_type)
        return lambda n: names.get(n, n)
    return lambda v: v


def _converter(descriptor: Descriptor) -> _Converter:
    cached = _TO_DICT.get(descriptor.full_name)
    if cached is not None:
        return cached
    # Fields in proto order; plain scalars are read as they are.
    fields: list[tuple[str, Callable[[Any], Any] | None, bool]] = []
    for field in descriptor.fields:
        repeated = _is_repeated(field)
        simple = field.message_type is None and field.enum_type is None and not repeated
        fields.append((field.name, None if simple else _field_reader(field), repeated))

    def to_dict(msg: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, read, repeated in fields:
            value = getattr(msg, name)
            if read is None:
                out[name] = value
            else:
                out[name] = [read(v) for v in value] if repeated else read(value)
        return out

    _TO_DICT[descriptor.full_name] = to_dict
    return to_dict


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def payload_to_dict(payload: Message) -> dict[str, Any]:
    """Every field of a payload message as natural JSON values (see module doc)."""
    return _converter(payload.DESCRIPTOR)(payload)


def event_to_frame(event: pb.Event) -> dict[str, Any]:
    """The JSON frame of a published event (one with its payload set)."""
    kind = event.WhichOneof("payload")
    if kind is None:
        raise InvalidArgument("event has no payload")
    frame: dict[str, Any] = {
        "type": kind,
        "subscription_type": TOPIC_NAMES.get(event.topic) or topic_name(PAYLOAD_TOPIC[kind]),
        "id": event.id,
        "position": {"offset": event.position.offset, "epoch": event.position.epoch},
        "data": payload_to_dict(getattr(event, kind)),
        "timestamp": event.timestamp.ToJsonString(),
    }
    published = event.published_at
    if published.seconds or published.nanos:
        frame["published_at"] = millis_text(published)
    if event.traceparent:
        frame["traceparent"] = event.traceparent
    return frame


def millis_text(ts: Timestamp) -> str:
    """``ts`` as RFC 3339 UTC with exactly three fraction digits (``…:00.042Z``)."""
    when = datetime.fromtimestamp(ts.seconds, UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ts.nanos // 1_000_000:03d}Z"


def encode_frame(frame: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON bytes of a frame (compact; the same bytes go to every receiver)."""
    return orjson.dumps(frame)


# --- JSON → proto --------------------------------------------------------------


_FRAME_KEYS = {
    "type",
    "data",
    "id",
    "timestamp",
    "subscription_type",
    "position",
    "published_at",
    "traceparent",
}


def event_from_frame(frame: Mapping[str, Any], where: str = "event") -> pb.Event:
    """An Event from ``{"type": ..., "data": {...}}`` (optional ``id``, ``timestamp``).

    Enum fields take their JSON names (``in_transit``) or full proto names,
    timestamps take RFC 3339 or ``now``, numbers are range-checked. Unknown
    fields are refused. Errors are InvalidArgument naming ``where.field`` and,
    for enums, the allowed values. The result is not yet validated for
    publishing (see :mod:`core.validation`).
    """
    if not isinstance(frame, Mapping):
        raise InvalidArgument(f"{where}: must be a JSON object")
    # subscription_type, position, published_at and traceparent are what a subscriber
    # saw; publishing ignores them, so frames printed by `clearpath subscribe` can be
    # published again (as new events: the core stamps them anew).
    unknown = set(frame) - _FRAME_KEYS
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = frame.get("type")
    if kind not in PAYLOAD_TOPIC:
        raise InvalidArgument(
            f"{where}.type: {kind!r} is not an event type; valid: {', '.join(PAYLOAD_TOPIC)}"
        )
    event = pb.Event(topic=PAYLOAD_TOPIC[kind])  # type: ignore[arg-type]
    data = frame.get("data", {})
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{where}.data: must be a JSON object")
    fill_message(getattr(event, kind), data, f"{where}.data")
    if frame.get("id") is not None:
        if not isinstance(frame["id"], str):
            raise InvalidArgument(f"{where}.id: must be a string")
        event.id = frame["id"]
    if frame.get("timestamp") is not None:
        event.timestamp.CopyFrom(_timestamp_value(frame["timestamp"], f"{where}.timestamp"))
    return event


def fill_message(msg: Message, data: Mapping[str, Any], where: str) -> None:
    """Set the fields of ``msg`` from JSON ``data`` (see :func:`event_from_frame`)."""
    fields = msg.DESCRIPTOR.fields_by_name
    for name, value in data.items():
        field = fields.get(name)
        if field is None:
            raise InvalidArgument(f"{where}: unknown field {name!r}; fields: {', '.join(fields)}")
        if value is None:
            continue
        set_field(msg, field, value, f"{where}.{name}")
    # Setting a oneof member with only defaults must still select it.
    msg.SetInParent()


def set_field(msg: Message, field: Any, value: Any, where: str) -> None:
    """Set one scalar, enum or Timestamp field from a JSON (or text) value."""
    if _is_repeated(field):
        raise InvalidArgument(f"{where}: repeated fields are not supported here")
    if field.message_type is not None:
        if field.message_type.full_name != _TIMESTAMP:
            fill_message(getattr(msg, field.name), _object(value, where), where)
        else:
            getattr(msg, field.name).CopyFrom(_timestamp_value(value, where))
        return
    setattr(msg, field.name, scalar_value(field, value, where))


def scalar_value(field: Any, value: Any, where: str) -> Any:
    """The Python value for a scalar or enum field, from JSON or command-line text."""
    if field.enum_type is not None:
        return _enum_value(field.enum_type, value, where)
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: must be a string")
        return value
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return value.lower() in {"true", "1"}
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where}: must be true or false")
        return value
    if cpp in _INTS:
        low, high = _INTS[cpp]
        number = _number(value, where, integer=True)
        if not low <= number <= high:
            raise InvalidArgument(f"{where}: {number} is out of range [{low}, {high}]")
        return int(number)
    if cpp in _FLOATS:
        number = _number(value, where, integer=False)
        if not math.isfinite(number):
            raise InvalidArgument(f"{where}: must be a finite number")
        return float(number)
    raise InvalidArgument(f"{where}: unsupported field type")


def _number(value: Any, where: str, *, integer: bool) -> float | int:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise InvalidArgument(f"{where}: must be {kind}")
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise InvalidArgument(f"{where}: {value!r} is not {kind}") from None
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) and (integer or not isinstance(value, float)):
        raise InvalidArgument(f"{where}: must be {kind}")
    return value


def _enum_value(enum: EnumDescriptor, value: Any, where: str) -> int:
    names = enum_names(enum)
    if isinstance(value, str):
        key = value.strip()
        for number, name in names.items():
            if number and key.lower() == name:
                return number
        if key in enum.values_by_name and enum.values_by_name[key].number:
            return int(enum.values_by_name[key].number)
    allowed = ", ".join(name for number, name in names.items() if number)
    raise InvalidArgument(f"{where}: {value!r} is not one of: {allowed}")


def _timestamp_value(value: Any, where: str) -> Timestamp:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: must be an RFC 3339 string")
    return parse_timestamp(value, where)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where}: must be a JSON object")
    return value
