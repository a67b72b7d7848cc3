"""Batches and History pages are bounded by bytes as well as by count (issue 9, defect 1)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.limits import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from core.server import CoreNode
from tests.conftest import StartCore
from tests.events import large_agent_activity, package
from tests.grpc_helpers import TIMEOUT, open_stream, publish

if TYPE_CHECKING:
    from clearpath.realtime.v1 import service_pb2_grpc as sgrpc

    Stub = sgrpc.RealtimeServiceAsyncStub

AGENTS = pb.TOPIC_AGENT_ACTIVITY


async def publish_large(stub: Stub, count: int) -> None:
    for start in range(0, count, 100):
        await publish(stub, *(large_agent_activity(i) for i in range(start + 1, start + 101)))


async def read_batched(call: object, count: int) -> tuple[list[pb.Event], list[int]]:
    """``count`` events from a batched stream, and the byte size of each message."""
    events: list[pb.Event] = []
    sizes: list[int] = []

    async def read() -> None:
        while len(events) < count:
            message = await call.read()  # type: ignore[attr-defined]
            assert isinstance(message, spb.SubscribeResponse), "stream ended"
            kind = message.WhichOneof("kind")
            if kind == "batch":
                events.extend(message.batch.events)
                sizes.append(message.ByteSize())
            elif kind == "event":
                events.append(message.event)
                sizes.append(message.ByteSize())

    await asyncio.wait_for(read(), TIMEOUT * 3)
    return events, sizes


@pytest.fixture
async def big_core(start_core: StartCore) -> CoreNode:
    """The default limits (8 MiB messages, 64 KiB events, batches of 1000)."""
    return await start_core()


async def test_a_backlog_of_large_events_fits_in_messages(big_core: CoreNode) -> None:
    # The reproduction: 600 valid ~20 kB events, then Subscribe(max_batch=500,
    # since=…) used to fail with RESOURCE_EXHAUSTED (10 MB > 8 MiB) before any event.
    async with grpc.aio.insecure_channel(big_core.address) as channel:
        from clearpath.realtime.v1 import service_pb2_grpc as sgrpc

        stub = sgrpc.RealtimeServiceStub(channel)
        first = await publish(stub, large_agent_activity(0))
        since = first.results[0].position
        await publish_large(stub, 600)
        call, confirmed = await open_stream(
            stub,
            [AGENTS],
            max_batch=500,
            since=[spb.TopicPosition(topic=AGENTS, position=since)],
        )
        assert confirmed.topics[0].recovered
        events, sizes = await read_batched(call, 600)
        assert [e.position.offset for e in events] == list(range(2, 602))
        assert max(sizes) <= MAX_BATCH_BYTES + 64 * 1024 < MAX_MESSAGE_BYTES
        assert len(sizes) > 1
        # Live events are bounded the same way: a burst of 300 published at once.
        await publish_large(stub, 300)
        live, live_sizes = await read_batched(call, 300)
        assert [e.position.offset for e in live] == list(range(602, 902))
        assert max(live_sizes) <= MAX_BATCH_BYTES + 64 * 1024
        call.cancel()


async def test_small_events_still_fill_a_batch(stub: Stub) -> None:
    since = (await publish(stub, package("p0"))).results[0].position
    await publish(stub, *(package(f"p{i}") for i in range(1, 51)))
    call, _ = await open_stream(
        stub,
        [pb.TOPIC_PACKAGE_UPDATES],
        max_batch=50,
        since=[spb.TopicPosition(topic=pb.TOPIC_PACKAGE_UPDATES, position=since)],
    )
    message = await asyncio.wait_for(call.read(), TIMEOUT)
    assert message.WhichOneof("kind") == "batch"
    assert len(message.batch.events) == 50
    call.cancel()


async def history(stub: Stub, **request: object) -> spb.HistoryResponse:
    return await asyncio.wait_for(stub.History(spb.HistoryRequest(**request)), TIMEOUT)  # type: ignore[arg-type]


async def test_history_pages_are_bounded_and_complete(big_core: CoreNode) -> None:
    async with grpc.aio.insecure_channel(big_core.address) as channel:
        from clearpath.realtime.v1 import service_pb2_grpc as sgrpc

        stub = sgrpc.RealtimeServiceStub(channel)
        await publish_large(stub, 200)
        head = await history(stub, topic=AGENTS)
        assert head.state.position.offset == 200
        assert head.state.recovered
        assert not head.events  # no `since`: the state only
        since = pb.StreamPosition(offset=0, epoch=head.state.position.epoch)
        got: list[int] = []
        pages = 0
        while not got or got[-1] < head.state.position.offset:
            page = await history(stub, topic=AGENTS, since=since)
            assert page.state.recovered
            assert page.ByteSize() <= MAX_BATCH_BYTES + 64 * 1024
            got.extend(e.position.offset for e in page.events)
            since = page.events[-1].position
            pages += 1
        assert got == list(range(1, 201))
        assert pages > 1


async def test_history_limit_and_the_recovery_rules(stub: Stub) -> None:
    results = (await publish(stub, *(package(f"p{i}") for i in range(10)))).results
    epoch = results[0].position.epoch
    page = await history(
        stub,
        topic=pb.TOPIC_PACKAGE_UPDATES,
        since=pb.StreamPosition(offset=3, epoch=epoch),
        limit=4,
    )
    assert page.state.recovered
    assert [e.position.offset for e in page.events] == [4, 5, 6, 7]
    ahead = await history(
        stub, topic=pb.TOPIC_PACKAGE_UPDATES, since=pb.StreamPosition(offset=11, epoch=epoch)
    )
    assert not ahead.state.recovered
    assert not ahead.events
    other = await history(
        stub, topic=pb.TOPIC_PACKAGE_UPDATES, since=pb.StreamPosition(offset=3, epoch="other")
    )
    assert not other.state.recovered
    assert [e.position.offset for e in other.events] == list(range(1, 11))


async def test_history_of_an_unknown_topic_is_invalid(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await history(stub, topic=99)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "topic" in (info.value.details() or "")


async def test_history_trimmed_while_a_subscriber_catches_up_ends_it_visibly() -> None:
    # A resume over more than one page, to a subscriber slow enough that retention
    # moves past it between pages: the stream must end (RESOURCE_EXHAUSTED), never
    # carry on past a silent gap after having said recovered: true.
    from core.broker.memory import MemoryBroker
    from core.config import CoreSettings
    from core.errors import SlowConsumer
    from core.hub import Hub, Subscription
    from core.service import RealtimeService
    from core.wire import Delivery

    topic: int = pb.TOPIC_PACKAGE_UPDATES
    broker = MemoryBroker(history_size=1500)
    hub: Hub[Delivery] = Hub()
    await broker.start(lambda event: hub.dispatch(Delivery(event)))
    settings: dict[str, Any] = {"history_size": 1500, "queue_size": 5000}
    service = RealtimeService(CoreSettings(**settings), broker, hub)

    async def publish_n(count: int) -> None:
        for start in range(0, count, 100):
            await broker.publish([package(f"p{start + i}") for i in range(100)])

    await publish_n(1500)
    epoch = (await broker.history(topic, None)).position.epoch
    ready = asyncio.Event()
    sub: Subscription[Delivery] = Subscription([topic], 5000, ready.set)
    hub.add(sub)
    since = {topic: pb.StreamPosition(offset=0, epoch=epoch)}
    stream = service._stream(sub, "s", [topic], since, ready, 500, None)
    first = await asyncio.wait_for(anext(stream), TIMEOUT)
    assert isinstance(first, spb.SubscribeResponse)
    assert first.confirmed.topics[0].recovered
    got: list[int] = []
    while not got or got[-1] < 1000:  # the first page: offsets 1..1000
        chunk = await asyncio.wait_for(anext(stream), TIMEOUT)
        assert isinstance(chunk, bytes)
        got.extend(e.position.offset for e in spb.SubscribeResponse.FromString(chunk).batch.events)
    await publish_n(1200)  # retention (1,500) now starts at 1,201: 1,001..1,200 are gone
    with pytest.raises(SlowConsumer, match="trimmed"):
        await asyncio.wait_for(anext(stream), TIMEOUT)
    assert got == list(range(1, 1001))
