"""Topics (subscription types) and event types, and the one-to-one map between them.

Names are the JSON/WebSocket spellings: ``package_updates`` for
``TOPIC_PACKAGE_UPDATES``, ``package_update`` for the ``package_update`` payload.

Besides the seven subscription types (:data:`TOPICS`, what browsers, tokens and
the CLI name) the broker carries internal topics (:data:`INTERNAL_TOPICS`): only
``TOPIC_CANARY``, on which each bridge publishes probes to itself (its
readiness). They are stored and fanned out like any topic, but only operators
may publish or subscribe to them, and no name lookup for clients finds them.
"""

from __future__ import annotations

from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument, UnknownTopic

__all__ = [
    "ALL_TOPICS",
    "CANARY",
    "EVENT_TYPES",
    "INTERNAL_PAYLOAD_TOPIC",
    "INTERNAL_TOPICS",
    "PAYLOAD_TOPIC",
    "TOPICS",
    "TOPIC_NAMES",
    "TOPIC_PAYLOAD",
    "topic_from_name",
    "topic_name",
]

#: Payload field (= event type) → the topic it is published on.
PAYLOAD_TOPIC: dict[str, int] = {
    "package_update": pb.TOPIC_PACKAGE_UPDATES,
    "anomaly_detected": pb.TOPIC_ANOMALIES,
    "dashboard_metrics": pb.TOPIC_DASHBOARD_METRICS,
    "notification": pb.TOPIC_NOTIFICATIONS,
    "map_update": pb.TOPIC_MAP_UPDATES,
    "agent_activity": pb.TOPIC_AGENT_ACTIVITY,
    "system_health": pb.TOPIC_SYSTEM_HEALTH,
}
#: Topic → its payload field.
TOPIC_PAYLOAD: dict[int, str] = {topic: payload for payload, topic in PAYLOAD_TOPIC.items()}
#: Every real topic, in enum order.
TOPICS: tuple[int, ...] = tuple(sorted(TOPIC_PAYLOAD))
#: Topic → JSON name, e.g. TOPIC_PACKAGE_UPDATES → "package_updates".
TOPIC_NAMES: dict[int, str] = {
    t: pb.Topic.Name(t).removeprefix("TOPIC_").lower()  # type: ignore[arg-type]
    for t in TOPICS
}
_BY_NAME = {name: t for t, name in TOPIC_NAMES.items()}
#: Every event type (payload field name), in topic order.
EVENT_TYPES: tuple[str, ...] = tuple(TOPIC_PAYLOAD[t] for t in TOPICS)

#: The bridges' readiness probe (payload ``canary``): internal, operators only.
CANARY: int = pb.TOPIC_CANARY
#: Internal payload field → its topic; not event types of the public API.
INTERNAL_PAYLOAD_TOPIC: dict[str, int] = {"canary": CANARY}
#: Topics the broker carries that are not subscription types, in enum order.
INTERNAL_TOPICS: tuple[int, ...] = tuple(sorted(INTERNAL_PAYLOAD_TOPIC.values()))
#: Every topic the broker stores and fans out: the subscription types, then the internal ones.
ALL_TOPICS: tuple[int, ...] = TOPICS + INTERNAL_TOPICS
_ALL_NAMES: dict[int, str] = {
    **TOPIC_NAMES,
    **{t: pb.Topic.Name(t).removeprefix("TOPIC_").lower() for t in INTERNAL_TOPICS},  # type: ignore[arg-type]
}


def topic_name(topic: int) -> str:
    """The JSON name of a topic, internal ones included (``canary``); raises
    InvalidArgument for an unknown number."""
    try:
        return _ALL_NAMES[topic]
    except KeyError:
        raise InvalidArgument(f"unknown topic {topic}") from None


def topic_from_name(name: str) -> int:
    """The subscription type called ``name`` (``anomalies`` or ``TOPIC_ANOMALIES``);
    internal topics are not found by name (no client can ask for them).

    Raises UnknownTopic (an InvalidArgument) listing the valid names otherwise.
    """
    key = name.strip().lower().removeprefix("topic_")
    try:
        return _BY_NAME[key]
    except KeyError:
        valid = ", ".join(TOPIC_NAMES.values())
        raise UnknownTopic(f"unknown subscription type {name!r}; valid: {valid}") from None
