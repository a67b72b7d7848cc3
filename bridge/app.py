"""The aiohttp application: WebSocket endpoints, status endpoints, the dashboard.

Endpoints and what they subscribe to on connect:

=================  ==========================================
``/ws/connect``    nothing; the client subscribes itself
``/ws/packages``   package_updates
``/ws/dashboard``  dashboard_metrics, notifications
``/ws/map``        map_updates, package_updates
``/ws/agents``     agent_activity, system_health
=================  ==========================================

Any endpoint takes ``?batch=1`` (pending frames go out as one JSON array) and
``?since=TOPIC:EPOCH:OFFSET`` (repeatable): those topics are subscribed at
connect and resumed after that position, before live events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from bridge.config import BridgeSettings
from bridge.connection import Connection, Flusher, TokenBucket
from bridge.frames import Frame, control, event_frame
from bridge.messages import Ping, Position, Subscribe, parse
from bridge.upstream import Upstream
from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument, RateLimited, RealtimeError, Unavailable
from core.hub import Hub
from core.topics import TOPIC_NAMES, topic_from_name

__all__ = ["ENDPOINTS", "BridgeNode", "create_app"]

log = logging.getLogger("clearpath.bridge")

ENDPOINTS: dict[str, tuple[int, ...]] = {
    "/ws/connect": (),
    "/ws/packages": (pb.TOPIC_PACKAGE_UPDATES,),
    "/ws/dashboard": (pb.TOPIC_DASHBOARD_METRICS, pb.TOPIC_NOTIFICATIONS),
    "/ws/map": (pb.TOPIC_MAP_UPDATES, pb.TOPIC_PACKAGE_UPDATES),
    "/ws/agents": (pb.TOPIC_AGENT_ACTIVITY, pb.TOPIC_SYSTEM_HEALTH),
}


def _frame_topic(frame: Frame) -> int:
    return frame.topic


class Bridge:
    """The bridge's state: sockets, the hub of frames, the upstream, the counters."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.hub: Hub[Frame] = Hub(_frame_topic)
        self.flusher = Flusher(settings.flush_interval)
        self.upstream = Upstream(settings, self.hub.dispatch)
        self.connections: dict[str, Connection] = {}
        self.started = time.time()
        self.closed_sent = 0
        self.closed_dropped = 0
        self.slow_closed = 0

    def status(self) -> dict[str, Any]:
        """``/ws/status``."""
        conns = list(self.connections.values())
        return {
            "connections": {
                "total": len(conns),
                "by_endpoint": dict(Counter(c.endpoint for c in conns)),
            },
            "subscribers": {name: self.hub.count(t) for t, name in TOPIC_NAMES.items()},
            "frames_sent": self.closed_sent + sum(c.frames_sent for c in conns),
            "frames_dropped": self.closed_dropped + sum(c.frames_dropped for c in conns),
            "slow_consumers_closed": self.slow_closed,
            "upstream": self.upstream.status(),
            "uptime_seconds": round(time.time() - self.started, 3),
        }

    # --- one socket -------------------------------------------------------------

    async def handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        settings = self.settings
        if len(self.connections) >= settings.max_connections:
            raise web.HTTPServiceUnavailable(text="too many connections")
        try:
            resume = _parse_since(request.query.getall("since", []))
        except InvalidArgument as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        # Keepalive is the bridge's (see keepalive): one timer for every socket,
        # not one per socket; so pings and pongs come to the loop below.
        # permessage-deflate is off: frames are built once for every socket.
        ws = web.WebSocketResponse(
            autoping=False, compress=False, max_msg_size=settings.max_message_bytes
        )
        await ws.prepare(request)
        conn = Connection(
            ws,
            request,
            endpoint,
            queue_size=settings.send_queue_size,
            batch=request.query.get("batch") in ("1", "true"),
            close_timeout=settings.close_timeout,
            flusher=self.flusher,
        )
        self.connections[conn.id] = conn
        self.hub.add(conn.sub)
        log.info("connect %s %s from %s", conn.id, endpoint, conn.remote)
        auto = ENDPOINTS[endpoint]
        conn.send(
            control(
                "welcome",
                {
                    "connection_id": conn.id,
                    "endpoint": endpoint,
                    "subscriptions": [TOPIC_NAMES[t] for t in auto],
                    "subscription_types": list(TOPIC_NAMES.values()),
                    "ping_interval": settings.ping_interval,
                },
            )
        )
        for topic in auto:
            if topic not in resume:
                self.hub.subscribe(conn.sub, topic)
        for topic, since in resume.items():
            self._start_resume(conn, topic, since)
        try:
            # The receive loop is inline: one coroutine frame per socket, not two.
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
                    break
                elif msg.type == WSMsgType.BINARY:
                    log.info("connection %s sent a binary frame; closing 1003", conn.id)
                    await conn.close(1003, "binary frames are not supported; send JSON text")
                    break
                elif msg.type == WSMsgType.ERROR:
                    conn.close_reason = f"error: {ws.exception()!r}"
                    break
        finally:
            await self._forget(conn)
        return ws

    async def _forget(self, conn: Connection) -> None:
        self.hub.remove(conn.sub)
        await conn.stop_tasks()
        if not conn.ws.closed:
            await conn.close(1011, "internal error")
        del self.connections[conn.id]
        self.closed_sent += conn.frames_sent
        self.closed_dropped += conn.frames_dropped + len(conn.sub.queue)
        if conn.sub.overflowed:
            self.slow_closed += 1
        log.info(
            "disconnect %s code=%s reason=%s",
            conn.id,
            conn.ws.close_code,
            conn.close_reason or "client closed",
        )

    def _on_text(self, conn: Connection, text: str) -> None:
        try:
            now = time.monotonic()
            if conn.bucket is None:  # made at the first message: idle sockets need none
                conn.bucket = TokenBucket(self.settings.rate_limit, self.settings.rate_burst, now)
            if not conn.bucket.take(now):
                raise RateLimited(
                    f"more than {self.settings.rate_limit:g} messages a second; slow down"
                )
            message = parse(text)
            if isinstance(message, Ping):
                conn.send(control("pong"))
                return
            topic = topic_from_name(message.data.subscription_type)
            if isinstance(message, Subscribe):
                self._subscribe(conn, topic, message.data.since)
            else:
                self._unsubscribe(conn, topic)
        except RealtimeError as exc:
            log.info("connection %s: %s: %s", conn.id, exc.ws_error, exc)
            conn.send_error(exc)

    def _subscribe(self, conn: Connection, topic: int, since: Position | None) -> None:
        live = topic in conn.sub.topics
        if since is None or topic in conn.resumes:
            if not live and topic not in conn.resumes:
                self.hub.subscribe(conn.sub, topic)
                log.info("connection %s subscribed %s", conn.id, TOPIC_NAMES[topic])
            conn.send(self._subscribed(conn, topic, recovered=True))
            return
        if live and conn.delivered(topic):
            # Replaying into a stream that already delivered live events would
            # reorder them; say so instead (resume with ?since= at connect).
            conn.send(self._subscribed(conn, topic, recovered=False))
            return
        if live:
            self.hub.unsubscribe(conn.sub, topic)
            conn.sub.queue = [f for f in conn.sub.queue if f.topic != topic]
        self._start_resume(conn, topic, pb.StreamPosition(offset=since.offset, epoch=since.epoch))

    def _unsubscribe(self, conn: Connection, topic: int) -> None:
        task = conn.resumes.pop(topic, None)
        if task is not None:
            task.cancel()
        self.hub.unsubscribe(conn.sub, topic)
        log.info("connection %s unsubscribed %s", conn.id, TOPIC_NAMES[topic])
        conn.send(
            control(
                "unsubscribed",
                {"subscription_type": TOPIC_NAMES[topic], "subscriptions": _names(conn)},
            )
        )

    def _subscribed(
        self, conn: Connection, topic: int, *, recovered: bool, position: Any = None
    ) -> Frame:
        position = position or self.upstream.position(topic)
        return control(
            "subscribed",
            {
                "subscription_type": TOPIC_NAMES[topic],
                "subscriptions": sorted({*_names(conn), TOPIC_NAMES[topic]}),
                "recovered": recovered,
                "position": {"offset": position.offset, "epoch": position.epoch},
            },
        )

    # --- keepalive ----------------------------------------------------------------

    async def keepalive(self) -> None:
        """Every ``ping_interval``: drop sockets that sent nothing (not even a pong)
        since the previous round's ping, then ping every socket."""
        interval = self.settings.ping_interval
        loop = asyncio.get_running_loop()
        last_round = loop.time()
        while True:
            await asyncio.sleep(interval)
            for conn in list(self.connections.values()):
                if conn.seen < last_round and not conn.closing:
                    log.info("connection %s: no pong within %gs; dropping it", conn.id, interval)
                    conn.abort(f"no pong within {interval:g}s")
            last_round = loop.time()
            for conn in self.connections.values():
                conn.ping()

    # --- resume -----------------------------------------------------------------

    def _start_resume(self, conn: Connection, topic: int, since: pb.StreamPosition) -> None:
        task = asyncio.create_task(self._resume(conn, topic, since))
        conn.resumes[topic] = task

        def done(task: asyncio.Task[None]) -> None:
            if conn.resumes.get(topic) is task:
                del conn.resumes[topic]
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("connection %s: resume failed", conn.id, exc_info=exc)
                conn.send_error(RealtimeError("resume failed; subscribe again"))

        task.add_done_callback(done)

    async def _resume(self, conn: Connection, topic: int, since: pb.StreamPosition) -> None:
        """Send what ``conn`` missed on ``topic`` after ``since``, then go live.

        Frames come from the bridge's cache when it reaches back far enough,
        else from the core's history on a stream of their own, until the cache
        takes over. Going live happens with no await after the last replayed
        frame, so the next live frame is the next offset: nothing is sent
        twice and nothing is skipped.
        """
        last, epoch, told = since.offset, since.epoch, False
        core_latest: pb.StreamPosition | None = None  # the core's answer, once asked

        def tell(recovered: bool, position: pb.StreamPosition | None = None) -> None:
            nonlocal told
            if not told or not recovered:
                conn.send(self._subscribed(conn, topic, recovered=recovered, position=position))
            told = True

        try:
            while True:
                frames = self.upstream.cached_after(topic, last, epoch)
                if frames:
                    tell(True)
                    await conn.send_many(frames)
                    last = frames[-1].offset
                    continue
                # Caught up with what the bridge has seen, or ahead of it (the
                # upstream will bring the rest); or, when the bridge has seen
                # nothing on the topic yet, caught up with the core's latest.
                seen = self.upstream.position(topic)
                behind = bool(seen.epoch) and seen.epoch == epoch and seen.offset <= last
                quiet = not seen.epoch and core_latest is not None and last >= core_latest.offset
                if behind or quiet:
                    if quiet or seen.offset < last:
                        conn.skip_through(topic, last, epoch)  # upstream frames already sent
                    tell(True)
                    self.hub.subscribe(conn.sub, topic)
                    log.info("connection %s resumed %s", conn.id, TOPIC_NAMES[topic])
                    return
                state, events = await self.upstream.history(
                    topic, pb.StreamPosition(offset=last, epoch=epoch)
                )
                try:
                    tell(state.recovered, state.position)
                    if not state.recovered:
                        self.hub.subscribe(conn.sub, topic)
                        return
                    core_latest = state.position
                    # Read the core's history until the cache takes over or the
                    # core's latest (when asked) is reached; never wait on a quiet topic.
                    while last < core_latest.offset and (
                        self.upstream.cached_after(topic, last, epoch) is None
                    ):
                        event = await anext(events)
                        if event.position.offset > last:
                            await conn.send_many([event_frame(event)])
                            last = event.position.offset
                finally:
                    await events.aclose()  # type: ignore[attr-defined]
        except StopAsyncIteration:
            conn.send_error(Unavailable("the core ended the history stream; subscribe again"))
        except Unavailable as exc:
            conn.send_error(exc)
        except grpc.aio.AioRpcError as exc:
            log.warning("connection %s: resume of %s failed: %s", conn.id, topic, exc.details())
            conn.send_error(Unavailable("the core ended the history stream; subscribe again"))


