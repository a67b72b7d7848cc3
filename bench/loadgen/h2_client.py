"""A lean gRPC server-streaming client: HTTP/2 with prior knowledge, one stream.

It sends the connection preface, one HEADERS frame (HPACK literals, no Huffman,
no dynamic table) and one DATA frame with the request, then only walks frame and
gRPC message headers. Response headers are never decoded; a stream is over on
END_STREAM, RST_STREAM or GOAWAY. Flow-control windows are opened wide and
refilled in large steps, as a fast consumer would.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import cast

from bench.loadgen.sockets import unread_bytes
from bench.loadgen.tally import Tally

__all__ = ["GrpcStreamSubscriber", "hpack_literal"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_WINDOW = 16 * 1024 * 1024
_U32 = struct.Struct("!I").unpack_from
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY = 0, 1, 3, 4, 6, 7
_END_STREAM, _END_HEADERS, _ACK, _PADDED = 0x1, 0x4, 0x1, 0x8


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(headers: list[tuple[str, str]]) -> bytes:
    """HPACK block of "literal without indexing, new name" fields (RFC 7541 6.2.2)."""
    out = bytearray()
    for name, value in headers:
        out.append(0)
        out += _hpack_int(len(name), 7) + name.encode()
        out += _hpack_int(len(value), 7) + value.encode()
    return bytes(out)


def _frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([ftype, flags])
        + stream.to_bytes(4, "big")
        + payload
    )


class GrpcStreamSubscriber(asyncio.Protocol):
    """One connection carrying one server-streaming call; counts events in bulk.

    ``ready`` resolves on the first response message (a subscription confirmation,
    or the first event); ``ended`` when the stream or the connection is over.
    """

    def __init__(
        self,
        authority: str,
        method_path: str,
        request: bytes,
        tally: Tally,
        *,
        sample: bool,
    ) -> None:
        self._tally = tally
        self._sample = sample
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method_path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        settings = struct.pack("!HIHI", 0x2, 0, 0x4, _WINDOW)
        self._hello = (
            _PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _frame(8, 0, 0, (_WINDOW - 65535).to_bytes(4, "big"))
            + _frame(_HEADERS, _END_HEADERS, 1, hpack_literal(headers))
            + _frame(_DATA, _END_STREAM, 1, b"\0" + len(request).to_bytes(4, "big") + request)
        )
        self._buf = bytearray()
        self._msg = bytearray()
        self._unacked = 0
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.events = 0
        self.messages = 0
        self.end_reason = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._hello)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "connection closed")

    def _end(self, reason: str) -> None:
        if not self.end_reason:
            self.end_reason = reason
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream ended before a message: {reason}"))
        if not self.ended.done():
            self.ended.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        got_data = False
        while n - pos >= 9:
            ln = int.from_bytes(buf[pos : pos + 3], "big")
            end = pos + 9 + ln
            if end > n:
                break
            ftype = buf[pos + 3]
            flags = buf[pos + 4]
            if ftype == _DATA:
                start = pos + 9
                stop = end
                if flags & _PADDED:
                    stop -= buf[start]
                    start += 1
                self._msg += buf[start:stop]
                self._unacked += ln
                got_data = True
                if flags & _END_STREAM:
                    self._end("end of stream")
            else:
                self._control(ftype, flags, bytes(buf[pos + 9 : end]))
            pos = end
        del buf[:pos]
        if got_data:
            self._messages(now)
        if self._unacked >= _WINDOW // 2 and self.transport is not None:
            inc = self._unacked.to_bytes(4, "big")
            self.transport.write(_frame(8, 0, 0, inc) + _frame(8, 0, 1, inc))
            self._unacked = 0

    def _messages(self, now: int) -> None:
        msg = self._msg
        n = len(msg)
        pos = 0
        count = 0
        while n - pos >= 5:
            end = pos + 5 + _U32(msg, pos + 1)[0]
            if end > n:
                break
            pos = end
            count += 1
        if count:
            self.messages += count
            self.events += self._tally.feed(msg, pos, now, self._sample)
            del msg[:pos]
            if not self.ready.done():
                self.ready.set_result(None)

    def _control(self, ftype: int, flags: int, payload: bytes) -> None:
        assert self.transport is not None
        if ftype == _SETTINGS and not flags & _ACK:
            self.transport.write(_frame(_SETTINGS, _ACK, 0, b""))
        elif ftype == _PING and not flags & _ACK:
            self.transport.write(_frame(_PING, _ACK, 0, payload))
        elif ftype == _HEADERS and flags & _END_STREAM:
            self._end("trailers")
        elif ftype == _RST:
            self._end(f"RST_STREAM {int.from_bytes(payload[:4], 'big')}")
        elif ftype == _GOAWAY:
            self._end(f"GOAWAY {int.from_bytes(payload[4:8], 'big')}")

    def unread_bytes(self) -> int:
        """Bytes waiting in this socket's kernel receive buffer (FIONREAD)."""
        return unread_bytes(self.transport)

    def is_over(self) -> bool:
        """True once the stream ended (trailers, reset, GOAWAY) or the connection did."""
        return self.ended.done()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
