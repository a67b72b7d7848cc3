"""One browser socket: its subscription, bounded send queue and flushing.

Frames reach a socket only through its :class:`core.hub.Subscription`
(capacity ``send_queue_size``). There is no task per socket: when a queue
becomes non-empty the socket is marked dirty, and the :class:`Flusher` writes
everything pending for each dirty socket in one ``transport.write`` per loop
turn — many WebSocket frames in one TCP write, each frame's bytes built once
for every socket (or, with ``?batch=1``, one JSON array frame).

Backpressure and overflow policy: while a socket's transport buffer is above
its high-water mark the socket is paused and frames wait in its queue. A
queue that overflows gets an ``error`` frame ``slow_consumer`` and a close
with 1013 (try again later); its client reconnects and resumes from the last
position it saw. A peer that does not read even that is aborted after
``close_timeout``. Other sockets are never delayed: the hub only appends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from bridge.frames import Frame, control, text_frame
from core.errors import RealtimeError, SlowConsumer
from core.hub import Subscription
from core.topics import TOPIC_NAMES

__all__ = ["Connection", "Flusher", "TokenBucket"]

_PING = b"\x89\x00"  # a WebSocket ping frame with no payload

# The loop keeps only weak references to tasks: these keep the few a socket
# starts (a close after overflow, a wait for a full transport) alive.
_TASKS: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


log = logging.getLogger("clearpath.bridge")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; pure, clock passed in."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Flusher:
    """Writes dirty sockets, at most once per ``interval`` seconds.

    After a quiet spell the first frame goes out on the next loop turn; under
    load, frames that arrive within one interval share one write per socket —
    fewer, larger writes (the way NATS keeps up) for at most ``interval`` of
    added latency.
    """

    def __init__(self, interval: float = 0.0) -> None:
        self._interval = interval
        self._dirty: dict[Connection, None] = {}
        self._handle: asyncio.Handle | None = None
        self._last = 0.0

    def mark(self, conn: Connection) -> None:
        """Flush ``conn`` soon."""
        self._dirty[conn] = None
        if self._handle is None:
            loop = asyncio.get_running_loop()
            due = self._last + self._interval
            if loop.time() >= due:
                self._handle = loop.call_soon(self._flush)
            else:
                self._handle = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._handle = None
        self._last = asyncio.get_running_loop().time()
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            conn.flush()


class Connection:
    """A connected socket and what the bridge knows of it."""

    __slots__ = (
        "__weakref__",
        "_close_timeout",
        "_closing",
        "_delivered",
        "_floors",
        "_flusher",
        "_paused",
        "_protocol",
        "_space",
        "_transport",
        "batch",
        "bucket",
        "close_reason",
        "connected_at",
        "endpoint",
        "frames_dropped",
        "frames_sent",
        "id",
        "remote",
        "resumes",
        "seen",
        "sub",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        endpoint: str,
        *,
        queue_size: int,
        batch: bool,
        close_timeout: float,
        flusher: Flusher,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.ws = ws
        self.endpoint = endpoint
        self.remote = request.remote or ""
        self.user: str | None = None
        self.connected_at = time.time()
        self.seen = asyncio.get_running_loop().time()  # when the peer last sent anything
        self.batch = batch
        self.bucket: TokenBucket | None = None
        self.frames_sent = 0
        self.frames_dropped = 0
        self.close_reason = ""
        self._delivered = 0  # bit t: a frame of topic t was written
        self.resumes: dict[int, asyncio.Task[None]] = {}
        self.sub: Subscription[Frame] = Subscription((), queue_size, self._ready)
        self._transport = request.transport
        self._protocol = request.protocol
        self._flusher = flusher
        self._close_timeout = close_timeout
        self._space: asyncio.Event | None = None
        self._floors: dict[int, tuple[int, str]] | None = None
        self._paused = False
        self._closing = False

    def skip_through(self, topic: int, offset: int, epoch: str) -> None:
        """Refuse live frames of ``topic`` up to ``offset`` in ``epoch``: a resume
        replayed them before the bridge's own stream brought them. Call it after
        the replay is queued; the check runs at dispatch, for live frames only."""
        if self._floors is None:
            self._floors = {}
        self._floors[topic] = (offset, epoch)
        self.sub.accepts = self._not_replayed

    def _not_replayed(self, frame: Frame) -> bool:
        floors = self._floors
        floor = floors.get(frame.topic) if floors else None
        if floor is None:
            return True
        if frame.epoch == floor[1] and frame.offset <= floor[0]:
            return False
        del floors[frame.topic]  # type: ignore[union-attr]
        if not floors:
            self._floors = None
            self.sub.accepts = None
        return True

    def delivered(self, topic: int) -> bool:
        """Whether a frame of ``topic`` has been written to this socket."""
        return bool(self._delivered >> topic & 1)

    @property
    def closing(self) -> bool:
        """True once the socket is being closed."""
        return self._closing

    def send(self, frame: Frame) -> None:
        """Queue one frame (control frames and replays; events come through the hub)."""
        self.sub.offer(frame)

    def send_error(self, error: RealtimeError) -> None:
        """Queue an ``error`` frame for ``error``."""
        self.send(control("error", {"code": error.ws_error, "message": str(error)}))

    async def send_many(self, frames: Sequence[Frame]) -> None:
        """Queue frames, waiting for room so a long replay never overflows the queue."""
        half = max(1, self.sub.capacity // 2)
        for start in range(0, len(frames), half):
            while len(self.sub.queue) > half and not self._closing:
                if self._space is None:
                    self._space = asyncio.Event()
                self._space.clear()
                await self._space.wait()
            if self._closing:
                return
            for frame in frames[start : start + half]:
                self.sub.offer(frame)

    def info(self) -> dict[str, Any]:
        """This connection in ``/ws/connections``."""
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "user": self.user,
            "subscriptions": sorted(TOPIC_NAMES[t] for t in self.sub.topics),
            "connected_at": self.connected_at,
            "frames_sent": self.frames_sent,
            "send_queue_depth": len(self.sub.queue),
            "remote_address": self.remote,
        }

    def _ready(self) -> None:
        if self.sub.overflowed:
            if not self._closing:
                error = SlowConsumer(
                    f"more than {self.sub.capacity} frames waiting; "
                    "reconnect and resume from your last position"
                )
                _spawn(self.fail(error))
            return
        self._flusher.mark(self)

    def flush(self) -> None:
        """Write everything queued in one transport write, unless paused or closing."""
        if self._paused or self._closing:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        frames = self.sub.drain()
        if not frames:
            return
        delivered = self._delivered
        for frame in frames:
            delivered |= 1 << frame.topic
        self._delivered = delivered
        if self.batch and len(frames) > 1:
            transport.write(text_frame(b"[" + b",".join(f.data for f in frames) + b"]"))
        else:
            transport.write(b"".join(f.wire for f in frames))
        self.frames_sent += len(frames)
        if self._space is not None:
            self._space.set()
        if self._protocol is not None and self._protocol.writing_paused:
            self._paused = True
            _spawn(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            # aiohttp's protocol resolves this when the transport's buffer drains.
            await self._protocol._drain_helper()
        except ConnectionError:
            return  # the peer went away; the reader cleans up
        self._paused = False
        if self.sub.queue:
            self._flusher.mark(self)

    async def fail(self, error: RealtimeError) -> None:
        """Send ``error`` as an error frame, then close with its close code."""
        await self.close(error.ws_close or 1011, str(error), error)

    async def close(self, code: int, reason: str, error: RealtimeError | None = None) -> None:
        """Close the socket once: stop writing, drop what is queued (counted),
        send the error frame if any, close with ``code``; abort if that stalls."""
        if self._closing:
            return
        self._closing = True
        self.close_reason = reason
        if self._space is not None:
            self._space.set()
        self.frames_dropped += len(self.sub.queue)
        self.sub.close()
        self.sub.queue.clear()
        # A peer that stopped reading never answers the close frame: abort its
        # TCP connection if it is still open after close_timeout.
        asyncio.get_running_loop().call_later(self._close_timeout, self._abort)
        try:
            async with asyncio.timeout(self._close_timeout):
                if error is not None:
                    await self.ws.send_frame(
                        control("error", {"code": error.ws_error, "message": str(error)}).data,
                        WSMsgType.TEXT,
                    )
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.info("connection %s: close did not complete (%r)", self.id, exc)
            self._abort()

    def ping(self) -> None:
        """Write a WebSocket ping (the peer answers with a pong, which counts as seen)."""
        if self._transport is not None and not self._closing:
            self._transport.write(_PING)

    def abort(self, reason: str) -> None:
        """Drop the TCP connection at once (a dead peer cannot take a close frame)."""
        self.close_reason = reason
        self._closing = True
        self._abort()

    def _abort(self) -> None:
        # A no-op once the connection is gone; a transport that is still
        # "closing" is waiting to flush to a peer that does not read.
        if self._transport is not None:
            self._transport.abort()

    async def stop_tasks(self) -> None:
        """Cancel any resume in progress and wait for it."""
        self._closing = True
        if self._space is not None:
            self._space.set()
        tasks = list(self.resumes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
