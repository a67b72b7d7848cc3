"""The gRPC transport of the core: ``RealtimeService`` over a broker and a hub."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.broker import Broker
from core.config import CoreSettings
from core.errors import InvalidArgument, RealtimeError, ResourceExhausted, SlowConsumer
from core.filters import build_matcher
from core.hub import Hub, Subscription
from core.topics import TOPIC_NAMES, topic_name
from core.validation import Limits, prepare_events

__all__ = ["RealtimeService", "topic_of"]

log = logging.getLogger("clearpath.core")


def topic_of(event: pb.Event) -> int:
    """The hub's key for an event."""
    return event.topic


class RealtimeService(sgrpc.RealtimeServiceServicer):
    """Publish validates and hands events to the broker; Subscribe streams a hub
    subscription. Errors from :mod:`core.errors` become gRPC statuses here, once."""

    def __init__(self, settings: CoreSettings, broker: Broker, hub: Hub[pb.Event]) -> None:
        self._settings = settings
        self._broker = broker
        self._hub = hub
        self._limits = Limits(
            max_batch=settings.max_batch, max_event_bytes=settings.max_event_bytes
        )
        self.streams = 0

    def close_streams(self) -> None:
        """End every open Subscribe stream with UNAVAILABLE (used on shutdown)."""
        for sub in self._hub.subscriptions():
            sub.close()

    async def Publish(
        self,
        request: spb.PublishRequest,
        context: grpc.aio.ServicerContext[spb.PublishRequest, spb.PublishResponse],
    ) -> spb.PublishResponse:
        try:
            events = prepare_events(request.events, self._limits)
            positions = await self._broker.publish(events)
        except RealtimeError as exc:
            await context.abort(exc.grpc_code, str(exc))
        return spb.PublishResponse(
            results=[
                spb.PublishResult(id=e.id, topic=e.topic, position=p)
                for e, p in zip(events, positions, strict=True)
            ]
        )

    async def Subscribe(
        self,
        request: spb.SubscribeRequest,
        context: grpc.aio.ServicerContext[spb.SubscribeRequest, spb.SubscribeResponse],
    ) -> AsyncIterator[spb.SubscribeResponse]:
        try:
            topics, since = _parse_topics(request)
            matcher = build_matcher(request.filter)
            if self.streams >= self._settings.max_subscribers:
                raise ResourceExhausted(
                    f"too many subscribers (at most {self._settings.max_subscribers})"
                )
        except RealtimeError as exc:
            await context.abort(exc.grpc_code, str(exc))
        ready = asyncio.Event()
        sub: Subscription[pb.Event] = Subscription(
            topics, self._settings.queue_size, ready.set, matcher
        )
        sub_id = uuid.uuid4().hex[:12]
        self._hub.add(sub)
        self.streams += 1
        log.info("subscribe %s topics=%s", sub_id, [TOPIC_NAMES[t] for t in topics])
        try:
            async for response in self._stream(sub, sub_id, topics, since, ready):
                yield response
        except RealtimeError as exc:
            log.info("subscription %s ended: %s", sub_id, exc)
            await context.abort(exc.grpc_code, str(exc))
        finally:
            self._hub.remove(sub)
            self.streams -= 1

    async def _stream(
        self,
        sub: Subscription[pb.Event],
        sub_id: str,
        topics: list[int],
        since: dict[int, pb.StreamPosition],
        ready: asyncio.Event,
    ) -> AsyncIterator[spb.SubscribeResponse]:
        # The subscription is live before history is read, so nothing published
        # in between is missed; what arrives twice is skipped by offset below.
        confirmed = spb.SubscriptionConfirmed(subscription_id=sub_id)
        backlog: list[pb.Event] = []
        last: dict[int, pb.StreamPosition] = {}
        for topic in topics:
            found = await self._broker.history(topic, since.get(topic))
            confirmed.topics.append(
                spb.TopicState(topic=topic, position=found.position, recovered=found.recovered)  # type: ignore[arg-type]
            )
            backlog.extend(e for e in found.events if sub.accepts is None or sub.accepts(e))
            last[topic] = found.position
        yield spb.SubscribeResponse(confirmed=confirmed)
        for event in backlog:
            yield spb.SubscribeResponse(event=event)
        interval = self._settings.heartbeat_interval
        while True:
            for event in sub.drain():
                seen = last[event.topic]
                if event.position.epoch == seen.epoch and event.position.offset <= seen.offset:
                    continue
                yield spb.SubscribeResponse(event=event)
            if sub.closed:
                raise _ShuttingDown()
            if sub.overflowed:
                raise SlowConsumer(
                    f"subscriber fell more than {sub.capacity} events behind; "
                    "resubscribe with `since` set to the last position received"
                )
            ready.clear()
            if sub.queue or sub.overflowed or sub.closed:
                continue
            try:
                await asyncio.wait_for(ready.wait(), interval)
            except TimeoutError:
                heartbeat = spb.Heartbeat()
                heartbeat.time.GetCurrentTime()
                yield spb.SubscribeResponse(heartbeat=heartbeat)


class _ShuttingDown(RealtimeError):
    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self) -> None:
        super().__init__("core is shutting down; reconnect and resume from the last position")


def _parse_topics(
    request: spb.SubscribeRequest,
) -> tuple[list[int], dict[int, pb.StreamPosition]]:
    if not request.topics:
        raise InvalidArgument("topics: at least one topic is required")
    topics: list[int] = []
    for i, topic in enumerate(request.topics):
        if topic not in TOPIC_NAMES:
            valid = ", ".join(pb.Topic.Name(t) for t in TOPIC_NAMES)  # type: ignore[arg-type]
            raise InvalidArgument(f"topics[{i}]: unknown topic {topic}; valid: {valid}")
        if topic not in topics:
            topics.append(topic)
    since: dict[int, pb.StreamPosition] = {}
    for i, entry in enumerate(request.since):
        if entry.topic not in topics:
            raise InvalidArgument(f"since[{i}].topic: {entry.topic} is not subscribed")
        if entry.topic in since:
            raise InvalidArgument(f"since[{i}]: {topic_name(entry.topic)} given twice")
        since[entry.topic] = entry.position
    return topics, since
