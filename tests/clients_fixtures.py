"""Fixtures of the client tests (SDK, CLI, simulator): real cores on loopback
ports that can be stopped and restarted on the same port.

Test modules load them with ``pytest_plugins = ["tests.clients_fixtures"]`` (and
must not import this module themselves; helpers are in ``tests.clients_helpers``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from clients.sdk import Client
from core.broker import Broker
from core.config import CoreSettings
from core.server import CoreNode
from tests.clients_helpers import FAST

__all__ = ["Cores", "client", "cores", "sdk_core"]


class Cores:
    """Starts real cores; :meth:`restart` brings one back on the same port."""

    def __init__(self) -> None:
        self.running: list[CoreNode] = []

    async def start(self, *, broker: Broker | None = None, **overrides: Any) -> CoreNode:
        settings = CoreSettings(**{"port": 0, "shutdown_grace": 0.5, **overrides})
        node = CoreNode(settings, broker=broker)
        await node.start()
        self.running.append(node)
        return node

    async def stop(self, node: CoreNode) -> None:
        self.running.remove(node)
        await node.stop(0)

    async def restart(self, node: CoreNode, *, keep_history: bool) -> CoreNode:
        """Stop ``node`` and start a new core on its port; with ``keep_history`` the
        new core uses the same broker (same epochs and history), else a fresh one."""
        await self.stop(node)
        return await self.restart_stopped(node, keep_history=keep_history)

    async def restart_stopped(self, node: CoreNode, *, keep_history: bool = True) -> CoreNode:
        """Start a new core on the port of ``node``, which was stopped."""
        settings = node.settings.model_copy(update={"port": node.port})
        return await self.start(
            broker=node.broker if keep_history else None, **settings.model_dump()
        )


@pytest.fixture
async def cores() -> AsyncIterator[Cores]:
    """Real cores on free loopback ports; all stopped at teardown."""
    started = Cores()
    yield started
    for node in list(started.running):
        await started.stop(node)


@pytest.fixture
async def sdk_core(cores: Cores) -> CoreNode:
    """One core with a generous history and fast heartbeats."""
    return await cores.start(history_size=1000, heartbeat_interval=0.5)


@pytest.fixture
async def client(sdk_core: CoreNode) -> AsyncIterator[Client]:
    """An SDK client of ``sdk_core`` that reconnects quickly."""
    async with Client(sdk_core.address, timeout=5, backoff=FAST) as connected:
        yield connected
