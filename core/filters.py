"""Subscription filters, evaluated in the core so unwanted events are never sent.

Pure functions of an event, and :class:`Skipped`, what a filter left out; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.errors import InvalidArgument
from core.positions import HasPosition, Position
from core.viewport import BoundingBox

__all__ = ["TELL_EVERY", "Matcher", "Skipped", "bbox_of", "build_matcher"]

Matcher = Callable[[pb.Event], bool]

_MAX_VALUES = 1000


def build_matcher(spec: spb.SubscriptionFilter) -> Matcher | None:
    """A predicate for events passing every filter set in ``spec``; None when none is.

    - ``package_ids``: events carrying a non-empty package_id must carry one of these;
    - ``tracking_numbers``: package updates must carry one of these;
    - ``min_severity``: anomalies and notifications must be at least this severe;
    - ``user_id``: notifications must be for this user or for everyone;
    - ``bbox``: map updates must be inside the box (:mod:`core.viewport`).

    Events a filter does not apply to pass it. Raises InvalidArgument for an
    unknown severity, more than 1000 values in a list, or a bad box (naming
    ``filter.bbox.south`` etc.).
    """
    for name in ("package_ids", "tracking_numbers"):
        if len(getattr(spec, name)) > _MAX_VALUES:
            raise InvalidArgument(f"filter.{name}: at most {_MAX_VALUES} values")
    if spec.min_severity not in pb.Severity.values():
        raise InvalidArgument(f"filter.min_severity: unknown value {spec.min_severity}")
    box = bbox_of(spec)
    checks: list[Matcher] = []
    if spec.package_ids:
        ids = frozenset(spec.package_ids)
        checks.append(lambda e: _package_id(e) in ids or not _package_id(e))
    if spec.tracking_numbers:
        numbers = frozenset(spec.tracking_numbers)
        checks.append(
            lambda e: (
                not e.HasField("package_update") or e.package_update.tracking_number in numbers
            )
        )
    if spec.min_severity:
        low = spec.min_severity
        checks.append(lambda e: _severity(e) >= low)
    if spec.user_id:
        user = spec.user_id
        checks.append(
            lambda e: not e.HasField("notification") or e.notification.user_id in ("", user)
        )
    if box is not None:
        inside = box.contains
        checks.append(
            lambda e: (
                not e.HasField("map_update")
                or inside(e.map_update.latitude, e.map_update.longitude)
            )
        )
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda e: all(check(e) for check in checks)


def bbox_of(spec: spb.SubscriptionFilter) -> BoundingBox | None:
    """The box of ``spec``; None when the field is unset (no box). A set box is a
    box even when all zero (a point at 0, 0), as ``bbox`` is on the bridge.
    InvalidArgument naming ``filter.bbox.south`` etc. for a bad one."""
    if not spec.HasField("bbox"):
        return None
    b = spec.bbox
    return BoundingBox.of(b.west, b.south, b.east, b.north, where="filter.bbox")


#: Events a filter may leave out of a stream before the stream is told where it
#: is (at the next moment its queue is empty), whatever the time: one heartbeat
#: per this many refused events at most, and a told position never more than
#: this many events behind the topic (history keeps far more; see Skipped).
TELL_EVERY = 1000


class Skipped:
    """Where a filtered stream really is, per topic: the newest position of an
    event its filter left out since the stream last got an event of that topic
    at or after it, or was told it.

    A subscriber resumes after the last position it knows; with a filter that
    refuses everything for a while, the last event it got may fall out of the
    history and its resume would report a gap that is not one. Telling it these
    positions (gRPC: ``Heartbeat.positions``) keeps its resume position fresh.
    They may be told only when nothing of the topic is queued for the stream
    ahead of them (the subscriber moves its cursor past them), which is the
    caller's to check. Pure, plain calls.
    """

    __slots__ = ("_last", "count")

    def __init__(self) -> None:
        self._last: dict[int, Position] = {}
        #: Events left out since positions were last taken (see :data:`TELL_EVERY`).
        self.count = 0

    def __bool__(self) -> bool:
        return bool(self._last)

    def skip(self, topic: int, position: HasPosition) -> bool:
        """The event of ``topic`` at ``position`` was left out. True exactly when
        this makes :data:`TELL_EVERY` since the last :meth:`take`: time to tell."""
        self._last[topic] = Position(position.offset, position.epoch)
        self.count += 1
        return self.count == TELL_EVERY

    def passed(self, topic: int, position: HasPosition) -> None:
        """An event of ``topic`` at ``position`` was sent: it says at least as much."""
        last = self._last.get(topic)
        if last is not None and position.epoch == last.epoch and position.offset >= last.offset:
            del self._last[topic]

    def due(self) -> bool:
        """Whether :data:`TELL_EVERY` events were left out since the last :meth:`take`."""
        return self.count >= TELL_EVERY

    def take(self) -> dict[int, Position]:
        """The positions to tell now, by topic; forgotten here (the count restarts)."""
        told, self._last = self._last, {}
        self.count = 0
        return told


def _package_id(event: pb.Event) -> str:
    kind = event.WhichOneof("payload")
    payload = getattr(event, kind) if kind else None
    return str(getattr(payload, "package_id", ""))


def _severity(event: pb.Event) -> int:
    if event.HasField("anomaly_detected"):
        return int(event.anomaly_detected.severity)
    if event.HasField("notification"):
        return int(event.notification.severity)
    return pb.SEVERITY_CRITICAL
