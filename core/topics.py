"""Topics (subscription types) and event types, and the one-to-one map between them.

Names are the JSON/WebSocket spellings: ``package_updates`` for
``TOPIC_PACKAGE_UPDATES``, ``package_update`` for the ``package_update`` payload.
"""

from __future__ import annotations

from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument, UnknownTopic

__all__ = [
    "EVENT_TYPES",
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


def topic_name(topic: int) -> str:
    """The JSON name of a topic; raises InvalidArgument for an unknown number."""
    try:
        return TOPIC_NAMES[topic]
    except KeyError:
        raise InvalidArgument(f"unknown topic {topic}") from None


def topic_from_name(name: str) -> int:
    """The topic called ``name`` (``anomalies`` or ``TOPIC_ANOMALIES``).

    Raises UnknownTopic (an InvalidArgument) listing the valid names otherwise.
    """
    key = name.strip().lower().removeprefix("topic_")
    try:
        return _BY_NAME[key]
    except KeyError:
        valid = ", ".join(TOPIC_NAMES.values())
        raise UnknownTopic(f"unknown subscription type {name!r}; valid: {valid}") from None
