"""The gRPC transport of the core: ``RealtimeService`` over a broker and a hub."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.auth import Identity
from core.broker import Broker, HistoryResult
from core.config import CoreSettings
from core.delivery import URGENT_TOPICS, key_function
from core.errors import (
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    RealtimeError,
    ResourceExhausted,
    SlowConsumer,
    Unauthenticated,
    Unavailable,
)
from core.filters import Matcher, Skipped, build_matcher
from core.guard import Authenticator, Metadata, PublishRates
from core.hub import Hub, Subscription
from core.metrics import LATENCY_BUCKETS, Counts, Family, Latency, counter, gauge
from core.positions import Floors, Position
from core.topics import (
    INTERNAL_PAYLOAD_TOPIC,
    INTERNAL_TOPICS,
    PAYLOAD_TOPIC,
    TOPIC_NAMES,
    topic_name,
)
from core.validation import Limits, prepare_events, valid_traceparent
from core.wire import Delivery, batch_response

__all__ = [
    "PUBLISH_METHOD",
    "SERVICE_NAME",
    "RealtimeService",
    "add_to_server",
    "method_handlers",
]

log = logging.getLogger("clearpath.core")

SERVICE_NAME: str = spb.DESCRIPTOR.services_by_name["RealtimeService"].full_name
PUBLISH_METHOD = f"/{SERVICE_NAME}/Publish"

# Events of history read from the broker at a time while a stream catches up.
_PAGE = 1000
# Events a stream takes from its queue at a time (at least its batch): what it
# has taken is sent before anything queued later, so an urgent event waits
# behind at most this many (and what gRPC buffers), not behind the whole queue.
_ROUND = 64


class _Labels(dict[int, str]):
    def __missing__(self, topic: int) -> str:
        return "unknown"


#: Topic → its metric label: every topic of the enum by name, internal ones too;
#: any other number (a newer publisher's, a bad request's) is "unknown".
_TOPIC_LABELS = _Labels(
    (number, name.removeprefix("TOPIC_").lower())
    for name, number in pb.Topic.items()
    if number != pb.TOPIC_UNSPECIFIED
)


class _Keys(dict[int, tuple[str, str]]):
    """Topic → a label tuple built once (hot paths make none); others get ``missing``."""

    def __init__(self, pairs: Iterable[tuple[int, tuple[str, str]]], missing: tuple[str, str]):
        super().__init__(pairs)
        self.missing = missing

    def __missing__(self, topic: int) -> tuple[str, str]:
        return self.missing


#: Topic → the (path, topic) labels of the delivery metrics.
_GRPC_KEYS = _Keys(((t, ("grpc", name)) for t, name in _TOPIC_LABELS.items()), ("grpc", "unknown"))
#: Topic → the (topic, outcome) labels of an event published.
_OK_KEYS = _Keys(((t, (name, "ok")) for t, name in _TOPIC_LABELS.items()), ("unknown", "ok"))

#: Payload field → topic, to label the events of a refused Publish.
_PAYLOAD_TOPICS: dict[str, int] = {**PAYLOAD_TOPIC, **INTERNAL_PAYLOAD_TOPIC}

#: Why a Publish was refused → its ``outcome`` label (first match wins).
_OUTCOMES: tuple[tuple[type[RealtimeError], str], ...] = (
    (InvalidArgument, "invalid"),
    (Unauthenticated, "unauthenticated"),
    (PermissionDenied, "forbidden"),
    (RateLimited, "rate_limited"),
    (Unavailable, "unavailable"),
)

#: Buckets (events) of the queue depth and lag histograms, made at scrape time.
_DEPTH_BUCKETS = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)


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
            request_deserializer=_lenient(spb.PublishRequest.FromString),
            response_serializer=spb.PublishResponse.SerializeToString,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe,
            request_deserializer=_lenient(spb.SubscribeRequest.FromString),
            response_serializer=_serialize,
        ),
        "History": grpc.unary_unary_rpc_method_handler(
            service.History,
            request_deserializer=_lenient(spb.HistoryRequest.FromString),
            response_serializer=spb.HistoryResponse.SerializeToString,
        ),
    }


class Undecodable:
    """A request body that is not the method's message: the handler answers
    INVALID_ARGUMENT (gRPC itself would answer UNKNOWN and log a traceback)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"request: not a valid message ({self.reason})")


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Undecodable(str(exc)[:200])

    return deserialize


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
        # Metrics: plain counters here, families built at scrape time (families()).
        self._published = Counts()  # (topic, outcome) → events
        self._latency = Latency(LATENCY_BUCKETS)  # (path, topic) → live events handed on
        self._delivered = Counts()  # (path, topic) → events handed on, not in _latency
        self._filtered = Counts()  # (path, topic) → live events a filter refused
        self._dropped = 0  # events streams lost by overflowing (see families())
        self._conflated = 0  # events streams skipped as superseded (see families())
        # Lanes and conflation of every stream (README "Delivery classes, priority
        # lanes and conflation").
        self._urgent = URGENT_TOPICS if settings.priority_lanes else None
        key_of = key_function(settings.conflation)
        self._conflating = frozenset(settings.conflation)
        self._key: Callable[[Delivery], Hashable | None] | None = (
            (lambda delivery: delivery.key_by(key_of)) if settings.conflation else None
        )
        self._slow_closes = 0  # streams ended as slow consumers

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

    def families(self) -> list[Family]:
        """The service's metrics now (a :class:`core.metrics.Metrics` source).

        ``events_delivered_total`` counts events handed to gRPC, live and replayed
        from history; ``delivery_latency_seconds`` only live ones (published_at to
        handed to gRPC). ``events_dropped_total{reason="slow_consumer"}`` counts
        the events streams lost by overflowing their queue: refused from the
        overflow on, and still queued when the stream ended RESOURCE_EXHAUSTED (the
        subscriber resumes them from history); ``{reason="conflated"}`` the events
        of latest-state topics superseded in a queue by a newer one of the same
        key (told to the stream by a ``Conflated`` message, or superseded when it
        ended before it could be told);
        ``events_filtered_total`` the live events subscribers' filters refused."""
        path = ("grpc",)
        latency = self._latency.family(
            "clearpath_delivery_latency_seconds",
            "Seconds from an event's published_at to its hand-over to gRPC (live events)",
            ["path", "topic"],
        )
        delivered = dict(self._delivered.items())
        for sample in latency.samples:
            if sample.name.endswith("_count"):
                key = (sample.labels["path"], sample.labels["topic"])
                delivered[key] = delivered.get(key, 0) + sample.value
        subs = self._hub.subscriptions()
        depth = Latency(_DEPTH_BUCKETS)
        lag = Latency(_DEPTH_BUCKETS)
        deepest = 0
        for sub in subs:
            queued = len(sub)
            deepest = max(deepest, queued)
            depth.observe(path, queued)
            lag.observe(path, queued + sub.missed)  # missed: behind by those too
        return [
            self._published.family(
                "clearpath_events_published",
                "Events offered to Publish, by outcome",
                ["topic", "outcome"],
            ),
            counter(
                "clearpath_events_delivered",
                "Events handed to gRPC subscribers",
                ["path", "topic"],
                delivered,
            ),
            self._filtered.family(
                "clearpath_events_filtered",
                "Live events a subscriber's filter refused",
                ["path", "topic"],
            ),
            counter(
                "clearpath_events_dropped",
                "Events streams lost by overflowing their queue",
                ["path", "reason"],
                {("grpc", "slow_consumer"): self._dropped, ("grpc", "conflated"): self._conflated},
            ),
            latency,
            gauge(
                "clearpath_subscriptions",
                "Subscriptions by topic",
                ["path", "topic"],
                {key: self._hub.count(t) for t, key in _GRPC_KEYS.items()},
            ),
            gauge(
                "clearpath_queue_depth_max",
                "Events queued for the most behind subscriber",
                ["path"],
                {path: deepest},
            ),
            depth.family(
                "clearpath_queue_depth",
                "Events queued per subscriber (at scrape time)",
                ["path"],
            ),
            lag.family(
                "clearpath_subscriber_lag_events",
                "Events each subscriber is behind the head: queued, and missed after an overflow",
                ["path"],
            ),
            counter(
                "clearpath_slow_consumer_closes",
                "Streams ended as slow consumers (queue overflow, or history trimmed in a replay)",
                ["path"],
                {path: self._slow_closes},
            ),
            counter(
                "clearpath_rate_limited",
                "Calls refused for going too fast",
                ["path", "kind"],
                {("grpc", "publish"): self.rates.refused},
            ),
            counter(
                "clearpath_auth_failures",
                "Calls refused as unauthenticated",
                ["path"],
                {path: self.auth.failures},
            ),
            gauge("clearpath_streams", "Open Subscribe streams", ["path"], {path: self.streams}),
        ]

    async def Publish(
        self,
        request: spb.PublishRequest,
        context: grpc.aio.ServicerContext[spb.PublishRequest, spb.PublishResponse],
    ) -> spb.PublishResponse:
        if isinstance(request, Undecodable):
            error = request.error()
            await context.abort(error.grpc_code, str(error))
        metadata = context.invocation_metadata()
        try:
            identity = self.auth.identity(metadata)
            # The request was deserialized for this call: its events are ours to use.
            events = prepare_events(request.events, self._limits, copy=False)
            if not identity.operator:
                for i, event in enumerate(events):
                    if event.topic in INTERNAL_TOPICS:
                        raise _internal(event.topic)
                    if not identity.may_publish(event.topic):
                        raise PermissionDenied(
                            f"events[{i}]: this token may not publish to {topic_name(event.topic)}"
                        )
            self.rates.take(identity, len(events))
            _stamp(events, metadata)
            positions = await self._broker.publish(events)
        except RealtimeError as exc:
            self.count_refused(request.events, _outcome(exc))
            await context.abort(exc.grpc_code, str(exc))
        response = spb.PublishResponse()
        add = response.results.add
        published = self._published
        for event, position in zip(events, positions, strict=True):
            result = add()
            result.id = event.id
            result.topic = event.topic
            result.position.CopyFrom(position)
            published.inc(_OK_KEYS[event.topic])
        if log.isEnabledFor(logging.DEBUG):
            for event in events:
                log.debug(
                    "publish id=%s topic=%s offset=%d",
                    event.id,
                    _TOPIC_LABELS[event.topic],
                    event.position.offset,
                )
        return response

    def refused(self, method: str, request: Any) -> None:
        """A call refused before it reached the service (unauthenticated): a
        Publish's events are counted under that outcome."""
        if method == PUBLISH_METHOD:
            events = () if isinstance(request, Undecodable) else request.events
            self.count_refused(events, "unauthenticated")

    def count_refused(self, events: Sequence[pb.Event], outcome: str) -> None:
        """Count the events of a refused Publish under ``outcome``, each by the topic
        of its payload (``unknown`` without one); an empty batch counts once."""
        if not events:
            self._published.inc(("unknown", outcome))
        for event in events:
            kind = event.WhichOneof("payload")
            topic = _PAYLOAD_TOPICS[kind] if kind is not None else event.topic
            self._published.inc((_TOPIC_LABELS[topic], outcome))

    async def Subscribe(  # type: ignore[override]  # yields pre-serialized events too
        self,
        request: spb.SubscribeRequest,
        context: grpc.aio.ServicerContext[spb.SubscribeRequest, spb.SubscribeResponse],
    ) -> AsyncIterator[spb.SubscribeResponse | bytes]:
        if isinstance(request, Undecodable):
            error = request.error()
            await context.abort(error.grpc_code, str(error))
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
        batch = max(1, request.max_batch)
        # A filtered stream is told where it is on topics its filter empties (Heartbeat.positions).
        skipped = None
        accepts = None
        if matcher is not None:
            skipped = Skipped()
            accepts = _on_event(matcher, self._filtered, skipped, ready)
        sub: Subscription[Delivery] = Subscription(
            topics,
            self._settings.queue_size,
            ready.set,
            accepts,
            urgent=self._urgent,
            urgent_after=max(batch, _ROUND),  # less goes in the next round anyway
            conflate=None if request.every_event else self._key,
            conflate_topics=self._conflating,
            conflate_after=self._settings.conflate_after_events,
        )
        sub_id = uuid.uuid4().hex[:12]
        expired = _expire(identity, sub, ready)
        self._hub.add(sub)
        self._wakers.add(ready)
        self.streams += 1
        self._idle.clear()
        log.info("subscribe %s topics=%s", sub_id, [topic_name(t) for t in topics])
        try:
            async for response in self._stream(
                sub, sub_id, topics, since, ready, batch, matcher, skipped
            ):
                yield response
        except RealtimeError as exc:
            ended: RealtimeError = exc
            if isinstance(exc, SlowConsumer):
                self._slow_closes += 1
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
            if sub.overflowed:  # lost to this stream: refused, and queued but not sent
                self._dropped += sub.missed + len(sub)
            untold = sub.take_conflated()  # superseded, the stream ended before telling
            if untold:
                self._conflated += sum(untold.values())
            self._wakers.discard(ready)
            self.streams -= 1
            if not self.streams:
                self._idle.set()

    async def History(
        self,
        request: spb.HistoryRequest,
        context: grpc.aio.ServicerContext[spb.HistoryRequest, spb.HistoryResponse],
    ) -> spb.HistoryResponse:
        if isinstance(request, Undecodable):
            error = request.error()
            await context.abort(error.grpc_code, str(error))
        try:
            identity = self.auth.identity(context.invocation_metadata())
            matcher = None
            if request.topic in TOPIC_NAMES or request.topic in INTERNAL_TOPICS:
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
        if topic not in TOPIC_NAMES and topic not in INTERNAL_TOPICS:
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
        skipped: Skipped | None = None,
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
            async for chunk in self._replay(topic, found, matcher, batch, limit, skipped):
                if sub.closed:  # shutting down: end now, not after a long replay
                    raise _ShuttingDown()
                yield chunk
        del backlog
        interval = self._settings.heartbeat_interval
        rounds = max(batch, _ROUND)
        told_up = True
        clock = asyncio.get_running_loop().time
        told_at = clock()  # when the stream was last told its skipped positions
        while True:
            if told_up != self._broker_up:
                told_up = self._broker_up
                yield _heartbeat(broker_up=told_up)
            fresh = sub.drain(max_items=rounds)
            superseded = sub.take_conflated()
            if superseded:  # told before the events that follow the superseded ones
                for topic, count in superseded.items():
                    self._conflated += count
                    yield spb.SubscribeResponse(
                        conflated=spb.Conflated(topic=topic, skipped=count)  # type: ignore[arg-type]
                    )
            if floors:
                fresh = [d for d in fresh if floors.admits(d.event.topic, d.event.position)]
            if skipped and fresh:
                for delivery in fresh:
                    skipped.passed(delivery.topic, delivery.event.position)
            debug = fresh and log.isEnabledFor(logging.DEBUG)
            if batch == 1:  # the common case, kept lean: one clock read per response
                for delivery in fresh:
                    self._handed(delivery, time.time())
                    if debug:
                        log.debug("deliver %s ids=%s", sub_id, [delivery.event.id])
                    yield delivery.response()
            else:
                for group in _groups(fresh, batch, limit):
                    now = time.time()
                    for delivery in group:
                        self._handed(delivery, now)
                    if debug:
                        log.debug("deliver %s ids=%s", sub_id, [d.event.id for d in group])
                    yield _response(group)
            if sub.closed:
                raise _ShuttingDown()
            if sub.overflowed and not len(sub):  # what it had queued is sent first
                raise SlowConsumer(
                    f"subscriber fell more than {sub.capacity} events behind; "
                    "resubscribe with `since` set to the last position received"
                )
            ready.clear()
            if len(sub) or sub.overflowed or sub.closed:
                continue
            # Nothing queued: every event before the skipped ones has been sent.
            if skipped and (skipped.due() or clock() - told_at >= interval):
                told_at = clock()
                yield _heartbeat(broker_up=self._broker_up, positions=skipped.take())
            try:
                async with asyncio.timeout(interval):
                    await ready.wait()
            except TimeoutError:
                told_at = clock()
                told = skipped.take() if skipped else None
                yield _heartbeat(broker_up=self._broker_up, positions=told)

    def _handed(self, delivery: Delivery, now: float) -> None:
        """``delivery`` is handed to gRPC at ``now``: its delivery latency, by topic."""
        published = delivery.published
        if published:
            late = now - published  # another node's clock may be ahead
            self._latency.observe(_GRPC_KEYS[delivery.topic], late if late > 0.0 else 0.0)
        else:  # published by a core that did not stamp it
            self._delivered.inc(_GRPC_KEYS[delivery.topic])

    async def _replay(
        self,
        topic: int,
        found: HistoryResult,
        matcher: Matcher | None,
        batch: int,
        limit: int,
        skipped: Skipped | None = None,
    ) -> AsyncIterator[bytes]:
        """The history of ``topic`` up to ``found.position``, a page at a time
        (what ``matcher`` refuses is noted in ``skipped``)."""
        head = found.position
        while found.events:
            events = found.events
            if matcher is None:
                deliveries = [Delivery(e) for e in events]
            else:
                deliveries = []
                for e in events:
                    if matcher(e):
                        deliveries.append(Delivery(e))
                    elif skipped is not None:
                        skipped.skip(topic, e.position)
                if skipped and deliveries:
                    skipped.passed(topic, deliveries[-1].event.position)
            key = _GRPC_KEYS[topic]
            for group in _groups(deliveries, batch, limit):
                yield _response(group)
                # Replayed history is delivered, but its age is no delivery latency.
                self._delivered.inc(key, len(group))
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
        if topic in INTERNAL_TOPICS and not identity.operator:
            raise _internal(topic)
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


