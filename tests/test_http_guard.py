"""bridge/http_guard.py and bridge/masking.py: against a real aiohttp server on a
loopback port, as the bridge uses them (a guarded runner, a WebSocket handler on
``MaskedWebSocketResponse``), with raw TCP clients; and :class:`MaskCheck` with bytes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from aiohttp.http_websocket import WebSocketError
from aiohttp.web_protocol import RequestHandler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.http_guard import HEADER_TIMEOUT, guarded_runner
from bridge.masking import REASON, MaskCheck, MaskedWebSocketResponse
from tests.waiting import eventually

TIMEOUT = 10.0
#: The head timeout of the servers here: short, so the tests are quick.
SHORT = 1.0
#: Payload sizes at every boundary of the frame length encoding.
SIZES = (0, 125, 126, 65535, 65536)
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
KEY = b"\x37\xfa\x21\x3d"


# --- frames, as a client sends them and as the server's are read ------------------------


def frame(payload: bytes, *, opcode: int = 0x2, mask: bytes | None = KEY) -> bytes:
    """A whole frame with FIN set; masked with ``mask`` unless it is None."""
    size = len(payload)
    bit = 0x80 if mask is not None else 0
    if size < 126:
        header = bytes((0x80 | opcode, bit | size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, bit | 127, size)
    if mask is None:
        return header + payload
    return header + mask + bytes(a ^ b for a, b in zip(payload, itertools.cycle(mask)))


def pattern(size: int) -> bytes:
    """A payload that, masked with ``KEY``, is unmasked frame headers on the wire: a
    check that lost the frame boundaries would find one in it."""
    wire = (b"\x81\x05" * (size // 2 + 1))[:size]
    return bytes(a ^ b for a, b in zip(wire, itertools.cycle(KEY)))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame from the server: its opcode and payload."""
    first, second = await reader.readexactly(2)
    assert not second & 0x80, "a server's frames are not masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def expect_failed(reader: asyncio.StreamReader) -> None:
    """The server's close frame is 1002 with our reason, and then the server closes TCP."""
    async with asyncio.timeout(TIMEOUT):
        opcode, payload = await read_frame(reader)
        assert opcode == WSMsgType.CLOSE
        assert struct.unpack("!H", payload[:2])[0] == WSCloseCode.PROTOCOL_ERROR
        assert payload[2:].decode() == REASON
        assert await reader.read() == b""


# --- the server -------------------------------------------------------------------------


@dataclass
class Seen:
    """What the server's WebSocket handler saw: every message it received, and for
    each socket that ended, its ``close_code`` and ``exception()``."""

    received: list[WSMessage] = field(default_factory=list)
    ended: list[tuple[int | None, BaseException | None]] = field(default_factory=list)


