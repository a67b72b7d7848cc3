"""The in-memory broker: one node, history in bounded deques, no server needed."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence
from itertools import islice

from clearpath.realtime.v1 import events_pb2 as pb
from core.broker.base import Broker, EventHandler, HistoryResult
from core.errors import Unavailable
from core.positions import resume_outcome
from core.topics import INTERNAL_TOPICS

__all__ = ["INTERNAL_HISTORY", "MemoryBroker"]

#: Events kept of an internal topic (the bridges' canary): only the latest matter.
INTERNAL_HISTORY = 100


class _Stream:
    __slots__ = ("epoch", "history", "offset")

    def __init__(self, history_size: int) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.offset = 0
        self.history: deque[pb.Event] = deque(maxlen=history_size)


class MemoryBroker(Broker):
    """Keeps the last ``history_size`` events of each topic in memory (internal
    topics, such as the canary, keep at most :data:`INTERNAL_HISTORY`).

    Each topic's epoch is new with each broker, so positions from before a
    restart are reported as not recovered.
    """

    def __init__(self, *, history_size: int) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self._history_size = history_size
        self._streams: dict[int, _Stream] = {}
        self._handler: EventHandler | None = None

    def _stream(self, topic: int) -> _Stream:
        stream = self._streams.get(topic)
        if stream is None:
            size = self._history_size
            if topic in INTERNAL_TOPICS:
                size = min(size, INTERNAL_HISTORY)
            stream = self._streams[topic] = _Stream(size)
        return stream

    async def start(self, handler: EventHandler) -> None:
        self._handler = handler

    async def publish(self, events: Sequence[pb.Event]) -> list[pb.StreamPosition]:
        handler = self._handler
        if handler is None:
            raise Unavailable("broker is not running")
        positions = []
        for event in events:
            stream = self._stream(event.topic)
            stream.offset += 1
            event.position.offset = stream.offset
            event.position.epoch = stream.epoch
            stream.history.append(event)
            positions.append(event.position)
        # Deliver after every position is set: no await between, so the order
        # subscribers see is the order of the offsets.
        for event in events:
            handler(event)
        return positions

    async def history(
        self, topic: int, since: pb.StreamPosition | None, limit: int | None = None
    ) -> HistoryResult:
        stream = self._stream(topic)
        latest = pb.StreamPosition(offset=stream.offset, epoch=stream.epoch)
        if since is None:
            return HistoryResult(position=latest, recovered=True)
        kept = stream.history
        oldest = kept[0].position.offset if kept else stream.offset + 1
        lost = resume_outcome(since, latest, oldest)
        if lost == "position_ahead":
            return HistoryResult(position=latest, recovered=False)
        # Offsets in history are consecutive: the first one after ``since`` is found by index.
        start = 0 if lost == "epoch_changed" else max(0, since.offset + 1 - oldest)
        events = list(islice(kept, start, None if limit is None else start + limit))
        return HistoryResult(position=latest, recovered=lost is None, events=events)

    async def close(self) -> None:
        self._handler = None