def _internal(topic: int) -> PermissionDenied:
    # Internal topics (the bridges' canary, see core.topics): operators only.
    return PermissionDenied(f"{topic_name(topic)} is an internal topic: operator tokens only")


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


def _heartbeat(
    *, broker_up: bool, positions: dict[int, Position] | None = None
) -> spb.SubscribeResponse:
    """A heartbeat; with ``positions`` (see :class:`core.filters.Skipped`) when a
    filter left events out since the stream was last told."""
    heartbeat = spb.Heartbeat(broker_unavailable=not broker_up)
    heartbeat.time.GetCurrentTime()
    for topic, at in (positions or {}).items():
        heartbeat.positions.add(
            topic=topic,
            position=pb.StreamPosition(offset=at.offset, epoch=at.epoch),
        )
    return spb.SubscribeResponse(heartbeat=heartbeat)


def _on_event(
    matcher: Matcher, filtered: Counts, skipped: Skipped, wake: asyncio.Event
) -> Callable[[Delivery], bool]:
    """The hub filter of a stream: ``matcher``, counting and noting what it refuses
    (``wake`` the stream when it is time to tell, see :class:`core.filters.Skipped`)."""

    def accepts(delivery: Delivery) -> bool:
        event = delivery.event
        if matcher(event):
            return True
        filtered.inc(_GRPC_KEYS[delivery.topic])
        if skipped.skip(delivery.topic, event.position):
            wake.set()
        return False

    return accepts


