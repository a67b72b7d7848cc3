"""What the SDK accepts → protobuf messages. Errors are core InvalidArgument."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.codec import event_from_frame, scalar_value
from core.errors import InvalidArgument
from core.topics import TOPIC_NAMES, topic_from_name
from core.viewport import BoundingBox

__all__ = [
    "BboxLike",
    "EventLike",
    "FilterLike",
    "PositionLike",
    "TopicLike",
    "to_bbox",
    "to_events",
    "to_filter",
    "to_since",
    "to_topics",
]

#: An event: a message, or a JSON frame ``{"type": "package_update", "data": {...}}``.
EventLike: TypeAlias = pb.Event | Mapping[str, Any]
#: A topic: its subscription type name (``"anomalies"``) or its enum number.
TopicLike: TypeAlias = str | int
FilterLike: TypeAlias = spb.SubscriptionFilter | Mapping[str, Any]
PositionLike: TypeAlias = pb.StreamPosition | Mapping[str, Any]
#: A map area: ``(west, south, east, north)`` in degrees, a mapping of those keys,
#: or a ``BoundingBox`` message.
BboxLike: TypeAlias = tuple[float, float, float, float] | Mapping[str, Any] | spb.BoundingBox


def to_events(events: EventLike | Iterable[EventLike]) -> list[pb.Event]:
    """One or many events as messages; frames are converted with the core codec."""
    items: Iterable[Any] = [events] if isinstance(events, pb.Event | Mapping) else events
    out: list[pb.Event] = []
    for i, item in enumerate(items):
        if isinstance(item, pb.Event):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(event_from_frame(item, f"events[{i}]"))
        else:
            raise InvalidArgument(f"events[{i}]: expected an Event or a frame dict, not {item!r}")
    if not out:
        raise InvalidArgument("events: at least one event is required")
    return out


def to_topics(topics: TopicLike | Iterable[TopicLike]) -> list[int]:
    """Topic numbers from names or numbers, without duplicates, in the order given."""
    items: Iterable[TopicLike] = [topics] if isinstance(topics, str | int) else topics
    out: list[int] = []
    for item in items:
        if isinstance(item, str):
            topic = topic_from_name(item)
        elif isinstance(item, int) and item in TOPIC_NAMES:
            topic = item
        else:
            valid = ", ".join(TOPIC_NAMES.values())
            raise InvalidArgument(f"topics: unknown topic {item!r}; valid: {valid}")
        if topic not in out:
            out.append(topic)
    if not out:
        raise InvalidArgument("topics: at least one topic is required")
    return out


def to_filter(filters: FilterLike | None) -> spb.SubscriptionFilter:
    """A SubscriptionFilter from a message or a dict of its fields.

    List fields take one string or an iterable of them; enums take their JSON
    names (``"high"``). Field names come from the descriptor, so a filter added
    to the proto is accepted here with no change. A message is returned as
    given once its box (if set) passes :func:`to_bbox`'s checks. A ``bbox`` that
    is set is a box, even all zero (the point 0, 0); None or absent: no box.
    """
    if filters is None:
        return spb.SubscriptionFilter()
    if isinstance(filters, spb.SubscriptionFilter):
        if filters.HasField("bbox"):
            to_bbox(filters.bbox, "filter.bbox")  # refused here, not by the core later
        return filters
    spec = spb.SubscriptionFilter()
    fields = spec.DESCRIPTOR.fields_by_name
    for name, value in filters.items():
        field = fields.get(name)
        if field is None:
            raise InvalidArgument(f"filter: unknown key {name!r}; keys: {', '.join(fields)}")
        where = f"filter.{name}"
        if name == "bbox":
            if value is not None:
                spec.bbox.CopyFrom(to_bbox(value, where))
        elif field.is_repeated:
            values = [value] if isinstance(value, str) else list(value)
            getattr(spec, name).extend(scalar_value(field, v, where) for v in values)
        elif value is not None:
            setattr(spec, name, scalar_value(field, value, where))
    return spec


def to_bbox(bbox: BboxLike, where: str = "bbox") -> spb.BoundingBox:
    """A BoundingBox message, checked by :mod:`core.viewport`'s rules (InvalidArgument
    naming ``{where}.south`` etc.; a huge integer or NaN included). Put it in a
    filter with ``CopyFrom``: the field is then set, even for an all-zero box."""
    if isinstance(bbox, spb.BoundingBox):
        box = BoundingBox.of(bbox.west, bbox.south, bbox.east, bbox.north, where=where)
    elif isinstance(bbox, Mapping):
        box = BoundingBox.from_mapping(dict(bbox), where=where)
    elif isinstance(bbox, tuple | list) and len(bbox) == 4:
        box = BoundingBox.of(*bbox, where=where)
    else:
        raise InvalidArgument(f"{where}: expected (west, south, east, north)")
    return spb.BoundingBox(west=box.west, south=box.south, east=box.east, north=box.north)


def to_since(
    since: Mapping[str, PositionLike] | None, topics: list[int]
) -> dict[int, pb.StreamPosition]:
    """Resume positions per topic, from messages or ``{"epoch": ..., "offset": ...}``
    (the ``position`` of a JSON frame)."""
    out: dict[int, pb.StreamPosition] = {}
    for key, value in (since or {}).items():
        topic = to_topics(key)[0]
        where = f"since.{TOPIC_NAMES[topic]}"
        if topic not in topics:
            raise InvalidArgument(f"{where}: the topic is not subscribed")
        if isinstance(value, pb.StreamPosition):
            out[topic] = value
            continue
        if not isinstance(value, Mapping) or set(value) - {"epoch", "offset"}:
            raise InvalidArgument(f"{where}: expected {{'epoch': str, 'offset': int}}")
        epoch, offset = value.get("epoch", ""), value.get("offset", 0)
        if not isinstance(epoch, str) or not isinstance(offset, int) or offset < 0:
            raise InvalidArgument(f"{where}: epoch must be a string, offset an integer >= 0")
        out[topic] = pb.StreamPosition(epoch=epoch, offset=offset)
    return out
