"""A core whose broker goes away: health turns NOT_SERVING, open streams stay open and
are told at once by a heartbeat, and both come back with it. (The Redis broker's own
reports are exercised against a real redis-server in test_redis_core.py.)"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import SERVICE_NAME, CoreNode
from tests.events import package
from tests.grpc_helpers import TIMEOUT, open_stream, publish, read_events
from tests.waiting import eventually


async def next_heartbeat(call: object) -> spb.Heartbeat:
    async def read() -> spb.Heartbeat:
        while True:
            message = await call.read()  # type: ignore[attr-defined]
            assert isinstance(message, spb.SubscribeResponse), "stream ended"
            if message.HasField("heartbeat"):
                return message.heartbeat

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_broker_down_and_back_is_told_to_health_and_streams(core: CoreNode) -> None:
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        call, _ = await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES])

        async def status() -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            return int(reply.status)

        assert await status() == health_pb2.HealthCheckResponse.SERVING
        core._broker_state(False)  # what the broker reports when Redis stops answering
        beat = await next_heartbeat(call)
        assert beat.broker_unavailable

        async def not_serving() -> bool:
            return bool(await status() == health_pb2.HealthCheckResponse.NOT_SERVING)

        await eventually(not_serving)
        core._broker_state(True)
        assert not (await next_heartbeat(call)).broker_unavailable

        async def serving() -> bool:
            return bool(await status() == health_pb2.HealthCheckResponse.SERVING)

        await eventually(serving)
        # The stream stayed open all along and carries events as before.
        await publish(stub, package("after"))
        (event,) = await read_events(call, 1)
        assert event.package_update.package_id == "after"
        call.cancel()


async def test_idle_heartbeats_say_the_broker_is_available(core: CoreNode) -> None:
    async with grpc.aio.insecure_channel(core.address) as channel:
        call, _ = await open_stream(sgrpc.RealtimeServiceStub(channel), [pb.TOPIC_ANOMALIES])
        beat = await next_heartbeat(call)  # the fixture's heartbeat interval is 0.5 s
        assert not beat.broker_unavailable
        assert beat.time.seconds > 0
        call.cancel()
