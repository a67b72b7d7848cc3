"""bench's load generator: pure pieces with plain calls, subscribers against a real
aiohttp WebSocket server on port 0, and the server process wrapper."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from bench.events import PLACEHOLDER, newest_stamp, stamp
from bench.loadgen.tally import Tally
from bench.loadgen.worker import least_events
from bench.loadgen.ws_client import WsSubscriber
from bench.loadgen.ws_variants import (
    CatchupWsSubscriber,
    ThrottledWsSubscriber,
    TokenBucket,
    split_frames,
)
from bench.targets.base import Endpoint, ServerProcess, Target, WsSpec
from tests.waiting import eventually

TIMEOUT = 10.0
NS = 1_700_000_000_000_000_000


def test_token_bucket_spends_saves_up_to_its_burst_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=1000, burst=500, now=0.0)
    assert bucket.take(400, now=0.0) == 0.0
    assert bucket.take(600, now=0.0) == pytest.approx(0.5)  # 500 short: half a second
    assert bucket.take(0, now=10.0) == 0.0  # saved up again, but only to the burst
    assert bucket.take(1000, now=10.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must be > 0"):
        TokenBucket(rate=0, burst=1, now=0.0)


def test_split_frames_walks_every_header_length_and_stops_at_a_partial_frame() -> None:
    small, mid, big = b"a" * 5, b"b" * 300, b"c" * 70_000
    wire = (
        bytes([0x81, 5])
        + small
        + bytes([0x82, 126])
        + (300).to_bytes(2, "big")
        + mid
        + bytes([0x81, 127])
        + (70_000).to_bytes(8, "big")
        + big
        + bytes([0x89, 0])  # a ping
    )
    frames, pos = split_frames(bytearray(wire + bytes([0x81, 10, 1, 2])))
    assert pos == len(wire)
    assert [(op, end - start) for op, start, end in frames] == [
        (1, 5),
        (2, 300),
        (1, 70_000),
        (9, 0),
    ]
    assert wire[frames[1][1] : frames[1][2]] == mid


def test_newest_stamp_takes_the_last_complete_marker() -> None:
    one, two = stamp(PLACEHOLDER, NS), stamp(PLACEHOLDER, NS + 5)
    assert newest_stamp(b"x" + one + b"y" + two + b"z") == NS + 5
    assert newest_stamp(one + b"," + two[:-3]) == NS  # the last one is cut short
    assert newest_stamp(b"nothing here") == 0


def test_tally_counts_other_strings_in_and_out_of_the_window() -> None:
    tally = Tally(also=(b'"map_update"', b'"conflated"'))
    frame = b'{"type":"map_update"}{"type":"conflated"}{"type":"map_update"}'
    tally.set_window(100, 200)
    assert tally.feed(frame + stamp(PLACEHOLDER, NS), len(frame), 50, False) == 0
    tally.feed(frame, len(frame), 150, False)
    assert tally.also_total == [4, 2]
    assert tally.also_in_window == [2, 1]
    assert tally.total == 0  # only the latency marker counts as an event


Handler = Callable[[web.WebSocketResponse], Awaitable[None]]
StartWs = Callable[[Handler], Awaitable[int]]


@pytest.fixture
async def ws_server() -> AsyncIterator[StartWs]:
    """Start an aiohttp WebSocket server on port 0 whose socket runs a given script."""
    runners: list[web.AppRunner] = []

    async def start(script: Handler) -> int:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await script(ws)
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


async def _connect(
    port: int, cls: type[WsSubscriber] = WsSubscriber, tally: Tally | None = None, **kw: Any
) -> WsSubscriber:
    """A ``cls`` connection to ``/ws``, ready once the first frame arrived."""
    counts = Tally() if tally is None else tally

    def make() -> WsSubscriber:
        return cls("127.0.0.1", port, "/ws", counts, sample=False, wait_first_frame=True, **kw)

    _, sub = await asyncio.get_running_loop().create_connection(make, "127.0.0.1", port)
    await asyncio.wait_for(sub.ready, TIMEOUT)
    return sub


async def test_a_connection_the_server_closes_counts_as_cut_off(ws_server: StartWs) -> None:
    async def close_it(ws: web.WebSocketResponse) -> None:
        await ws.send_str('{"type":"welcome"}')
        await ws.close(code=1013, message=b"slow")

    port = await ws_server(close_it)
    sub = await _connect(port)
    await asyncio.wait_for(sub.closed, TIMEOUT)
    assert sub.cut_off()
    assert sub.close_code == 1013
    assert least_events([sub]) == 0


async def test_closing_it_ourselves_is_not_a_cut_off_and_the_gate_skips_cut_offs(
    ws_server: StartWs,
) -> None:
    async def stay(ws: web.WebSocketResponse) -> None:
        await ws.send_str('{"type":"welcome"}')
        for _ in range(3):
            await ws.send_str(stamp(b'{"t":"' + PLACEHOLDER + b'"}').decode())
        await ws.receive()  # until the client closes

    port = await ws_server(stay)
    tally = Tally()
    kept = await _connect(port, tally=tally)
    dropped = await _connect(port, tally=tally)

    async def got_them() -> bool:
        return kept.events == dropped.events == 3

    await eventually(got_them, TIMEOUT)
    dropped.close_code = 1013  # as if the server had closed it while it lagged behind
    dropped.events = 1
    assert least_events([kept, dropped]) == 3
    kept.close()
    await asyncio.wait_for(kept.closed, TIMEOUT)
    assert not kept.cut_off()
    dropped.close()
    await asyncio.wait_for(dropped.closed, TIMEOUT)


async def test_a_throttled_reader_reads_no_faster_than_its_rate(ws_server: StartWs) -> None:
    chunk = stamp(b'{"t":"' + PLACEHOLDER + b'","pad":"' + b"x" * 4000 + b'"}').decode()

    async def flood(ws: web.WebSocketResponse) -> None:
        await ws.send_str('{"type":"welcome"}')
        for _ in range(200):  # ~800 KB: 3 s at 256 KiB/s
            await ws.send_str(chunk)
        await ws.receive()

    port = await ws_server(flood)
    rate = 256 * 1024
    started = time.monotonic()
    sub = await _connect(port, ThrottledWsSubscriber, bytes_per_s=rate)
    assert isinstance(sub, ThrottledWsSubscriber)
    await asyncio.sleep(1.0)
    read = sub.events * len(chunk)
    elapsed = time.monotonic() - started
    assert sub.pauses > 0
    # At most the burst (a quarter second's worth) plus the rate for the time spent.
    assert read <= rate / 4 + rate * elapsed + len(chunk) * 70  # one read may be ~256 KiB
    assert sub.events < 200
    sub.close()
    await asyncio.wait_for(sub.closed, TIMEOUT)


async def test_a_resuming_reader_notes_back_events_then_catching_up(ws_server: StartWs) -> None:
    old = time.time_ns() - 5_000_000_000

    async def resume(ws: web.WebSocketResponse) -> None:
        await ws.send_str('{"type":"welcome"}')
        for _ in range(5):  # five old events: the back window
            await ws.send_str(stamp(b'{"t":"' + PLACEHOLDER + b'"}', old).decode())
        await asyncio.sleep(0.05)
        await ws.send_str(stamp(b'{"t":"' + PLACEHOLDER + b'"}').decode())  # a live one
        await ws.receive()

    port = await ws_server(resume)
    sub = await _connect(port, CatchupWsSubscriber, back=5, fresh_ns=250_000_000)
    assert isinstance(sub, CatchupWsSubscriber)

    async def caught_up() -> bool:
        return bool(sub.caught_up_ns)

    await eventually(caught_up, TIMEOUT)
    assert sub.opened_ns < sub.back_ns < sub.caught_up_ns  # old events are not "caught up"
    assert sub.events_at_caught_up == 6
    sub.close()
    await asyncio.wait_for(sub.closed, TIMEOUT)


class _EchoTarget(Target):
    """A server that prints an environment variable and where it 'listens', then waits."""

    name = "echo"
    description = "test"
    workloads = frozenset()

    def command(self) -> list[str]:
        code = (
            "import os,sys,time;print('listening', os.environ['BENCH_TEST_X'], flush=True);"
            "time.sleep(30)"
        )
        return [sys.executable, "-c", code]

    def on_line(self, line: str) -> Endpoint | None:
        if not line.startswith("listening"):
            return None
        return Endpoint(
            0,
            ws=WsSpec("127.0.0.1", 1, "/" + line.split()[1]),
            metrics_url="http://127.0.0.1:1/metrics",
        )


async def test_server_process_adds_env_and_keeps_every_endpoint_field() -> None:
    async with ServerProcess(_EchoTarget(), frozenset(), {"BENCH_TEST_X": "hello"}) as ep:
        assert ep.pid > 0
        assert ep.ws is not None
        assert ep.ws.path == "/hello"
        assert ep.metrics_url == "http://127.0.0.1:1/metrics"
