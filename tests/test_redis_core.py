"""Cores on the Redis broker, over real gRPC and a real redis-server: several nodes share
one ordered log, a subscriber resumes on any node, history survives a core restart, and
a Redis outage is told (UNAVAILABLE, NOT_SERVING, heartbeats) and survived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import SERVICE_NAME, CoreNode
from tests.conftest import StartCore
from tests.events import package
from tests.grpc_helpers import TIMEOUT, open_stream, publish, read_events
from tests.redis_server import RedisServer
from tests.waiting import eventually

if TYPE_CHECKING:
    from tests.redis_fixtures import StartRedis

pytest_plugins = ["tests.redis_fixtures"]

PKG = pb.TOPIC_PACKAGE_UPDATES


@asynccontextmanager
async def stub_of(core: CoreNode) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(core.address) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


def since(position: pb.StreamPosition) -> list[spb.TopicPosition]:
    return [spb.TopicPosition(topic=PKG, position=position)]


async def test_a_publish_on_one_node_reaches_every_node_in_the_same_order(
    start_core: StartCore, redis_server: RedisServer
) -> None:
    nodes = [await start_core(broker_url=redis_server.url) for _ in range(3)]
    async with stub_of(nodes[0]) as a, stub_of(nodes[1]) as b, stub_of(nodes[2]) as c:
        streams = [(await open_stream(s, [PKG]))[0] for s in (a, b, c)]
        # Two nodes publish at once: Redis decides one order, which every node sees.
        calls = [
            publish(stub, *(package(f"{name}{round_}-{i}") for i in range(10)))
            for round_ in range(5)
            for name, stub in (("a", a), ("b", b))
        ]
        await asyncio.gather(*calls)
        seen = [await read_events(call, 100) for call in streams]
        for events in seen:
            assert [e.position.offset for e in events] == list(range(1, 101))
            assert [e.id for e in events] == [e.id for e in seen[0]]
        for call in streams:
            call.cancel()


async def test_a_subscriber_resumes_on_another_node_with_nothing_missing_or_twice(
    start_core: StartCore, redis_server: RedisServer
) -> None:
    first = await start_core(broker_url=redis_server.url)
    second = await start_core(broker_url=redis_server.url)
    async with stub_of(first) as a, stub_of(second) as b:
        call, _ = await open_stream(a, [PKG])
        await publish(a, *(package(f"p{i}") for i in range(5)))
        got = await read_events(call, 5)
        call.cancel()
        await publish(b, *(package(f"q{i}") for i in range(5)))
        resumed, confirmed = await open_stream(b, [PKG], since=since(got[-1].position))
        assert confirmed.topics[0].recovered
        rest = await read_events(resumed, 5)
        assert [e.package_update.package_id for e in rest] == [f"q{i}" for i in range(5)]
        assert [e.position.offset for e in rest] == [6, 7, 8, 9, 10]
        resumed.cancel()


async def test_history_survives_a_core_restart(
    start_core: StartCore, redis_server: RedisServer
) -> None:
    core = await start_core(broker_url=redis_server.url)
    async with stub_of(core) as stub:
        first = (await publish(stub, package("before"))).results[0].position
        await publish(stub, package("kept"))
    await core.stop(0)
    again = await start_core(broker_url=redis_server.url)
    async with stub_of(again) as stub:
        call, confirmed = await open_stream(stub, [PKG], since=since(first))
        assert confirmed.topics[0].recovered
        assert confirmed.topics[0].position.epoch == first.epoch  # same epoch: nothing lost
        (event,) = await read_events(call, 1)
        assert event.package_update.package_id == "kept"
        call.cancel()


async def test_flushed_redis_is_a_new_epoch_and_not_recovered(
    start_core: StartCore, redis_server: RedisServer
) -> None:
    from redis.asyncio import Redis

    core = await start_core(broker_url=redis_server.url)
    async with stub_of(core) as stub:
        old = (await publish(stub, package("old"))).results[0].position
        admin = Redis.from_url(redis_server.url)
        await admin.flushall()
        await admin.aclose()
        new = (await publish(stub, package("new"))).results[0].position
        assert new.epoch != old.epoch
        assert new.offset == 1
        call, confirmed = await open_stream(stub, [PKG], since=since(old))
        assert not confirmed.topics[0].recovered
        (event,) = await read_events(call, 1)  # what the new epoch holds
        assert event.package_update.package_id == "new"
        call.cancel()


async def test_past_the_retention_bound_is_not_recovered(
    start_core: StartCore, redis_server: RedisServer
) -> None:
    core = await start_core(broker_url=redis_server.url, retention="package_updates=5")
    async with stub_of(core) as stub:
        results: list[spb.PublishResult] = []
        for chunk in range(4):
            response = await publish(stub, *(package(f"p{chunk}-{i}") for i in range(100)))
            results.extend(response.results)
        oldest_kept = (
            await stub.History(spb.HistoryRequest(topic=PKG, since=results[-2].position))
        ).state
        assert oldest_kept.recovered
        call, confirmed = await open_stream(stub, [PKG], since=since(results[0].position))
        assert not confirmed.topics[0].recovered  # trimmed: told, not hidden
        call.cancel()


async def health_of(core: CoreNode) -> int:
    async with grpc.aio.insecure_channel(core.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT
        )
        return int(reply.status)


async def test_a_redis_outage_is_told_and_survived(
    start_core: StartCore, start_redis: StartRedis
) -> None:
    redis = await start_redis(appendonly=True, appendfsync="always")
    core = await start_core(broker_url=redis.url, heartbeat_interval=0.5)
    async with stub_of(core) as stub:
        call, _ = await open_stream(stub, [PKG])
        before = (await publish(stub, package("before"))).results[0].position
        assert (await read_events(call, 1))[0].position == before
        await redis.kill()

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await publish(stub, package("during"))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Redis" in (failed.value.details() or "")
        assert time.monotonic() - started < 5  # fast, never a false OK

        async def not_serving() -> bool:
            return bool(await health_of(core) == health_pb2.HealthCheckResponse.NOT_SERVING)

        await eventually(not_serving, within=15)

        async def told() -> bool:
            message = await asyncio.wait_for(call.read(), TIMEOUT)
            return bool(message.HasField("heartbeat") and message.heartbeat.broker_unavailable)

        await eventually(told, within=15)

        await redis.start()  # the same port and AOF: the history is back

        async def serving() -> bool:
            return bool(await health_of(core) == health_pb2.HealthCheckResponse.SERVING)

        async def publishes() -> pb.StreamPosition | None:
            try:
                return (await publish(stub, package("after"))).results[0].position
            except grpc.aio.AioRpcError:
                return None

        after = await eventually(publishes, within=20)
        await eventually(serving, within=15)
        assert (after.epoch, after.offset) == (before.epoch, before.offset + 1)
        # The stream stayed open and continues from its last position.
        (event,) = await read_events(call, 1, within=15)
        assert event.package_update.package_id == "after"
        assert event.position == after
        call.cancel()
