"""One browser socket: its subscription, bounded send queue and writer.

Frames reach the socket only through its :class:`core.hub.Subscription`
(capacity ``send_queue_size``). One writer task drains it; when the client
opted in with ``?batch=1`` everything pending goes out as one JSON array
frame. Overflow policy: a socket whose queue overflows is sent an ``error``
frame ``slow_consumer`` and closed with 1013 (try again later) — its client
reconnects and resumes from the last position it saw. If even that cannot be
written within ``close_timeout`` the TCP connection is aborted. Other sockets
are never delayed: the hub only appends to queues.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import WSMsgType, web

from bridge.frames import Frame, control
from core.errors import RealtimeError, SlowConsumer
from core.hub import Subscription

__all__ = ["Connection", "TokenBucket"]

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


class Connection:
    """A connected socket and what the bridge knows of it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        endpoint: str,
        *,
        queue_size: int,
        batch: bool,
        close_timeout: float,
        bucket: TokenBucket,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.ws = ws
        self.endpoint = endpoint
        self.remote = request.remote or ""
        self.user: str | None = None
        self.connected_at = time.time()
        self.batch = batch
        self.bucket = bucket
        self.frames_sent = 0
        self.frames_dropped = 0
        self.close_reason = ""
        self.delivered_topics: set[int] = set()
        self.resumes: dict[int, asyncio.Task[None]] = {}
        self.sub: Subscription[Frame] = Subscription((), queue_size, self._ready)
        self._transport = request.transport
        self._close_timeout = close_timeout
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        """True once the socket is being closed."""
        return self._closing

    def start(self) -> None:
        """Start the writer."""
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

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
                self._space.clear()
                await self._space.wait()
            if self._closing:
                return
            for frame in frames[start : start + half]:
                self.sub.offer(frame)

    def info(self) -> dict[str, Any]:
        """This connection in ``/ws/connections``."""
        from core.topics import TOPIC_NAMES

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
        if self.sub.overflowed and not self._closing:
            error = SlowConsumer(
                f"more than {self.sub.capacity} frames waiting; "
                "reconnect and resume from your last position"
            )
            asyncio.get_running_loop().create_task(self.fail(error))
        self._wake.set()

    async def _write_loop(self) -> None:
        try:
            await self._write()
        except ConnectionError as exc:  # the peer went away; the reader cleans up
            log.debug("connection %s: write failed: %r", self.id, exc)

    async def _write(self) -> None:
        ws = self.ws
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            frames = self.sub.drain()
            self._space.set()
            if not frames or self._closing:
                continue
            for frame in frames:
                if frame.topic:
                    self.delivered_topics.add(frame.topic)
            if self.batch and len(frames) > 1:
                await ws.send_frame(b"[" + b",".join(f.data for f in frames) + b"]", WSMsgType.TEXT)
            else:
                for frame in frames:
                    await ws.send_frame(frame.data, WSMsgType.TEXT)
            self.frames_sent += len(frames)

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
        self._space.set()
        self.frames_dropped += len(self.sub.queue)
        self.sub.close()
        self.sub.queue.clear()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
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

    def _abort(self) -> None:
        # A no-op once the connection is gone; a transport that is still
        # "closing" is waiting to flush to a peer that does not read.
        if self._transport is not None:
            self._transport.abort()

    async def stop_tasks(self) -> None:
        """Cancel the writer and any resume in progress; wait for them."""
        self._closing = True
        self._space.set()
        tasks = [t for t in (self._writer, *self.resumes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
