"""The bridge's side of gRPC: one multiplexed Subscribe stream to the core.

One stream for all seven topics serves every socket of the bridge; each event
becomes a :class:`~bridge.frames.Frame` once, is remembered in a small per-topic
cache and handed to ``on_frame``. When the stream ends for any reason it is
reopened with the shared backoff (:mod:`core.backoff`), resuming every topic
from the last position the bridge saw (:class:`core.positions.Cursors`), so
nothing within the core's history is lost; what the core could not recover is
reported to ``on_gap`` (the bridge tells the sockets of that topic).

With several core addresses (``CLEARPATH_BRIDGE_CORE=a:50051,b:50051``: cores
sharing one broker) the stream is on one of them at a time; every end of the
stream moves its next attempt to the next address, round robin
(:class:`core.targets.TargetRing`), where it resumes from the same cursors.
``History`` calls go to the address the stream is on, and to the next ones in
turn when that one is UNAVAILABLE (a read, so asking again is harmless).

Every channel to a core is opened by :func:`core.credentials.open_channel`
with the ``core_token`` and ``core_tls_*`` settings (:func:`core_credentials`).

The stream also carries the internal canary topic: :meth:`Upstream.run_canary`
publishes this bridge's canary every ``canary_interval`` (over the same channel
and credentials; the token must be an operator's), and its coming back on the
stream is what :meth:`Upstream.readiness` (``/readyz``, :mod:`bridge.health`)
rests on. Canary events never become frames: no socket and no cache sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

import grpc

from bridge.config import BridgeSettings
from bridge.frames import Frame, event_frame
from bridge.health import CanaryProbe, Readiness, readiness
from bridge.pages import HistoryPages, Page
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.auth import parse_algorithms, read_secret, self_signer
from core.backoff import Backoff
from core.credentials import ClientCredentials, TokenSource, open_channel
from core.errors import Unavailable
from core.limits import UPSTREAM_BATCH, channel_options
from core.positions import Cursors, Gap, HasPosition, Position
from core.targets import TargetRing
from core.topics import CANARY, INTERNAL_TOPICS, TOPIC_NAMES, TOPICS

__all__ = ["Upstream", "core_credentials"]

log = logging.getLogger("clearpath.bridge.upstream")


def core_credentials(settings: BridgeSettings) -> ClientCredentials:
    """The upstream's credentials towards the core: ``core_token`` and the
    ``core_tls_*`` files (TLS when a CA or a client certificate is given).

    Without ``core_token``, a bridge whose own auth uses a shared HMAC secret
    (``auth_secret``/``auth_secret_file`` with an HS algorithm; the core must
    accept the same secret) signs its own short-lived operator tokens with it."""
    token: TokenSource | None = (
        settings.core_token.get_secret_value() if settings.core_token is not None else None
    )
    if token is None:
        token = _self_signed(settings)
    return ClientCredentials(
        token=token,
        ca=settings.core_tls_ca,
        cert=settings.core_tls_cert,
        key=settings.core_tls_key,
    )


def _self_signed(settings: BridgeSettings) -> Callable[[], str] | None:
    """Operator tokens signed with the bridge's own HMAC secret, or None without one."""
    hmac_algorithms = [a for a in parse_algorithms(settings.auth_algorithms) if a.startswith("HS")]
    if not hmac_algorithms:
        return None
    if settings.auth_secret is not None:
        secret = settings.auth_secret.get_secret_value()
    elif settings.auth_secret_file is not None:
        secret = read_secret(settings.auth_secret_file)
    else:
        return None
    return self_signer(
        secret,
        subject="clearpath-bridge",
        algorithm=hmac_algorithms[0],
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        operator=True,
    )


