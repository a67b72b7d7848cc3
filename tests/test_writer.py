"""What the bridge has in flight for a socket: the kernel's send buffer, the write
chunk that adapts to the reader, and writes (pings included) that fill the
transport. Real core and bridge on loopback, raw client sockets whose reading the
test controls."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bridge.app import WRITE_CHUNK, BridgeNode
from bridge.connection import MIN_CHUNK, Connection
from bridge.writer import SPACING, Flusher
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from tests.conftest import StartBridge
from tests.events import package
from tests.grpc_helpers import publish
from tests.waiting import eventually

_UPGRADE = (
    "GET /ws/packages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)
_SSE = "GET /sse?topics=package_updates HTTP/1.1\r\nHost: x\r\n\r\n"


@asynccontextmanager
async def raw_socket(
    bridge: BridgeNode, request: str, rcvbuf: int = 4096, limit: int = 2**22
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, Connection]]:
    """A client socket with a small receive buffer that sent ``request``, its
    response head read, and the bridge's connection for it. The reader buffers up
    to about twice ``limit`` bytes before it stops taking from the socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", bridge.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    before = set(bridge.bridge.connections)
    writer.write(request.format(port=bridge.port).encode())
    await writer.drain()
    async with asyncio.timeout(10):
        await reader.readuntil(b"\r\n\r\n")

    async def registered() -> Connection | None:
        new = set(bridge.bridge.connections) - before
        return bridge.bridge.connections[new.pop()] if new else None

    conn = await eventually(registered)
    try:
        yield reader, writer, conn
    finally:
        writer.close()


async def read_all(reader: asyncio.StreamReader, until: bytes, within: float = 20) -> bytes:
    """Read until ``until`` has arrived (bounded)."""
    got = b""
    async with asyncio.timeout(within):
        while until not in got:
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
    return got


def sndbuf(conn: Connection) -> int:
    transport = conn.writer._transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


