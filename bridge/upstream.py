"""The bridge's side of gRPC: one multiplexed Subscribe stream to the core.

One stream for all seven topics serves every socket of the bridge; each event
is encoded to a :class:`~bridge.frames.Frame` once, remembered in a small
per-topic cache and handed to the hub. When the core goes away the stream is
reopened with exponential backoff and jitter, resuming every topic from the
last position the bridge saw, so nothing within the core's history is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from bridge.config import BridgeSettings
from bridge.frames import Frame, event_frame
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.errors import Unavailable
from core.topics import TOPIC_NAMES, TOPICS

__all__ = ["Upstream", "backoff_delays"]

log = logging.getLogger("clearpath.bridge.upstream")

# Events per upstream message when the core has several waiting: one gRPC message
# per batch instead of per event.
_BATCH = 500

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Callable[[int], float]:
    """Delay before retry ``n`` (0-based): ``initial * 2**n`` capped at ``maximum``,
    with full jitter in its upper half so many bridges do not retry in step."""

    def delay(attempt: int) -> float:
        base: float = min(maximum, initial * 2.0 ** min(attempt, 30))
        return base / 2 + rng.random() * base / 2

    return delay


class Upstream:
    """Keeps one Subscribe stream to the core open and feeds ``on_frame``.

    ``state`` is one of ``connecting``, ``connected``, ``reconnecting``,
    ``stopped``; ``positions`` holds the last position seen per topic.
    """

    def __init__(self, settings: BridgeSettings, on_frame: Callable[[Frame], object]) -> None:
        self._settings = settings
        self._on_frame = on_frame
        self._channel = grpc.aio.insecure_channel(settings.core, options=_CHANNEL_OPTIONS)
        self._stub = sgrpc.RealtimeServiceStub(self._channel)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._delay = backoff_delays(
            settings.reconnect_initial, settings.reconnect_max, random.Random()
        )
        self.positions: dict[int, pb.StreamPosition] = {}
        self.cache: dict[int, deque[Frame]] = {t: deque(maxlen=settings.cache_size) for t in TOPICS}
        self.state = "connecting"
        self.attempt = 0
        self.reconnects = 0
        self.gaps = 0
        self.events = 0
        self.last_error = ""
        self.connected_at: float | None = None

    def start(self) -> None:
        """Start the stream in the background."""
        self._task = asyncio.create_task(self._run(), name="bridge-upstream")

    async def stop(self) -> None:
        """Close the stream and the channel."""
        self.state = "stopped"
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()

    async def wait_connected(self) -> None:
        """Return once the stream is open (wrap in a timeout)."""
        await self._connected.wait()

    def status(self) -> dict[str, Any]:
        """The upstream part of ``/ws/status``."""
        return {
            "core": self._settings.core,
            "state": self.state,
            "connected_since": self.connected_at,
            "reconnects": self.reconnects,
            "attempt": self.attempt,
            "last_error": self.last_error,
            "events_received": self.events,
            "history_gaps": self.gaps,
            "positions": {
                TOPIC_NAMES[t]: {"offset": p.offset, "epoch": p.epoch}
                for t, p in self.positions.items()
            },
        }

    def position(self, topic: int) -> pb.StreamPosition:
        """The last position the bridge saw on ``topic`` (offset 0, epoch "" if none)."""
        return self.positions.get(topic) or pb.StreamPosition()

    async def _run(self) -> None:
        while True:
            try:
                await self._stream()
                self.last_error = "stream ended"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            self._connected.clear()
            if self.state == "connected":
                log.warning("upstream lost (%s); reconnecting", self.last_error)
                self.attempt = 0
            self.state = "reconnecting"
            delay = self._delay(self.attempt)
            self.attempt += 1
            log.info("upstream retry %d in %.2fs (%s)", self.attempt, delay, self.last_error)
            await asyncio.sleep(delay)

    async def _stream(self) -> None:
        since = [spb.TopicPosition(topic=t, position=p) for t, p in self.positions.items()]  # type: ignore[arg-type]
        request = spb.SubscribeRequest(topics=TOPICS, since=since, max_batch=_BATCH)  # type: ignore[arg-type]
        call = self._stub.Subscribe(request)
        try:
            async for message in call:
                kind = message.WhichOneof("kind")
                if kind == "batch":
                    for event in message.batch.events:
                        self._deliver(event)
                elif kind == "event":
                    self._deliver(message.event)
                elif kind == "confirmed":
                    self._confirmed(message.confirmed)
        finally:
            call.cancel()

    def _confirmed(self, confirmed: spb.SubscriptionConfirmed) -> None:
        for state in confirmed.topics:
            latest = pb.StreamPosition(offset=state.position.offset, epoch=state.position.epoch)
            known = self.positions.get(state.topic)
            if known is None:
                # The core's latest position: what the bridge tells subscribers before
                # any event arrives, and where it resumes from after an outage.
                self.positions[state.topic] = latest
                continue
            if not state.recovered:
                self.gaps += 1
                log.warning(
                    "upstream resume of %s from %s was incomplete (history too short or core "
                    "restarted): events may be missing",
                    TOPIC_NAMES[state.topic],
                    known,
                )
            if latest.epoch != known.epoch:
                self.cache[state.topic].clear()  # another epoch: old frames cannot be resumed
                self.positions[state.topic] = latest
        if self.state != "connected":
            if self.state == "reconnecting":
                self.reconnects += 1
            log.info("upstream connected to %s", self._settings.core)
        self.state = "connected"
        self.attempt = 0
        self.connected_at = time.time()
        self._connected.set()

    def _deliver(self, event: pb.Event) -> None:
        frame = event_frame(event)
        seen = self.positions.get(event.topic)
        if seen is not None and seen.epoch != event.position.epoch:
            self.cache[event.topic].clear()  # another epoch: old frames cannot be resumed
        self.positions[event.topic] = event.position
        self.cache[event.topic].append(frame)
        self.events += 1
        self._on_frame(frame)

    def cached_after(self, topic: int, offset: int, epoch: str) -> list[Frame] | None:
        """Cached frames of ``topic`` after ``offset`` in ``epoch``, or None when the
        cache does not reach back that far (or is of another epoch)."""
        current = self.position(topic)
        if epoch != current.epoch or offset > current.offset:
            return None
        cached = self.cache[topic]
        if offset == current.offset:
            return []
        if not cached or cached[0].offset > offset + 1:
            return None
        return [f for f in cached if f.offset > offset]

    async def history(
        self, topic: int, since: pb.StreamPosition
    ) -> tuple[spb.TopicState, AsyncIterator[pb.Event]]:
        """Ask the core for ``topic`` after ``since`` on a stream of its own.

        Returns the core's answer (recovered or not, and its latest position)
        and an iterator over the events, live ones included, to be closed by
        the caller. Raises Unavailable when the core cannot be reached.
        """
        request = spb.SubscribeRequest(
            topics=[topic],  # type: ignore[list-item]
            since=[spb.TopicPosition(topic=topic, position=since)],  # type: ignore[arg-type]
        )
        call = self._stub.Subscribe(request)
        try:
            first = await asyncio.wait_for(call.read(), 10)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            call.cancel()
            raise Unavailable("the core is unreachable; subscribe again later") from exc
        if not isinstance(first, spb.SubscribeResponse) or not first.HasField("confirmed"):
            call.cancel()
            raise Unavailable("the core ended the history stream")

        async def events() -> AsyncIterator[pb.Event]:
            try:
                while isinstance(message := await call.read(), spb.SubscribeResponse):
                    if message.HasField("event"):
                        yield message.event
            finally:
                call.cancel()

        return first.confirmed.topics[0], events()
