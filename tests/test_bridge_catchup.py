"""Catching up and falling behind: bursts the bridge caused never cut off a reading
socket; a socket that takes nothing is closed on time; a resume holds no core stream
(issue 9, defects 1, 4, 5 and 9)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import orjson
import pytest

from bridge.app import BridgeNode
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from tests.conftest import StartBridge, StartCore, durable_core
from tests.events import large_agent_activity, package
from tests.grpc_helpers import publish
from tests.processes import clearpath_process
from tests.test_bridge import get_json, open_stalled
from tests.waiting import eventually
from tests.ws_helpers import open_ws, recv, recv_events, ws_url

from websockets.asyncio.client import ClientConnection, connect  # isort: skip


async def publish_packages(stub: Any, count: int, *, prefix: str = "p", size: int = 0) -> None:
    big = "x" * size
    for start in range(0, count, 500):
        n = min(500, count - start)
        await publish(stub, *(package(f"{prefix}{start + i}", location=big) for i in range(n)))


async def read_offsets(ws: ClientConnection, count: int, within: float = 30) -> list[int]:
    """Offsets of the next ``count`` events; fails on a close (e.g. 1013) or a timeout."""
    return [f["position"]["offset"] for f in await recv_events(ws, count, within)]


async def test_a_stalled_bridge_process_catches_up_without_cutting_off_readers() -> None:
    # The README's failover scenario with a paused bridge: its core drops it (keepalive
    # 1 s), 3,000 package updates and 600 ~20 kB agent events (12 MB: more than a gRPC
    # message) are published meanwhile, and the bridge resumes from the core's history.
    core_env = {"CLEARPATH_CORE_KEEPALIVE_TIME": "1", "CLEARPATH_CORE_KEEPALIVE_TIMEOUT": "1"}
    serve = ("serve", "--no-bridge", "--grpc-port", "0")
    async with (
        clearpath_process(*serve, listening="core", env=core_env) as core,
        clearpath_process(
            "bridge", "--core", core.address, "--http-port", "0", listening="bridge"
        ) as bridge,
        grpc.aio.insecure_channel(core.address) as channel,
    ):
        stub = sgrpc.RealtimeServiceStub(channel)
        base = bridge.address.replace("http://", "ws://")
        async with (
            connect(base + "/ws/packages") as packages,
            connect(base + "/ws/agents") as agents,
        ):
            for ws in (packages, agents):
                assert (await recv(ws))["type"] == "welcome"
            await publish(stub, package("before"))
            assert await read_offsets(packages, 1) == [1]

            bridge.pause()
            await publish_packages(stub, 3000, prefix="during")
            for start in range(0, 600, 50):
                await publish(stub, *(large_agent_activity(i) for i in range(start, start + 50)))
            # Longer than the core's keepalive time + timeout: the core drops the bridge.
            await asyncio.sleep(3)
            bridge.resume()

            assert await read_offsets(packages, 3000) == list(range(2, 3002))
            assert await read_offsets(agents, 600) == list(range(1, 601))
        status = await get_json(bridge.address + "/ws/status")
        assert status["upstream"]["state"] == "connected"
        assert status["slow_consumers_closed"] == 0
        assert status["upstream"]["history_gaps"] == 0


async def test_a_core_restart_backlog_reaches_every_reader(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core, restart = await durable_core(start_core, history_size=10_000)
    bridge = await start_bridge(core.address, reconnect_initial=1.0, reconnect_max=1.0)
    readers = [(await open_ws(bridge, "/ws/packages"))[0] for _ in range(5)]
    restarted = await restart()
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        # Published before the bridge is back: it gets all 3,000 in one catch-up.
        await publish_packages(sgrpc.RealtimeServiceStub(channel), 3000, size=200)
    results = await asyncio.gather(*(read_offsets(ws, 3000) for ws in readers))
    for offsets in results:
        assert offsets == list(range(1, 3001))
    status = await get_json(bridge.url + "/ws/status")
    assert status["slow_consumers_closed"] == 0
    assert status["frames_dropped"] == 0
    for ws in readers:
        await ws.close()


async def test_a_socket_that_takes_nothing_is_closed_on_time_and_says_so(
    start_core: StartCore, start_bridge: StartBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearpath.bridge")
    core = await start_core()
    # A byte bound far away: only the time without progress can close it.
    bridge = await start_bridge(core.address, slow_timeout=0.5)
    _, stalled = await open_stalled(bridge, "/ws/packages")
    reader, _ = await open_ws(bridge, "/ws/packages")
    async with grpc.aio.insecure_channel(core.address) as channel:
        await publish_packages(sgrpc.RealtimeServiceStub(channel), 2000, size=4000)
    assert await read_offsets(reader, 2000) == list(range(1, 2001))

    async def closed() -> dict[str, Any] | None:
        status: dict[str, Any] = await get_json(bridge.url + "/ws/status")
        return status if status["slow_consumers_closed"] == 1 else None

    status = await eventually(closed)
    assert status["connections"]["total"] == 1
    # The log shows the code the bridge sent, not what the peer (never) answered.
    assert any(
        "code=1013" in r.getMessage() and "slow consumer" in r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("disconnect")
    )
    stalled.close()
    await reader.close()


async def test_a_socket_stalled_in_a_resume_is_closed_and_holds_no_core_stream(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core(history_size=10_000, max_subscribers=3)
    bridge = await start_bridge(
        core.address, cache_size=10, slow_timeout=0.5, send_queue_bytes=256 * 1024
    )
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        await publish_packages(stub, 2000, size=4000)
        epoch = (await publish(stub, package("last"))).results[0].position.epoch
        # Twenty sockets resume from the start (older than the bridge's cache: the
        # core's history) and never read.
        path = f"/ws/packages?since=package_updates:{epoch}:0"
        stalled = [(await open_stalled(bridge, path))[1] for _ in range(20)]
        try:

            async def all_closed() -> dict[str, Any] | None:
                status: dict[str, Any] = await get_json(bridge.url + "/ws/status")
                return status if status["slow_consumers_closed"] == 20 else None

            status = await eventually(all_closed, within=20)
            assert status["connections"]["total"] == 0
            # Only the bridge's own stream: a resume reads pages, it holds no stream.
            assert core.service.streams == 1
            # Meanwhile and after, a reading socket resumes the whole history.
            reader = await connect(ws_url(bridge, path))
            assert (await recv(reader))["type"] == "welcome"
            subscribed = await recv(reader)
            assert subscribed["data"]["recovered"] is True
            assert await read_offsets(reader, 2001) == list(range(1, 2002))
            await reader.close()
        finally:
            for writer in stalled:
                writer.close()
    final = await get_json(bridge.url + "/ws/status")
    assert final["resumes"]["frames_from_core"] >= 2001


async def test_a_large_catch_up_is_written_in_bounded_chunks(bridge: BridgeNode, stub: Any) -> None:
    # At most WRITE_CHUNK bytes go to one socket per write: with ?batch=1 a burst
    # arrives as several arrays, each within a chunk (and one frame), all in order.
    from bridge.app import WRITE_CHUNK

    ws, _ = await open_ws(bridge, "/ws/packages?batch=1")
    for start in range(0, 200, 50):
        await publish(
            stub, *(package(f"p{i}", location="y" * 4000) for i in range(start, start + 50))
        )
    got: list[int] = []
    arrays = 0
    while len(got) < 200:
        raw = await asyncio.wait_for(ws.recv(), 10)
        assert len(raw) <= WRITE_CHUNK + 5000
        frames = orjson.loads(raw)
        if isinstance(frames, list):
            arrays += 1
        else:
            frames = [frames]
        got.extend(f["position"]["offset"] for f in frames if "position" in f)
    assert got == list(range(1, 201))
    assert arrays >= 3  # 200 frames of ~4.3 kB: more than three chunks
    await ws.close()


async def test_a_catch_up_far_larger_than_the_queue_bound_reaches_a_reader(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    # The bound is only what a socket may hold at once: a reader whose queue overflows
    # catches up from the cache and the core's history at its own pace, with every
    # event once and in order, and is never closed while it reads.
    core, restart = await durable_core(start_core, history_size=10_000)
    bridge = await start_bridge(
        core.address,
        reconnect_initial=1.0,
        reconnect_max=1.0,
        send_queue_bytes=64 * 1024,  # the smallest allowed: 12 MB below is 190 times it
        cache_size=100,
    )
    readers = [(await open_ws(bridge, "/ws/packages"))[0] for _ in range(3)]
    restarted = await restart()
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        await publish_packages(sgrpc.RealtimeServiceStub(channel), 3000, size=4000)
    results = await asyncio.gather(*(read_offsets(ws, 3000, within=60) for ws in readers))
    for offsets in results:
        assert offsets == list(range(1, 3001))
    status = await get_json(bridge.url + "/ws/status")
    assert status["catch_ups"] >= 1
    assert status["slow_consumers_closed"] == 0
    assert status["frames_dropped"] == 0
    assert status["resumes"]["not_recovered"] == 0
    for ws in readers:
        await ws.close()


async def test_readers_that_pause_under_live_traffic_catch_up_and_lose_nothing(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    # Live traffic, not a backlog: readers stop reading for a moment mid-stream, their
    # 64 KiB queues overflow again and again, and each time they catch up from history
    # and go live again: every event once, in order, nobody closed.
    core = await start_core(history_size=10_000, queue_size=10_000, max_batch=1000)
    bridge = await start_bridge(core.address, send_queue_bytes=64 * 1024, cache_size=200)
    readers = [(await open_ws(bridge, "/ws/packages"))[0] for _ in range(4)]

    async def read_pausing(ws: ClientConnection, pause_every: int) -> list[int]:
        offsets: list[int] = []

        async def read() -> None:
            while not offsets or offsets[-1] < 3000:
                frame = await recv(ws, 30)
                if "position" in frame:
                    offsets.append(frame["position"]["offset"])
                    if len(offsets) % pause_every == 0:
                        # Not reading for a while: the point of the test, not a wait.
                        await asyncio.sleep(0.2)

        await asyncio.wait_for(read(), 60)
        return offsets

    tasks = [
        asyncio.create_task(read_pausing(ws, n))
        for ws, n in zip(readers, (300, 500, 700, 1100), strict=True)
    ]
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        for start in range(0, 3000, 100):
            await publish(
                stub, *(package(f"p{start + i}", location="z" * 2000) for i in range(100))
            )
    for offsets in await asyncio.gather(*tasks):
        assert offsets == list(range(1, 3001))
    status = await get_json(bridge.url + "/ws/status")
    assert status["catch_ups"] >= 1
    assert status["slow_consumers_closed"] == 0
    assert status["resumes"]["not_recovered"] == 0
    for ws in readers:
        await ws.close()
