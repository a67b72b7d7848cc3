"""``clearpath serve`` as a real process: it comes up, serves, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
import grpc
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from tests.events import package
from tests.grpc_helpers import open_stream, publish, read_events
from tests.waiting import eventually

TIMEOUT = 15.0


async def start_serve(*args: str) -> tuple[asyncio.subprocess.Process, str, str]:
    """Start ``clearpath serve`` on free ports; its gRPC address and bridge URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli.app",
        "serve",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        *args,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    core = bridge = ""

    async def read_ports() -> None:
        nonlocal core, bridge
        while not (core and bridge):
            line = (await process.stderr.readline()).decode()  # type: ignore[union-attr]
            assert line, "clearpath serve exited before listening"
            if m := re.search(r"core listening on (\S+)", line):
                core = m.group(1)
            if m := re.search(r"bridge listening on (\S+)", line):
                bridge = m.group(1)

    await asyncio.wait_for(read_ports(), TIMEOUT)

    async def ready() -> bool:
        # Listening is not ready: the bridge's upstream may not have subscribed yet,
        # and an event published before it is live-only for the bridge's sockets.
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(bridge + "/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, within=TIMEOUT)
    return process, core, bridge


async def test_sigterm_ends_streams_and_sockets_then_exits_0() -> None:
    process, core, bridge = await start_serve()
    try:
        async with grpc.aio.insecure_channel(core) as channel:
            stub = sgrpc.RealtimeServiceStub(channel)
            call, _ = await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES])
            ws = await connect(bridge.replace("http", "ws") + "/ws/packages")
            await asyncio.wait_for(ws.recv(), TIMEOUT)  # welcome
            await publish(stub, package("before"))
            (event,) = await read_events(call, 1)
            assert event.package_update.package_id == "before"
            assert '"before"' in str(await asyncio.wait_for(ws.recv(), TIMEOUT))

            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(call.read(), TIMEOUT)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
