"""Delivery classes: how each topic's events wait for a subscriber that is behind.

Pure data and functions of an event; no I/O. The core (gRPC streams) and the
bridge (sockets) read the same table, and ``GET /ws/schema`` publishes it.

- ``urgent`` (anomalies, notifications): an urgent event never waits behind
  events of other classes in a subscriber's queue (it takes the priority lane);
  never conflated.
- ``reliable`` (package updates, agent activity): every event, in order; never
  conflated.
- ``latest`` (map updates, dashboard metrics, system health): latest state per
  *key*. A subscriber that has fallen behind receives only the newest queued
  event of each key instead of every intermediate one, and is told how many it
  skipped; a subscriber that keeps up receives every event.

Order within one topic is always kept; classes only reorder events of different
topics, which carry independent positions.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable

from pydantic import BaseModel, Field, field_validator

from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument
from core.topics import CANARY, TOPIC_NAMES, TOPIC_PAYLOAD, topic_from_name

__all__ = [
    "CONFLATION_KEYS",
    "DELIVERY",
    "URGENT_TOPICS",
    "DeliveryClass",
    "DeliveryFields",
    "KeyOf",
    "key_function",
    "parse_conflation",
]


class DeliveryClass(enum.StrEnum):
    """How a topic's events are queued for a subscriber that is behind."""

    URGENT = "urgent"
    RELIABLE = "reliable"
    LATEST = "latest"


#: Topic → its delivery class (internal topics included).
DELIVERY: dict[int, DeliveryClass] = {
    pb.TOPIC_PACKAGE_UPDATES: DeliveryClass.RELIABLE,
    pb.TOPIC_ANOMALIES: DeliveryClass.URGENT,
    pb.TOPIC_DASHBOARD_METRICS: DeliveryClass.LATEST,
    pb.TOPIC_NOTIFICATIONS: DeliveryClass.URGENT,
    pb.TOPIC_MAP_UPDATES: DeliveryClass.LATEST,
    pb.TOPIC_AGENT_ACTIVITY: DeliveryClass.RELIABLE,
    pb.TOPIC_SYSTEM_HEALTH: DeliveryClass.LATEST,
    CANARY: DeliveryClass.RELIABLE,
}

#: Topics whose events take the priority lane.
URGENT_TOPICS: frozenset[int] = frozenset(
    t for t, kind in DELIVERY.items() if kind is DeliveryClass.URGENT
)

#: The default conflation keys of the ``latest`` topics: the payload fields whose
#: values together name "the same thing" (an empty tuple: the topic is one thing,
#: e.g. the network-wide dashboard figures). A map update names a package on a
#: vehicle, a package, or a vehicle alone (it carries at least one of the two):
#: both fields, so vehicles without a package never share a key.
CONFLATION_KEYS: dict[int, tuple[str, ...]] = {
    pb.TOPIC_MAP_UPDATES: ("package_id", "vehicle_id"),
    pb.TOPIC_DASHBOARD_METRICS: (),
    pb.TOPIC_SYSTEM_HEALTH: ("component",),
}

#: An event's conflation key (None: never conflated).
KeyOf = Callable[[pb.Event], Hashable | None]


def _string_fields(topic: int) -> set[str]:
    payload = pb.Event.DESCRIPTOR.fields_by_name[TOPIC_PAYLOAD[topic]].message_type
    assert payload is not None  # every payload field is a message
    return {f.name for f in payload.fields if f.type == f.TYPE_STRING}


def parse_conflation(spec: str) -> dict[int, tuple[str, ...]]:
    """The conflated topics and their keys from a setting such as
    ``"map_updates:package_id+vehicle_id;dashboard_metrics;system_health:component"``
    (``TOPIC[:FIELD[+FIELD...]]`` separated by ``;``); ``"none"`` or ``""``:
    nothing is conflated; ``"default"``: :data:`CONFLATION_KEYS`.

    Raises InvalidArgument for an unknown topic, a topic that is not of the
    ``latest`` class (never-drop topics are never conflated), or a key that is
    not a string field of the topic's payload.
    """
    text = spec.strip()
    if text.lower() == "default":
        return dict(CONFLATION_KEYS)
    if text.lower() in ("", "none"):
        return {}
    keys: dict[int, tuple[str, ...]] = {}
    for part in text.split(";"):
        name, _, fields = part.strip().partition(":")
        topic = topic_from_name(name)
        if DELIVERY[topic] is not DeliveryClass.LATEST:
            latest = ", ".join(
                TOPIC_NAMES[t] for t, k in DELIVERY.items() if k is DeliveryClass.LATEST
            )
            raise InvalidArgument(
                f"{TOPIC_NAMES[topic]} is never conflated (every event is kept); "
                f"conflatable: {latest}"
            )
        names = tuple(f.strip() for f in fields.split("+") if f.strip()) if fields else ()
        known = _string_fields(topic)
        for field in names:
            if field not in known:
                raise InvalidArgument(
                    f"{TOPIC_NAMES[topic]}: {field!r} is not a key; "
                    f"string fields: {', '.join(sorted(known))}"
                )
        if topic in keys:
            raise InvalidArgument(f"{TOPIC_NAMES[topic]} given twice")
        keys[topic] = names
    return keys


def key_function(keys: dict[int, tuple[str, ...]]) -> KeyOf:
    """The conflation key of an event under ``keys`` (see :func:`parse_conflation`):
    ``(topic, *field values)`` for a conflated topic, None for every other event."""
    table = {topic: (TOPIC_PAYLOAD[topic], fields) for topic, fields in keys.items()}

    def key_of(event: pb.Event) -> Hashable | None:
        entry = table.get(event.topic)
        if entry is None:
            return None
        payload_name, fields = entry
        if not fields:
            return event.topic
        payload = getattr(event, payload_name)
        if len(fields) == 1:
            return (event.topic, getattr(payload, fields[0]))
        return (event.topic, *(getattr(payload, f) for f in fields))

    return key_of


class DeliveryFields(BaseModel):
    """The delivery settings the core's and the bridge's settings classes share
    (inherit it next to ``BaseSettings``: each field reads the class's own prefix,
    ``CLEARPATH_CORE_CONFLATE``, ``CLEARPATH_BRIDGE_CONFLATE``, ...). How far behind a
    subscriber conflates is each class's own (events on the core, bytes on the bridge)."""

    priority_lanes: bool = Field(
        True,
        description="urgent topics (anomalies, notifications) jump ahead of the others in "
        "every subscriber's queue; off: one queue in arrival order",
    )
    conflate: str = Field(
        "default",
        description="latest-state topics a subscriber that is behind receives only the newest "
        "event per key of: TOPIC[:FIELD[+FIELD]] separated by ';', 'default' "
        "(map_updates:package_id+vehicle_id;dashboard_metrics;system_health:component) or 'none'",
    )

    @field_validator("conflate")
    @classmethod
    def _conflation_parses(cls, value: str) -> str:
        try:
            parse_conflation(value)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def conflation(self) -> dict[int, tuple[str, ...]]:
        """``conflate`` parsed: the conflated topics and their key fields."""
        return parse_conflation(self.conflate)
