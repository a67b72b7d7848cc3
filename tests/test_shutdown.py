"""How Subscribe streams end when the core shuts down (issue 9, defect 9).

The README promises that a stream open when the core shuts down ends with
UNAVAILABLE and "core is shutting down; reconnect and resume from the last
position", never with a transport's text ("Cancelling all calls", a GOAWAY).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.broker.base import HistoryResult
from core.broker.memory import MemoryBroker
from core.server import SERVICE_NAME
from tests.conftest import StartCore

TIMEOUT = 10.0
#: The README's message for a stream ended by a shutdown.
DOCUMENTED = "core is shutting down; reconnect and resume from the last position"
#: What such a stream must end with.
SHUTTING_DOWN = (grpc.StatusCode.UNAVAILABLE, DOCUMENTED)


@dataclass
class Stream:
    """One Subscribe call read to its end: was it confirmed, and how did it end."""

    call: Any
    confirmed: bool = False
    ended: asyncio.Task[tuple[grpc.StatusCode, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.ended = asyncio.create_task(self._read())

    async def _read(self) -> tuple[grpc.StatusCode, str]:
        async with asyncio.timeout(TIMEOUT):
            try:
                while (message := await self.call.read()) is not grpc.aio.EOF:
                    if message.WhichOneof("kind") == "confirmed":
                        self.confirmed = True
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
        return await self.call.code(), await self.call.details()


def subscribe(channel: grpc.aio.Channel) -> Stream:
    stub = sgrpc.RealtimeServiceStub(channel)
    return Stream(stub.Subscribe(spb.SubscribeRequest(topics=[pb.TOPIC_PACKAGE_UPDATES])))


async def confirmed(streams: list[Stream]) -> None:
    """Return once every stream is confirmed (each still open)."""
    async with asyncio.timeout(TIMEOUT):
        while not all(s.confirmed for s in streams):
            assert not any(s.ended.done() for s in streams), "a stream ended early"
            await asyncio.sleep(0.01)


# --- in-process: a Subscribe that arrives while the core is shutting down ---------


class HeldBroker(MemoryBroker):
    """A memory broker whose first history read waits until ``release`` is set:
    the stream that made it stays open, so the shutdown has to wait for it."""

    def __init__(self) -> None:
        super().__init__(history_size=100)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def history(
        self, topic: int, since: pb.StreamPosition | None, limit: int | None = None
    ) -> HistoryResult:
        if not self.reading.is_set():
            self.reading.set()
            await self.release.wait()
        return await super().history(topic, since, limit)


async def not_serving(channel: grpc.aio.Channel) -> None:
    """Return once the core reports NOT_SERVING (or no longer answers)."""
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                reply = await health.Check(request, timeout=TIMEOUT)
            except grpc.aio.AioRpcError:
                return
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return
            await asyncio.sleep(0.01)


async def test_a_subscribe_arriving_during_shutdown_ends_with_the_documented_status(
    start_core: StartCore,
) -> None:
    # Before the fix, a Subscribe whose handler started after close_streams() was
    # never closed: it was confirmed, then cut at the end of the grace with the
    # transport's "Cancelling all calls" (about one stream in 400 under load).
    broker = HeldBroker()
    node = await start_core(broker=broker, heartbeat_interval=30)
    grace = 3.0
    async with grpc.aio.insecure_channel(node.address) as channel:
        held = subscribe(channel)
        await asyncio.wait_for(broker.reading.wait(), TIMEOUT)
        stopping = asyncio.create_task(node.stop(grace))
        try:
            # Health turns NOT_SERVING just before close_streams(), in the same step.
            await not_serving(channel)
            late = subscribe(channel)
            assert await late.ended == SHUTTING_DOWN
            assert not late.confirmed
            broker.release.set()
            assert await held.ended == SHUTTING_DOWN
            # Nothing was left open for the end of the grace to cut.
            await asyncio.wait_for(asyncio.shield(stopping), grace - 1)
        finally:
            broker.release.set()
            await asyncio.wait_for(stopping, TIMEOUT)


# --- in-process, on the wire: the status goes out before the GOAWAY ---------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0, 1, 3, 4, 6, 7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _literal_headers(headers: list[tuple[str, str]]) -> bytes:
    """HPACK "literal without indexing, new name" fields; every string under 127 bytes."""
    block = bytearray()
    for name, value in headers:
        block += bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()
    return bytes(block)


async def test_a_streams_status_goes_out_before_the_servers_goaway(
    start_core: StartCore,
) -> None:
    # Before the fix, server.stop() sent GOAWAY before the handlers had sent their
    # statuses: a client that ends a stream on GOAWAY never saw the message.
    node = await start_core(heartbeat_interval=30)
    host, port = node.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = spb.SubscribeRequest(topics=[pb.TOPIC_PACKAGE_UPDATES]).SerializeToString()
    headers = _literal_headers(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"/{SERVICE_NAME}/Subscribe"),
            (":authority", node.address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    message = b"\0" + len(request).to_bytes(4, "big") + request
    writer.write(
        _PREFACE
        + _frame(_SETTINGS, 0, 0, b"")
        + _frame(_HEADERS, _END_HEADERS, 1, headers)
        + _frame(_DATA, _END_STREAM, 1, message)
    )
    stopping: asyncio.Task[None] | None = None
    first_end = ""
    try:
        async with asyncio.timeout(TIMEOUT):
            while not first_end:
                head = await reader.readexactly(9)
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
                if kind in (_SETTINGS, _PING) and not flags & _ACK:
                    writer.write(_frame(kind, _ACK, 0, payload if kind == _PING else b""))
                elif kind == _DATA and stream == 1 and stopping is None:
                    # The confirmation: the stream is open. Shut down now.
                    stopping = asyncio.create_task(node.stop(5.0))
                elif kind == _HEADERS and stream == 1 and flags & _END_STREAM:
                    first_end = "status"
                elif kind == _RST_STREAM and stream == 1:
                    first_end = "reset"
                elif kind == _GOAWAY:
                    first_end = "goaway"
    finally:
        # Gone, so the shutdown need not wait for this connection's GOAWAY handshake.
        writer.close()
        if stopping is not None:
            await asyncio.wait_for(stopping, TIMEOUT)
    assert first_end == "status"


# --- a real process: SIGTERM with ~400 open streams and more arriving -------------

PROCESS_GRACE = 5.0


async def start_core_process() -> tuple[asyncio.subprocess.Process, str, asyncio.Task[None]]:
    """``clearpath serve --no-bridge --grpc-port 0``; its address, and a task that
    keeps reading its log (a full pipe would block the process)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "clients.cli.app", "serve", "--no-bridge", "--grpc-port", "0"),
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "CLEARPATH_CORE_SHUTDOWN_GRACE": str(PROCESS_GRACE),
            # Streams here are many per connection on purpose (not the per-connection
            # cap's test: tests/test_grpc_limits.py): let them all reach the server.
            "CLEARPATH_CORE_MAX_STREAMS_PER_CONNECTION": "1000",
        },
    )
    stderr = process.stderr
    assert stderr is not None
    address = ""
    async with asyncio.timeout(TIMEOUT):
        while not address:
            line = (await stderr.readline()).decode()
            assert line, "clearpath serve exited before listening"
            if m := re.search(r"core listening on (\S+)", line):
                address = m.group(1)

    async def drain() -> None:
        while await stderr.readline():
            pass

    return process, address, asyncio.create_task(drain())


