"""Where a subscription stands per topic, what to resume from, and what was lost.

Pure state, driven by plain calls (no I/O), so every rule of resuming is tested
without a server: :class:`ResumeState` remembers the last position seen on each
topic, builds the ``since`` of the next SubscribeRequest, turns the core's
confirmation into :class:`Gap` notices, drops events already delivered, and
moves on with the positions a heartbeat tells a filtered stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.positions import Cursors, GapReason, Position
from core.topics import topic_name

__all__ = ["Gap", "GapReason", "ResumeState"]


@dataclass(frozen=True)
class Gap:
    """Events of ``topic`` after ``since`` could not all be delivered.

    Yielded by a subscription, in stream order, when it (re)connects with a
    resume position the core could not fully serve. The events that follow are
    the oldest the core still has (none for ``position_ahead``), then live ones;
    whatever lies between is lost to this subscriber, and reconciling it (e.g.
    re-reading state from its source) is the caller's job.
    """

    #: The subscription type, e.g. ``"package_updates"``.
    topic: str
    #: The last position this subscriber had seen (the resume position asked for).
    since: pb.StreamPosition
    #: The topic's latest position on the core when the subscription resumed.
    position: pb.StreamPosition
    reason: GapReason


class ResumeState:
    """Last position seen per topic; used to resume and to skip duplicates.

    A thin adapter of :class:`core.positions.Cursors` (where the rules live)
    to the SDK's protobuf requests and public :class:`Gap`.
    """

    def __init__(
        self, topics: Iterable[int], since: Mapping[int, pb.StreamPosition] | None = None
    ) -> None:
        self.topics: tuple[int, ...] = tuple(dict.fromkeys(topics))
        for topic in since or {}:
            if topic not in self.topics:
                raise ValueError(f"since: {topic_name(topic)} is not subscribed")
        self._cursors = Cursors(since)

    @property
    def positions(self) -> dict[int, pb.StreamPosition]:
        """Copies of the last position seen (or confirmed) per topic."""
        return {topic: _pb(p) for topic, p in self._cursors.items()}

    def request_since(self) -> list[spb.TopicPosition]:
        """The ``since`` entries of the next SubscribeRequest."""
        return [
            spb.TopicPosition(topic=topic, position=_pb(position))  # type: ignore[arg-type]
            for topic, position in self._cursors.items()
        ]

    def confirm(self, confirmed: spb.SubscriptionConfirmed) -> list[Gap]:
        """Take in the first message of a stream; return the gaps it reveals.

        A topic with no position yet starts from the confirmed one, so a
        reconnect before its first event still misses nothing.
        """
        gaps: list[Gap] = []
        for state in confirmed.topics:
            lost = self._cursors.confirm(state.topic, state.position, state.recovered)
            if lost is not None:
                gaps.append(
                    Gap(topic_name(lost.topic), _pb(lost.since), _pb(lost.latest), lost.reason)
                )
        return gaps

    def accept(self, event: pb.Event) -> bool:
        """True for an event not delivered before (and remember its position)."""
        return self._cursors.accept(event.topic, event.position)

    def advance(self, positions: Iterable[spb.TopicPosition]) -> None:
        """Take in a heartbeat's ``positions``: where the stream is on topics whose
        events its filter left out (every event that follows comes after them).
        A topic's position moves forward only, within its epoch; an older one, one
        of another epoch, or one of a topic without a position yet is ignored."""
        for entry in positions:
            last = self._cursors.get(entry.topic)
            at = entry.position
            if last is not None and at.epoch == last.epoch and at.offset > last.offset:
                self._cursors.accept(entry.topic, at)


def _pb(position: Position) -> pb.StreamPosition:
    return pb.StreamPosition(offset=position.offset, epoch=position.epoch)