class Upstream:
    """Keeps one Subscribe stream to the core open and feeds ``on_frame``.

    ``state`` is one of ``connecting``, ``connected``, ``reconnecting``,
    ``stopped``; :attr:`target` is the core address the stream is on (or will
    try next); :meth:`position` is the last position seen per topic, and
    :attr:`cache` holds the latest frames of each topic, all of that position's
    epoch and with consecutive offsets.
    """

    def __init__(
        self,
        settings: BridgeSettings,
        on_frame: Callable[[Frame], object],
        on_gap: Callable[[Gap], object] = lambda gap: None,
    ) -> None:
        self._settings = settings
        self._on_frame = on_frame
        self._on_gap = on_gap
        self._targets = TargetRing(settings.cores)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials = core_credentials(settings)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._backoff = Backoff(initial=settings.reconnect_initial, maximum=settings.reconnect_max)
        self._cursors = Cursors()
        #: History pages read once for every resume that needs them (see bridge.pages).
        self.pages = HistoryPages(self.history)
        self.cache: dict[int, deque[Frame]] = {t: deque(maxlen=settings.cache_size) for t in TOPICS}
        self.state = "connecting"
        self.attempt = 0
        self.reconnects = 0
        self.gaps = 0
        self.events = 0
        self.errors = 0
        #: False while the core reports (in heartbeats) that its broker is unreachable.
        self.core_broker_up = True
        self.last_error = ""
        self.connected_at: float | None = None
        self.failovers = 0
        #: This bridge's canaries (its id: one per process, so workers tell theirs apart).
        self.canary = CanaryProbe(f"bridge-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._canary_now = asyncio.Event()  # set on each connection: publish one at once

    @property
    def target(self) -> str:
        """The core address the stream is on, or will try next."""
        return self._targets.current

    def _stub(self, address: str) -> sgrpc.RealtimeServiceAsyncStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, self._credentials, channel_options())
            self._channels[address] = channel
        return sgrpc.RealtimeServiceStub(channel)

    def start(self) -> None:
        """Start the stream in the background."""
        self._task = asyncio.create_task(self._run(), name="bridge-upstream")

    async def stop(self) -> None:
        """Close the stream and the channels."""
        self.state = "stopped"
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pages.close()
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(channel.close() for channel in channels.values()))

    async def wait_connected(self) -> None:
        """Return once the stream is open (wrap in a timeout)."""
        await self._connected.wait()

    def status(self) -> dict[str, Any]:
        """The upstream part of ``/ws/status``."""
        return {
            "core": self.target,
            "cores": list(self._targets.addresses),
            "failovers": self.failovers,
            "state": self.state,
            "connected_since": self.connected_at,
            "reconnects": self.reconnects,
            "attempt": self.attempt,
            "last_error": self.last_error,
            "errors": self.errors,
            # What the core says of its broker (heartbeats): while "unavailable" no
            # event can be published; the stream stays open and resumes after it.
            "core_broker": "available" if self.core_broker_up else "unavailable",
            "events_received": self.events,
            "history_gaps": self.gaps,
            "positions": {
                TOPIC_NAMES[t]: {"offset": p.offset, "epoch": p.epoch}
                for t, p in self._cursors.items()
            },
            "canary": {
                **self.canary.status(time.monotonic()),
                "interval_seconds": self._settings.canary_interval,
                "timeout_seconds": self._settings.canary_timeout,
            },
        }

    def readiness(self) -> Readiness:
        """Whether this bridge delivers events now (``/readyz``; rules in :mod:`bridge.health`)."""
        return readiness(
            connected=self.state == "connected",
            core_broker_up=self.core_broker_up,
            canary=self.canary,
            now=time.monotonic(),
            interval=self._settings.canary_interval,
            timeout=self._settings.canary_timeout,
        )

    async def run_canary(self) -> None:
        """Publish a canary every ``canary_interval``, and one at once on each
        connection, while the stream is connected; runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.canary_interval):
                    await self._canary_now.wait()
            self._canary_now.clear()
            if self.state == "connected":
                await self._publish_canary()

    async def _publish_canary(self) -> None:
        probe = self.canary
        seq = probe.send(time.monotonic())
        event = pb.Event(topic=CANARY, canary=pb.Canary(source=probe.source, seq=seq))  # type: ignore[arg-type]
        try:
            await self._stub(self.target).Publish(
                spb.PublishRequest(events=[event]), timeout=self._settings.canary_timeout
            )
        except grpc.aio.AioRpcError as exc:
            probe.failed(f"{exc.code().name}: {exc.details()}")
            log.info("canary %d not published: %s", seq, probe.last_error)
        except Exception as exc:  # a bug must not end the canary for good
            probe.failed(f"internal error: {exc!r}")
            log.exception("canary %d not published", seq)

    def position(self, topic: int) -> Position | None:
        """The last position the bridge saw (or was confirmed) on ``topic``."""
        return self._cursors.get(topic)

    async def _run(self) -> None:
        while True:
            address = self.target
            try:
                await self._stream(address)
                self.last_error = "stream ended"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:  # a bug must not end the upstream for good
                self.errors += 1
                self.last_error = f"internal error: {exc!r}"
                log.exception(
                    "upstream stream failed; reconnecting",
                    extra={"event": "upstream_error", "core": address},
                )
            self._connected.clear()
            # Whatever ended it, the next attempt goes to the next core (if any).
            if self._targets.advance(address) != address:
                self.failovers += 1
            if self.state == "connected":
                log.warning(
                    "upstream lost on %s (%s); reconnecting to %s",
                    address,
                    self.last_error,
                    self.target,
                    extra={
                        "event": "upstream_state",
                        "state": "reconnecting",
                        "core": self.target,
                        "lost": address,
                        "error": self.last_error,
                    },
                )
                self.attempt = 0
            self.state = "reconnecting"
            self.attempt += 1
            delay = self._backoff.delay(self.attempt)
            log.info(
                "upstream retry %d on %s in %.2fs (%s)",
                self.attempt,
                self.target,
                delay,
                self.last_error,
                extra={
                    "event": "upstream_retry",
                    "state": "reconnecting",
                    "core": self.target,
                    "attempt": self.attempt,
                    "delay_s": round(delay, 3),
                    "error": self.last_error,
                },
            )
            await asyncio.sleep(delay)

    async def _stream(self, address: str) -> None:
        since = [
            spb.TopicPosition(topic=t, position=pb.StreamPosition(offset=p.offset, epoch=p.epoch))  # type: ignore[arg-type]
            for t, p in self._cursors.items()
        ]
        # The canary topic too (live only: its cursor is not kept, nothing of it resumed).
        topics = (*TOPICS, *INTERNAL_TOPICS)
        # every_event: the bridge conflates per socket itself; its cache and cursors
        # need every event (a conflated upstream would look like gaps).
        request = spb.SubscribeRequest(
            topics=topics,  # type: ignore[arg-type]
            since=since,
            max_batch=UPSTREAM_BATCH,
            every_event=True,
        )
        call = self._stub(address).Subscribe(request)
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
                elif kind == "heartbeat":
                    self.core_broker_up = not message.heartbeat.broker_unavailable
        finally:
            call.cancel()

    def _confirmed(self, confirmed: spb.SubscriptionConfirmed) -> None:
        for state in confirmed.topics:
            if state.topic in INTERNAL_TOPICS:
                continue
            gap = self._cursors.confirm(state.topic, state.position, state.recovered)
            if gap is not None:
                self.gaps += 1
                log.warning(
                    "upstream resume of %s from %s:%s was incomplete (%s): events are missing",
                    TOPIC_NAMES[state.topic],
                    gap.since.epoch,
                    gap.since.offset,
                    gap.reason,
                    extra={
                        "event": "upstream_gap",
                        "topic": TOPIC_NAMES[state.topic],
                        "reason": gap.reason,
                        "core": self.target,
                    },
                )
                self.cache[state.topic].clear()  # frames before a gap cannot resume anyone
                self._on_gap(gap)
        if self.state != "connected":
            if self.state == "reconnecting":
                self.reconnects += 1
            log.info(
                "upstream connected to %s",
                self.target,
                extra={"event": "upstream_state", "state": "connected", "core": self.target},
            )
        self.state = "connected"
        self.core_broker_up = True  # the core just read its history from the broker
        self.attempt = 0
        self.connected_at = time.time()
        self._connected.set()
        self._canary_now.set()

    def _deliver(self, event: pb.Event) -> None:
        if event.topic in INTERNAL_TOPICS:
            # Never a frame: only this bridge's own canary counts, for readiness.
            if event.HasField("canary"):
                self.canary.receive(event.canary.source, event.canary.seq, time.monotonic())
            return
        frame = event_frame(event)
        topic = frame.topic
        cache = self.cache.get(topic)
        if cache is None or not self._cursors.accept(topic, frame):
            return  # a topic this bridge does not know, or an event already seen
        if cache:
            tail = cache[-1]
            if tail.offset + 1 != frame.offset or tail.epoch != frame.epoch:
                cache.clear()  # a gap or another epoch: the cache holds consecutive offsets only
        cache.append(frame)
        self.events += 1
        self._on_frame(frame)

    def cached_after(self, topic: int, after: HasPosition) -> list[Frame] | None:
        """Cached frames of ``topic`` after ``after``, or None when the cache does
        not reach back that far (or is of another epoch)."""
        cache = self.cache[topic]
        if not cache or cache[0].epoch != after.epoch:
            return None
        first = cache[0].offset
        if after.offset + 1 < first or after.offset > cache[-1].offset:
            return None
        # Offsets in the cache are consecutive: the first one after ``after`` is found by index.
        return list(islice(cache, after.offset + 1 - first, None))

    async def history_page(self, topic: int, since: HasPosition) -> Page:
        """One page of the core's history of ``topic`` after ``since``, as frames,
        shared with every resume asking for the same page (:class:`HistoryPages`)."""
        return await self.pages.after(topic, since)

    async def history(self, topic: int, since: HasPosition, limit: int = 0) -> spb.HistoryResponse:
        """One page of the core's history of ``topic`` after ``since`` (a unary call:
        no stream held), from the core the stream is on, else the next ones in turn
        while they answer UNAVAILABLE. Raises Unavailable when no core answers."""
        request = spb.HistoryRequest(
            topic=topic,  # type: ignore[arg-type]
            since=pb.StreamPosition(offset=since.offset, epoch=since.epoch),
            limit=limit,
        )
        last: grpc.aio.AioRpcError | None = None
        for address in self._targets.from_current():
            try:
                response: spb.HistoryResponse = await self._stub(address).History(
                    request, timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                last = exc
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    break
                continue
            return response
        assert last is not None
        raise Unavailable(
            f"the core could not be asked for history ({last.code().name}); subscribe again"
        ) from last
