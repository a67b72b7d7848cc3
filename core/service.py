"""The gRPC transport of the core: ``RealtimeService`` over a broker and a hub."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.auth import Identity
from core.broker import Broker, HistoryResult
from core.config import CoreSettings
from core.errors import (
    InvalidArgument,
    PermissionDenied,
    RealtimeError,
    ResourceExhausted,
    SlowConsumer,
    Unauthenticated,
)
from core.filters import Matcher, build_matcher
from core.guard import Authenticator, PublishRates
from core.hub import Hub, Subscription
from core.positions import Floors
from core.topics import TOPIC_NAMES, topic_name
from core.validation import Limits, prepare_events
from core.wire import Delivery, batch_response

__all__ = ["SERVICE_NAME", "RealtimeService", "add_to_server", "method_handlers"]

log = logging.getLogger("clearpath.core")

SERVICE_NAME: str = spb.DESCRIPTOR.services_by_name["RealtimeService"].full_name

# Events of history read from the broker at a time while a stream catches up.
_PAGE = 1000


def _serialize(response: bytes | spb.SubscribeResponse) -> bytes:
    # Events arrive already serialized (see core.wire); other messages do not.
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_to_server(service: RealtimeService, server: grpc.aio.Server) -> None:
    """Register ``service``; Subscribe streams pre-serialized responses."""
    generic = grpc.method_handlers_generic_handler(SERVICE_NAME, method_handlers(service))
    server.add_generic_rpc_handlers((generic,))


def method_handlers(service: RealtimeService) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The handler of each method of ``RealtimeService``, by name (hand-written so that
    Subscribe can stream pre-serialized bytes; a test checks it covers every method)."""
    return {
        "Publish": grpc.unary_unary_rpc_method_handler(
            service.Publish,
            request_deserializer=spb.PublishRequest.FromString,
            response_serializer=spb.PublishResponse.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe,
            request_deserializer=spb.SubscribeRequest.FromString,
            response_serializer=_serialize,
        ),
        "History": grpc.unary_unary_rpc_method_handler(
            service.History,
            request_deserializer=spb.HistoryRequest.FromString,
            response_serializer=spb.HistoryResponse.SerializeToString,
        ),
    }


