"""Shared fixtures: real servers on loopback ports, real clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.config import CoreSettings
from core.server import CoreNode

StartCore = Callable[..., Awaitable[CoreNode]]


@pytest.fixture
async def start_core() -> AsyncIterator[StartCore]:
    """Start real core nodes on free loopback ports; all are stopped at teardown."""
    nodes: list[CoreNode] = []

    async def start(**overrides: Any) -> CoreNode:
        broker = overrides.pop("broker", None)
        settings = CoreSettings(**{"port": 0, "shutdown_grace": 0.5, **overrides})
        node = CoreNode(settings, broker=broker)
        await node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop(0)


@pytest.fixture
async def core(start_core: StartCore) -> CoreNode:
    """One core on the embedded default with a small queue and fast heartbeats."""
    return await start_core(queue_size=64, max_batch=64, heartbeat_interval=0.5, history_size=100)


@pytest.fixture
async def stub(core: CoreNode) -> AsyncIterator[sgrpc.RealtimeServiceAsyncStub]:
    """A real gRPC client of ``core``."""
    async with grpc.aio.insecure_channel(core.address) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


StartBridge = Callable[..., Awaitable[BridgeNode]]


@pytest.fixture
async def start_bridge() -> AsyncIterator[StartBridge]:
    """Start real bridges on free loopback ports, connected to a core; stopped at teardown."""
    nodes: list[BridgeNode] = []

    async def start(core: str, **overrides: Any) -> BridgeNode:
        settings = BridgeSettings(
            **{"port": 0, "core": core, "static_dir": None, "reconnect_max": 0.5, **overrides}
        )
        node = BridgeNode(settings)
        await node.start()
        nodes.append(node)
        await asyncio.wait_for(node.bridge.upstream.wait_connected(), 10)
        return node

    yield start
    for node in nodes:
        await node.stop()


@pytest.fixture
async def bridge(core: CoreNode, start_bridge: StartBridge) -> BridgeNode:
    """A bridge connected to ``core``, with fast pings."""
    return await start_bridge(core.address, ping_interval=5)


Restart = Callable[..., Awaitable[CoreNode]]


async def durable_core(start_core: StartCore, history_size: int = 1000) -> tuple[CoreNode, Restart]:
    """A core whose history survives a restart (as with Redis), and how to restart it:
    stop it, await ``while_down()`` if given, then start a new one on the same port
    with the same broker."""
    from core.broker.memory import MemoryBroker

    broker = MemoryBroker(history_size=history_size)
    core = await start_core(broker=broker)

    async def restart(while_down: Callable[[], Awaitable[None]] | None = None) -> CoreNode:
        await core.stop(0)
        if while_down is not None:
            await while_down()
        return await start_core(broker=broker, port=core.port)

    return core, restart
