"""``clearpath bridge --workers 2`` as a real process: both workers serve sockets on one
port, SIGTERM closes every socket with 1001, and a worker killed with SIGKILL is
restarted while its browsers reconnect and resume."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.workers import WORKER_HEADER, WorkerIdentity, reserve_port
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import CoreNode
from tests.conftest import StartCore
from tests.events import package
from tests.grpc_helpers import publish
from tests.processes import Process, clearpath_process
from tests.waiting import eventually

CLIENTS = 40
TIMEOUT = 15.0
#: Fast upstream retries, no dashboard: what a test bridge needs.
ENV = {"CLEARPATH_BRIDGE_RECONNECT_MAX": "0.5", "CLEARPATH_BRIDGE_STATIC_DIR": ""}

Client = tuple[ClientConnection, WorkerIdentity]


@pytest.fixture
async def core(start_core: StartCore) -> CoreNode:
    return await start_core(history_size=1000)


@pytest.fixture
async def stub(core: CoreNode) -> AsyncIterator[sgrpc.RealtimeServiceAsyncStub]:
    async with grpc.aio.insecure_channel(core.address) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


@pytest.fixture
async def workers(core: CoreNode) -> AsyncIterator[Process]:
    """``clearpath bridge --workers 2`` on a free port, both upstreams connected."""
    args = ("bridge", "--workers", "2", "--core", core.address, "--http-port", "0")
    async with clearpath_process(*args, listening="bridge", env=ENV) as process:
        for index in (1, 2):
            await eventually(functools.partial(connected, process.address, index), TIMEOUT)
        yield process


def identity(header: str) -> WorkerIdentity:
    """The worker named by an ``X-ClearPath-Worker`` value ``INDEX/N pid=PID``."""
    share, pid = header.split(" pid=")
    index, workers = share.split("/")
    return WorkerIdentity(int(index), int(workers), int(pid))


async def worker_status(url: str) -> dict[str, Any]:
    """``/ws/worker`` on a new connection (so the kernel picks a worker anew)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url + "/ws/worker", timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as response,
    ):
        body: dict[str, Any] = await response.json()
        assert identity(response.headers[WORKER_HEADER]).as_dict() == body["worker"]
        return body


async def connected(url: str, index: int) -> bool:
    status = await worker_status(url)
    return bool(status["worker"]["index"] == index and status["upstream"]["state"] == "connected")


async def open_client(url: str, query: str = "") -> Client:
    ws = await asyncio.wait_for(
        connect(url.replace("http://", "ws://") + "/ws/packages" + query), TIMEOUT
    )
    assert ws.response is not None
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert welcome["type"] == "welcome"
    return ws, identity(ws.response.headers[WORKER_HEADER])


async def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` event frames, skipping control frames."""

    async def read() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            frame = orjson.loads(await ws.recv())
            if "position" in frame:
                found.append(frame)
        return found

    return await asyncio.wait_for(read(), TIMEOUT)


def offsets(frames: list[dict[str, Any]]) -> list[int]:
    return [f["position"]["offset"] for f in frames]


async def publish_packages(stub: sgrpc.RealtimeServiceAsyncStub, first: int, count: int) -> None:
    await publish(stub, *(package(f"pkg-{i}") for i in range(first, first + count)))


async def close_code(ws: ClientConnection) -> int | None:
    """The close code the server sent (None: the connection just ended)."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(events(ws, 1_000_000), TIMEOUT)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def test_two_workers_share_the_port_and_stop_on_sigterm_with_1001(
    workers: Process, stub: sgrpc.RealtimeServiceAsyncStub
) -> None:
    clients = await asyncio.gather(*(open_client(workers.address) for _ in range(CLIENTS)))
    served = Counter(who.pid for _, who in clients)
    assert len(served) == 2, f"one worker served every socket: {served}"
    assert {who.index for _, who in clients} == {1, 2}

    await publish_packages(stub, 0, 20)
    received = await asyncio.gather(*(events(ws, 20) for ws, _ in clients))
    for frames in received:
        assert offsets(frames) == list(range(1, 21))
        assert [f["data"]["package_id"] for f in frames] == [f"pkg-{i}" for i in range(20)]

    workers.process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws) for ws, _ in clients))
    assert codes == [1001] * CLIENTS
    assert await asyncio.wait_for(workers.process.wait(), TIMEOUT) == 0
    for pid in served:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_killed_worker_is_restarted_and_its_clients_resume(
    workers: Process, stub: sgrpc.RealtimeServiceAsyncStub
) -> None:
    clients = await asyncio.gather(*(open_client(workers.address) for _ in range(CLIENTS)))
    await publish_packages(stub, 0, 10)
    first = await asyncio.gather(*(events(ws, 10) for ws, _ in clients))
    epoch = first[0][-1]["position"]["epoch"]
    assert all(offsets(frames) == list(range(1, 11)) for frames in first)

    victim = clients[0][1]
    os.kill(victim.pid, signal.SIGKILL)
    cut = [ws for ws, who in clients if who.pid == victim.pid]
    kept = [ws for ws, who in clients if who.pid != victim.pid]
    assert kept, "the other worker serves some clients"
    assert await asyncio.gather(*(close_code(ws) for ws in cut)) == [None] * len(cut)

    # Published while the cut clients are away: their resume must bring it.
    await publish_packages(stub, 10, 5)

    async def restarted() -> WorkerIdentity | None:
        status = await worker_status(workers.address)
        who = WorkerIdentity(**status["worker"])
        fresh = who.index == victim.index and who.pid != victim.pid
        return who if fresh and status["upstream"]["state"] == "connected" else None

    new = await eventually(restarted, TIMEOUT)
    assert workers.process.returncode is None

    since = f"?since=package_updates:{epoch}:10"
    back = await asyncio.gather(*(open_client(workers.address, since) for _ in cut))
    assert {who.pid for _, who in back} <= {new.pid, *(w.pid for _, w in clients)} - {victim.pid}
    await publish_packages(stub, 15, 5)
    for ws in [*kept, *(ws for ws, _ in back)]:
        assert offsets(await events(ws, 10)) == list(range(11, 21))
    for ws in [*kept, *(ws for ws, _ in back)]:
        await ws.close()


def test_the_reserved_port_takes_no_connection_and_keeps_the_port() -> None:
    with reserve_port("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))
