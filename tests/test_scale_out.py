"""The scale-out promise end to end, with real processes: two cores on one redis-server,
two bridges that know both cores, browsers on both bridges; a core is killed with
SIGKILL while events are published through the other — every acknowledged event
reaches every browser exactly once, in order (checked by positions)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect

from clients.sdk import Client
from tests.events import package
from tests.processes import clearpath_process
from tests.redis_server import RedisServer
from tests.test_bridge import get_json
from tests.ws_helpers import recv

if TYPE_CHECKING:
    from tests.redis_fixtures import StartRedis

pytest_plugins = ["tests.redis_fixtures"]

EVENTS = 300


async def read_until(ws: ClientConnection, last: int, within: float = 60) -> list[int]:
    """Offsets of package updates until ``last`` arrived (fails on a close or timeout)."""
    offsets: list[int] = []

    async def read() -> None:
        while not offsets or offsets[-1] < last:
            frame = await recv(ws, within)
            if frame.get("subscription_type") == "package_updates" and "position" in frame:
                offsets.append(frame["position"]["offset"])

    await asyncio.wait_for(read(), within)
    return offsets


async def test_a_core_killed_mid_stream_loses_nothing_for_any_browser(
    start_redis: StartRedis,
) -> None:
    redis: RedisServer = await start_redis(appendonly=True)
    serve = ("serve", "--no-bridge", "--grpc-port", "0", "--broker", redis.url)
    async with (
        clearpath_process(*serve, listening="core") as core1,
        clearpath_process(*serve, listening="core") as core2,
    ):
        both = f"{core1.address},{core2.address}"
        other = f"{core2.address},{core1.address}"
        bridge_args = ("bridge", "--http-port", "0", "--core")
        async with (
            clearpath_process(*bridge_args, both, listening="bridge") as bridge1,
            clearpath_process(*bridge_args, other, listening="bridge") as bridge2,
        ):
            urls = [
                b.address.replace("http://", "ws://") + "/ws/packages" for b in (bridge1, bridge2)
            ]
            browsers = [await connect(url) for url in urls for _ in range(3)]
            for ws in browsers:
                assert (await recv(ws))["type"] == "welcome"
            readers = [asyncio.create_task(read_until(ws, EVENTS)) for ws in browsers]
            acknowledged: list[int] = []
            async with Client(core2.address) as publisher:
                for i in range(EVENTS):
                    if i == EVENTS // 3:
                        core1.kill()  # bridge1's core: it fails over to core2
                    (result,) = await publisher.publish(package(f"p{i}"))
                    acknowledged.append(result.position.offset)
            assert acknowledged == list(range(1, EVENTS + 1))
            seen = await asyncio.gather(*readers)
            for offsets in seen:
                assert offsets == acknowledged  # exactly once, in order
            status = await get_json(bridge1.address + "/ws/status")
            assert status["upstream"]["core"] == core2.address
            assert status["upstream"]["failovers"] >= 1
            assert status["upstream"]["history_gaps"] == 0
            for ws in browsers:
                await ws.close()
