"""The asyncio client: :class:`Client` publishes and opens :class:`Subscription` streams."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.sdk._convert import (
    BboxLike,
    EventLike,
    FilterLike,
    PositionLike,
    TopicLike,
    to_bbox,
    to_events,
    to_filter,
    to_since,
    to_topics,
)
from clients.sdk._errors import (
    ClearPathError,
    InvalidArgumentError,
    RpcError,
    from_grpc,
    from_invalid,
)
from clients.sdk._resume import Gap, ResumeState
from core.backoff import Backoff
from core.credentials import ClientCredentials, TokenSource, open_channel
from core.errors import InvalidArgument
from core.limits import channel_options
from core.targets import TargetRing, parse_targets
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

_T = TypeVar("_T")


class Client:
    """A connection to ClearPath Realtime cores.

    ``target`` is ``host:port``, a comma-separated list ``"a:50051,b:50051"``,
    or a list of addresses (default: ``$CLEARPATH_CORE``, else
    ``localhost:50051``); a bad address raises :class:`InvalidArgumentError`
    naming it. ``timeout`` bounds each unary call in seconds (None: no bound);
    ``backoff`` paces the reconnects of subscriptions. Use it as
    ``async with Client() as client:``, or call :meth:`close` when done.
    Connections are opened on first use.

    Credentials, the same for every address:

    * ``token`` (default: ``$CLEARPATH_TOKEN``) is sent as
      ``authorization: Bearer <token>`` with every call, health checks
      included. It may be a function of no arguments returning the current
      token, called again for each call and each (re)opened subscription, so a
      token refreshed elsewhere is picked up without a new client.
    * ``tls_ca`` (a PEM file) turns TLS on: the core's certificate must chain
      to it and name the host dialled. ``tls_cert`` and ``tls_key`` (PEM files,
      both or neither) are this client's certificate for a core that requires
      one (mutual TLS); given without ``tls_ca`` they also turn TLS on, with
      the system's trusted roots. Without any of them the connection is
      plaintext. A file that cannot be read raises
      :class:`InvalidArgumentError` naming it, here.

    With several addresses (cores sharing one broker, so that positions mean
    the same on each), calls go to one of them, :attr:`target`, and the client
    moves to the next one, round robin, when it fails: a subscription resumes
    there from its positions (see :class:`Subscription`), and :meth:`publish`
    follows the rule written in its docstring.
    """

    def __init__(
        self,
        target: str | Iterable[str] | None = None,
        *,
        timeout: float | None = 10.0,
        token: TokenSource | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen, so sharing it is safe
    ) -> None:
        given: str | list[str]
        if target is not None and not isinstance(target, str):
            given, where = list(target), "target"
        elif target:
            given, where = target, "target"
        elif env := os.environ.get("CLEARPATH_CORE"):
            given, where = env, "$CLEARPATH_CORE"
        else:
            given, where = DEFAULT_TARGET, "target"
        try:
            #: Every address this client may use, in round-robin order.
            self.targets: tuple[str, ...] = parse_targets(given, where)
        except InvalidArgument as exc:
            raise from_invalid(exc) from exc
        self._ring = TargetRing(self.targets)
        self.timeout = timeout
        self.backoff = backoff
        try:
            self._credentials = ClientCredentials(
                token=token if token is not None else ClientCredentials.from_env().token,
                ca=_path(tls_ca),
                cert=_path(tls_cert),
                key=_path(tls_key),
            )
            if self._credentials.tls:
                self._credentials.channel_credentials()  # an unreadable file fails here
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The credentials' metadata a call would carry now (sent by the channel)."""
        return self._credentials.metadata()

    @property
    def target(self) -> str:
        """The address calls go to now (one of :attr:`targets`)."""
        return self._ring.current

    async def __aenter__(self) -> Self:
        self._channel(self.target)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections; open calls and subscriptions end. Idempotent."""
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(channel.close() for channel in channels.values()))

    def _channel(self, address: str) -> grpc.aio.Channel:
        """The channel to ``address``, opened on first use (with TLS and the token
        when configured; InvalidArgumentError when a PEM file became unreadable)."""
        channel = self._channels.get(address)
        if channel is None:
            backoff_ms = (int(self.backoff.initial * 1000), int(self.backoff.maximum * 1000))
            options = [
                # Let the channel itself retry as eagerly as our backoff does.
                ("grpc.initial_reconnect_backoff_ms", backoff_ms[0]),
                ("grpc.min_reconnect_backoff_ms", backoff_ms[0]),
                ("grpc.max_reconnect_backoff_ms", backoff_ms[1]),
                # Message sizes and keepalive as the core allows them.
                *channel_options(),
            ]
            try:
                channel = open_channel(address, self._credentials, options)
            except ValueError as exc:
                raise InvalidArgumentError(str(exc)) from exc
            self._channels[address] = channel
        return channel

    def _stub(self, address: str) -> sgrpc.RealtimeServiceAsyncStub:
        return sgrpc.RealtimeServiceStub(self._channel(address))

    def _failed_over(self, address: str) -> str:
        """``address`` failed: move on (unless another call already did); the new target."""
        new = self._ring.advance(address)
        if new != address:
            log.info("core %s failed; moving to %s", address, new)
        return new

    async def _unary(
        self,
        send: Callable[[grpc.aio.Channel, float | None], Awaitable[_T]],
        *,
        idempotent: bool,
    ) -> _T:
        """Run a unary call (``send(channel, seconds left)``) on the current address,
        moving on by the rule of :meth:`publish`; ``idempotent`` calls are also
        sent again to the next address after an UNAVAILABLE answer."""
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        for left in range(len(self.targets), 0, -1):
            address = self.target
            channel = self._channel(address)
            budget = None if deadline is None else max(0.0, deadline - loop.time())
            # Before the last address: send only on a channel known to be connected.
            if left > 1 and not await _connects(channel, None if budget is None else budget / left):
                self._failed_over(address)  # nothing was sent there
                continue
            try:
                return await send(channel, budget)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise from_grpc(exc) from exc
                self._failed_over(address)
                if not idempotent or left == 1:
                    raise from_grpc(exc) from exc
        raise AssertionError("unreachable: the last address raises")  # pragma: no cover

    async def publish(self, events: EventLike | Iterable[EventLike]) -> list[spb.PublishResult]:
        """Publish one event or a batch, atomically, in one call.

        Events are :class:`Event` messages or JSON frames such as
        ``{"type": "package_update", "data": {"package_id": "p1", "status": "in_transit"}}``.
        Returns one result (id, topic, position) per event, in order. Either
        every event is published or none is: :class:`InvalidArgumentError`
        names the first bad field.

        A publish is never sent twice (it is not idempotent: every copy would
        be stored at a new position). With several addresses it moves on only
        when gRPC guarantees that the request was not sent:

        * While the current address is not the last one left to try, the call
          waits (within its share of ``timeout``) until that address's channel
          is connected. A channel that fails to connect (gRPC's
          TRANSIENT_FAILURE) never carried the request, so the same request is
          sent to the next address; each address is tried at most once per call.
        * Once sent, UNAVAILABLE is ambiguous: gRPC has already retried, by
          itself, what it knows never left the client or was refused unseen
          by the server (transparent retries, gRFC A6), so an UNAVAILABLE that
          still surfaces (the connection broke mid-call, the core shut down or
          lost its broker) does not tell whether the events were stored. It is
          raised as :class:`UnavailableError`, not retried, and later calls go
          to the next address. Whether to publish again is the caller's choice
          (events carry their own ``id`` to recognise a copy).
        """
        try:
            request = spb.PublishRequest(events=to_events(events))
        except InvalidArgument as exc:
            raise from_invalid(exc) from exc

        async def send(channel: grpc.aio.Channel, budget: float | None) -> spb.PublishResponse:
            stub = sgrpc.RealtimeServiceStub(channel)
            response: spb.PublishResponse = await stub.Publish(request, timeout=budget)
            return response

        return list((await self._unary(send, idempotent=False)).results)

    def subscribe(
        self,
        topics: TopicLike | Iterable[TopicLike],
        *,
        filters: FilterLike | None = None,
        since: Mapping[str, PositionLike] | None = None,
        bbox: BboxLike | None = None,
        every_event: bool = False,
    ) -> Subscription:
        """A stream of the events of ``topics``, that resumes after any disconnect.

        ``topics`` are subscription types (``"package_updates"``, ``"anomalies"``,
        …); ``filters`` is a dict of SubscriptionFilter fields, e.g.
        ``{"package_ids": ["p1"], "min_severity": "high"}``; ``since`` maps a
        topic to the last position already seen (a frame's ``position``), to
        resume after it. ``bbox``: ``(west, south, east, north)`` in degrees,
        only map updates inside it (``west > east`` crosses the antimeridian;
        overrides a ``bbox`` in ``filters``); to move it, subscribe again with
        ``since=sub.positions()``. Bad arguments raise
        :class:`InvalidArgumentError` here; nothing is sent until the
        subscription is started or iterated.

        While the stream is behind, the core may skip superseded events of
        latest-state topics (map_updates per package, dashboard_metrics,
        system_health per component; the newest of each key always comes):
        :attr:`Subscription.conflated` counts them. ``every_event=True`` asks
        for every event instead (a stream that cannot keep up is then cut off
        and resumed from history).
        """
        try:
            numbers = to_topics(topics)
            spec = to_filter(filters)
            if bbox is not None:
                boxed = spb.SubscriptionFilter()
                boxed.CopyFrom(spec)  # never change the caller's message
                boxed.bbox.CopyFrom(to_bbox(bbox))
                spec = boxed
            request = spb.SubscribeRequest(topics=numbers, filter=spec, every_event=every_event)  # type: ignore[arg-type]
            state = ResumeState(numbers, to_since(since, numbers))
        except InvalidArgument as exc:
            raise from_invalid(exc) from exc
        return Subscription(self, request, state)

    async def health(self, service: str = "") -> str:
        """The gRPC health of the current core for ``service`` ("" = the whole
        server): ``"SERVING"``, ``"NOT_SERVING"``, ``"SERVICE_UNKNOWN"``…
        A check is harmless to repeat: an unreachable core is skipped for the next."""
        request = health_pb2.HealthCheckRequest(service=service)

        async def send(channel: grpc.aio.Channel, budget: float | None) -> int:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(request, timeout=budget)
            return int(response.status)

        status = await self._unary(send, idempotent=True)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


async def _connects(channel: grpc.aio.Channel, within: float | None) -> bool:
    """True once ``channel`` is connected (READY); False when it fails to connect
    (TRANSIENT_FAILURE, SHUTDOWN) or stays connecting for ``within`` seconds.

    False means that a call sent now would not have been carried: gRPC fails a
    call on a channel in TRANSIENT_FAILURE without sending it ("fail fast").
    """
    state = channel.get_state(try_to_connect=True)
    try:
        async with asyncio.timeout(within):
            while state is not grpc.ChannelConnectivity.READY:
                if state in (
                    grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                    grpc.ChannelConnectivity.SHUTDOWN,
                ):
                    return False
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
    except TimeoutError:
        return False
    return True


if TYPE_CHECKING:
    _Call: TypeAlias = grpc.aio.UnaryStreamCall[spb.SubscribeRequest, spb.SubscribeResponse]


class Subscription:
    """An async iterator of :class:`Event` and :class:`Gap` items, in order per topic.

    It connects on :meth:`start` (or the first iteration) and waits for the
    core's confirmation. When the stream breaks — the core restarts, the
    network drops, or the core cut this subscriber off for falling behind — it
    reconnects after a :class:`Backoff` delay and resumes after the last
    position seen on each topic; events seen twice are skipped. With several
    addresses each reconnect goes to the client's next one (round robin), so a
    dead core is left at once; the cores share their history through their
    broker, so the resume there misses nothing it kept. When the core
    cannot supply every event since that position it yields a :class:`Gap` for
    the topic before the events that follow, so a loss is never silent.
    Errors that retrying cannot fix (bad filter, refused token) are raised as
    :class:`ClearPathError` subclasses, as is the last error once
    ``backoff.max_attempts`` consecutive attempts failed. Events the core
    skipped as superseded while the stream was behind (latest-state topics
    only) are not items: :attr:`conflated` counts them.

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
        #: The address of the current (or last) stream's core, once confirmed.
        self.target: str | None = None
        #: Events the core skipped as superseded while this stream was behind, by
        #: topic name (latest-state topics only; the newest event of each key is
        #: never skipped). Only grows.
        self.conflated: dict[str, int] = {}
        self._address = client.target

    @property
    def positions(self) -> dict[str, pb.StreamPosition]:
        """The last position seen per topic name (or, when a filter left the topic's
        events out, where a heartbeat said it went): pass it as ``since`` to resume later."""
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
                self._client._failed_over(self._address)
                continue
            self._failures = 0
            kind = message.WhichOneof("kind")
            if kind == "event" and self._state.accept(message.event):
                return message.event
            if kind == "heartbeat":  # a filtered stream is told where it is
                self._state.advance(message.heartbeat.positions)
            elif kind == "conflated":
                skipped = message.conflated
                name = TOPIC_NAMES.get(skipped.topic, str(skipped.topic))
                self.conflated[name] = self.conflated.get(name, 0) + skipped.skipped
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
            self._address = self._client.target
            stub = self._client._stub(self._address)
            call = stub.Subscribe(request)
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
            self.target = self._address
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
        target = self._client._failed_over(self._address)
        log.info(
            "subscription on %s interrupted (%s: %s); resuming on %s",
            self._address,
            error.code,
            error,
            target,
        )