class RealtimeService(sgrpc.RealtimeServiceServicer):
    """Publish validates and hands events to the broker; Subscribe streams a hub
    subscription. Errors from :mod:`core.errors` become gRPC statuses here, once."""

    def __init__(
        self,
        settings: CoreSettings,
        broker: Broker,
        hub: Hub[Delivery],
        auth: Authenticator | None = None,
    ) -> None:
        self._settings = settings
        #: Who calls (ANONYMOUS for everyone when auth is off), and how fast they publish.
        self.auth = auth or Authenticator(None)
        self.rates = PublishRates(settings.publish_rate, settings.publish_burst)
        self._broker = broker
        self._hub = hub
        self._limits = Limits(
            max_batch=settings.max_batch, max_event_bytes=settings.max_event_bytes
        )
        self.streams = 0
        self._closing = False
        self._idle = asyncio.Event()  # set while no Subscribe stream is open
        self._idle.set()
        self._broker_up = True
        self._wakers: set[asyncio.Event] = set()

    def broker_available(self, up: bool) -> None:
        """The broker went away (False) or came back (True): every open stream is
        told at once, by a heartbeat with ``broker_unavailable``."""
        if up != self._broker_up:
            self._broker_up = up
            for waker in self._wakers:
                waker.set()

    async def streams_ended(self) -> None:
        """Return once no Subscribe stream is open (wrap in a timeout)."""
        await self._idle.wait()

    def close_streams(self) -> None:
        """End every open Subscribe stream with UNAVAILABLE, and from now on every
        new one as soon as it starts (used on shutdown)."""
        self._closing = True
        for sub in self._hub.subscriptions():
            sub.close()

    async def Publish(
        self,
        request: spb.PublishRequest,
        context: grpc.aio.ServicerContext[spb.PublishRequest, spb.PublishResponse],
    ) -> spb.PublishResponse:
        try:
            identity = self.auth.identity(context.invocation_metadata())
            # The request was deserialized for this call: its events are ours to use.
            events = prepare_events(request.events, self._limits, copy=False)
            if not identity.operator:
                for i, event in enumerate(events):
                    if not identity.may_publish(event.topic):
                        raise PermissionDenied(
                            f"events[{i}]: this token may not publish to {topic_name(event.topic)}"
                        )
            self.rates.take(identity, len(events))
            positions = await self._broker.publish(events)
        except RealtimeError as exc:
            await context.abort(exc.grpc_code, str(exc))
        response = spb.PublishResponse()
        add = response.results.add
        for event, position in zip(events, positions, strict=True):
            result = add()
            result.id = event.id
            result.topic = event.topic
            result.position.CopyFrom(position)
        return response

    async def Subscribe(  # type: ignore[override]  # yields pre-serialized events too
        self,
        request: spb.SubscribeRequest,
        context: grpc.aio.ServicerContext[spb.SubscribeRequest, spb.SubscribeResponse],
    ) -> AsyncIterator[spb.SubscribeResponse | bytes]:
        try:
            if self._closing:
                # No await from here to hub.add below: a stream either is refused
                # here or is added before close_streams() and closed by it.
                raise _ShuttingDown()
            identity = self.auth.identity(context.invocation_metadata())
            topics, since = _parse_topics(request)
            request_filter = _allowed_filter(identity, topics, request.filter)
            matcher = build_matcher(request_filter)
            if self.streams >= self._settings.max_subscribers:
                raise ResourceExhausted(
                    f"too many subscribers (at most {self._settings.max_subscribers})"
                )
        except RealtimeError as exc:
            await context.abort(exc.grpc_code, str(exc))
        ready = asyncio.Event()
        accepts = None if matcher is None else _on_event(matcher)
        sub: Subscription[Delivery] = Subscription(
            topics, self._settings.queue_size, ready.set, accepts
        )
        sub_id = uuid.uuid4().hex[:12]
        expired = _expire(identity, sub, ready)
        self._hub.add(sub)
        self._wakers.add(ready)
        self.streams += 1
        self._idle.clear()
        log.info("subscribe %s topics=%s", sub_id, [TOPIC_NAMES[t] for t in topics])
        try:
            batch = max(1, request.max_batch)
            async for response in self._stream(sub, sub_id, topics, since, ready, batch, matcher):
                yield response
        except RealtimeError as exc:
            ended: RealtimeError = exc
            if expired is not None and expired.cancelled():
                ended = Unauthenticated(
                    "token expired; subscribe again with a fresh token and `since` set to "
                    "the last position received"
                )
            log.info("subscription %s ended: %s", sub_id, ended)
            await context.abort(ended.grpc_code, str(ended))
        finally:
            if expired is not None:
                expired.cancel()
            self._hub.remove(sub)
            self._wakers.discard(ready)
            self.streams -= 1
            if not self.streams:
                self._idle.set()

    async def History(
        self,
        request: spb.HistoryRequest,
        context: grpc.aio.ServicerContext[spb.HistoryRequest, spb.HistoryResponse],
    ) -> spb.HistoryResponse:
        try:
            identity = self.auth.identity(context.invocation_metadata())
            matcher = None
            if request.topic in TOPIC_NAMES:
                spec = _allowed_filter(identity, [request.topic], spb.SubscriptionFilter())
                matcher = build_matcher(spec)
            page = await self._history_page(request)
            if matcher is not None:  # another user's notifications are not shown
                kept = [e for e in page.events if matcher(e)]
                del page.events[:]
                page.events.extend(kept)
            return page
        except RealtimeError as exc:
            await context.abort(exc.grpc_code, str(exc))

    async def _history_page(self, request: spb.HistoryRequest) -> spb.HistoryResponse:
        """One page: at most ``limit`` (and ``max_batch``) events and ``batch_bytes``,
        though always the first event (it fits in a message)."""
        topic = request.topic
        if topic not in TOPIC_NAMES:
            raise InvalidArgument(f"topic: unknown topic {topic}")
        since = request.since if request.HasField("since") else None
        limit = min(request.limit or self._settings.max_batch, self._settings.max_batch)
        found = await self._broker.history(topic, since, limit)
        state = spb.TopicState(topic=topic, position=found.position, recovered=found.recovered)
        response = spb.HistoryResponse(state=state)
        budget = self._settings.batch_bytes
        for event in found.events:
            budget -= event.ByteSize()
            if budget < 0 and response.events:
                break
            response.events.append(event)
        return response

    async def _stream(
        self,
        sub: Subscription[Delivery],
        sub_id: str,
        topics: list[int],
        since: dict[int, pb.StreamPosition],
        ready: asyncio.Event,
        batch: int,
        matcher: Matcher | None,
    ) -> AsyncIterator[spb.SubscribeResponse | bytes]:
        # The subscription is live before history is read, so nothing published
        # in between is missed; what arrives twice is refused by the floors below.
        confirmed = spb.SubscriptionConfirmed(subscription_id=sub_id)
        backlog: dict[int, HistoryResult] = {}
        for topic in topics:
            found = await self._broker.history(topic, since.get(topic), _PAGE)
            confirmed.topics.append(
                spb.TopicState(topic=topic, position=found.position, recovered=found.recovered)  # type: ignore[arg-type]
            )
            backlog[topic] = found
        yield spb.SubscribeResponse(confirmed=confirmed)
        floors = Floors()
        limit = self._settings.batch_bytes
        for topic, found in backlog.items():
            # Live events up to the topic's latest position at confirmation are in history.
            floors.raise_to(topic, found.position)
            async for chunk in self._replay(topic, found, matcher, batch, limit):
                if sub.closed:  # shutting down: end now, not after a long replay
                    raise _ShuttingDown()
                yield chunk
        del backlog
        interval = self._settings.heartbeat_interval
        told_up = True
        while True:
            if told_up != self._broker_up:
                told_up = self._broker_up
                yield _heartbeat(broker_up=told_up)
            fresh = sub.drain()
            if floors:
                fresh = [d for d in fresh if floors.admits(d.event.topic, d.event.position)]
            for chunk in _chunks(fresh, batch, limit):
                yield chunk
            if sub.closed:
                raise _ShuttingDown()
            if sub.overflowed:
                raise SlowConsumer(
                    f"subscriber fell more than {sub.capacity} events behind; "
                    "resubscribe with `since` set to the last position received"
                )
            ready.clear()
            if len(sub) or sub.overflowed or sub.closed:
                continue
            try:
                async with asyncio.timeout(interval):
                    await ready.wait()
            except TimeoutError:
                yield _heartbeat(broker_up=self._broker_up)

    async def _replay(
        self,
        topic: int,
        found: HistoryResult,
        matcher: Matcher | None,
        batch: int,
        limit: int,
    ) -> AsyncIterator[bytes]:
        """The history of ``topic`` up to ``found.position``, a page at a time."""
        head = found.position
        while found.events:
            events = found.events
            deliveries = [Delivery(e) for e in events if matcher is None or matcher(e)]
            for chunk in _chunks(deliveries, batch, limit):
                yield chunk
            last = events[-1].position
            if last.epoch != head.epoch or last.offset >= head.offset:
                return
            found = await self._broker.history(topic, last, _PAGE)
            if not found.recovered:
                # History moved past this subscriber while it read the pages before:
                # end it visibly; its resume from ``last`` is answered not recovered.
                raise SlowConsumer(
                    "history was trimmed past this subscriber while it caught up; "
                    "resubscribe with `since` set to the last position received"
                )


