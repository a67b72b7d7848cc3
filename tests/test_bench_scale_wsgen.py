"""The C load generator (bench/loadgen/c/wsgen.c) against a scripted server on port 0:
its position accounting (gaps, duplicates), pongs, markers, close codes, and the web
client's reconnect behaviour (backoff, ``?since=``, refusals counted, giving up)."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bench.loadgen.cgen import GenGroup, build_wsgen

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


@pytest.fixture(scope="module")
def wsgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wsgen(tmp_path_factory.mktemp("build"))


def frame(opcode: int, payload: bytes) -> bytes:
    """A server frame (FIN, unmasked)."""
    n = len(payload)
    if n < 126:
        return bytes([0x80 | opcode, n]) + payload
    return bytes([0x80 | opcode, 126]) + struct.pack("!H", n) + payload


def text(obj: object) -> bytes:
    return frame(0x1, json.dumps(obj, separators=(",", ":")).encode())


def event(offset: int, epoch: str = "ep1", stamp: int | None = None) -> bytes:
    location = "Chicago" if stamp is None else f"bench-t={stamp:019d} Chicago"
    return text(
        {
            "type": "package_update",
            "subscription_type": "package_updates",
            "position": {"offset": offset, "epoch": epoch},
            "data": {"location": location},
        }
    )


WELCOME = text({"type": "welcome", "data": {"subscriptions": ["package_updates"]}})


async def client_frame(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(opcode, masked, unmasked payload) of the next client frame."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(n)
    return b0 & 0x0F, bool(b1 & 0x80), bytes(b ^ mask[i & 3] for i, b in enumerate(data))


class Server:
    """Runs one script per incoming connection, in order; records each request head."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.requests: list[str] = []
        self.done = asyncio.Event()
        self.errors: list[BaseException] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.requests.append(head.decode().split("\r\n", 1)[0])
            script = self.scripts.pop(0)
            await asyncio.wait_for(script(reader, writer), 10)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            if not self.scripts:
                self.done.set()
            writer.close()


Serve = Callable[[list[Script]], Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(scripts: list[Script]) -> Server:
        s = Server(scripts)
        server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        s.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return s

    yield start
    for server in servers:
        server.close()


def args(port: int, **extra: object) -> list[str]:
    base: dict[str, object] = {"host": "127.0.0.1", "port": port, "n": 1, "report_ms": 20}
    return [f"{k}={v}" for k, v in {**base, **extra}.items()]


async def test_idle_client_accounts_for_every_frame(wsgen: Path, serve: Serve) -> None:
    pong: list[tuple[int, bool, bytes]] = []
    close: list[tuple[int, bool, bytes]] = []
    stamp = time.time_ns()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK + WELCOME + event(1) + event(2) + event(2) + event(5, stamp=stamp))
        writer.write(event(6) + frame(0x9, b"hi"))
        pong.append(await client_frame(reader))
        writer.write(frame(0x8, (1001).to_bytes(2, "big") + b"going away"))
        close.append(await client_frame(reader))

    server = await serve([script])
    async with GenGroup(wsgen, [args(server.port, mode="idle", path="/ws/packages")]) as gens:
        await asyncio.wait_for(server.done.wait(), 10)
        ended, _ = await gens.wait_for(lambda p: p["ended"] == 1, 10)
        assert ended
        [report] = await gens.stop(10)
    assert not server.errors
    assert server.requests == ["GET /ws/packages HTTP/1.1"]
    assert pong == [(0xA, True, b"hi")]  # answered, masked (RFC 6455 5.1)
    assert close == [(0x8, True, (1001).to_bytes(2, "big"))]
    assert report["welcomed"] == 1
    assert report["events"] == 5
    assert report["duplicates"] == 1
    assert (report["gaps"], report["gap_events"]) == (1, 2)
    assert report["clients_with_gaps"] == report["clients_with_duplicates"] == 1
    assert report["last_offsets"] == [[6, 1]]
    assert report["markers"] == 1
    [[marker_ms, count]] = report["marker_ms"]
    assert count == 1
    assert 0 <= marker_ms < 10_000
    assert report["pings"] == 1
    assert report["close_codes"] == {"1001": 1}
    assert report["open_now"] == 0
    assert report["lost"] == 1


