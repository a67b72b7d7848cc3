"""Pins the aiohttp internals that :mod:`bridge.writer`, :mod:`bridge.masking` and
:mod:`bridge.http_guard` rely on, against a real server: an aiohttp upgrade that
changes them fails here, loudly."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_websocket import WebSocketError, WebSocketWriter
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from bridge.frames import text_frame
from bridge.writer import Writer
from tests.http_helpers import serving

TIMEOUT = 10.0


def test_the_protocol_has_the_flag_and_the_drain_helper() -> None:
    assert isinstance(inspect.getattr_static(BaseProtocol, "writing_paused"), property)
    assert inspect.iscoroutinefunction(BaseProtocol._drain_helper)


async def test_writer_sees_a_full_transport_and_its_drain() -> None:
    results: dict[str, object] = {}
    done = asyncio.Event()
    paused = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        writer = Writer(request)
        chunk = text_frame(b"x" * 60_000)
        for _ in range(2000):  # up to 120 MB: far more than the socket buffers hold
            writer.write(chunk)
            if writer.paused:
                break
        results["paused"] = writer.paused
        results["stalled_since"] = writer.stalled_since
        paused.set()
        await asyncio.wait_for(writer.drained(), TIMEOUT)
        results["after_drain"] = (writer.paused, writer.stalled_since)
        done.set()
        writer.abort()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    async with serving(app) as port:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await asyncio.wait_for(paused.wait(), TIMEOUT)
        assert results["paused"] is True
        assert isinstance(results["stalled_since"], float)
        writer.transport.resume_reading()  # type: ignore[attr-defined]

        async def read_until_done() -> None:
            while not done.is_set() and await reader.read(1 << 20):
                pass

        await asyncio.wait_for(read_until_done(), TIMEOUT)
        assert results["after_drain"] == (False, None)
        writer.close()
        sock.close()


# --- bridge.http_guard: the keep-alive timer bounds the wait for a request head -------

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
#: A masked text frame "hi", as a client sends it.
MASKED_HI = b"\x81\x82\x00\x00\x00\x00hi"


@contextlib.asynccontextmanager
async def keepalive_server(app: web.Application, keepalive_timeout: float) -> AsyncIterator[int]:
    runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _closed_after(reader: asyncio.StreamReader, start: float) -> float:
    async with asyncio.timeout(TIMEOUT):
        while await reader.read(1024):
            pass
    return asyncio.get_running_loop().time() - start


async def test_the_keepalive_timer_cuts_off_a_head_that_never_completes() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    loop = asyncio.get_running_loop()
    async with keepalive_server(app, 0.5) as port:
        # nothing at all
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert 0.4 <= await _closed_after(reader, loop.time()) <= 1.5
        writer.close()
        # bytes that keep coming do not postpone it
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = loop.time()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa":
                    writer.write(bytes((byte,)))
                    await writer.drain()
                    await asyncio.sleep(0.1)

        task = asyncio.create_task(trickle())
        try:
            assert 0.4 <= await _closed_after(reader, start) <= 1.5
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            writer.close()


async def test_the_keepalive_timer_spares_an_upgraded_websocket() -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    async with keepalive_server(app, 0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(UPGRADE)
            async with asyncio.timeout(TIMEOUT):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
            await asyncio.sleep(1.0)
            writer.write(MASKED_HI)
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(4) == b"\x81\x02hi"
        finally:
            writer.close()


# --- bridge.masking: how the reader is installed, fed, and failed --------------------


def test_the_reader_is_installed_by_post_start() -> None:
    params = list(inspect.signature(web.WebSocketResponse._post_start).parameters)
    assert params == ["self", "request", "protocol", "writer"]
    slots = RequestHandler.__slots__
    assert "_message_tail" in slots
    assert "_payload_parser" in slots
    assert callable(web.WebSocketResponse._set_closed)
    for name in ("_close_code", "_exception", "_reader"):
        assert hasattr(web.WebSocketResponse, name)


async def test_post_start_writes_after_the_101_and_feeds_the_reader_the_early_bytes() -> None:
    seen: dict[str, object] = {}

    class Probe(web.WebSocketResponse):
        def _post_start(
            self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
        ) -> None:
            handler = request.protocol
            seen["tail"] = handler._message_tail
            assert request.transport is not None
            request.transport.write(b"MARK")  # lands after the 101
            super()._post_start(request, protocol, writer)
            seen["installed"] = handler._payload_parser is self._parser
            seen["tail_after"] = handler._message_tail

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = Probe()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(UPGRADE + MASKED_HI)  # a frame along with the handshake
            async with asyncio.timeout(TIMEOUT):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
                assert await reader.readexactly(4) == b"MARK"
                assert await reader.readexactly(4) == b"\x81\x02hi"  # the reader got it
        finally:
            writer.close()
    assert seen == {"tail": MASKED_HI, "installed": True, "tail_after": b""}


async def test_data_received_feeds_the_payload_parser_and_stops_at_eof() -> None:
    fed: list[bytes] = []
    got = asyncio.Event()
    ended = asyncio.Event()
    done = asyncio.Event()

    class Recorder:
        def feed_data(self, data: bytes) -> tuple[bool, bytes]:
            fed.append(data)
            got.set()
            return True, b""  # eof: the handler reads no more

        def feed_eof(self) -> None:
            ended.set()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        request.protocol._payload_parser = Recorder()
        await done.wait()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(UPGRADE)
            async with asyncio.timeout(TIMEOUT):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"first")
                await got.wait()
                writer.write(b"second")
                await asyncio.sleep(0.2)
                assert fed == [b"first"]
                writer.close()
                await ended.wait()  # connection_lost ends the parser
        finally:
            done.set()
            writer.close()


async def test_receive_reports_a_queued_error_once_closed_and_sends_nothing() -> None:
    results: list[object] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        waiting = asyncio.create_task(ws.receive())
        await asyncio.sleep(0)  # now it waits on the queue
        error = WebSocketError(WSCloseCode.PROTOCOL_ERROR, "test")
        ws._set_closed()
        ws._close_code = WSCloseCode.PROTOCOL_ERROR
        ws._exception = error
        assert ws._reader is not None
        ws._reader.set_exception(error)
        msg = await waiting
        results.append((msg.type, msg.data is error))
        results.append((await ws.receive()).type)  # not waiting: closed
        results.append((ws.closed, ws.close_code, ws.exception() is error))
        results.append(await ws.close())  # nothing left to send
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(UPGRADE)
            async with asyncio.timeout(TIMEOUT):
                await reader.readuntil(b"\r\n\r\n")
                assert await reader.read() == b""  # no close frame, then EOF
        finally:
            writer.close()
    assert results == [
        (WSMsgType.ERROR, True),
        WSMsgType.CLOSED,
        (True, WSCloseCode.PROTOCOL_ERROR, True),
        False,
    ]
