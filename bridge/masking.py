"""RFC 6455 §5.1 on the bridge's sockets: a client frame that is not masked fails
the connection with 1002 (protocol error).

aiohttp's reader accepts unmasked client frames. :class:`MaskedWebSocketResponse`
is a ``web.WebSocketResponse`` that checks first: every byte the client sends after
its handshake passes :class:`MaskCheck` before aiohttp's reader gets it. At the
first frame header whose mask bit is clear:

- the frames before it are delivered; that frame and every byte after it are not;
- the client gets a close frame, code 1002, reason :data:`REASON`, and the server
  closes the TCP connection (RFC 6455 §7.1.7, "Fail the WebSocket Connection");
- ``ws.closed`` is True (so no other close frame is sent, by aiohttp or the app),
  ``ws.close_code`` is 1002 and ``ws.exception()`` a ``WebSocketError`` with code
  1002; ``receive()`` returns an ``ERROR`` message carrying that error if it was
  waiting, else (as for any closed socket) ``CLOSED``.

:class:`MaskCheck` is the rule and does no I/O: bytes in, "where is the first
unmasked frame" out, across any split of the stream into reads. It costs a few
operations per frame header; a payload is skipped by arithmetic, not read.

The check is installed inside ``prepare()`` rather than after it: a client that
sends frames together with its handshake (before it has seen the 101) has them
handed to aiohttp's reader within ``prepare()``, and a check put in front of the
reader afterwards would miss them and then count frame boundaries from the middle
of a frame.

aiohttp internals this relies on, pinned by ``tests/test_aiohttp_internals.py``:

- ``WebSocketResponse._post_start(request, protocol, writer)`` runs within
  ``prepare()`` once the 101 is written, and installs the reader with
  ``request.protocol.set_parser()``, which first feeds it
  ``RequestHandler._message_tail``: the bytes that came after the handshake;
- ``RequestHandler._payload_parser`` is what ``data_received`` feeds
  (``feed_data(data) -> (eof, tail)``; on eof it stops reading) and what
  ``connection_lost`` ends (``feed_eof()``);
- ``WebSocketResponse._set_closed()``, ``_close_code``, ``_exception`` and
  ``_reader`` (the message queue: ``set_exception``); ``receive()`` turns a
  ``WebSocketError`` from the queue into an ``ERROR`` message, sending nothing once
  closed.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final, Protocol

from aiohttp import WSCloseCode, web
from aiohttp.http_websocket import WebSocketError, WebSocketWriter
from aiohttp.web_request import BaseRequest

__all__ = ["REASON", "MaskCheck", "MaskedWebSocketResponse"]

#: The close reason sent with 1002 when a client frame is not masked.
REASON: Final = "client frames must be masked"

#: The close frame a server sends for :data:`REASON` (FIN, opcode 8, no mask).
_CLOSE_FRAME: Final = (
    bytes((0x88, 2 + len(REASON))) + struct.pack("!H", WSCloseCode.PROTOCOL_ERROR) + REASON.encode()
)

_MASK_BIT: Final = 0x80
_MAX_HEADER: Final = 14  # 2 bytes, 8 of extended length, 4 of mask key


def _header(buf: bytes, at: int) -> tuple[int, int]:
    """The frame header starting at ``buf[at]``: ``(header length, payload length)``;
    ``(0, 0)`` while it is incomplete; ``(-1, 0)`` when it is not masked (known as
    soon as its second byte is there)."""
    have = len(buf) - at
    if have < 2:
        return 0, 0
    second = buf[at + 1]
    if not second & _MASK_BIT:
        return -1, 0
    length = second & 0x7F
    if length < 126:
        return (6, length) if have >= 6 else (0, 0)
    if length == 126:
        return (8, int.from_bytes(buf[at + 2 : at + 4], "big")) if have >= 8 else (0, 0)
    return (14, int.from_bytes(buf[at + 2 : at + 10], "big")) if have >= 14 else (0, 0)


class MaskCheck:
    """Follows the frames of a client's byte stream, however it is split into reads,
    and finds the first frame whose mask bit is clear.

    Feed it every byte the client sends after the handshake, in order; it keeps
    nothing but the payload bytes left to skip and at most 13 bytes of a header
    split across reads.
    """

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._skip = 0  # payload bytes of the current frame not yet seen
        self._head = b""  # the start of a header that a read cut short

    def feed(self, data: bytes) -> int:
        """Take the next read. Returns -1 when every frame header in it (or
        completed by it) is masked; otherwise the index in ``data`` where the
        first unmasked frame's header starts, 0 when it began in an earlier read.
        Once it returned an index the stream is failed: feed it nothing more."""
        at = 0
        end = len(data)
        skip = self._skip
        while True:
            if skip:
                if end - at <= skip:
                    self._skip = skip - (end - at)
                    return -1
                at += skip
                skip = 0
            if at == end:
                self._skip = 0
                return -1
            head = self._head
            if head:
                buf = head + data[at : at + _MAX_HEADER]
                size, skip = _header(buf, 0)
                if size < 0:
                    return 0
                if size == 0:  # everything left fits in the header so far
                    self._head = buf
                    self._skip = 0
                    return -1
                at += size - len(head)
                self._head = b""
            else:
                size, skip = _header(data, at)
                if size < 0:
                    return at
                if size == 0:
                    self._head = data[at:]
                    self._skip = 0
                    return -1
                at += size


class _Parser(Protocol):
    """What aiohttp's ``RequestHandler`` expects of its payload parser."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class _Guard:
    """The connection's payload parser, in front of aiohttp's ``WebSocketReader``."""

    __slots__ = ("_check", "_parser", "_transport", "_ws")

    def __init__(
        self, parser: _Parser, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> None:
        self._parser = parser
        self._ws = ws
        self._transport = transport
        self._check: MaskCheck | None = MaskCheck()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        check = self._check
        if check is None:
            return True, b""  # failed: nothing more is read
        if type(data) is not bytes:  # a proactor loop hands in bytearrays
            data = bytes(data)
        at = check.feed(data)
        if at < 0:
            return self._parser.feed_data(data)
        if at:
            eof, tail = self._parser.feed_data(data[:at])  # the frames before it
            if eof:  # aiohttp failed the connection itself, on one of them
                self._check = None
                return eof, tail
        self._fail()
        return True, b""

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _fail(self) -> None:
        self._check = None
        ws = self._ws
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if not ws.closed:  # a close frame of ours is not already out
                # aiohttp's writer and the bridge's write whole frames from code
                # that does not yield, so this one lands between two frames.
                transport.write(_CLOSE_FRAME)
            transport.close()  # once what is buffered is sent
        error = WebSocketError(WSCloseCode.PROTOCOL_ERROR, REASON)
        ws._set_closed()  # aiohttp sends no close frame of its own from now on
        ws._close_code = WSCloseCode.PROTOCOL_ERROR
        ws._exception = error
        queue = ws._reader
        assert queue is not None  # set by _post_start, before this guard exists
        queue.set_exception(error)  # wakes a receive() that waits


class MaskedWebSocketResponse(web.WebSocketResponse):
    """A ``web.WebSocketResponse`` that fails the connection with 1002 at the
    first client frame that is not masked, as this module's docstring says.
    Everything else is ``web.WebSocketResponse``'s."""

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        handler = request.protocol
        # Bytes that came with the handshake: aiohttp's reader gets them from
        # set_parser() in super()._post_start(); the guard must see them first.
        early, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        guard = _Guard(handler._payload_parser, self, request.transport)
        handler._payload_parser = guard
        if early and guard.feed_data(early)[0]:
            handler.close()  # as data_received does when its parser says eof
