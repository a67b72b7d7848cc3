"""Fixtures of the Redis broker tests: a private redis-server, started brokers.

Test modules load them with ``pytest_plugins = ["tests.redis_fixtures"]`` (and
must not import this module themselves, except for types under TYPE_CHECKING; the
helpers are in ``tests.redis_server``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from core.broker.redis import RedisBroker
from tests.redis_server import Collected, RedisServer

__all__ = ["StartBroker", "StartRedis", "redis_server", "start_broker", "start_redis"]


StartBroker = Callable[..., Awaitable[tuple[RedisBroker, Collected]]]


StartRedis = Callable[..., Awaitable[RedisServer]]


@pytest.fixture
async def start_redis() -> AsyncIterator[StartRedis]:
    """Start private redis-servers (options of :class:`RedisServer`); closed at teardown."""
    servers: list[RedisServer] = []

    async def start(**options: Any) -> RedisServer:
        server = RedisServer(**options)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def redis_server(start_redis: StartRedis) -> RedisServer:
    """A running redis-server without persistence, on a free loopback port."""
    return await start_redis()


@pytest.fixture
async def start_broker(redis_server: RedisServer) -> AsyncIterator[StartBroker]:
    """Start Redis brokers (nodes) on ``redis_server``; all are closed at teardown."""
    brokers: list[RedisBroker] = []

    async def start(**options: Any) -> tuple[RedisBroker, Collected]:
        url = options.pop("url", redis_server.url)
        collected = Collected()
        # ``handler``: replaces the collector (which then stays empty).
        handler = options.pop("handler", collected)
        broker = RedisBroker(url, **{"history_size": 100, **options})
        await broker.start(handler)
        brokers.append(broker)
        return broker, collected

    yield start
    for broker in brokers:
        await broker.close()