def _stamp(events: Sequence[pb.Event], metadata: Metadata) -> None:
    """Set ``published_at`` of accepted ``events`` to now (one clock read), and give
    those without a ``traceparent`` the call's, when it carries a valid one."""
    now = time.time_ns()
    stamp = Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
    for event in events:
        event.published_at.CopyFrom(stamp)
    trace = _traceparent(metadata)
    if trace:
        for event in events:
            if not event.traceparent:
                event.traceparent = trace


def _traceparent(metadata: Metadata) -> str:
    """The call's W3C ``traceparent``, or "" when it has none or an invalid one."""
    for key, value in metadata or ():
        if key == "traceparent":
            if isinstance(value, str) and valid_traceparent(value):
                return value
            return ""
    return ""


def _outcome(exc: RealtimeError) -> str:
    for kind, outcome in _OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return "unavailable"  # anything else: the core could not take the events


def _groups(deliveries: list[Delivery], batch: int, max_bytes: int) -> Iterator[Sequence[Delivery]]:
    """``deliveries`` in the groups each response carries: single events, or batches
    of at most ``batch`` events and ``max_bytes`` bytes (a larger event goes alone)."""
    if batch == 1:
        for delivery in deliveries:
            yield (delivery,)
        return
    chunk: list[Delivery] = []
    size = 0
    for delivery in deliveries:
        n = delivery.size()
        if chunk and (len(chunk) >= batch or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(delivery)
        size += n
    if chunk:
        yield chunk


def _response(group: Sequence[Delivery]) -> bytes:
    """The serialized response of a group of :func:`_groups`."""
    return group[0].response() if len(group) == 1 else batch_response(group)


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
        if topic not in TOPIC_NAMES and topic not in INTERNAL_TOPICS:
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