_BRIDGE = web.AppKey("bridge", Bridge)


def _names(conn: Connection) -> list[str]:
    return sorted(TOPIC_NAMES[t] for t in conn.sub.topics)


def _parse_since(values: list[str]) -> dict[int, pb.StreamPosition]:
    resume: dict[int, pb.StreamPosition] = {}
    for value in values:
        parts = value.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise InvalidArgument(f"since={value!r}: expected TOPIC:EPOCH:OFFSET")
        topic = topic_from_name(parts[0])
        resume[topic] = pb.StreamPosition(offset=int(parts[2]), epoch=parts[1])
    return resume


# --- the application ---------------------------------------------------------------


def create_app(settings: BridgeSettings) -> web.Application:
    """The bridge as an aiohttp application (its upstream starts with the app)."""
    app = web.Application()
    bridge = Bridge(settings)
    app[_BRIDGE] = bridge

    for path in ENDPOINTS:
        # A partial, not a wrapper coroutine: one frame less per open socket.
        app.router.add_get(path, functools.partial(bridge.handle, endpoint=path))

    async def status(_: web.Request) -> web.Response:
        return web.json_response(bridge.status())

    async def connections(_: web.Request) -> web.Response:
        return web.json_response([c.info() for c in bridge.connections.values()])

    app.router.add_get("/ws/status", status)
    app.router.add_get("/ws/connections", connections)
    _add_dashboard(app, settings)

    async def upstream(_: web.Application) -> Any:
        bridge.upstream.start()
        keepalive = asyncio.create_task(bridge.keepalive(), name="bridge-keepalive")
        yield
        keepalive.cancel()
        await asyncio.gather(keepalive, return_exceptions=True)
        await bridge.upstream.stop()

    async def going_away(_: web.Application) -> None:
        conns = list(bridge.connections.values())
        await asyncio.gather(
            *(c.close(1001, "server shutting down") for c in conns), return_exceptions=True
        )

    app.cleanup_ctx.append(upstream)
    app.on_shutdown.append(going_away)
    return app


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

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.bridge = bridge_of(self.app)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        self.port = 0

    @property
    def url(self) -> str:
        """``http://host:port`` a client on this machine can reach."""
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "") else self.settings.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Serve on ``settings.host:settings.port``."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("bridge listening on %s (core %s)", self.url, self.settings.core)

    async def stop(self) -> None:
        """Close every socket with 1001, stop the upstream and the server."""
        await self._runner.cleanup()
