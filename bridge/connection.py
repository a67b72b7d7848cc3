"""One browser socket: its :class:`~bridge.session.Session` joined to its
:class:`~bridge.writer.Writer`. :class:`Connection` is what every transport
shares; :class:`WebSocketConnection` adds aiohttp's WebSocketResponse (the SSE
stream, :class:`bridge.sse.SSEConnection`, its response).

Frames reach a socket only through its session's hub subscription. There is
no task per socket: when frames become pending the socket is marked dirty, and
the :class:`~bridge.writer.Flusher` writes up to ``write_chunk`` bytes of them
in one ``transport.write`` per loop turn, each frame's bytes built once for
every socket. While the transport's buffer is above its high-water mark the
socket is paused and frames wait in its queue; see :mod:`bridge.session` for
when waiting turns into a slow-consumer close (error ``slow_consumer``, close
1013). A peer that does not read even that is aborted after ``close_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from bridge.frames import Frame, control
from bridge.session import Session, State, is_stalled
from bridge.writer import Flusher, Writer
from core.errors import RealtimeError
from core.positions import Position

__all__ = ["MIN_CHUNK", "Connection", "Refused", "Spawn", "WebSocketConnection"]

#: The smallest write to a socket that fills its transport (see Connection.flush).
MIN_CHUNK = 16 * 1024

log = logging.getLogger("clearpath.bridge")

#: Starts a background task owned by the bridge (which keeps a reference and
#: cancels what is left at shutdown).
Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Refused(Exception):
    """A frame of a replay was not taken by the socket (see :meth:`Connection.send_many`)."""


class Connection:
    """A connected socket: protocol state, writer, and its close. The transport
    decides how it closes, pings and knows it ended (the methods that raise
    NotImplementedError here)."""

    __slots__ = (
        "_chunk",
        "_close_timeout",
        "_draining",
        "_flusher",
        "_on_overflow",
        "_space",
        "_spawn",
        "_write_chunk",
        "auth_timer",
        "expiry",
        "pending",
        "refused",
        "seen",
        "session",
        "topics",
        "writer",
    )

    def __init__(
        self,
        request: web.Request,
        session: Session,
        *,
        flusher: Flusher,
        spawn: Spawn,
        write_chunk: int,
        close_timeout: float,
        on_overflow: Callable[[Connection], None],
        topics: tuple[int, ...] = (),
        send_buffer: int = 0,
    ) -> None:
        self.session = session
        #: Topics subscribed when it authenticates (an endpoint's; an SSE stream's ``topics=``).
        self.topics = topics
        self.writer = Writer(request, send_buffer)
        self.seen = asyncio.get_running_loop().time()  # when the peer last sent anything
        self._flusher = flusher
        self._spawn = spawn
        self._on_overflow = on_overflow
        self._write_chunk = write_chunk
        self._chunk = write_chunk  # the next write's bound (see flush)
        self._draining = False  # a drain wait is running
        self._close_timeout = close_timeout
        self._space: asyncio.Event | None = None
        #: Closes the socket if it has not authenticated in time (None: not waiting).
        self.auth_timer: asyncio.TimerHandle | None = None
        #: Closes the socket when its token expires (None: no expiry).
        self.expiry: asyncio.TimerHandle | None = None
        #: Topics to resume (``?since=``) once the socket has authenticated.
        self.pending: dict[int, Position] = {}
        #: The bridge is closing it for cause: its further messages are ignored.
        self.refused = False

    @property
    def id(self) -> str:
        """The connection id."""
        return self.session.id

    def ready(self) -> None:
        """The session's ``on_ready``: frames are pending, or the queue overflowed
        (then ``on_overflow`` decides, after the dispatch in progress)."""
        if self.session.sub.overflowed:
            if self.session.state is State.OPEN:
                asyncio.get_running_loop().call_soon(self._on_overflow, self)
            return
        self._flusher.mark(self)

    def flush(self) -> None:
        """Write pending frames (up to a chunk) unless the transport is paused.

        The chunk adapts to the reader: a write that fills the transport (the
        reader is slower than the stream) shrinks the next one to a quarter, down
        to ``MIN_CHUNK``; a write taken whole doubles it back up to ``write_chunk``.
        So a slow reader has little in flight beyond the bridge's queue — where
        urgent frames still jump ahead and latest-state topics conflate — while a
        fast one gets large writes."""
        if self.writer.stalled_since is not None:
            return  # a drain wait is running; it marks the socket again
        chunk = self._chunk
        data = self.session.take(chunk)
        if not data:
            return
        self.writer.write(data)
        if self._space is not None:
            self._space.set()
        if self.writer.stalled_since is not None:
            self._chunk = max(MIN_CHUNK, chunk // 4)
            self._wait_for_drain()
        else:
            if chunk < self._write_chunk:
                self._chunk = min(self._write_chunk, chunk * 2)
            if self.session.sub.bytes:
                self._flusher.mark(self)  # more than a chunk was pending

    def _wait_for_drain(self) -> None:
        """After a write that left the transport paused: wait (once) until it
        drains, then flush again. Every write goes through here when it pauses
        the transport, pings included — a paused transport with no waiter would
        never be flushed again."""
        if not self._draining and self.writer.stalled_since is not None:
            self._draining = True
            self._spawn(self._resume_when_drained())

    def flush_failed(self, exc: Exception) -> None:
        """The flusher could not write this socket: end it (1011), nothing else."""
        self._spawn(self.close(1011, "internal error"))

    async def _resume_when_drained(self) -> None:
        try:
            await self.writer.drained()
        except ConnectionError:
            return  # the peer went away; the receive loop cleans up
        finally:
            self._draining = False
        if len(self.session.sub):
            self._flusher.mark(self)

    def stalled(self, now: float, slow_timeout: float) -> bool:
        """Whether the transport has taken nothing for more than ``slow_timeout``."""
        return is_stalled(self.writer.stalled_since, now, slow_timeout)

    async def send_many(self, frames: Sequence[Frame]) -> None:
        """Queue the frames of a replay at the pace the socket reads; they are never
        superseded (a replay is never conflated, not even against itself).

        A frame is queued when, with it, at most :attr:`Session.replay_room` bytes
        wait (or nothing does): below the conflation threshold, so a socket that
        reads is never *behind* because of its own replay. When the socket has
        taken bytes and more than that still waits (its live topics keep it
        behind), the replay goes on while at most half the byte bound waits, until
        the queue is back within the room: live frames never starve a replay, and a
        long replay never overflows the queue. Raises :class:`Refused` when a frame
        is not taken (the socket is closing, or a floor or overflow refused it): a
        replay must never go on past a frame it did not deliver."""
        session = self.session
        tight = room = session.replay_room
        loose = max(tight, (session.sub.max_bytes or 0) // 2)
        for frame in frames:
            if not session.for_me(frame):
                session.stats.filtered[frame.topic] += 1
                continue  # another user's notification
            size = frame.nbytes if frame.encodes() else 0
            if session.pending + size <= tight:
                room = tight  # keeping up (again)
            while session.pending and session.pending + size > room and session.state is State.OPEN:
                if self._space is None:
                    self._space = asyncio.Event()
                self._space.clear()
                await self._space.wait()  # set when the socket took bytes (or closes)
                if session.pending + size > tight:
                    room = loose  # it took bytes and is still past the room: behind anyway
            if not session.send(frame, replay=True):
                raise Refused(f"frame {frame.epoch}:{frame.offset} was not taken")

    async def fail(self, error: RealtimeError) -> None:
        """Send ``error`` as an error frame, then close with its close code."""
        await self.close(error.ws_close or 1011, str(error), error)

    async def close(self, code: int, reason: str, error: RealtimeError | None = None) -> None:
        """Close the socket once: stop writing, drop what is queued (counted),
        send the error frame if any, close with ``code``; abort if that stalls."""
        raise NotImplementedError

    @property
    def ended(self) -> bool:
        """Whether the socket is closed (by either side)."""
        raise NotImplementedError

    @property
    def peer_close_code(self) -> int | None:
        """The close code of the socket's closing handshake (None: none yet, or none)."""
        raise NotImplementedError

    def ping(self) -> None:
        """Ping the peer (its answer counts as seen)."""
        raise NotImplementedError

    def cancel_timers(self) -> None:
        """Stop the auth and expiry timers (the socket is gone, or re-authenticated)."""
        for timer in (self.auth_timer, self.expiry):
            if timer is not None:
                timer.cancel()
        self.auth_timer = self.expiry = None

    def abort(self, reason: str) -> None:
        """Drop the TCP connection at once (a dead peer cannot take a close frame)."""
        self.session.begin_close(None, reason)
        if self._space is not None:
            self._space.set()
        self.writer.abort()