async def test_storm_client_backs_off_and_resumes_with_since(wsgen: Path, serve: Serve) -> None:
    lost_at: list[float] = []
    back_at: list[float] = []

    async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK + WELCOME + event(1) + event(2) + event(3))
        await writer.drain()
        await asyncio.wait_for(kill_sent.wait(), 5)
        lost_at.append(time.monotonic())  # the connection ends: the client lost it

    async def refused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    async def resumed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        back_at.append(time.monotonic())
        subscribed = {"type": "subscribed", "data": {"subscription_type": "package_updates",
                      "recovered": True, "position": {"offset": 3, "epoch": "ep1"}}}  # fmt: skip
        writer.write(OK + WELCOME + text(subscribed) + event(4) + event(5, stamp=time.time_ns()))
        await writer.drain()
        await asyncio.sleep(5)  # stays open until the client is stopped

    kill_sent = asyncio.Event()
    # Refused at first (attempt 1), then heard: attempts restart at 1 after that loss.
    server = await serve([refused, first, refused, resumed])
    backoff = {"initial_ms": 200, "factor": 2, "jitter": 0, "max_attempts": 3}
    share = args(server.port, mode="storm", path="/ws/packages", **backoff)
    async with GenGroup(wsgen, [share]) as gens:
        assert (await gens.wait_for(lambda p: p["positioned"] == 1, 10))[0]
        gens.broadcast(f"kill {time.time_ns()}")
        gens.broadcast(f"live {time.time_ns()}")
        await asyncio.sleep(0.1)  # the commands reach the client before the loss
        kill_sent.set()
        done, progress = await gens.wait_for(lambda p: p["live"] == 1, 10)
        assert done, progress
        [report] = await gens.stop(10)
    assert not server.errors
    assert server.requests == [
        "GET /ws/packages HTTP/1.1",
        "GET /ws/packages HTTP/1.1",
        "GET /ws/packages?since=package_updates:ep1:3 HTTP/1.1",
        "GET /ws/packages?since=package_updates:ep1:3 HTTP/1.1",
    ]
    # attempt 1 waits 200 ms, attempt 2 (after the 503) 400 ms: no jitter
    assert 0.6 <= back_at[0] - lost_at[0] < 2.0
    assert report["http_status"] == {"503": 2}
    assert report["back_attempts"] == [[2, 1]]
    assert report["recovered_true"] == 1
    assert len(report["back_ms"]) == len(report["resumed_ms"]) == len(report["live_ms"]) == 1
    assert report["duplicates"] == report["gap_events"] == 0
    assert report["last_offsets"] == [[5, 1]]
    assert report["never_back"] == report["gave_up"] == 0


async def test_storm_client_gives_up_after_its_attempts(wsgen: Path, serve: Serve) -> None:
    async def refused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")

    server = await serve([refused, refused, refused])
    share = args(server.port, mode="storm", initial_ms=20, jitter=0, max_attempts=2)
    async with GenGroup(wsgen, [share]) as gens:
        gave_up, progress = await gens.wait_for(lambda p: p["failed"] == 1, 10)
        assert gave_up, progress
        [report] = await gens.stop(10)
    assert len(server.requests) == 3  # the first try and two reconnection attempts
    assert report["http_status"] == {"429": 3}
    assert report["gave_up"] == 1
    assert report["welcomed"] == 0


async def test_recovered_false_moves_the_position(wsgen: Path, serve: Serve) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gap = {"type": "subscribed", "data": {"recovered": False, "reason": "history_trimmed",
               "position": {"offset": 40, "epoch": "ep1"}}}  # fmt: skip
        writer.write(OK + WELCOME + event(1) + text(gap) + event(41))
        await writer.drain()
        await asyncio.sleep(5)

    server = await serve([script])
    async with GenGroup(wsgen, [args(server.port, mode="idle")]) as gens:
        assert (await gens.wait_for(lambda p: p["max_offset"] == 41, 10))[0]
        [report] = await gens.stop(10)
    assert report["recovered_false"] == 1
    assert report["gap_events"] == 0  # told, not silent: not counted as missed
    assert report["last_offsets"] == [[41, 1]]


async def test_idle_client_with_retry_opens_once_then_stays_ended(
    wsgen: Path, serve: Serve
) -> None:
    async def refused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    async def opened(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK + WELCOME + event(1))
        await writer.drain()  # then the server ends it: W4 does not reopen it

    server = await serve([refused, opened])
    share = args(server.port, mode="idle", retry=1, initial_ms=20, jitter=0, max_attempts=3)
    async with GenGroup(wsgen, [share]) as gens:
        ended, progress = await gens.wait_for(lambda p: p["ended"] == 1, 10)
        assert ended, progress
        await asyncio.sleep(0.2)  # no third attempt comes
        [report] = await gens.stop(10)
    assert len(server.requests) == 2
    assert report["attempts"] == 2
    assert report["welcomed"] == 1
    assert report["http_status"] == {"503": 1}
    assert report["gave_up"] == 0