@pytest.mark.parametrize("path", ["ws", "sse"])
async def test_each_socket_gets_the_configured_send_buffer(
    core: object, start_bridge: StartBridge, path: str
) -> None:
    address = core.address  # type: ignore[attr-defined]
    bounded = await start_bridge(address, socket_send_buffer=32 * 1024)
    autotuned = await start_bridge(address, socket_send_buffer=0)
    request = (
        _UPGRADE if path == "ws" else "GET /sse?topics=package_updates HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with raw_socket(bounded, request) as (_, _, conn):
        # Linux doubles what is asked (for its own bookkeeping).
        assert 32 * 1024 <= sndbuf(conn) <= 2 * 32 * 1024
    async with raw_socket(autotuned, request) as (_, _, conn):
        assert sndbuf(conn) > 2 * 32 * 1024  # the kernel's default, left alone


async def test_the_write_chunk_shrinks_for_a_slow_reader_and_grows_back_for_a_fast_one(
    core: object, stub: sgrpc.RealtimeServiceAsyncStub, start_bridge: StartBridge
) -> None:
    bridge = await start_bridge(
        core.address,  # type: ignore[attr-defined]
        socket_send_buffer=8 * 1024,
        send_queue_bytes=64 * 1024 * 1024,
    )
    # A small reader buffer: the client takes from its socket only what it reads.
    async with raw_socket(bridge, _UPGRADE, limit=4096) as (reader, writer, conn):
        assert conn._chunk == WRITE_CHUNK
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        for n in range(8):  # 8 x 50 events of ~2 kB: writes fill the transport
            await publish(stub, *(package(f"p{n}-{i}", location="x" * 2000) for i in range(50)))
        chunks: list[int] = []  # the chunk at every loop turn

        async def watch() -> None:
            while True:
                chunks.append(conn._chunk)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        writer.transport.resume_reading()  # type: ignore[attr-defined]
        # Reading slowly (~400 kB/s, 300 of the 800 kB): writes fill the transport
        # again and again, and shrink.
        slowly = b""
        try:
            async with asyncio.timeout(20):
                while len(slowly) < 300_000:
                    slowly += await reader.read(4096)
                    await asyncio.sleep(0.01)
        finally:
            watcher.cancel()
        assert min(chunks) == MIN_CHUNK
        # Then reading fast: everything arrives (what was read slowly included).
        got = slowly + await read_all(reader, b"p7-49")
        assert got.count(b'"type":"package_update"') == 400

        async def grown() -> bool | None:
            return conn._chunk == WRITE_CHUNK or None

        async def pump() -> None:
            for n in range(20):
                await publish(stub, *(package(f"q{n}-{i}") for i in range(20)))

        async def drain() -> None:
            await read_all(reader, b"q19-19")

        await asyncio.gather(pump(), drain())
        await eventually(grown)


@pytest.mark.parametrize("path", ["ws", "sse"])
async def test_a_ping_that_fills_the_transport_does_not_stop_the_socket(
    core: object, stub: sgrpc.RealtimeServiceAsyncStub, start_bridge: StartBridge, path: str
) -> None:
    """A keepalive write can be the one that crosses the transport's high-water mark;
    the socket must be flushed again once it drains (not left paused until it is
    closed as a slow consumer)."""
    bridge = await start_bridge(
        core.address,  # type: ignore[attr-defined]
        ping_interval=0.3,
        slow_timeout=3,
        socket_send_buffer=4096,
    )
    request = (
        _UPGRADE if path == "ws" else "GET /sse?topics=package_updates HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with raw_socket(bridge, request) as (reader, writer, conn):
        alive = asyncio.create_task(_pong_now_and_then(writer)) if path == "ws" else None
        transport = conn.writer._transport
        assert transport is not None
        transport.set_write_buffer_limits(high=10 * 2**20)  # nothing pauses it, for now
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        await publish(stub, *(package(f"p{i}", location="x" * 1000) for i in range(60)))

        async def settled() -> int | None:
            """The transport's buffer once the kernel takes no more of it."""
            size = transport.get_write_buffer_size()
            await asyncio.sleep(0.1)
            return size if size > 10_000 and size == transport.get_write_buffer_size() else None

        size = await eventually(settled)
        transport.set_write_buffer_limits(high=size + 1, low=0)  # the next ping crosses it

        async def paused() -> bool | None:
            return conn.writer.stalled_since is not None or None

        await eventually(paused)
        transport.set_write_buffer_limits()  # back to the defaults
        writer.transport.resume_reading()  # type: ignore[attr-defined]
        await publish(stub, *(package(f"q{i}") for i in range(5)))
        got = await read_all(reader, b'"q4"')
        assert got.count(b'"type":"package_update"') == 65
        assert bridge.bridge.slow_closed == 0
        if alive is not None:
            alive.cancel()


async def _pong_now_and_then(writer: asyncio.StreamWriter) -> None:
    """Keep a raw WebSocket client alive without reading: unsolicited masked pongs
    (the bridge counts any frame as a sign of life)."""
    while True:
        writer.write(b"\x8a\x80\x00\x00\x00\x00")
        await asyncio.sleep(0.1)


# --- the flusher's rounds (plain calls, no sockets) ------------------------------------


class _Socket:
    """A Flushable whose write takes ``busy`` seconds of CPU (a spin, as a round of
    thousands of writes would) and records when each round wrote it."""

    def __init__(self, busy: float) -> None:
        self.busy = busy
        self.rounds: list[float] = []
        self.done = asyncio.Event()

    def flush(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.rounds.append(start)
        while loop.time() - start < self.busy:
            pass
        self.done.set()

    def flush_failed(self, exc: Exception) -> None:
        raise AssertionError(exc)

    async def round(self, flusher: Flusher) -> float:
        """Mark it, and return when the round that wrote it started."""
        self.done.clear()
        flusher.mark(self)
        async with asyncio.timeout(5):
            await self.done.wait()
        return self.rounds[-1]


async def test_a_long_round_spaces_the_next_one_out_and_a_short_one_brings_it_back() -> None:
    flusher = Flusher(0.005)
    slow = _Socket(busy=0.03)
    first = await slow.round(flusher)
    assert flusher.gap >= 2 * 0.03  # SPACING times the round's length
    assert SPACING == 2.0
    second = await slow.round(flusher)
    slack = 0.005  # timers may fire up to a clock tick early
    assert second - first >= 2 * 0.03 - slack
    slow.busy = 0.0
    third = await slow.round(flusher)
    assert third - second >= 2 * 0.03 - slack  # the slow round's gap still applied once
    assert flusher.gap == 0.005  # a quick round: back to the interval


async def test_without_an_interval_rounds_are_never_spaced() -> None:
    flusher = Flusher(0)
    slow = _Socket(busy=0.02)
    await slow.round(flusher)
    assert flusher.gap == 0
    flusher.mark(slow)
    # The next loop turn (a plain handle), not a timer 2 x 20 ms later.
    assert flusher._handle is not None
    assert not isinstance(flusher._handle, asyncio.TimerHandle)
    await slow.round(flusher)
    assert len(slow.rounds) == 2  # marked twice before its round: written once