class WebSocketConnection(Connection):
    """A WebSocket: a :class:`Connection` closed and pinged with WebSocket frames."""

    __slots__ = ("ws",)

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, session: Session, **kw: Any
    ) -> None:
        super().__init__(request, session, **kw)
        self.ws = ws

    @property
    def ended(self) -> bool:
        return self.ws.closed

    @property
    def peer_close_code(self) -> int | None:
        return self.ws.close_code

    async def close(self, code: int, reason: str, error: RealtimeError | None = None) -> None:
        """Close the socket once: stop writing, drop what is queued (counted),
        send the error frame if any, close with ``code``; abort if that stalls."""
        if not self.session.begin_close(code, reason):
            return
        if self._space is not None:
            self._space.set()
        # A peer that stopped reading never answers the close frame: abort its
        # TCP connection if it is still open after close_timeout.
        asyncio.get_running_loop().call_later(self._close_timeout, self.writer.abort)
        try:
            async with asyncio.timeout(self._close_timeout):
                if error is not None:
                    data = {"code": error.ws_error, "message": str(error)}
                    await self.ws.send_frame(control("error", data).data, WSMsgType.TEXT)
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.info("connection %s: close did not complete (%r)", self.id, exc)
            self.writer.abort()

    def ping(self) -> None:
        """Ping the peer (its pong counts as seen)."""
        if self.session.state is State.OPEN:
            self.writer.ping()
            self._wait_for_drain()
