"""A lean WebSocket client: an asyncio Protocol that counts text frames in bulk.

It does the opening handshake itself, offers no extension (so no compression),
answers pings and closes, and otherwise only walks frame headers: payloads are
never decoded. Server-to-client frames are unmasked (RFC 6455 5.1), which keeps
the header walk to a few byte reads per frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from typing import cast

from bench.loadgen.sockets import unread_bytes
from bench.loadgen.tally import Tally

__all__ = ["WsSubscriber", "masked_frame"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, masked) of a short control or text payload."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + body


class WsSubscriber(asyncio.Protocol):
    """One WebSocket connection; ``ready`` resolves after the handshake (and welcome).

    ``events`` counts latency markers received on this connection; ``frames``
    counts data frames (welcome frames and arrays of events are one frame each).
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
    ) -> None:
        self._tally = tally
        self._sample = sample
        self._wait_first = wait_first_frame
        self._buf = bytearray()
        self._handshaking = True
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.events = 0
        self.frames = 0
        self.close_code: int | None = None
        self._closed_by_us = False

    # asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self._buf
        buf += data
        if self._handshaking and not self._handshake(buf):
            return
        n = len(buf)
        pos = 0
        frames = 0
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            if ln < 126:
                hl = 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode >= 8:
                self._control(opcode, bytes(buf[pos + hl : end]))
            else:
                frames += 1
            pos = end
        if pos:
            self.frames += frames
            self.events += self._tally.feed(buf, pos, now, self._sample)
            del buf[:pos]
            if self._wait_first and not self.ready.done() and frames:
                self.ready.set_result(None)

    # internals ----------------------------------------------------------------------
    def _handshake(self, buf: bytearray) -> bool:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536 and not self.ready.done():
                self.ready.set_exception(ConnectionError("handshake response too long"))
            return False
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        self._handshaking = False
        status = head.split("\r\n", 1)[0]
        if " 101 " not in status + " " or self._accept.decode() not in head:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"handshake refused: {status!r}"))
            assert self.transport is not None
            self.transport.close()
            return False
        if not self._wait_first and not self.ready.done():
            self.ready.set_result(None)
        return True

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x9:  # ping
            self.transport.write(masked_frame(0xA, payload))
        elif opcode == 0x8:  # close: echo the code, then let the server close TCP
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.transport.is_closing():
                self.transport.write(masked_frame(0x8, payload[:2]))

    def unread_bytes(self) -> int:
        """Bytes waiting in this socket's kernel receive buffer (FIONREAD)."""
        return unread_bytes(self.transport)

    def is_over(self) -> bool:
        """True once the connection is closed or closing."""
        return self.transport is None or self.transport.is_closing()

    def cut_off(self) -> bool:
        """True if the server ended the connection (a close frame, or EOF) before we did."""
        return not self._closed_by_us and (self.close_code is not None or self.closed.done())

    def close(self) -> None:
        """Send a normal close frame and drop the connection."""
        self._closed_by_us = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()