def make_app() -> tuple[web.Application, Seen]:
    """``GET /`` says ok; ``GET /ws`` echoes each message on a ``MaskedWebSocketResponse``."""
    seen = Seen()

    async def plain(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = MaskedWebSocketResponse(autoping=False, compress=False)
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            seen.received.append(msg)
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            with contextlib.suppress(ConnectionError):  # failed while it echoed
                await ws.send_frame(
                    msg.data.encode() if isinstance(msg.data, str) else msg.data, msg.type
                )
        seen.ended.append((ws.close_code, ws.exception()))
        return ws

    app = web.Application()
    app.router.add_get("/", plain)
    app.router.add_get("/ws", echo)
    return app, seen


def failed_as_unmasked(ended: tuple[int | None, BaseException | None]) -> bool:
    """Whether a socket ended as the check fails one."""
    code, exc = ended
    return (
        code == WSCloseCode.PROTOCOL_ERROR
        and isinstance(exc, WebSocketError)
        and exc.code == WSCloseCode.PROTOCOL_ERROR
        and str(exc) == REASON
    )


async def ended(seen: Seen, count: int) -> None:
    """Wait (bounded) until ``count`` sockets ended."""

    async def enough() -> bool:
        return len(seen.ended) >= count

    await eventually(enough)


@asynccontextmanager
async def serving(
    app: web.Application, header_timeout: float = SHORT
) -> AsyncIterator[tuple[web.AppRunner, int]]:
    """Serve ``app`` on a guarded runner on 127.0.0.1 until the block ends."""
    runner = guarded_runner(app, header_timeout=header_timeout, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner, runner.addresses[0][1]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw TCP connection to the server, closed when the block ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: bytes) -> None:
    """Send the handshake, and ``extra`` in the same write; read the 101."""
    writer.write(UPGRADE + extra)
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head


async def read_eof_after(reader: asyncio.StreamReader, start: float) -> float:
    """Seconds from ``start`` until the server closed the connection (bounded)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(SHORT + 1):
        while await reader.read(1024):
            pass
    return loop.time() - start


def live_handler_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers the loop will still run that belong to an aiohttp connection."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    count = 0
    for handle in scheduled:
        owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
        if not handle.cancelled() and isinstance(owner, RequestHandler):
            count += 1
    return count


async def no_connections(runner: web.AppRunner) -> None:
    """Wait (bounded) until the server has no connection left."""

    async def none_left() -> bool:
        return runner.server is not None and not runner.server.connections

    await eventually(none_left)


# --- http_guard -------------------------------------------------------------------------


def test_the_default_and_bad_values() -> None:
    assert HEADER_TIMEOUT == 5.0
    app = web.Application()
    with pytest.raises(ValueError, match="positive"):
        guarded_runner(app, header_timeout=0)
    with pytest.raises(TypeError, match="keepalive_timeout"):
        guarded_runner(app, keepalive_timeout=60)


async def test_a_head_trickled_byte_by_byte_is_cut_off() -> None:
    app, _ = make_app()
    async with serving(app) as (_, port), connection(port) as (reader, writer):
        start = asyncio.get_running_loop().time()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                    writer.write(bytes((byte,)))
                    await writer.drain()
                    await asyncio.sleep(0.5)

        task = asyncio.create_task(trickle())
        try:
            elapsed = await read_eof_after(reader, start)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert SHORT - 0.1 <= elapsed <= SHORT + 1


async def test_a_client_that_sends_nothing_is_cut_off() -> None:
    app, _ = make_app()
    async with serving(app) as (_, port), connection(port) as (reader, _):
        elapsed = await read_eof_after(reader, asyncio.get_running_loop().time())
    assert SHORT - 0.1 <= elapsed <= SHORT + 1


async def test_a_get_is_served_and_an_idle_keep_alive_connection_is_closed() -> None:
    app, _ = make_app()
    async with serving(app) as (_, port):
        async with (
            aiohttp.ClientSession() as session,
            asyncio.timeout(TIMEOUT),
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert response.status == 200
            assert await response.text() == "ok"
        async with connection(port) as (reader, writer):
            for _ in range(2):  # the second on the kept-alive connection
                writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                async with asyncio.timeout(TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 "), head
                    assert await reader.readexactly(2) == b"ok"
            elapsed = await read_eof_after(reader, asyncio.get_running_loop().time())
    assert SHORT - 0.1 <= elapsed <= SHORT + 1


async def test_a_websocket_outlives_the_head_timeout() -> None:
    app, _ = make_app()
    async with serving(app) as (_, port), aiohttp.ClientSession() as session:
        async with asyncio.timeout(TIMEOUT):
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                await asyncio.sleep(SHORT + 0.5)
                await ws.send_str("still here")
                assert await ws.receive_str() == "still here"


async def open_many(
    port: int, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` raw connections, opened 100 at a time (within the listen backlog)."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(0, count, 100):
        conns += await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(100))
        )
    return conns


async def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)


async def accepted(runner: web.AppRunner, count: int) -> None:
    """Wait (bounded) until the server holds ``count`` connections."""

    async def all_there() -> bool:
        return runner.server is not None and len(runner.server.connections) == count

    await eventually(all_there)


async def test_thousand_idle_connections_are_closed_and_leave_no_timer() -> None:
    app, _ = make_app()
    loop = asyncio.get_running_loop()
    async with serving(app, header_timeout=2.0) as (runner, port):
        conns = await open_many(port, 1000)
        try:
            await accepted(runner, 1000)
            assert live_handler_timers(loop) == 1000  # aiohttp's, one per connection
            async with asyncio.timeout(TIMEOUT):  # the guard closes every one
                assert await asyncio.gather(*(r.read() for r, _ in conns)) == [b""] * 1000
            await no_connections(runner)
            assert live_handler_timers(loop) == 0
        finally:
            await close_all(conns)


async def test_thousand_connections_their_clients_close_leave_no_timer() -> None:
    app, _ = make_app()
    loop = asyncio.get_running_loop()
    async with serving(app, header_timeout=60) as (runner, port):
        for _ in range(10):
            conns = await open_many(port, 100)
            await accepted(runner, 100)
            assert live_handler_timers(loop) == 100
            async with asyncio.timeout(TIMEOUT):
                await close_all(conns)
            await no_connections(runner)
            assert live_handler_timers(loop) == 0  # cancelled as each connection closed


# --- masking, end to end ----------------------------------------------------------------


async def test_an_unmasked_frame_gets_1002_and_the_server_serves_others() -> None:
    app, seen = make_app()
    async with serving(app) as (_, port):
        async with connection(port) as (reader, writer):
            await upgrade(reader, writer, b"")
            writer.write(frame(b"hello", opcode=0x1, mask=None))
            await expect_failed(reader)
        await ended(seen, 1)
        [msg] = seen.received  # the handler was waiting: it gets the error
        assert msg.type is WSMsgType.ERROR
        assert msg.data is seen.ended[0][1]
        assert failed_as_unmasked(seen.ended[0])
        async with (
            aiohttp.ClientSession() as session,
            asyncio.timeout(TIMEOUT),
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            await ws.send_str("next")
            assert await ws.receive_str() == "next"


async def test_frames_before_the_unmasked_one_are_delivered_and_none_after() -> None:
    app, seen = make_app()
    async with serving(app) as (_, port), connection(port) as (reader, writer):
        await upgrade(reader, writer, b"")
        writer.write(
            frame(b"one", opcode=0x1)
            + frame(b"two", opcode=0x1, mask=None)
            + frame(b"three", opcode=0x1)
        )
        await expect_failed(reader)
        await ended(seen, 1)
    # The handler was echoing "one" when the socket failed: it then finds it closed.
    assert [(m.type, m.data) for m in seen.received] == [
        (WSMsgType.TEXT, "one"),
        (WSMsgType.CLOSED, None),
    ]
    assert failed_as_unmasked(seen.ended[0])


@pytest.mark.parametrize(
    ("early", "masked"), [(frame(b"early", opcode=0x1), True), (frame(b"early", mask=None), False)]
)
async def test_frames_sent_with_the_handshake_are_checked(early: bytes, masked: bool) -> None:
    app, seen = make_app()
    async with serving(app) as (_, port), connection(port) as (reader, writer):
        await upgrade(reader, writer, early)
        if masked:
            async with asyncio.timeout(TIMEOUT):
                assert await read_frame(reader) == (WSMsgType.TEXT, b"early")
        else:
            await expect_failed(reader)
            await ended(seen, 1)
            assert failed_as_unmasked(seen.ended[0])
            assert [m.type for m in seen.received] == [WSMsgType.CLOSED]


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, cuts: list[int]) -> None:
    """Write ``data`` cut at ``cuts``, each piece on its own. The server runs in this
    loop: a few turns of it between writes and it reads each piece as it comes."""
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        if start < end:
            writer.write(data[start:end])
            await writer.drain()
            for _ in range(3):
                await asyncio.sleep(0)


async def echo_in_pieces(port: int, payload: bytes, cuts: list[int]) -> None:
    async with connection(port) as (reader, writer):
        await upgrade(reader, writer, b"")
        await send_in_pieces(writer, frame(payload), cuts)
        async with asyncio.timeout(TIMEOUT):
            assert await read_frame(reader) == (WSMsgType.BINARY, payload)


@pytest.mark.parametrize("size", SIZES)
async def test_a_header_split_byte_by_byte_passes(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    feed = MaskCheck.feed

    def spy(check: MaskCheck, data: bytes) -> int:
        reads.append(len(data))
        return feed(check, data)

    monkeypatch.setattr(MaskCheck, "feed", spy)
    app, seen = make_app()
    payload = pattern(size)
    ones = min(19, len(frame(payload)))  # the header, and the payload's first bytes
    async with serving(app) as (_, port):
        await echo_in_pieces(port, payload, list(range(1, ones + 1)))
    assert reads[:ones] == [1] * ones  # each byte was a read of its own
    assert all(m.type is not WSMsgType.ERROR for m in seen.received)


def test_masked_frames_cut_anywhere_pass_intact() -> None:
    app, seen = make_app()
    with asyncio.Runner() as runner:
        server = serving(app)
        _, port = runner.run(server.__aenter__())
        try:

            @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(st.sampled_from(SIZES), st.data())
            def check(size: int, data: st.DataObject) -> None:
                length = len(frame(pattern(size)))
                cuts = data.draw(st.lists(st.integers(1, length - 1), max_size=8))
                runner.run(echo_in_pieces(port, pattern(size), cuts))

            check()
        finally:
            runner.run(server.__aexit__(None, None, None))
    assert all(m.type is not WSMsgType.ERROR for m in seen.received)


# --- MaskCheck, with bytes --------------------------------------------------------------


def test_mask_check_finds_the_unmasked_header() -> None:
    check = MaskCheck()
    assert check.feed(frame(b"a") + frame(b"b")) == -1
    ok = frame(pattern(126))
    assert check.feed(ok + frame(b"x", mask=None)) == len(ok)
    split = MaskCheck()
    bad = frame(b"x", mask=None)
    assert split.feed(ok + bad[:1]) == -1  # one byte does not tell
    assert split.feed(bad[1:]) == 0  # began in the read before


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from((0, 1, 5, *SIZES))), min_size=1, max_size=4),
    st.data(),
)
def test_mask_check_over_any_split(frames: list[tuple[bool, int]], data: st.DataObject) -> None:
    stream = b""
    first_bad = None
    for is_masked, size in frames:
        if not is_masked and first_bad is None:
            first_bad = len(stream)
        stream += frame(pattern(size), mask=KEY if is_masked else None)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    check = MaskCheck()
    found = None
    for start, end in itertools.pairwise([0, *cuts, len(stream)]):
        at = check.feed(stream[start:end])
        if at >= 0:
            found = (start, end, at)
            break
    if first_bad is None:
        assert found is None
    else:
        # Reported by the read that holds the header's second byte (the one that
        # tells), at the header's start, or at 0 when the header began earlier.
        assert found is not None
        start, end, at = found
        assert start <= first_bad + 1 < end
        assert start + at == max(first_bad, start)
