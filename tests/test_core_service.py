"""The core over real gRPC: a grpc.aio server on a loopback port and a real client."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import SERVICE_NAME, CoreNode
from core.topics import EVENT_TYPES, PAYLOAD_TOPIC
from tests.conftest import StartCore
from tests.events import package, sample
from tests.grpc_helpers import TIMEOUT, open_stream, publish, read_events

if TYPE_CHECKING:
    Stub = sgrpc.RealtimeServiceAsyncStub


@pytest.mark.parametrize("kind", EVENT_TYPES)
async def test_publish_subscribe_round_trip(stub: Stub, kind: str) -> None:
    topic = PAYLOAD_TOPIC[kind]
    call, confirmed = await open_stream(stub, [topic])
    assert [t.topic for t in confirmed.topics] == [topic]
    assert confirmed.topics[0].recovered
    sent = sample(kind)
    response = await publish(stub, sent)
    (result,) = response.results
    assert result.topic == topic
    assert result.position.offset == 1
    (got,) = await read_events(call, 1)
    assert got.id == result.id
    assert got.position == result.position
    assert getattr(got, kind) == getattr(sent, kind)
    assert got.timestamp == sent.timestamp
    call.cancel()


async def test_many_subscribers_receive_every_event_in_order(stub: Stub) -> None:
    calls = [(await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES]))[0] for _ in range(20)]
    for batch in range(5):
        await publish(stub, *(package(f"p{batch}-{i}") for i in range(20)))
    expected = [f"p{b}-{i}" for b in range(5) for i in range(20)]
    results = await asyncio.gather(*(read_events(call, 100) for call in calls))
    for events in results:
        assert [e.package_update.package_id for e in events] == expected
        assert [e.position.offset for e in events] == list(range(1, 101))
    for call in calls:
        call.cancel()


async def test_topics_are_isolated(stub: Stub) -> None:
    anomalies, _ = await open_stream(stub, [pb.TOPIC_ANOMALIES])
    both, _ = await open_stream(stub, [pb.TOPIC_ANOMALIES, pb.TOPIC_SYSTEM_HEALTH])
    await publish(stub, package(), sample("system_health"), sample("anomaly_detected"))
    (only,) = await read_events(anomalies, 1)
    assert only.HasField("anomaly_detected")
    got = await read_events(both, 2)
    assert [e.WhichOneof("payload") for e in got] == ["system_health", "anomaly_detected"]
    # Nothing else is waiting for the anomalies subscriber: the next message is a heartbeat.
    message = await asyncio.wait_for(anomalies.read(), TIMEOUT)
    assert message.WhichOneof("kind") == "heartbeat"
    anomalies.cancel()
    both.cancel()


async def test_filters_are_applied_in_the_core(stub: Stub) -> None:
    filtered, _ = await open_stream(
        stub,
        [pb.TOPIC_PACKAGE_UPDATES, pb.TOPIC_ANOMALIES, pb.TOPIC_NOTIFICATIONS],
        filter=spb.SubscriptionFilter(
            package_ids=["pkg-1"], min_severity=pb.SEVERITY_HIGH, user_id="alice"
        ),
    )
    await publish(
        stub,
        package("pkg-2"),
        package("pkg-1"),
        sample("anomaly_detected", severity="low"),
        sample("anomaly_detected", severity="critical"),
        sample("notification", user_id="bob", severity="critical"),
        sample("notification", user_id="", severity="critical"),
        sample("notification", user_id="alice", severity="critical", package_id="pkg-9"),
    )
    got = await read_events(filtered, 3)
    assert [e.WhichOneof("payload") for e in got] == [
        "package_update",
        "anomaly_detected",
        "notification",
    ]
    assert got[0].package_update.package_id == "pkg-1"
    assert got[1].anomaly_detected.severity == pb.SEVERITY_CRITICAL
    assert got[2].notification.user_id == ""
    tracking, _ = await open_stream(
        stub,
        [pb.TOPIC_PACKAGE_UPDATES],
        filter=spb.SubscriptionFilter(tracking_numbers=["PKG2"]),
    )
    await publish(stub, package("a", tracking_number="PKG1"), package("b", tracking_number="PKG2"))
    (only,) = await read_events(tracking, 1)
    assert only.package_update.package_id == "b"
    filtered.cancel()
    tracking.cancel()


async def test_resume_from_a_position_and_the_answer_when_too_old(start_core: StartCore) -> None:
    node = await start_core(history_size=5, heartbeat_interval=0.5)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        response = await publish(stub, *(package(f"p{i}") for i in range(8)))
        positions = [r.position for r in response.results]
        # Resume after offset 5: 6, 7, 8 are in history.
        call, confirmed = await open_stream(
            stub,
            [pb.TOPIC_PACKAGE_UPDATES],
            since=[spb.TopicPosition(topic=pb.TOPIC_PACKAGE_UPDATES, position=positions[4])],
        )
        assert confirmed.topics[0].recovered
        assert confirmed.topics[0].position.offset == 8
        await publish(stub, package("live"))
        got = await read_events(call, 4)
        assert [e.position.offset for e in got] == [6, 7, 8, 9]
        assert got[-1].package_update.package_id == "live"
        call.cancel()
        # Resume after offset 1: 2 was dropped from the history of 5 (5..9 are kept).
        old, confirmed = await open_stream(
            stub,
            [pb.TOPIC_PACKAGE_UPDATES],
            since=[spb.TopicPosition(topic=pb.TOPIC_PACKAGE_UPDATES, position=positions[0])],
        )
        assert not confirmed.topics[0].recovered
        got = await read_events(old, 5)
        assert [e.position.offset for e in got] == [5, 6, 7, 8, 9]
        old.cancel()
        # A position from another epoch (say, before a restart) is not recovered either.
        stale = pb.StreamPosition(offset=3, epoch="old-epoch")
        other, confirmed = await open_stream(
            stub,
            [pb.TOPIC_PACKAGE_UPDATES],
            since=[spb.TopicPosition(topic=pb.TOPIC_PACKAGE_UPDATES, position=stale)],
        )
        assert not confirmed.topics[0].recovered
        other.cancel()


async def test_stalled_subscriber_does_not_delay_others_and_is_ended(start_core: StartCore) -> None:
    node = await start_core(queue_size=100, max_batch=100, heartbeat_interval=5)
    big = "x" * 4000  # ~4 kB events fill the HTTP/2 window of the stalled stream fast
    total = 3000
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        stalled, _ = await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES])
        fast, _ = await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES])
        got: list[pb.Event] = []
        for batch in range(total // 100):
            await publish(stub, *(package(f"p{batch}-{i}", location=big) for i in range(100)))
            got += await read_events(fast, 100)
        assert [e.position.offset for e in got] == list(range(1, total + 1))

        # The stalled stream now gets what it had queued, then RESOURCE_EXHAUSTED.
        async def drain() -> list[int]:
            offsets = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    message = await stalled.read()
                    if message.WhichOneof("kind") == "event":
                        offsets.append(message.event.position.offset)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "resubscribe with `since`" in (info.value.details() or "")
            return offsets

        offsets = await asyncio.wait_for(drain(), 30)
        assert offsets == list(range(1, len(offsets) + 1))  # in order, no hole before the end
        assert len(offsets) < total
        assert node.hub.overflows == 1


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "events: at least one event is required"),
        ([pb.Event()], "events[1]: no payload"),
        (
            [pb.Event(topic=pb.TOPIC_ANOMALIES, package_update=package().package_update)],
            "events[1].topic: a package_update payload belongs to package_updates",
        ),
        (
            [sample("anomaly_detected", confidence_score=1.5)],
            "events[1].anomaly_detected.confidence_score: 1.5 is out of range",
        ),
        ([package(location="x" * 5000)], "location: at most 4096 characters"),
    ],
)
async def test_bad_publish_is_invalid_argument(
    stub: Stub, core: CoreNode, events: list[pb.Event], message: str
) -> None:
    call, _ = await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES, pb.TOPIC_ANOMALIES])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish(stub, package("good-first"), *events) if events else await publish(stub)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
    # Nothing of the batch was fanned out: the next event has offset 1.
    await publish(stub, package("after"))
    (got,) = await read_events(call, 1)
    assert got.package_update.package_id == "after"
    assert got.position.offset == 1
    call.cancel()


async def test_unknown_enum_is_invalid_argument(stub: Stub) -> None:
    event = package()
    event.package_update.status = 99  # type: ignore[assignment]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish(stub, event)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "package_update.status: unknown value 99" in (info.value.details() or "")


async def test_oversized_message_is_refused(start_core: StartCore) -> None:
    node = await start_core(max_message_bytes=64 * 1024, max_event_bytes=2048)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(stub, package(location="x" * 3000))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 2048 bytes" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(stub, *(package(location="x" * 1000) for _ in range(100)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (spb.SubscribeRequest(), "topics: at least one topic is required"),
        (spb.SubscribeRequest(topics=[42]), "topics[0]: unknown topic 42"),  # type: ignore[list-item]
        (
            spb.SubscribeRequest(
                topics=[pb.TOPIC_ANOMALIES],
                filter=spb.SubscriptionFilter(min_severity=9),  # type: ignore[arg-type]
            ),
            "filter.min_severity: unknown value 9",
        ),
        (
            spb.SubscribeRequest(
                topics=[pb.TOPIC_ANOMALIES],
                since=[spb.TopicPosition(topic=pb.TOPIC_MAP_UPDATES)],
            ),
            "since[0].topic: 5 is not subscribed",
        ),
    ],
)
async def test_bad_subscribe_is_invalid_argument(
    stub: Stub, request_: spb.SubscribeRequest, message: str
) -> None:
    call = stub.Subscribe(request_)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call.read(), TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


async def test_health_and_reflection_answer(core: CoreNode) -> None:
    async with grpc.aio.insecure_channel(core.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflect.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await asyncio.wait_for(call.read(), TIMEOUT)
        names = {s.name for s in reply.list_services_response.service}
        assert SERVICE_NAME in names
        await call.write(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
        )
        reply = await asyncio.wait_for(call.read(), TIMEOUT)
        assert reply.file_descriptor_response.file_descriptor_proto
        await call.done_writing()


async def test_graceful_shutdown_ends_open_streams(start_core: StartCore) -> None:
    node = await start_core(heartbeat_interval=30)
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [pb.TOPIC_PACKAGE_UPDATES])
        health = health_pb2_grpc.HealthStub(channel)
        await asyncio.wait_for(node.stop(grace=5), 10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=2)


async def test_batches_when_asked(stub: Stub) -> None:
    call = stub.Subscribe(spb.SubscribeRequest(topics=[pb.TOPIC_PACKAGE_UPDATES], max_batch=10))
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert isinstance(first, spb.SubscribeResponse)
    assert first.WhichOneof("kind") == "confirmed"
    await publish(stub, *(package(f"p{i}") for i in range(25)))
    got: list[pb.Event] = []
    sizes = []
    while len(got) < 25:
        message = await asyncio.wait_for(call.read(), TIMEOUT)
        assert isinstance(message, spb.SubscribeResponse)
        if message.HasField("batch"):
            sizes.append(len(message.batch.events))
            got += message.batch.events
        elif message.HasField("event"):
            sizes.append(1)
            got.append(message.event)
    assert [e.package_update.package_id for e in got] == [f"p{i}" for i in range(25)]
    assert max(sizes) == 10  # one publish of 25 arrives in messages of at most 10
    call.cancel()
