"""The broker interface every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clearpath.realtime.v1 import events_pb2 as pb

__all__ = ["Broker", "EventHandler", "HistoryResult"]

#: Receives every published event of every topic, on this node, in order per topic.
EventHandler = Callable[[pb.Event], object]


@dataclass
class HistoryResult:
    """What :meth:`Broker.history` found.

    ``events`` are the retained events after the asked position, oldest first;
    ``position`` is the topic's latest position; ``recovered`` is True when
    ``events`` holds every event after the asked position.
    """

    position: pb.StreamPosition
    recovered: bool
    events: list[pb.Event] = field(default_factory=list)


class Broker(abc.ABC):
    """Carries published events to every node's handler and keeps per-topic history.

    Positions: each topic has an epoch and offsets that only grow within it,
    starting at 1. The epoch changes when the topic's history is lost, so a
    position from another epoch cannot be resumed from.
    """

    @abc.abstractmethod
    async def start(self, handler: EventHandler) -> None:
        """Connect, and from now on call ``handler`` with every event published
        on any node, once, in offset order per topic. ``handler`` must not block."""

    @abc.abstractmethod
    async def publish(self, events: Sequence[pb.Event]) -> list[pb.StreamPosition]:
        """Give each event (topic, id and timestamp already set) the next position
        of its topic, store it in history and deliver it to every node.

        Fills ``event.position`` in place and returns the positions in order.
        Raises :class:`core.errors.Unavailable` when the backend cannot be reached;
        then none or only a prefix of the events was published.
        """

    @abc.abstractmethod
    async def history(
        self, topic: int, since: pb.StreamPosition | None, limit: int | None = None
    ) -> HistoryResult:
        """The retained events of ``topic`` after ``since`` (none when ``since``
        is None), oldest first, at most ``limit`` of them (None: no bound), and
        whether the events after ``since`` are all still retained.

        Not recovered when ``since`` is of another epoch (the oldest retained
        events are returned) or older than the history (the oldest retained
        events are returned), or ahead of the topic (nothing is returned).
        With ``limit``, a caller pages by asking again after the last event
        returned; ``position`` is always the topic's latest position.
        Raises :class:`core.errors.Unavailable` when the backend cannot be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections. Idempotent."""
