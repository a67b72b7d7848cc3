"""Lean WebSocket subscribers that do one more thing than :class:`WsSubscriber`.

* :class:`ThrottledWsSubscriber` reads at most a given number of bytes a second
  (a token bucket that pauses reading): a slowed screen, for L1.
* :class:`CatchupWsSubscriber` notes when it has caught up after a resume: for W6.
* :class:`NatsWsSubscriber` speaks the NATS protocol inside the WebSocket (the
  nats-server baseline): it subscribes after the handshake, answers ``PING``, and
  counts the latency markers in the messages' payloads however the server split
  them into frames.
"""

from __future__ import annotations

import asyncio
import socket
import time

from bench.events import newest_stamp
from bench.loadgen.nats import NatsError, NatsStream, subscribe_commands
from bench.loadgen.tally import Tally
from bench.loadgen.ws_client import WsSubscriber, masked_frame

__all__ = [
    "CatchupWsSubscriber",
    "NatsWsSubscriber",
    "ThrottledWsSubscriber",
    "TokenBucket",
    "split_frames",
]


class TokenBucket:
    """``rate`` units a second, at most ``burst`` saved up.

    :meth:`take` spends units (the balance may go negative: bytes already read
    cannot be refused) and returns how many seconds to wait until it is back to 0.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be > 0, not {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, n: float, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - n
        self.at = now
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class ThrottledWsSubscriber(WsSubscriber):
    """Reads at most ``bytes_per_s`` on average (bursts of a quarter second's worth):
    when over budget, reading pauses until the budget is back, so the kernel's
    buffers fill and the server sees a slow reader."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        tally: Tally,
        *,
        sample: bool,
        wait_first_frame: bool,
        bytes_per_s: float,
        rcvbuf: int = 0,
    ) -> None:
        super().__init__(host, port, path, tally, sample=sample, wait_first_frame=wait_first_frame)
        self._bucket = TokenBucket(bytes_per_s, max(4096.0, bytes_per_s / 4), time.monotonic())
        self._rcvbuf = rcvbuf
        self.pauses = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._rcvbuf:  # a fixed receive buffer (0: the kernel's autotuning)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        wait = self._bucket.take(len(data), time.monotonic())
        transport = self.transport
        if wait > 0 and transport is not None and not transport.is_closing():
            transport.pause_reading()
            self.pauses += 1
            asyncio.get_running_loop().call_later(wait, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class CatchupWsSubscriber(WsSubscriber):
    """Notes when it read the back events and when it caught up.

    ``opened_ns`` is its creation (just before connecting); ``back_ns`` when it first
    had ``back`` events (0 until then); ``caught_up_ns`` when, having them, it read a
    chunk whose newest event was published less than ``fresh_ns`` before (0 until
    then), and ``events_at_caught_up`` the events it had then.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        tally: Tally,
        *,
        sample: bool,
        wait_first_frame: bool,
        back: int,
        fresh_ns: int,
    ) -> None:
        super().__init__(host, port, path, tally, sample=sample, wait_first_frame=wait_first_frame)
        self._back = back
        self._fresh_ns = fresh_ns
        self.opened_ns = time.time_ns()
        self.back_ns = 0
        self.caught_up_ns = 0
        self.events_at_caught_up = 0

    def data_received(self, data: bytes) -> None:
        before = self.events
        super().data_received(data)
        if self.caught_up_ns or self.events == before or self.events < self._back:
            return
        now = time.time_ns()
        if not self.back_ns:
            self.back_ns = now
        stamp = newest_stamp(data)
        if stamp and now - stamp <= self._fresh_ns:
            self.caught_up_ns = now
            self.events_at_caught_up = self.events


def split_frames(buf: bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """Complete server frames at the start of ``buf``: ``([(opcode, start, end)], pos)``,
    payload ``buf[start:end]`` (unmasked, RFC 6455 5.1), ``pos`` the bytes they take."""
    out = []
    n = len(buf)
    pos = 0
    while n - pos >= 2:
        ln = buf[pos + 1] & 0x7F
        hl = 2
        if ln == 126:
            if n - pos < 4:
                break
            ln, hl = (buf[pos + 2] << 8) | buf[pos + 3], 4
        elif ln == 127:
            if n - pos < 10:
                break
            ln, hl = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        if pos + hl + ln > n:
            break
        out.append((buf[pos] & 0x0F, pos + hl, pos + hl + ln))
        pos += hl + ln
    return out, pos


class NatsWsSubscriber(WsSubscriber):
    """A NATS client in WebSocket frames, subscribed to ``subject``; ready once the
    server answered the PING sent after SUB (the subscription is then in place)."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        tally: Tally,
        *,
        sample: bool,
        subject: str,
    ) -> None:
        super().__init__(host, port, path, tally, sample=sample, wait_first_frame=True)
        self._subject = subject
        self._stream = NatsStream()
        self._pings_answered = 0

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self._buf
        buf += data
        if self._handshaking:
            if not self._handshake(buf):
                return
            assert self.transport is not None
            self.transport.write(masked_frame(0x2, subscribe_commands(self._subject)))
        frames, pos = split_frames(buf)
        if not frames:
            return
        payload = bytearray()
        for opcode, start, end in frames:
            if opcode >= 8:
                self._control(opcode, bytes(buf[start:end]))
            else:
                self.frames += 1
                payload += buf[start:end]
        del buf[:pos]
        self._lines(payload, now)

    def _lines(self, payload: bytearray, now: int) -> None:
        stream = self._stream
        assert self.transport is not None
        try:
            end = stream.feed(payload)
        except NatsError as exc:  # a stream we cannot read: end this connection only
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"nats: {exc}"))
            self.transport.abort()
            return
        if not end:
            return
        self.events += self._tally.feed(stream.buf, end, now, self._sample)
        stream.consume(end)
        while self._pings_answered < stream.pings and not self.transport.is_closing():
            self.transport.write(masked_frame(0x2, b"PONG\r\n"))
            self._pings_answered += 1
        if stream.pongs and not self.ready.done():
            self.ready.set_result(None)
        if stream.error and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"nats: {stream.error}"))