async def test_sigterm_ends_every_open_stream_with_the_documented_status() -> None:
    # 400 open streams on 8 connections, and four new Subscribes a millisecond
    # through the SIGTERM. Before the fix one or two streams per run were confirmed
    # and then ended with "Cancelling all calls" when the grace ran out.
    process, address, log = await start_core_process()
    channels = [grpc.aio.insecure_channel(address) for _ in range(8)]
    subscribing: asyncio.Task[None] | None = None
    try:
        streams = [subscribe(channels[i % 8]) for i in range(400)]
        await confirmed(streams)
        arriving: list[Stream] = []

        async def keep_subscribing() -> None:
            while process.returncode is None and len(arriving) < 1000:
                arriving.extend(subscribe(channel) for channel in channels[:4])
                await asyncio.sleep(0.001)

        subscribing = asyncio.create_task(keep_subscribing())
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        took = loop.time() - sent
        await asyncio.wait_for(subscribing, TIMEOUT)
        ends = [(s.confirmed, await s.ended) for s in streams + arriving]
        wrong = [end for was_open, end in ends if was_open and end != SHUTTING_DOWN]
        assert not wrong, f"{len(wrong)} open streams ended otherwise: {wrong[:3]}"
        assert sum(was_open for was_open, _ in ends) >= 400
        # No stream was left for the end of the grace to cut.
        assert took < PROCESS_GRACE - 2, f"shutdown took {took:.1f} s"
    finally:
        if subscribing is not None:
            subscribing.cancel()
        for channel in channels:
            await channel.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.wait_for(log, TIMEOUT)
