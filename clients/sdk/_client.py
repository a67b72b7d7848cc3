"""The asyncio client: :class:`Client` publishes and opens :class:`Subscription` streams."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.sdk._convert import (
    EventLike,
    FilterLike,
    PositionLike,
    TopicLike,
    to_events,
    to_filter,
    to_since,
    to_topics,
)
from clients.sdk._errors import ClearPathError, RpcError, from_grpc, from_invalid
from clients.sdk._resume import Gap, ResumeState
from core.backoff import Backoff
from core.errors import InvalidArgument
from core.limits import channel_options
from core.topics import TOPIC_NAMES

__all__ = ["DEFAULT_TARGET", "Client", "Subscription"]

log = logging.getLogger("clearpath.sdk")

#: The core dialled when neither ``target`` nor ``CLEARPATH_CORE`` is given.
DEFAULT_TARGET = "localhost:50051"

# Stream ends a subscription recovers from by resuming: the core went away or
# is restarting, or this subscriber fell behind (or there were too many).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


class Client:
    """A connection to a ClearPath Realtime core.

    ``target`` is ``host:port`` (default: ``$CLEARPATH_CORE``, else
    ``localhost:50051``); ``token`` (default: ``$CLEARPATH_TOKEN``) is sent as
    ``authorization: Bearer <token>`` with every call; ``timeout`` bounds each
    unary call in seconds (None: no bound); ``backoff`` paces the reconnects
    of subscriptions. Use it as ``async with Client() as client:``, or call
    :meth:`close` when done. The connection is opened on first use.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = 10.0,
        token: str | None = None,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen, so sharing it is safe
    ) -> None:
        self.target: str = target or os.environ.get("CLEARPATH_CORE") or DEFAULT_TARGET
        self.timeout = timeout
        self.backoff = backoff
        token = token if token is not None else os.environ.get("CLEARPATH_TOKEN")
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._stub: sgrpc.RealtimeServiceAsyncStub | None = None

    async def __aenter__(self) -> Self:
        self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; open calls and subscriptions end. Idempotent."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _connect(self) -> sgrpc.RealtimeServiceAsyncStub:
        if self._stub is None:
            backoff_ms = (int(self.backoff.initial * 1000), int(self.backoff.maximum * 1000))
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    # Let the channel itself retry as eagerly as our backoff does.
                    ("grpc.initial_reconnect_backoff_ms", backoff_ms[0]),
                    ("grpc.min_reconnect_backoff_ms", backoff_ms[0]),
                    ("grpc.max_reconnect_backoff_ms", backoff_ms[1]),
                    # Message sizes and keepalive as the core allows them.
                    *channel_options(),
                ],
            )
            self._stub = sgrpc.RealtimeServiceStub(self._channel)
        return self._stub

    async def publish(self, events: EventLike | Iterable[EventLike]) -> list[spb.PublishResult]:
        """Publish one event or a batch, atomically, in one call.

        Events are :class:`Event` messages or JSON frames such as
        ``{"type": "package_update", "data": {"package_id": "p1", "status": "in_transit"}}``.
        Returns one result (id, topic, position) per event, in order. Either
        every event is published or none is: :class:`InvalidArgumentError`
        names the first bad field. A publish is not retried (it is not
        idempotent); on :class:`UnavailableError` it may be sent again.
        """
        try:
            request = spb.PublishRequest(events=to_events(events))
        except InvalidArgument as exc:
            raise from_invalid(exc) from exc
        stub = self._connect()
        try:
            response = await stub.Publish(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc) from exc
        return list(response.results)

    def subscribe(
        self,
        topics: TopicLike | Iterable[TopicLike],
        *,
        filters: FilterLike | None = None,
        since: Mapping[str, PositionLike] | None = None,
    ) -> Subscription:
        """A stream of the events of ``topics``, that resumes after any disconnect.

        ``topics`` are subscription types (``"package_updates"``, ``"anomalies"``,
        …); ``filters`` is a dict of SubscriptionFilter fields, e.g.
        ``{"package_ids": ["p1"], "min_severity": "high"}``; ``since`` maps a
        topic to the last position already seen (a frame's ``position``), to
        resume after it. Bad arguments raise :class:`InvalidArgumentError` here;
        nothing is sent until the subscription is started or iterated.
        """
        try:
            numbers = to_topics(topics)
            request = spb.SubscribeRequest(topics=numbers, filter=to_filter(filters))  # type: ignore[arg-type]
            state = ResumeState(numbers, to_since(since, numbers))
        except InvalidArgument as exc:
            raise from_invalid(exc) from exc
        return Subscription(self, request, state)

    async def health(self, service: str = "") -> str:
        """The core's gRPC health for ``service`` ("" = the whole server):
        ``"SERVING"``, ``"NOT_SERVING"``, ``"SERVICE_UNKNOWN"``…"""
        self._connect()
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=self.timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc) from exc
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


