"""The aiohttp application: WebSocket endpoints, status endpoints, the dashboard.

Endpoints and what they subscribe to on connect:

=================  ==========================================
``/ws/connect``    nothing; the client subscribes itself
``/ws/packages``   package_updates
``/ws/dashboard``  dashboard_metrics, notifications
``/ws/map``        map_updates, package_updates
``/ws/agents``     agent_activity, system_health
``/sse``           the ``topics=`` asked for (Server-Sent Events, :mod:`bridge.sse`)
=================  ==========================================

Any endpoint takes ``?batch=1`` (pending frames go out as one JSON array),
``?since=TOPIC:EPOCH:OFFSET`` (repeatable): those topics are subscribed at
connect and resumed after that position, before live events, and
``?bbox=W,S,E,N``: the viewport of map_updates from the start (its replay too).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import resource
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bridge import sse
from bridge.admission import Admission
from bridge.config import BridgeSettings
from bridge.connection import Connection, Refused, WebSocketConnection
from bridge.frames import Frame, control, use_conflation_keys
from bridge.http_guard import guarded_runner
from bridge.masking import MaskedWebSocketResponse
from bridge.messages import Auth, Bbox, Ping, Refresh, Subscribe, Viewport, parse
from bridge.messages import Position as MessagePosition
from bridge.metrics import Deliveries
from bridge.metrics import register as register_metrics
from bridge.resume import run_resume
from bridge.schema import schema_page
from bridge.session import Session, State
from bridge.upstream import Upstream
from bridge.writer import Flusher
from clearpath.realtime.v1 import events_pb2 as pb
from core.auth import ANONYMOUS, Identity, Verifier, parse_bearer
from core.delivery import URGENT_TOPICS
from core.errors import (
    AuthTimeout,
    InvalidArgument,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    RealtimeError,
    ResourceExhausted,
    SlowConsumer,
    TokenExpired,
    TooManyConnections,
    Unauthenticated,
    Unavailable,
)
from core.exposure import warn_if_open
from core.hub import Hub
from core.metrics import CONTENT_TYPE_LATEST, Metrics
from core.positions import Gap, Position
from core.rate import TokenBucket
from core.topics import TOPIC_NAMES, topic_from_name
from core.viewport import parse_bbox_query

__all__ = ["ENDPOINTS", "Bridge", "BridgeNode", "create_app", "parse_since"]

log = logging.getLogger("clearpath.bridge")

ENDPOINTS: dict[str, tuple[int, ...]] = {
    "/ws/connect": (),
    "/ws/packages": (pb.TOPIC_PACKAGE_UPDATES,),
    "/ws/dashboard": (pb.TOPIC_DASHBOARD_METRICS, pb.TOPIC_NOTIFICATIONS),
    "/ws/map": (pb.TOPIC_MAP_UPDATES, pb.TOPIC_PACKAGE_UPDATES),
    "/ws/agents": (pb.TOPIC_AGENT_ACTIVITY, pb.TOPIC_SYSTEM_HEALTH),
}


#: Bytes written to one socket per flush at most: a socket's copy of a burst stays
#: small, and a catch-up reaches every socket in turn.
WRITE_CHUNK = 256 * 1024

#: The subprotocol the bridge speaks; a client may offer its token beside it as
#: ``clearpath.bearer.<JWT>`` (browsers cannot set an Authorization header).
SUBPROTOCOL = "clearpath.v1"
_BEARER_PROTOCOL = "clearpath.bearer."


class Bridge:
    """The bridge's state: sockets, the hub of frames, the upstream, the counters,
    and the background tasks it starts (kept, and cancelled at shutdown)."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.hub: Hub[Frame] = Hub()
        self.upstream = Upstream(settings, self._on_frame, self._on_gap)
        # Every socket's lanes and conflation (README "Delivery classes, priority
        # lanes and conflation"); frames carry their keys from the upstream on.
        conflation = settings.conflation
        use_conflation_keys(conflation)
        self._new_session = functools.partial(
            Session,
            urgent=URGENT_TOPICS if settings.priority_lanes else None,
            urgent_after=WRITE_CHUNK,  # less goes out in the next write anyway
            conflate=frozenset(conflation),
            conflate_after=settings.conflate_after,
        )
        self.connections: dict[str, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._resumes: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.started = time.time()
        self.closed_sent = 0
        self.closed_dropped = 0
        self.slow_closed = 0
        #: Frames dropped when slow consumers were closed (part of closed_dropped).
        self.slow_dropped = 0
        self._slow: set[str] = set()  # ids of sockets being closed as slow consumers
        #: Delivery counters and latency, shared by every socket (bridge.metrics).
        self.deliveries = Deliveries()
        self.flusher = Flusher(settings.flush_interval, on_round=self.deliveries.round)
        #: Client messages refused as rate limited (error rate_limited sent).
        self.rate_limited = 0
        #: The process's metrics, served at ``/metrics`` (create_app may pass a shared one).
        self.metrics = Metrics("bridge", f"pid-{os.getpid()}")
        self.unencodable = 0
        self.resumes: Counter[str] = Counter()
        self.catch_ups = 0
        #: WebSocket clients that left during the handshake (before they were counted).
        self.handshakes_abandoned = 0
        #: Sockets this bridge takes: MAX_CONNECTIONS, within what the process may open.
        self.max_connections = connection_cap(settings.max_connections)
        #: None: authentication is off (every socket is ANONYMOUS, allowed everything).
        self.verifier: Verifier | None = settings.verifier()
        self.admission = Admission(
            allowed_origins=settings.allowed_origins,
            trusted_proxies=settings.trusted_proxies,
            per_address=settings.max_connections_per_address,
            per_subject=settings.max_connections_per_identity,
        )
        #: Sockets refused or closed by the entrance policy, by reason.
        self.refusals: Counter[str] = Counter()

    def closing_slow(self, conn_id: str) -> bool:
        """Whether the socket ``conn_id`` is being closed as a slow consumer."""
        return conn_id in self._slow

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` in the background, owned by the bridge."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop_tasks(self) -> None:
        """Cancel every background task and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """``/ws/status``."""
        conns = [c.session for c in self.connections.values()]
        return {
            "connections": {
                "total": len(conns),
                "by_endpoint": dict(Counter(c.endpoint for c in conns)),
            },
            "subscribers": {name: self.hub.count(t) for t, name in TOPIC_NAMES.items()},
            "frames_sent": self.closed_sent + sum(c.frames_sent for c in conns),
            "frames_dropped": self.closed_dropped + sum(c.frames_dropped for c in conns),
            "frames_unencodable": self.unencodable,
            "flush_failures": self.flusher.failures,
            "slow_consumers_closed": self.slow_closed,
            "catch_ups": self.catch_ups,
            "handshakes_abandoned": self.handshakes_abandoned,
            "resumes": {
                key: self.resumes[key]
                for key in ("recovered", "not_recovered", "frames_from_cache", "frames_from_core")
            },
            # History pages read from the core, and served to another resume without reading.
            "history_pages": {
                "read": self.upstream.pages.reads,
                "shared": self.upstream.pages.shared,
            },
            "refusals": dict(self.refusals),
            # What /readyz says, always with 200 here (the dashboard's panel reads it:
            # a browser logs every 503 it fetches as an error).
            "readiness": self.upstream.readiness().body(),
            "auth": self.verifier is not None,
            "upstream": self.upstream.status(),
            "uptime_seconds": round(time.time() - self.started, 3),
            "pid": os.getpid(),  # which process answered (a bridge with --workers has several)
        }

    # --- frames from the core ---------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        # Encoded here, once, before any socket: a frame that cannot be encoded is
        # counted and skipped, never handed to a socket's flush.
        if self.hub.count(frame.topic) and not frame.encodes():
            self.unencodable += 1
            return
        if log.isEnabledFor(logging.DEBUG):  # the hot path pays one check otherwise
            _log_dispatch(frame, self.hub.count(frame.topic))
        self.hub.dispatch(frame)

    def public_status(self) -> dict[str, Any]:
        """``/ws/status`` without an operator token (auth on): only what a browser
        needs to know — whether events flow."""
        upstream = self.upstream
        flowing = upstream.state == "connected" and upstream.core_broker_up
        return {
            "status": "ok" if flowing else "degraded",
            "upstream": {"connected": upstream.state == "connected"},
            "readiness": upstream.readiness().body(),
            "connections": {"total": len(self.connections)},
        }

    def operator(self, request: web.Request) -> Identity:
        """The operator calling an operator endpoint (anyone when auth is off);
        ``Authorization: Bearer <token>`` with the ``operator`` claim. Raises
        HTTPUnauthorized / HTTPForbidden otherwise."""
        if self.verifier is None:
            return ANONYMOUS
        try:
            identity = self.verifier.verify(parse_bearer(request.headers.get("Authorization")))
        except Unauthenticated as exc:
            self.refusals["operator_unauthorized"] += 1
            log.info(
                "refused an operator request for %s from %s: %s",
                request.path,
                request.remote,
                exc,
                extra={
                    "event": "auth_failed",
                    "reason": "operator_unauthorized",
                    "remote": request.remote,
                    "path": request.path,
                },
            )
            raise web.HTTPUnauthorized(
                text=f"operator token required: {exc}", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        if not identity.operator:
            self.refusals["operator_forbidden"] += 1
            log.info(
                "refused an operator request for %s from %s: %s is not an operator",
                request.path,
                request.remote,
                identity.subject,
                extra={
                    "event": "refused",
                    "reason": "operator_forbidden",
                    "remote": request.remote,
                    "path": request.path,
                    "user": identity.subject,
                },
            )
            raise web.HTTPForbidden(text="this token is not an operator token")
        return identity

    def _on_gap(self, gap: Gap) -> None:
        """The core could not resume the bridge's stream: tell each socket live on the topic."""
        for conn in list(self.connections.values()):
            if gap.topic in conn.session.sub.topics:
                conn.session.send(self._subscribed(conn, gap.topic, False, gap.resume, gap.reason))

    # --- one socket -------------------------------------------------------------------

    async def handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        """One WebSocket: prepare, receive until it closes, forget."""
        try:
            conn = await self._prepare(request, endpoint)
        except ConnectionResetError:
            return self._abandoned(request)
        try:
            await self._receive(conn)
        finally:
            await self._forget(conn)
        return conn.ws

    def _abandoned(self, request: web.Request) -> web.Response:
        """The client left while its socket or stream was being set up (a browser
        that gave up, a storm of reconnects): nothing was registered, and it is not
        an error of this bridge — counted, logged at INFO, no traceback."""
        self.handshakes_abandoned += 1
        log.info(
            "a client from %s left during the handshake",
            request.remote,
            extra={"event": "handshake_abandoned", "remote": request.remote},
        )
        return web.Response(status=400, text="client left during the handshake")

    async def handle_sse(self, request: web.Request) -> web.StreamResponse:
        """One Server-Sent Events stream (``GET /sse``, :mod:`bridge.sse`): checked
        and refused with an HTTP status before it starts, then streamed until
        either side ends it, then forgotten."""
        try:
            conn = await self._prepare_sse(request)
        except ConnectionResetError:
            return self._abandoned(request)
        try:
            await conn.finished()
        finally:
            await self._forget(conn)
        return conn.response

    async def _prepare_sse(self, request: web.Request) -> sse.SSEConnection:
        remote = self._enter(request)
        query = request.query
        try:
            if "batch" in query:
                raise InvalidArgument("batch: not supported on /sse (one event per message)")
            topics = sse.parse_topics(query.get("topics"))
            resume = parse_since(query.getall("since", []))
            # Newer than ?since= (the browser sends the id it last received): it wins.
            resume.update(parse_last_event_id(request.headers.get("Last-Event-ID", "")))
            box = parse_bbox_query(query["bbox"]) if "bbox" in query else None
        except InvalidArgument as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        identity = sse.identify(request, topics, self.verifier, self.admission, self.refusals)
        response = await sse.open_stream(request)
        session = sse.SSESession(
            uuid.uuid4().hex[:12],
            remote,
            chunked=response.chunked,
            max_bytes=self.settings.send_queue_bytes,
            stats=self.deliveries,
            **self._new_session.keywords,  # the same lanes and conflation as WebSockets
        )
        session.set_viewport(box)
        conn = sse.SSEConnection(
            response,
            request,
            session,
            flusher=self.flusher,
            spawn=self.spawn,
            write_chunk=WRITE_CHUNK,
            send_buffer=self.settings.socket_send_buffer,
            close_timeout=self.settings.close_timeout,
            on_overflow=self._catch_up,
            topics=topics,
        )
        self._register(conn)
        # Positions of topics not in topics= are left out: the stream has what it asked for.
        conn.pending = resumed = {t: p for t, p in resume.items() if t in topics}
        self._admit(conn, identity)
        # Every topic of the stream is in its id from the start, so a reconnect misses
        # nothing on a quiet one: a resumed topic at the position it resumes after,
        # one subscribed live at the bridge's position now (bridge/sse.py).
        session.seed({t: resumed[t] for t in session.resuming_topics()})
        session.seed({t: self.upstream.position(t) for t in session.sub.topics})
        return conn

    def _enter(self, request: web.Request) -> str:
        """The entrance policy of a new socket (WebSocket or SSE), before it
        starts: origin, max_connections, the per-address cap. The client's address;
        HTTPForbidden / HTTPServiceUnavailable / HTTPTooManyRequests otherwise."""
        admission = self.admission
        # Refused before the upgrade, with an HTTP status a client can read.
        if not admission.origin_allowed(request.headers.get("Origin"), request.host):
            self.refusals["origin"] += 1
            log.info(
                "refused a socket from origin %r",
                request.headers.get("Origin"),
                extra={
                    "event": "refused",
                    "reason": "origin",
                    "origin": request.headers.get("Origin"),
                    "remote": request.remote,
                },
            )
            raise web.HTTPForbidden(text="origin not allowed")
        if len(self.connections) >= self.max_connections:
            self.refusals["max_connections"] += 1
            log.warning(
                "refused a socket from %s: %d connections, the most this bridge takes",
                request.remote,
                len(self.connections),
                extra={"event": "refused", "reason": "max_connections", "remote": request.remote},
            )
            raise web.HTTPServiceUnavailable(text="too many connections")
        remote = admission.client_address(
            request.remote or "", request.headers.get("X-Forwarded-For")
        )
        if admission.address_full(remote):
            self.refusals["per_address"] += 1
            log.info(
                "refused a socket from %s: too many connections from this address",
                remote,
                extra={"event": "refused", "reason": "per_address", "remote": remote},
            )
            raise web.HTTPTooManyRequests(text="too many connections from this address")
        return remote

    def _register(self, conn: Connection) -> None:
        """Count ``conn`` open (its session's hub subscription, its address) and log it."""
        session = conn.session
        session.on_ready = conn.ready
        self.connections[conn.id] = conn
        self.admission.opened(session.remote)
        self.hub.add(session.sub)
        log.info(
            "connect %s %s from %s",
            conn.id,
            session.endpoint,
            session.remote,
            extra={
                "event": "connect",
                "connection_id": conn.id,
                "endpoint": session.endpoint,
                "remote": session.remote,
            },
        )

    async def _prepare(self, request: web.Request, endpoint: str) -> WebSocketConnection:
        settings = self.settings
        remote = self._enter(request)
        query = request.query
        try:
            resume = parse_since(query.getall("since", []))
            box = parse_bbox_query(query["bbox"]) if "bbox" in query else None
        except InvalidArgument as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        token = _offered_token(request)
        # Keepalive is the bridge's (see keepalive): one timer for every socket,
        # not one per socket; so pings and pongs come to the receive loop.
        # permessage-deflate is off: frames are built once for every socket.
        # Unmasked client frames are refused with 1002 (RFC 6455 section 5.1).
        ws = MaskedWebSocketResponse(
            autoping=False,
            compress=False,
            # aiohttp refuses a message of max_msg_size itself: the limit is inclusive.
            max_msg_size=settings.max_message_bytes + 1,
            protocols=(SUBPROTOCOL,),
        )
        await ws.prepare(request)
        session = self._new_session(
            uuid.uuid4().hex[:12],
            endpoint,
            remote,
            max_bytes=settings.send_queue_bytes,
            stats=self.deliveries,
            batch=request.query.get("batch") in ("1", "true"),
        )
        session.set_viewport(box)  # before anything is subscribed or replayed
        conn = WebSocketConnection(
            ws,
            request,
            session,
            flusher=self.flusher,
            spawn=self.spawn,
            write_chunk=WRITE_CHUNK,
            send_buffer=settings.socket_send_buffer,
            close_timeout=settings.close_timeout,
            on_overflow=self._catch_up,
            topics=ENDPOINTS[endpoint],
        )
        self._register(conn)
        conn.pending = resume
        if self.verifier is None:
            self._admit(conn, ANONYMOUS)
        elif token is not None:
            self._authenticate(conn, token)
        else:
            conn.auth_timer = asyncio.get_running_loop().call_later(
                settings.auth_timeout, self._auth_timed_out, conn
            )
        return conn

    # --- identity -----------------------------------------------------------------------

    def _authenticate(self, conn: Connection, token: str) -> None:
        """Verify the first token of ``conn``: admit it, or close it (4001)."""
        assert self.verifier is not None
        try:
            identity = self.verifier.verify(token)
        except Unauthenticated as exc:
            self._refuse(conn, exc, "unauthorized")
            return
        self._admit(conn, identity)

    def _refuse(self, conn: Connection, error: RealtimeError, reason: str) -> None:
        """Close ``conn`` for cause (once), counted by ``reason``."""
        if conn.refused:
            return
        conn.refused = True
        self.refusals[reason] += 1
        log.info(
            "connection %s refused: %s: %s",
            conn.id,
            error.ws_error,
            error,
            extra={
                "event": "auth_failed" if reason in ("unauthorized", "auth_timeout") else "refused",
                "connection_id": conn.id,
                "reason": reason,
                "error": error.ws_error,
                "code": error.ws_close,
                "remote": conn.session.remote,
                "user": conn.session.user,
            },
        )
        self.spawn(conn.fail(error))

    def _auth_timed_out(self, conn: Connection) -> None:
        conn.auth_timer = None
        if conn.session.identity is None and conn.session.state is State.OPEN:
            timeout = self.settings.auth_timeout
            self._refuse(conn, AuthTimeout(f"no auth message within {timeout:g}s"), "auth_timeout")

    def _admit(self, conn: Connection, identity: Identity) -> None:
        """``conn`` is ``identity``: welcome it, subscribe what its endpoint and
        ``?since=`` ask for and the identity allows."""
        session = conn.session
        if self.admission.subject_full(identity.subject):
            cap = self.settings.max_connections_per_identity
            self._refuse(
                conn, TooManyConnections(f"at most {cap} sockets per user"), "per_identity"
            )
            return
        conn.cancel_timers()
        session.authenticated(identity)
        log.log(
            logging.DEBUG if self.verifier is None else logging.INFO,
            "connection %s authenticated as %r",
            conn.id,
            identity.subject,
            extra={"event": "authenticated", "connection_id": conn.id, "user": identity.subject},
        )
        self.admission.authenticated(identity.subject)
        self._expire_at(conn, identity)
        endpoint = session.endpoint
        resume, conn.pending = conn.pending, {}
        wanted = [*conn.topics, *(t for t in resume if t not in conn.topics)]
        allowed = [t for t in wanted if identity.may_subscribe(t)]
        session.send(
            control(
                "welcome",
                {
                    "connection_id": conn.id,
                    "endpoint": endpoint,
                    "subscriptions": [TOPIC_NAMES[t] for t in conn.topics if t in allowed],
                    "subscription_types": list(TOPIC_NAMES.values()),
                    "ping_interval": self.settings.ping_interval,
                    "subject": identity.subject or None,
                    "expires_at": identity.expires_at,
                },
            )
        )
        for topic in wanted:
            if topic not in allowed:
                session.send(error_frame(_forbidden(topic)))
        for topic in allowed:
            since = resume.get(topic)
            if since is None:
                self.hub.subscribe(session.sub, topic)
            else:
                self._start_resume(conn, topic, since)
        if live := [TOPIC_NAMES[t] for t in allowed if t not in resume]:
            log.info(
                "connection %s subscribed %s at connect",
                conn.id,
                ", ".join(live),
                extra={"event": "subscribe", "connection_id": conn.id, "topics": live},
            )

    def _expire_at(self, conn: Connection, identity: Identity) -> None:
        if conn.expiry is not None:
            conn.expiry.cancel()
            conn.expiry = None
        if identity.expires_at is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, identity.expires_at - time.time())
            conn.expiry = loop.call_at(loop.time() + delay, self._expired, conn)

    def _expired(self, conn: Connection) -> None:
        conn.expiry = None
        if conn.session.state is State.OPEN:
            error = TokenExpired("token expired; reconnect with a fresh token")
            self._refuse(conn, error, "token_expired")

    def _on_token(self, conn: Connection, token: str) -> None:
        """An ``auth`` or ``refresh`` message."""
        session = conn.session
        if self.verifier is None:
            session.send(control("refreshed", {"expires_at": None}))
            return
        if session.identity is None:
            self._authenticate(conn, token)
            return
        try:
            identity = self.verifier.verify(token)
            if identity.subject != session.identity.subject:
                raise Unauthenticated("a refresh must keep the token's subject")
        except Unauthenticated as exc:
            self._refuse(conn, exc, "unauthorized")
            return
        session.authenticated(identity)
        log.debug(
            "connection %s refreshed its token",
            conn.id,
            extra={"event": "refresh", "connection_id": conn.id, "user": identity.subject},
        )
        self._expire_at(conn, identity)
        # What the new token no longer allows stops now.
        for topic in sorted({*session.sub.topics, *session.resuming_topics()}):
            if not identity.may_subscribe(topic):
                self._unsubscribe(conn, topic)
                session.send(error_frame(_forbidden(topic)))
        session.send(control("refreshed", {"expires_at": identity.expires_at}))

    async def _receive(self, conn: WebSocketConnection) -> None:
        ws = conn.ws
        loop = asyncio.get_running_loop()
        while True:
            msg = await ws.receive()
            conn.seen = loop.time()
            if msg.type == WSMsgType.TEXT:
                self._on_text(conn, msg.data)
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                pass
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            elif msg.type == WSMsgType.BINARY:
                log.info(
                    "connection %s sent a binary frame; closing 1003",
                    conn.id,
                    extra={"event": "protocol_error", "connection_id": conn.id, "code": 1003},
                )
                await conn.close(1003, "binary frames are not supported; send JSON text")
                return
            elif msg.type == WSMsgType.ERROR:
                conn.session.close_reason = f"error: {ws.exception()!r}"
                return

    async def _forget(self, conn: Connection) -> None:
        session = conn.session
        conn.cancel_timers()
        self.admission.closed(
            session.remote, session.identity.subject if session.identity else None
        )
        self.hub.remove(session.sub)
        tasks = [
            task
            for t in session.resuming_topics()
            if (task := self._resumes.pop((conn.id, t), None)) is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not conn.ended:
            await conn.close(1011, "internal error")
        session.closed()
        del self.connections[conn.id]
        if conn.id in self._slow:
            self._slow.discard(conn.id)
            self.slow_closed += 1
            self.slow_dropped += session.frames_dropped
        self.closed_sent += session.frames_sent
        self.closed_dropped += session.frames_dropped
        # The code this bridge sent when it closed first, else the peer's.
        code = session.close_code if session.close_code is not None else conn.peer_close_code
        duration = round(time.time() - session.connected_at, 3)
        log.info(
            "disconnect %s code=%s reason=%s sent=%d dropped=%d after %.1fs",
            conn.id,
            code,
            session.close_reason or "client closed",
            session.frames_sent,
            session.frames_dropped,
            duration,
            extra={
                "event": "disconnect",
                "connection_id": conn.id,
                "endpoint": session.endpoint,
                "remote": session.remote,
                "user": session.user,
                "code": code,
                "reason": session.close_reason or "client closed",
                "duration_s": duration,
                "frames_sent": session.frames_sent,
                "frames_dropped": session.frames_dropped,
            },
        )

    def _on_text(self, conn: Connection, text: str) -> None:
        session = conn.session
        if conn.refused:
            return  # being closed for cause: nothing it says matters now
        try:
            now = time.monotonic()
            if session.bucket is None:  # made at the first message: idle sockets need none
                session.bucket = TokenBucket(
                    self.settings.rate_limit, self.settings.rate_burst, now
                )
            if not session.bucket.take(now):
                session.limited += 1
                if session.limited >= self.settings.abuse_limit:
                    error = PolicyViolation(
                        f"{session.limited} messages over the rate limit; closing"
                    )
                    self._refuse(conn, error, "abuse")
                    return
                self.rate_limited += 1
                raise RateLimited(
                    f"more than {self.settings.rate_limit:g} messages a second; slow down"
                )
            session.limited = 0
            message = parse(text)
            if isinstance(message, Auth | Refresh):
                self._on_token(conn, message.data.token)
                return
            if session.identity is None:
                raise Unauthenticated(
                    'authenticate first: {"type": "auth", "data": {"token": ...}}'
                )
            if isinstance(message, Ping):
                session.send(control("pong"))
                return
            topic = topic_from_name(message.data.subscription_type)
            if isinstance(message, Subscribe):
                self._subscribe(conn, topic, message.data.since, message.data.bbox)
            elif isinstance(message, Viewport):
                self._viewport(conn, topic, message.data.bbox)
            else:
                self._unsubscribe(conn, topic)
        except RealtimeError as exc:
            log.info(
                "connection %s: %s: %s",
                conn.id,
                exc.ws_error,
                exc,
                extra={"event": "message_error", "connection_id": conn.id, "error": exc.ws_error},
            )
            session.send(error_frame(exc))

    def _subscribe(
        self,
        conn: Connection,
        topic: int,
        since: MessagePosition | None,
        bbox: Bbox | None = None,
    ) -> None:
        """Subscribe ``topic`` (resumed after ``since``). A subscribe to map_updates
        sets the socket's viewport to ``bbox`` (none: the whole world); ``bbox``
        on another topic is refused, and nothing changes."""
        session = conn.session
        assert session.identity is not None
        if bbox is not None and topic != pb.TOPIC_MAP_UPDATES:
            raise InvalidArgument(
                f"data.bbox: only map_updates takes a bounding box, not {TOPIC_NAMES[topic]}"
            )
        if not session.identity.may_subscribe(topic):
            raise _forbidden(topic)
        live = topic in session.sub.topics
        if not live and not session.resuming(topic):
            held = len(session.sub.topics) + len(session.resuming_topics())
            if held >= self.settings.max_subscriptions:
                raise ResourceExhausted(
                    f"at most {self.settings.max_subscriptions} subscription types per socket"
                )
        if topic == pb.TOPIC_MAP_UPDATES:
            session.set_viewport(None if bbox is None else bbox.box())
        if since is None or session.resuming(topic):
            if not live and not session.resuming(topic):
                self.hub.subscribe(session.sub, topic)
                log.info(
                    "connection %s subscribed %s",
                    conn.id,
                    TOPIC_NAMES[topic],
                    extra={
                        "event": "subscribe",
                        "connection_id": conn.id,
                        "topic": TOPIC_NAMES[topic],
                    },
                )
            session.send(self._subscribed(conn, topic, True))
            return
        if live and session.delivered(topic):
            # Replaying into a stream that already delivered live events would
            # reorder them; say so instead (resume with ?since= at connect).
            session.send(self._subscribed(conn, topic, False, reason="already_live"))
            return
        if live:
            self.hub.unsubscribe(session.sub, topic)
        session.forget_topic(topic)  # a floor of an earlier resume must not hold this one back
        self._start_resume(conn, topic, Position(since.offset, since.epoch))

    def _viewport(self, conn: Connection, topic: int, bbox: Bbox | None) -> None:
        """Move the box of the socket's map_updates subscription in place (None:
        the whole world) and acknowledge with a ``viewport`` frame: no resubscribe,
        so nothing inside both boxes is missed or sent twice."""
        session = conn.session
        name = TOPIC_NAMES[topic]
        if topic != pb.TOPIC_MAP_UPDATES:
            raise InvalidArgument(
                f"data.subscription_type: only map_updates has a viewport, not {name}"
            )
        if topic not in session.sub.topics and not session.resuming(topic):
            raise InvalidArgument(
                f"data.subscription_type: not subscribed to {name}; subscribe first"
            )
        box = None if bbox is None else bbox.box()
        session.set_viewport(box)
        data = {"subscription_type": name, "bbox": None if box is None else box.as_dict()}
        session.send(control("viewport", data, about=topic))

    def _unsubscribe(self, conn: Connection, topic: int) -> None:
        session = conn.session
        task = self._resumes.pop((conn.id, topic), None)
        if task is not None:
            task.cancel()
            session.resume_ended(topic)
        self.hub.unsubscribe(session.sub, topic)
        session.forget_topic(topic)
        if topic == pb.TOPIC_MAP_UPDATES:
            session.set_viewport(None)
        log.info(
            "connection %s unsubscribed %s",
            conn.id,
            TOPIC_NAMES[topic],
            extra={"event": "unsubscribe", "connection_id": conn.id, "topic": TOPIC_NAMES[topic]},
        )
        session.send(
            control(
                "unsubscribed",
                {"subscription_type": TOPIC_NAMES[topic], "subscriptions": _names(conn)},
                about=topic,
            )
        )

    def _subscribed(
        self,
        conn: Connection,
        topic: int,
        recovered: bool,
        position: Position | None = None,
        reason: str | None = None,
    ) -> Frame:
        at = position or self.upstream.position(topic) or Position(0, "")
        data: dict[str, Any] = {
            "subscription_type": TOPIC_NAMES[topic],
            "subscriptions": sorted({*_names(conn), TOPIC_NAMES[topic]}),
            "recovered": recovered,
            "position": {"offset": at.offset, "epoch": at.epoch},
        }
        if reason is not None:
            data["reason"] = reason
        # In the topic's lane: never overtaken by the events it announces (a
        # replay's, or those after a gap), whatever lane they take.
        return control("subscribed", data, about=topic)

    # --- timers -------------------------------------------------------------------------

    async def keepalive(self) -> None:
        """Every ``ping_interval``: drop sockets that sent nothing (not even a pong)
        since the previous round's ping, then ping every socket, and tell each
        socket whose filters left frames out where those topics went
        (:meth:`Session.position_frames`: only with nothing queued for it)."""
        interval = self.settings.ping_interval
        loop = asyncio.get_running_loop()
        last_round = loop.time()
        while True:
            await asyncio.sleep(interval)
            for conn in list(self.connections.values()):
                if conn.seen < last_round and conn.session.state is State.OPEN:
                    log.info(
                        "connection %s: no pong within %gs; dropping it",
                        conn.id,
                        interval,
                        extra={"event": "no_pong", "connection_id": conn.id},
                    )
                    conn.abort(f"no pong within {interval:g}s")
            last_round = loop.time()
            for conn in self.connections.values():
                conn.ping()
                session = conn.session
                if session.state is State.OPEN:
                    for frame in session.position_frames():
                        session.send(frame)

    async def watch_slow(self) -> None:
        """Close sockets whose transport took nothing for ``slow_timeout`` while bytes
        waited for them: the slow-consumer rule (a socket that overflows but reads
        catches up instead, see :meth:`_catch_up`)."""
        timeout = self.settings.slow_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            for conn in list(self.connections.values()):
                if conn.session.state is State.OPEN and conn.stalled(now, timeout):
                    log.info(
                        "connection %s: took nothing for %gs; closing",
                        conn.id,
                        timeout,
                        extra={
                            "event": "slow_consumer",
                            "connection_id": conn.id,
                            "remote": conn.session.remote,
                            "user": conn.session.user,
                            "queued_bytes": conn.session.sub.bytes,
                        },
                    )
                    self._slow.add(conn.id)  # counted once it is gone (see _forget)
                    self.spawn(
                        conn.fail(
                            SlowConsumer(
                                f"slow consumer: took nothing for {timeout:g}s; "
                                "reconnect and resume from your last position"
                            )
                        )
                    )

    # --- resume -------------------------------------------------------------------------

    def _catch_up(self, conn: Connection) -> None:
        """A socket's queue overflowed: it is behind, not gone. Keep what is queued,
        stop live delivery of each topic that missed a frame, and resume it from just
        before its first refused frame, from the cache or the core's history, paced
        by the socket's own progress. A socket that takes nothing is closed by
        :meth:`watch_slow`; one that falls behind the history is told (recovered false)."""
        session = conn.session
        sub = session.sub
        if session.state is not State.OPEN or not sub.overflowed:
            return
        # A topic missed something only from its first refused frame on: every frame
        # of it before that was queued or written. Topics with none refused stay live.
        since: dict[int, Position] = {}
        for topic, first in (sub.refused or {}).items():
            if topic in sub.topics:
                since[topic] = Position(first.offset - 1, first.epoch)
                self.hub.detach(sub, topic)
        sub.recover()
        self.catch_ups += 1
        log.info(
            "connection %s fell %d bytes behind; catching up from history",
            conn.id,
            sub.bytes,
            extra={
                "event": "overflow",
                "connection_id": conn.id,
                "queued_bytes": sub.bytes,
                "topics": [TOPIC_NAMES[t] for t in since],
            },
        )
        for topic, position in since.items():
            self._start_resume(conn, topic, position, announce=False)

    def _start_resume(
        self, conn: Connection, topic: int, since: Position, *, announce: bool = True
    ) -> None:
        """Resume ``topic`` for ``conn`` after ``since``; ``announce``: send the
        ``subscribed`` frame even when recovered (a catch-up tells only gaps)."""
        session = conn.session
        session.resume_started(topic, since)

        def tell(recovered: bool, position: Position, reason: str | None) -> None:
            if announce or not recovered:
                session.send(self._subscribed(conn, topic, recovered, position, reason))

        def go_live(floor: Position | None) -> None:
            if floor is not None:
                session.hold_back(topic, floor)
            self.hub.subscribe(session.sub, topic)
            session.resume_ended(topic)
            log.info(
                "connection %s resumed %s",
                conn.id,
                TOPIC_NAMES[topic],
                extra={"event": "resume", "connection_id": conn.id, "topic": TOPIC_NAMES[topic]},
            )

        async def resume() -> None:
            try:
                report = await run_resume(
                    topic,
                    since,
                    self.upstream,
                    send_many=conn.send_many,
                    tell=tell,
                    go_live=go_live,
                )
                self.unencodable += report.unencodable
                self.resumes["recovered" if report.recovered else "not_recovered"] += 1
                self.resumes["frames_from_cache"] += report.from_cache
                self.resumes["frames_from_core"] += report.from_core
            except Unavailable as exc:
                session.resume_ended(topic)
                session.send(error_frame(exc))
            except Refused:
                # The socket is closing, or refused a replayed frame: never go on past it.
                session.resume_ended(topic)
                if session.state is State.OPEN:
                    session.send(error_frame(RealtimeError("resume interrupted; subscribe again")))
            except Exception:  # a bug: tell the client, keep the bridge
                session.resume_ended(topic)
                log.exception(
                    "connection %s: resume of %s failed",
                    conn.id,
                    TOPIC_NAMES[topic],
                    extra={
                        "event": "resume_failed",
                        "connection_id": conn.id,
                        "topic": TOPIC_NAMES[topic],
                    },
                )
                session.send(error_frame(RealtimeError("resume failed; subscribe again")))
            finally:
                self._resumes.pop((conn.id, topic), None)

        self._resumes[(conn.id, topic)] = self.spawn(resume())


#: Connections waiting to be accepted (the kernel caps it at net.core.somaxconn):
#: aiohttp's default of 128 drops connections in a reconnect storm.
ACCEPT_BACKLOG = 4096
#: Files a bridge process keeps for itself besides its sockets (the upstream's
#: channels, listening sockets, logs, the metrics port).
RESERVED_FILES = 64


def connection_cap(configured: int) -> int:
    """``configured``, or less when the process may not open that many files: a
    full bridge answers 503 rather than failing to accept (EMFILE), logged once."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft - RESERVED_FILES:
        return configured
    cap = max(1, soft - RESERVED_FILES)
    log.warning(
        "MAX_CONNECTIONS %d is more than this process may open (%d files); taking %d",
        configured,
        soft,
        cap,
        extra={"event": "max_connections_capped", "configured": configured, "cap": cap},
    )
    return cap


_BRIDGE = web.AppKey("bridge", Bridge)
_OFFSET = re.compile(r"[0-9]{1,20}")


def _names(conn: Connection) -> list[str]:
    return sorted(TOPIC_NAMES[t] for t in conn.session.sub.topics)


def parse_since(values: list[str]) -> dict[int, Position]:
    """``?since=TOPIC:EPOCH:OFFSET`` values by topic; InvalidArgument naming the
    parameter for anything else (the offset: ASCII digits, below 2**64)."""
    resume: dict[int, Position] = {}
    for value in values:
        parts = value.split(":")
        if len(parts) != 3 or not _OFFSET.fullmatch(parts[2]) or int(parts[2]) >= 2**64:
            raise InvalidArgument(
                f"since={value[:100]!r}: expected TOPIC:EPOCH:OFFSET, OFFSET a number below 2**64"
            )
        if len(parts[1]) > 64:
            raise InvalidArgument(f"since={value[:100]!r}: EPOCH is at most 64 characters")
        topic = topic_from_name(parts[0])
        resume[topic] = Position(int(parts[2]), parts[1])
    return resume


def parse_last_event_id(value: str) -> dict[int, Position]:
    """The positions of a ``Last-Event-ID`` header (:mod:`bridge.sse`: ``TOPIC:EPOCH:OFFSET``
    entries, comma-joined, each read like ``?since=``); empty for "". InvalidArgument
    naming the header for anything else."""
    if not value:
        return {}
    try:
        return parse_since(sse.split_event_id(value))
    except InvalidArgument as exc:
        message = str(exc)
        raise InvalidArgument(
            message if message.startswith("Last-Event-ID") else f"Last-Event-ID: {message}"
        ) from None


def _log_dispatch(frame: Frame, sockets: int) -> None:
    """The DEBUG line tracing an event's frame to this bridge's sockets (its id is
    read back from the frame's JSON: only at DEBUG)."""
    event_id = orjson.loads(frame.data).get("id", "") if frame.encodes() else "?"
    topic = TOPIC_NAMES.get(frame.topic, str(frame.topic))
    log.debug(
        "dispatch id=%s topic=%s offset=%d sockets=%d",
        event_id,
        topic,
        frame.offset,
        sockets,
        extra={
            "event": "dispatch",
            "event_id": event_id,
            "topic": topic,
            "offset": frame.offset,
            "epoch": frame.epoch,
            "sockets": sockets,
        },
    )


def _forbidden(topic: int) -> PermissionDenied:
    return PermissionDenied(f"this token may not subscribe to {TOPIC_NAMES[topic]}")


def _offered_token(request: web.Request) -> str | None:
    """A token given at the upgrade: ``?token=`` or the ``clearpath.bearer.<JWT>``
    subprotocol (offered beside ``clearpath.v1``). None: the socket must send ``auth``."""
    token = request.query.get("token")
    if token:
        return token
    for offered in request.headers.getall("Sec-WebSocket-Protocol", []):
        for protocol in offered.split(","):
            protocol = protocol.strip()
            if protocol.startswith(_BEARER_PROTOCOL):
                return protocol[len(_BEARER_PROTOCOL) :]
    return None


def error_frame(error: RealtimeError) -> Frame:
    """The ``error`` frame of ``error``."""
    return control("error", {"code": error.ws_error, "message": str(error)})


# --- the application ---------------------------------------------------------------


def create_app(settings: BridgeSettings, metrics: Metrics | None = None) -> web.Application:
    """The bridge as an aiohttp application (its upstream starts with the app)."""
    app = web.Application()
    bridge = Bridge(settings)
    app[_BRIDGE] = bridge

    for path in ENDPOINTS:
        # A partial, not a wrapper coroutine: one frame less per open socket.
        app.router.add_get(path, functools.partial(bridge.handle, endpoint=path))
    # HEAD /sse is 405 (Allow: GET): a stream has no headers-only form worth a slot.
    app.router.add_get(sse.ENDPOINT, bridge.handle_sse, allow_head=False)

    async def status(request: web.Request) -> web.Response:
        # Auth on: the details only for operators; browsers see whether events flow.
        if bridge.verifier is not None and "Authorization" not in request.headers:
            return web.json_response(bridge.public_status())
        bridge.operator(request)
        return web.json_response(bridge.status())

    async def connections(request: web.Request) -> web.Response:
        bridge.operator(request)
        head = bridge.upstream.position
        return web.json_response([c.session.info(head) for c in bridge.connections.values()])

    async def healthz(_: web.Request) -> web.Response:
        # Liveness: answering is the proof; never asks the core.
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        # Readiness (bridge.health): public, so it says only ready or why not.
        ready = bridge.upstream.readiness()
        return web.json_response(ready.body(), status=200 if ready.ready else 503)

    app.router.add_get("/ws/status", status)
    app.router.add_get("/ws/connections", connections)
    app.router.add_get("/ws/schema", schema_page(settings))
    _add_metrics(app, bridge, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    _add_dashboard(app, settings)

    async def upstream(_: web.Application) -> Any:
        bridge.upstream.start()
        bridge.spawn(bridge.keepalive())
        bridge.spawn(bridge.watch_slow())
        bridge.spawn(bridge.upstream.run_canary())
        yield
        await bridge.stop_tasks()
        await bridge.upstream.stop()

    async def going_away(_: web.Application) -> None:
        conns = list(bridge.connections.values())
        await asyncio.gather(
            *(c.close(1001, "server shutting down") for c in conns), return_exceptions=True
        )

    app.cleanup_ctx.append(upstream)
    app.on_shutdown.append(going_away)
    return app


def metrics_page(bridge: Bridge) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler: the Prometheus text of ``bridge.metrics``.
    Operators only when auth is on, like ``/ws/connections``: Prometheus then sends
    a bearer token (``authorization`` in its scrape config)."""

    async def page(request: web.Request) -> web.Response:
        bridge.operator(request)
        body = bridge.metrics.expose()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return page


def _add_metrics(app: web.Application, bridge: Bridge, metrics: Metrics | None) -> None:
    """``GET /metrics`` (:func:`metrics_page`) of ``metrics`` (the bridge's own when
    None), to which the bridge's source is added while the app runs."""
    if metrics is not None:
        bridge.metrics = metrics
    registry = bridge.metrics
    source = register_metrics(registry, bridge, (*ENDPOINTS, sse.ENDPOINT))

    async def forget(_: web.Application) -> None:
        registry.remove(source)

    app.router.add_get("/metrics", metrics_page(bridge))
    app.on_cleanup.append(forget)


def bridge_of(app: web.Application) -> Bridge:
    """The Bridge inside an app made by :func:`create_app`."""
    return app[_BRIDGE]


def _add_dashboard(app: web.Application, settings: BridgeSettings) -> None:
    folder = settings.static_dir
    index = folder / "index.html" if folder else None

    async def home(_: web.Request) -> web.StreamResponse:
        if index is not None and index.is_file():
            return web.FileResponse(index)
        return web.Response(
            text="<h1>ClearPath Realtime</h1><p>The dashboard is not built: run "
            "<code>make run</code>.</p><p><a href='/ws/status'>/ws/status</a></p>",
            content_type="text/html",
        )

    app.router.add_get("/", home)
    if folder is not None and (folder / "assets").is_dir():
        app.router.add_static("/assets", folder / "assets")


class BridgeNode:
    """One running bridge: the app on an HTTP server; ``port`` is read back after start."""

    def __init__(
        self, settings: BridgeSettings, *, reuse_port: bool = False, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self._reuse_port = reuse_port
        self.app = create_app(settings, metrics)
        self.bridge = bridge_of(self.app)
        #: The process's metrics (``/metrics``): the one given, else the bridge's own.
        self.metrics = self.bridge.metrics
        # A request head must be complete within header_timeout (slow HTTP clients).
        self._runner = guarded_runner(
            self.app,
            header_timeout=settings.header_timeout,
            handle_signals=False,
            access_log=None,
        )
        self.port = 0

    @property
    def url(self) -> str:
        """``http://host:port`` a client on this machine can reach."""
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "") else self.settings.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Serve on ``settings.host:settings.port``."""
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            backlog=ACCEPT_BACKLOG,
            reuse_port=self._reuse_port or None,
        )
        await site.start()
        self.port = self._runner.addresses[0][1]
        warn_if_open(log, "the bridge", self.settings.host, auth=self.bridge.verifier is not None)
        log.info(
            "bridge listening on %s (core %s)",
            self.url,
            self.settings.core,
            extra={"event": "listening", "url": self.url, "core": self.settings.core},
        )

    async def stop(self) -> None:
        """Close every socket with 1001, stop the upstream and the server."""
        await self._runner.cleanup()