def _allowed_filter(
    identity: Identity, topics: list[int], spec: spb.SubscriptionFilter
) -> spb.SubscriptionFilter:
    """``spec`` as ``identity`` may have it: PermissionDenied for a topic it may not
    read; a non-operator reads only its own notifications (and everyone's)."""
    for topic in topics:
        if not identity.may_subscribe(topic):
            raise PermissionDenied(f"this token may not subscribe to {topic_name(topic)}")
    if identity.operator or pb.TOPIC_NOTIFICATIONS not in topics:
        return spec
    if spec.user_id and spec.user_id != identity.subject:
        raise PermissionDenied("filter.user_id: a token reads only its own notifications")
    mine = spb.SubscriptionFilter()
    mine.CopyFrom(spec)
    mine.user_id = identity.subject
    return mine


def _expire(
    identity: Identity, sub: Subscription[Delivery], ready: asyncio.Event
) -> asyncio.TimerHandle | None:
    """End the stream of ``sub`` when the token of ``identity`` expires: the handle
    is cancelled by then (and by the stream's end otherwise)."""
    if identity.expires_at is None:
        return None
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle

    def expire() -> None:
        handle.cancel()  # marks it expired (cancelled) for the stream's end
        sub.close()
        ready.set()

    handle = loop.call_at(loop.time() + max(0.0, identity.expires_at - time.time()), expire)
    return handle


def _heartbeat(*, broker_up: bool) -> spb.SubscribeResponse:
    heartbeat = spb.Heartbeat(broker_unavailable=not broker_up)
    heartbeat.time.GetCurrentTime()
    return spb.SubscribeResponse(heartbeat=heartbeat)


def _on_event(matcher: Matcher) -> Callable[[Delivery], bool]:
    return lambda delivery: matcher(delivery.event)


def _chunks(deliveries: list[Delivery], batch: int, max_bytes: int) -> Iterator[bytes]:
    """Serialized responses for ``deliveries``: single events, or batches of at most
    ``batch`` events and ``max_bytes`` bytes (an event larger than that goes alone)."""
    if batch == 1:
        for delivery in deliveries:
            yield delivery.response()
        return
    chunk: list[Delivery] = []
    size = 0
    for delivery in deliveries:
        n = delivery.size()
        if chunk and (len(chunk) >= batch or size + n > max_bytes):
            yield chunk[0].response() if len(chunk) == 1 else batch_response(chunk)
            chunk, size = [], 0
        chunk.append(delivery)
        size += n
    if chunk:
        yield chunk[0].response() if len(chunk) == 1 else batch_response(chunk)


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
