"""Small helpers for tests that talk to a real core over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc

TIMEOUT = 10.0


async def open_stream(
    stub: sgrpc.RealtimeServiceAsyncStub,
    topics: Iterable[int],
    **request: Any,
) -> tuple[Any, spb.SubscriptionConfirmed]:
    """Open a Subscribe stream and read its confirmation."""
    call = stub.Subscribe(spb.SubscribeRequest(topics=topics, **request))  # type: ignore[arg-type]
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert isinstance(first, spb.SubscribeResponse), "stream ended"
    assert first.WhichOneof("kind") == "confirmed", first
    return call, first.confirmed


async def read_events(call: Any, count: int, within: float = TIMEOUT) -> list[pb.Event]:
    """Read ``count`` events from a stream, skipping heartbeats."""

    async def read() -> list[pb.Event]:
        events: list[pb.Event] = []
        while len(events) < count:
            message = await call.read()
            assert isinstance(message, spb.SubscribeResponse), "stream ended"
            if message.WhichOneof("kind") == "event":
                events.append(message.event)
        return events

    return await asyncio.wait_for(read(), within)


async def publish(stub: sgrpc.RealtimeServiceAsyncStub, *events: pb.Event) -> spb.PublishResponse:
    """Publish events in one call."""
    return await asyncio.wait_for(stub.Publish(spb.PublishRequest(events=events)), TIMEOUT)


@asynccontextmanager
async def serving(server: grpc.aio.Server) -> AsyncIterator[grpc.aio.Server]:
    """Start a test's own gRPC server (ports already added); stop it at once after."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)