if TYPE_CHECKING:
    _Call: TypeAlias = grpc.aio.UnaryStreamCall[spb.SubscribeRequest, spb.SubscribeResponse]


class Subscription:
    """An async iterator of :class:`Event` and :class:`Gap` items, in order per topic.

    It connects on :meth:`start` (or the first iteration) and waits for the
    core's confirmation. When the stream breaks — the core restarts, the
    network drops, or the core cut this subscriber off for falling behind — it
    reconnects after a :class:`Backoff` delay and resumes after the last
    position seen on each topic; events seen twice are skipped. When the core
    cannot supply every event since that position it yields a :class:`Gap` for
    the topic before the events that follow, so a loss is never silent.
    Errors that retrying cannot fix (bad filter, refused token) are raised as
    :class:`ClearPathError` subclasses, as is the last error once
    ``backoff.max_attempts`` consecutive attempts failed.

    Use ``async with client.subscribe(...) as sub: async for item in sub: ...``;
    leaving the block closes the stream. One task at a time may iterate it.
    """

    def __init__(self, client: Client, request: spb.SubscribeRequest, state: ResumeState) -> None:
        self._client = client
        self._request = request
        self._state = state
        self._call: _Call | None = None
        self._pending: deque[Gap] = deque()
        self._failures = 0
        self._closed = False
        #: How many times the stream was re-established after breaking.
        self.reconnects = 0
        #: The core's id of the current stream (for logs), once confirmed.
        self.subscription_id: str | None = None

    @property
    def positions(self) -> dict[str, pb.StreamPosition]:
        """The last position seen per topic name: pass it as ``since`` to resume later."""
        return {TOPIC_NAMES[t]: p for t, p in self._state.positions.items()}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def start(self) -> None:
        """Open the stream and wait until the core confirms it (events published
        from then on will be delivered). Does nothing when already open."""
        if self._closed:
            raise RuntimeError("subscription is closed")
        if self._call is None:
            await self._open()

    async def aclose(self) -> None:
        """End the stream. Idempotent."""
        self._closed = True
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def __anext__(self) -> pb.Event | Gap:
        while not self._closed:
            if self._pending:
                return self._pending.popleft()
            if self._call is None:
                await self._open()
                continue
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                self._call = None
                self._failed(exc)
                continue
            if not isinstance(message, spb.SubscribeResponse):  # EOF: ended without an error
                self._call = None
                self._failures += 1
                continue
            self._failures = 0
            if message.HasField("event") and self._state.accept(message.event):
                return message.event
        raise StopAsyncIteration

    async def _open(self) -> None:
        while True:
            delay = self._client.backoff.delay(self._failures)
            if delay:
                await asyncio.sleep(delay)
            if self._closed:
                return
            request = spb.SubscribeRequest()
            request.CopyFrom(self._request)
            request.since.extend(self._state.request_since())
            stub = self._client._connect()
            call = stub.Subscribe(request, metadata=self._client._metadata)
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                self._failed(exc)
                continue
            except BaseException:  # cancelled while waiting: do not leave the call open
                call.cancel()
                raise
            if not isinstance(first, spb.SubscribeResponse) or not first.HasField("confirmed"):
                call.cancel()
                raise RpcError("the core did not confirm the subscription", code="INTERNAL")
            if self.subscription_id is not None:
                self.reconnects += 1
            self.subscription_id = first.confirmed.subscription_id
            gaps = self._state.confirm(first.confirmed)
            for gap in gaps:
                log.debug(  # the caller gets the Gap itself
                    "gap in %s after %s:%d (%s)",
                    gap.topic,
                    gap.since.epoch,
                    gap.since.offset,
                    gap.reason,
                )
            self._pending.extend(gaps)
            self._call = call
            return

    def _failed(self, exc: grpc.aio.AioRpcError) -> None:
        """Raise the mapped error unless the stream should be resumed."""
        self._failures += 1
        limit = self._client.backoff.max_attempts
        error: ClearPathError = from_grpc(exc)
        if exc.code() not in _RETRYABLE or (limit is not None and self._failures > limit):
            self._closed = True
            raise error from exc
        log.info("subscription interrupted (%s: %s); resuming", error.code, error)
