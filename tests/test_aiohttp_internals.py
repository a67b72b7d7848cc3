"""Pins the aiohttp internals that :mod:`bridge.writer` relies on, against a real
server: an aiohttp upgrade that changes them fails here, loudly."""

from __future__ import annotations

import asyncio
import inspect
import socket

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol

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
