"""Where a subscription stands per topic, what to resume from, and what was lost.

Pure state, driven by plain calls (no I/O), so every rule of resuming is tested
without a server: :class:`ResumeState` remembers the last position seen on each
topic, builds the ``since`` of the next SubscribeRequest, turns the core's
confirmation into :class:`Gap` notices, and drops events already delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.topics import topic_name

__all__ = ["Gap", "GapReason", "ResumeState"]

#: Why events were lost: the topic's history was reset (e.g. an in-memory core
#: restarted), the position is older than the history kept, or it is ahead of
#: the topic (a position from some other core).
GapReason = Literal["epoch_changed", "history_trimmed", "position_ahead"]


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
    """Last position seen per topic; used to resume and to skip duplicates."""

    def __init__(
        self, topics: Iterable[int], since: Mapping[int, pb.StreamPosition] | None = None
    ) -> None:
        self.topics: tuple[int, ...] = tuple(dict.fromkeys(topics))
        self._last: dict[int, pb.StreamPosition] = {}
        for topic, position in (since or {}).items():
            if topic not in self.topics:
                raise ValueError(f"since: {topic_name(topic)} is not subscribed")
            self._last[topic] = _copy(position)

    @property
    def positions(self) -> dict[int, pb.StreamPosition]:
        """Copies of the last position seen (or confirmed) per topic."""
        return {topic: _copy(p) for topic, p in self._last.items()}

    def request_since(self) -> list[spb.TopicPosition]:
        """The ``since`` entries of the next SubscribeRequest."""
        return [
            spb.TopicPosition(topic=topic, position=position)  # type: ignore[arg-type]
            for topic, position in self._last.items()
        ]

    def confirm(self, confirmed: spb.SubscriptionConfirmed) -> list[Gap]:
        """Take in the first message of a stream; return the gaps it reveals.

        A topic with no position yet starts from the confirmed one, so a
        reconnect before its first event still misses nothing.
        """
        gaps: list[Gap] = []
        for state in confirmed.topics:
            last = self._last.get(state.topic)
            if last is None:
                self._last[state.topic] = _copy(state.position)
                continue
            if state.recovered:
                continue
            if last.epoch != state.position.epoch:
                reason: GapReason = "epoch_changed"
                # Nothing of the new epoch is seen yet: every event of it is new.
                resume = pb.StreamPosition(offset=0, epoch=state.position.epoch)
            elif last.offset > state.position.offset:
                reason, resume = "position_ahead", _copy(state.position)
            else:
                reason, resume = "history_trimmed", last
            gaps.append(Gap(topic_name(state.topic), _copy(last), _copy(state.position), reason))
            self._last[state.topic] = resume
        return gaps

    def accept(self, event: pb.Event) -> bool:
        """True for an event not delivered before (and remember its position)."""
        last = self._last.get(event.topic)
        position = event.position
        if last is not None and last.epoch == position.epoch and position.offset <= last.offset:
            return False
        self._last[event.topic] = _copy(position)
        return True


def _copy(position: pb.StreamPosition) -> pb.StreamPosition:
    return pb.StreamPosition(offset=position.offset, epoch=position.epoch)
