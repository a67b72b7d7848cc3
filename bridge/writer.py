"""The transport side of a socket: the only code that writes to it.

:class:`Writer` wraps the request's asyncio transport and aiohttp's protocol.
It relies on two aiohttp internals, pinned by ``tests/test_aiohttp_internals.py``
so an upgrade that changes them fails loudly: the protocol's ``writing_paused``
flag (True while the transport's buffer is above its high-water mark) and its
``_drain_helper()`` coroutine (returns once the buffer drained).

:class:`Flusher` writes dirty sockets, each in isolation: one socket's failure
is counted, logged and ends that socket only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from aiohttp.base_protocol import BaseProtocol

__all__ = ["Flushable", "Flusher", "Writer"]

log = logging.getLogger("clearpath.bridge")

_PING = b"\x89\x00"  # a WebSocket ping frame with no payload


class Writer:
    """Writes bytes to one socket's transport and knows when it stopped taking them."""

    __slots__ = ("_protocol", "_transport", "stalled_since")

    def __init__(self, request: web.Request, send_buffer: int = 0) -> None:
        self._transport = request.transport
        if send_buffer and self._transport is not None:
            # What the kernel holds for a socket is out of the bridge's reach: no
            # priority lane or conflation applies to it. Bounding it keeps a slow
            # reader's backlog in the bridge's queue (see BridgeSettings.socket_send_buffer).
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                # Not a TCP socket (e.g. a test transport): nothing to bound.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self._protocol: BaseProtocol | None = request.protocol
        #: Loop time since which the transport has been above its high-water mark
        #: (None: it takes what is written).
        self.stalled_since: float | None = None

    @property
    def paused(self) -> bool:
        """True while the transport's buffer is above its high-water mark."""
        return self._protocol is not None and self._protocol.writing_paused

    def write(self, data: bytes) -> bool:
        """Write ``data``; False when the transport is gone or closing."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        protocol = self._protocol
        if protocol is not None and protocol.writing_paused and self.stalled_since is None:
            self.stalled_since = asyncio.get_running_loop().time()
        return True

    async def drained(self) -> None:
        """Return once the transport's buffer is below its low-water mark.
        Raises ConnectionError when the peer went away."""
        if self._protocol is not None and self._protocol.writing_paused:
            await self._protocol._drain_helper()
        self.stalled_since = None

    def ping(self) -> None:
        """Write a WebSocket ping (the peer answers with a pong)."""
        self.write(_PING)

    def abort(self) -> None:
        """Drop the TCP connection at once; a no-op once it is gone."""
        if self._transport is not None:
            self._transport.abort()


class Flushable(Protocol):
    """A socket the flusher can write."""

    def flush(self) -> None: ...

    def flush_failed(self, exc: Exception) -> None: ...


#: A round of writes that took ``t`` seconds starts the next one no sooner than
#: ``SPACING * t`` after its own start: writing takes at most half of the loop's
#: time, and the rest is left to reading the upstream, handshakes and pings.
SPACING = 2.0


class Flusher:
    """Writes dirty sockets in rounds, at most one round per ``interval`` seconds.

    After a quiet spell the first frame goes out on the next loop turn; under
    load, frames that arrive within one interval share one write per socket —
    fewer, larger writes for at most ``interval`` of added latency. A round
    that takes longer than half the interval (thousands of busy sockets) spaces
    the next one out to :data:`SPACING` times its length: each write then
    carries more frames, so the bridge's cost per frame falls as its load
    rises, instead of the writes' fixed cost taking the whole CPU and every
    socket falling behind (W1 in ``bench/results``). ``interval`` 0: a round
    on every loop turn, never spaced.
    """

    def __init__(
        self, interval: float = 0.0, on_round: Callable[[bool], None] | None = None
    ) -> None:
        self._interval = interval
        #: The time from the start of the last round to the next one.
        self._gap = interval
        #: Called with True before a round of writes and False after it.
        self._on_round = on_round
        self._dirty: dict[Flushable, None] = {}
        self._handle: asyncio.Handle | None = None
        self._last = 0.0
        #: Sockets whose flush raised (each was ended, the others written).
        self.failures = 0

    @property
    def gap(self) -> float:
        """Seconds from the start of the last round to the earliest next one."""
        return self._gap

    def mark(self, conn: Flushable) -> None:
        """Flush ``conn`` soon."""
        self._dirty[conn] = None
        if self._handle is None:
            loop = asyncio.get_running_loop()
            due = self._last + self._gap
            if loop.time() >= due:
                self._handle = loop.call_soon(self._flush)
            else:
                self._handle = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        self._last = start = loop.time()
        dirty, self._dirty = self._dirty, {}
        on_round = self._on_round
        if on_round is not None:
            on_round(True)
        for conn in dirty:
            try:
                conn.flush()
            except Exception as exc:  # one socket's failure must not stop the others
                self.failures += 1
                log.exception("flush of a socket failed; closing it")
                conn.flush_failed(exc)
        if on_round is not None:
            on_round(False)
        if self._interval:
            self._gap = max(self._interval, SPACING * (loop.time() - start))
