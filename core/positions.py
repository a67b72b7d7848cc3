"""Stream positions and recovery: the one home of "is this position new after that one".

A position is an ``offset`` that only grows (by one per event, from 1) within a
topic's ``epoch``; the epoch changes when the topic's history is lost (an
in-memory core restarted, a Redis stream flushed). Everything that decides
whether an event was already delivered, where a stream resumes from, or what a
confirmation reveals calls this module: the core's Subscribe stream, the
bridge's upstream and socket resumes, and the SDK. The web client's twin is
``clients/web/src/positions.ts``. Pure: plain calls, no I/O.

The rules:

* :func:`is_new` — an event at ``p`` comes after ``last`` when there is no
  ``last``, when ``p`` is of another epoch, or when its offset is larger.
* :func:`resume_outcome` — a resume from ``since`` against a topic now at
  ``latest`` (oldest retained offset ``oldest``) is recovered, or lost for one
  :data:`GapReason`.
* :func:`after_gap` — where a stream continues after a resume that was not
  recovered: every event that follows comes after that position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "Cursors",
    "Floors",
    "Gap",
    "GapReason",
    "HasPosition",
    "Position",
    "after_gap",
    "gap_reason",
    "is_new",
    "resume_outcome",
]


class HasPosition(Protocol):
    """Anything with an offset and an epoch: a ``pb.StreamPosition``, a bridge
    frame, a :class:`Position`."""

    @property
    def offset(self) -> int: ...

    @property
    def epoch(self) -> str: ...


class Position(NamedTuple):
    """A position as a plain value (hashable, immutable; a tuple, cheap to make)."""

    offset: int
    epoch: str

    @classmethod
    def of(cls, position: HasPosition) -> Position:
        """A copy of any position."""
        return cls(position.offset, position.epoch)


#: Why a resume could not deliver every event after its position: the topic's
#: history was reset (new epoch), the position is older than the history kept,
#: or it is ahead of the topic (a position the topic never reached).
GapReason = Literal["epoch_changed", "history_trimmed", "position_ahead"]


def is_new(position: HasPosition, last: HasPosition | None) -> bool:
    """True when an event at ``position`` comes after ``last`` (None: nothing seen)."""
    return last is None or position.epoch != last.epoch or position.offset > last.offset


def gap_reason(since: HasPosition, latest: HasPosition) -> GapReason:
    """Why a resume from ``since`` was not recovered, the topic being at ``latest``."""
    if since.epoch != latest.epoch:
        return "epoch_changed"
    if since.offset > latest.offset:
        return "position_ahead"
    return "history_trimmed"


def resume_outcome(since: HasPosition, latest: HasPosition, oldest: int) -> GapReason | None:
    """None when every event after ``since`` is retained (the oldest retained
    offset of the topic at ``latest`` being ``oldest``; ``latest.offset + 1``
    when nothing is retained), else why not."""
    if since.epoch == latest.epoch and oldest - 1 <= since.offset <= latest.offset:
        return None
    if since.epoch == latest.epoch and since.offset <= latest.offset:
        return "history_trimmed"
    return gap_reason(since, latest)


def after_gap(since: HasPosition, latest: HasPosition) -> Position:
    """Where a stream continues after a resume from ``since`` that was not recovered.

    Another epoch: from its start (every event of it is new). Ahead: from the
    topic's latest position. Trimmed: from ``since`` (what follows are the
    oldest retained events, all after it).
    """
    reason = gap_reason(since, latest)
    if reason == "epoch_changed":
        return Position(0, latest.epoch)
    if reason == "position_ahead":
        return Position.of(latest)
    return Position.of(since)


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of ``topic`` after ``since`` that could not be delivered."""

    topic: int
    #: The position the resume was asked from.
    since: Position
    #: The topic's latest position when the resume was answered.
    latest: Position
    reason: GapReason
    #: Where the stream continues (see :func:`after_gap`).
    resume: Position


class Cursors:
    """The last position seen per topic: what to resume from, what is a duplicate.

    ``confirm`` takes a stream's confirmation of a topic (its latest position
    and whether the resume was recovered) and returns the :class:`Gap` it
    reveals, if any; ``accept`` tells a new event from one already seen.
    """

    __slots__ = ("_last",)

    def __init__(self, since: Mapping[int, HasPosition] | None = None) -> None:
        self._last: dict[int, Position] = {t: Position.of(p) for t, p in (since or {}).items()}

    def get(self, topic: int) -> Position | None:
        """The last position seen on ``topic``, if any."""
        return self._last.get(topic)

    def items(self) -> Iterable[tuple[int, Position]]:
        """Every (topic, last position)."""
        return self._last.items()

    def confirm(self, topic: int, latest: HasPosition, recovered: bool) -> Gap | None:
        """Take in a confirmation of ``topic`` at ``latest``.

        A topic with no position yet starts from ``latest``, so a reconnect
        before its first event still misses nothing. A resume that was not
        recovered moves the cursor to :func:`after_gap` and returns the gap.
        """
        last = self._last.get(topic)
        if last is None:
            self._last[topic] = Position.of(latest)
            return None
        if recovered:
            return None
        resume = after_gap(last, latest)
        self._last[topic] = resume
        return Gap(topic, last, Position.of(latest), gap_reason(last, latest), resume)

    def accept(self, topic: int, position: HasPosition) -> bool:
        """True for an event not seen before on ``topic`` (and remember it)."""
        last = self._last.get(topic)
        # is_new, inlined: this runs once per event of the bridge's stream.
        offset, epoch = position.offset, position.epoch
        if last is not None and epoch == last[1] and offset <= last[0]:
            return False
        self._last[topic] = Position(offset, epoch)
        return True


class Floors:
    """Replay before live: per topic, live events at or below a floor were
    already replayed and are refused; the first one past it lifts the floor."""

    __slots__ = ("_floors",)

    def __init__(self) -> None:
        self._floors: dict[int, Position] = {}

    def __bool__(self) -> bool:
        return bool(self._floors)

    def raise_to(self, topic: int, position: HasPosition) -> None:
        """Refuse live events of ``topic`` up to ``position``."""
        self._floors[topic] = Position.of(position)

    def discard(self, topic: int) -> None:
        """Forget ``topic``'s floor."""
        self._floors.pop(topic, None)

    def admits(self, topic: int, position: HasPosition) -> bool:
        """Whether a live event of ``topic`` at ``position`` is new past the floor."""
        floor = self._floors.get(topic)
        if floor is None:
            return True
        if not is_new(position, floor):
            return False
        del self._floors[topic]
        return True
