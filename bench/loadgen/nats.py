"""The little of the NATS client protocol the nats-server baseline needs.

Subscribers speak it inside WebSocket frames (:class:`NatsStream` turns the frames'
payload bytes into complete protocol lines, and says which answers they need);
the publisher speaks it over TCP (:class:`NatsConnection`): ``PUB`` commands
pipelined, each call ended by ``PING`` so that the server's ``PONG`` (it answers in
order) says the call's messages were processed, i.e. handed to every subscriber's
outbound buffer. See https://docs.nats.io/reference/reference-protocols/nats-protocol.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

__all__ = [
    "CONNECT",
    "NatsConnection",
    "NatsError",
    "NatsStream",
    "subscribe_commands",
]

#: No ``+OK`` per command, no header support: the leanest session.
CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n'
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
_ERR = b"-ERR"
#: A protocol line longer than this (no CRLF in sight) is a broken stream.
MAX_PENDING_BYTES = 8 * 1024 * 1024


class NatsError(Exception):
    """The server said ``-ERR``, closed the connection, or sent something unreadable."""


def subscribe_commands(subject: str, sid: int = 1) -> bytes:
    """What a subscriber sends once the server's INFO arrived: CONNECT, SUB, PING
    (whose PONG tells it the subscription is in place)."""
    return CONNECT + b"SUB %s %d\r\n" % (subject.encode(), sid) + _PING


class NatsStream:
    """Payload bytes of one server-to-client NATS stream in, complete lines out.

    :meth:`feed` appends bytes and returns the complete region: everything up to
    and including the last CRLF. A ``MSG`` payload never holds CRLF (benchmark
    payloads are one-line JSON), so the latency marker in a payload is never split
    by the cut, however the server framed the bytes. ``pings`` and ``pongs`` count
    the server's ``PING`` and ``PONG`` lines seen so far; ``error`` is the first
    ``-ERR`` line.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pings = 0
        self.pongs = 0
        self.error = ""

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; return the length of the complete prefix of :attr:`buf`
        (0 if none). The caller reads ``buf[:n]`` and then calls :meth:`consume`."""
        buf = self.buf
        start = max(0, len(buf) - 1)  # a CRLF may straddle the old end
        buf += data
        end = buf.rfind(b"\r\n", start) + 2
        if end < 2:
            if len(buf) > MAX_PENDING_BYTES:
                raise NatsError(f"no line end in {len(buf)} bytes")
            return 0
        # Control lines: PING/PONG at a line start (a payload holds neither CRLF nor
        # these words followed by CRLF after a CRLF).
        self.pings += _at_line_start(buf, _PING, end)
        self.pongs += _at_line_start(buf, _PONG, end)
        if not self.error and (at := buf.find(_ERR, 0, end)) >= 0:
            self.error = bytes(buf[at : buf.find(b"\r\n", at)]).decode(errors="replace")[:200]
        return end

    def consume(self, n: int) -> None:
        """Forget the first ``n`` bytes (the region :meth:`feed` returned)."""
        del self.buf[:n]


def _at_line_start(buf: bytearray, word: bytes, end: int) -> int:
    n = buf.count(b"\r\n" + word, 0, end)
    return n + (1 if buf.startswith(word) else 0)


class NatsConnection:
    """A publishing NATS client over TCP: ``await request(commands)`` writes them
    (they must end with ``PING``) and returns when the matching ``PONG`` arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._error: NatsError | None = None

    async def open(self, limit_s: float = 10.0) -> None:
        """Connect, read INFO, send CONNECT and wait for the first PONG, within ``limit_s``."""
        async with asyncio.timeout(limit_s):
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=1 << 20
            )
            info = await self._reader.readline()
            if not info.startswith(b"INFO "):
                raise NatsError(f"expected INFO, got {info[:80]!r}")
            self._task = asyncio.create_task(self._read())
            await self.request(CONNECT + _PING)

    async def request(self, commands: bytes) -> None:
        """Write ``commands`` (ending with PING); return once the server answered it."""
        if self._error is not None:
            raise self._error
        assert self._writer is not None
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self._writer.write(commands)
        await self._writer.drain()
        await fut

    async def _read(self) -> None:
        assert self._reader is not None
        assert self._writer is not None
        try:
            while line := await self._reader.readline():
                if line == _PONG:
                    if self._waiting:
                        fut = self._waiting.popleft()
                        if not fut.done():
                            fut.set_result(None)
                elif line == _PING:
                    self._writer.write(_PONG)
                elif line.startswith(_ERR):
                    raise NatsError(line.decode(errors="replace").strip()[:200])
            raise NatsError("the server closed the connection")
        except (NatsError, OSError, ValueError) as exc:
            self._fail(exc if isinstance(exc, NatsError) else NatsError(str(exc)))

    def _fail(self, exc: NatsError) -> None:
        self._error = exc
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._fail(NatsError("closed"))
