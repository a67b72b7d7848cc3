"""The SDK against real cores on loopback ports: publish, subscribe, resume, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.sdk import (
    Backoff,
    Client,
    Gap,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)
from core.codec import event_to_frame
from core.server import CoreNode
from tests.clients_helpers import FAST, next_item

if TYPE_CHECKING:
    from tests.clients_fixtures import Cores

pytest_plugins = ["tests.clients_fixtures"]


def update(package_id: str, status: str = "in_transit") -> dict[str, object]:
    return {"type": "package_update", "data": {"package_id": package_id, "status": status}}


async def test_publish_dicts_and_messages_returns_ids_and_positions(client: Client) -> None:
    message = pb.Event(
        anomaly_detected=pb.AnomalyDetected(
            package_id="p1",
            anomaly_type=pb.ANOMALY_TYPE_DAMAGED,
            severity=pb.SEVERITY_HIGH,
        )
    )
    results = await client.publish([update("p1"), update("p2"), message])
    assert [r.position.offset for r in results] == [1, 2, 1]
    assert [r.topic for r in results] == [
        pb.TOPIC_PACKAGE_UPDATES,
        pb.TOPIC_PACKAGE_UPDATES,
        pb.TOPIC_ANOMALIES,
    ]
    assert all(r.id for r in results)
    (single,) = await client.publish(update("p3"))
    assert single.position.offset == 3


async def test_subscriber_receives_what_is_published(client: Client) -> None:
    async with client.subscribe(["package_updates", "anomalies"]) as sub:
        await client.publish([update("p1"), update("p2", "delivered")])
        first, second = await next_item(sub), await next_item(sub)
    assert isinstance(first, pb.Event)
    assert isinstance(second, pb.Event)
    assert first.package_update.package_id == "p1"
    assert event_to_frame(second)["data"]["status"] == "delivered"
    assert sub.positions["package_updates"].offset == 2


async def test_filters_are_applied_by_the_core(client: Client) -> None:
    async with client.subscribe("package_updates", filters={"package_ids": ["wanted"]}) as sub:
        await client.publish([update("other"), update("wanted")])
        item = await next_item(sub)
    assert isinstance(item, pb.Event)
    assert item.package_update.package_id == "wanted"


async def test_since_resumes_after_a_frame_position(client: Client) -> None:
    results = await client.publish([update("p1"), update("p2"), update("p3")])
    frame_position = {"epoch": results[0].position.epoch, "offset": results[0].position.offset}
    async with client.subscribe(
        "package_updates", since={"package_updates": frame_position}
    ) as sub:
        items = [await next_item(sub), await next_item(sub)]
    assert [i.package_update.package_id for i in items if isinstance(i, pb.Event)] == ["p2", "p3"]


async def test_bad_input_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match=r"events\[0\].data.status: 'flying'"):
        await client.publish(update("p1", "flying"))
    with pytest.raises(InvalidArgumentError, match="unknown subscription type"):
        client.subscribe("parcels")
    with pytest.raises(InvalidArgumentError, match=r"filter\.min_severity"):
        client.subscribe("anomalies", filters={"min_severity": "apocalyptic"})


async def test_core_refusals_are_mapped_with_their_code(client: Client) -> None:
    bad = {"type": "anomaly_detected", "data": {"package_id": "p", "confidence_score": 2.0}}
    with pytest.raises(InvalidArgumentError) as caught:
        await client.publish(bad)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "events[0].anomaly_detected" in str(caught.value)
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_unreachable_core_is_unavailable(cores: Cores) -> None:
    node = await cores.start()
    address = node.address
    await cores.stop(node)
    async with Client(address, timeout=2) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.publish(update("p1"))
    assert caught.value.code == "UNAVAILABLE"


async def test_health_reports_serving(client: Client) -> None:
    assert await client.health() == "SERVING"
    assert await client.health("clearpath.realtime.v1.RealtimeService") == "SERVING"


async def test_target_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARPATH_CORE", "core.example:1234")
    monkeypatch.setenv("CLEARPATH_TOKEN", "s3cret")
    client = Client()
    assert client.target == "core.example:1234"
    assert client._metadata == (("authorization", "Bearer s3cret"),)
    monkeypatch.delenv("CLEARPATH_CORE")
    monkeypatch.delenv("CLEARPATH_TOKEN")
    assert Client().target == "localhost:50051"
    assert Client()._metadata == ()


class _Recorder(sgrpc.RealtimeServiceServicer):
    """Records the metadata of each call and refuses it with PERMISSION_DENIED."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def Subscribe(
        self, request: spb.SubscribeRequest, context: object
    ) -> AsyncIterator[spb.SubscribeResponse]:
        ctx: grpc.aio.ServicerContext[object, object] = context  # type: ignore[assignment]
        self.metadata.append({k: str(v) for k, v in ctx.invocation_metadata() or ()})
        await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "subscribe is not allowed for you")
        yield spb.SubscribeResponse()  # never reached; makes this a stream handler

    async def Publish(self, request: spb.PublishRequest, context: object) -> spb.PublishResponse:
        ctx: grpc.aio.ServicerContext[object, object] = context  # type: ignore[assignment]
        self.metadata.append({k: str(v) for k, v in ctx.invocation_metadata() or ()})
        await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "publish is not allowed for you")
        raise AssertionError("unreachable")

    async def History(self, request: spb.HistoryRequest, context: object) -> spb.HistoryResponse:
        raise AssertionError("the SDK does not read history")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[_Recorder, str]]:
    server = grpc.aio.server()
    servicer = _Recorder()
    sgrpc.add_RealtimeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_token_is_sent_as_bearer_metadata(recorder: tuple[_Recorder, str]) -> None:
    servicer, address = recorder
    async with Client(address, token="tok-123") as client:
        with pytest.raises(PermissionDeniedError, match="not allowed"):
            await client.publish(update("p1"))
    assert servicer.metadata[0]["authorization"] == "Bearer tok-123"


# --- resuming --------------------------------------------------------------------


async def test_subscription_survives_a_restart_with_no_gap(cores: Cores) -> None:
    node = await cores.start(history_size=100)
    publisher = Client(node.address, timeout=5, backoff=FAST)
    subscriber = Client(node.address, backoff=FAST)
    async with publisher, subscriber, subscriber.subscribe("package_updates") as sub:
        await publisher.publish(update("before"))
        assert (await next_item(sub)).package_update.package_id == "before"  # type: ignore[union-attr]
        # The core goes away and comes back with its history (same broker, same
        # port); while the subscriber is not reading, more events are published.
        node = await cores.restart(node, keep_history=True)
        await publisher.publish([update("during-1"), update("during-2")])
        items = [await next_item(sub), await next_item(sub)]
        await publisher.publish(update("after"))
        items.append(await next_item(sub))
    events = [i for i in items if isinstance(i, pb.Event)]
    assert [e.package_update.package_id for e in events] == ["during-1", "during-2", "after"]
    assert [e.position.offset for e in events] == [2, 3, 4]
    assert sub.reconnects == 1


async def test_a_lost_history_is_announced_as_a_gap(cores: Cores) -> None:
    node = await cores.start(history_size=100)
    publisher = Client(node.address, timeout=5, backoff=FAST)
    subscriber = Client(node.address, backoff=FAST)
    async with publisher, subscriber, subscriber.subscribe(["package_updates", "anomalies"]) as sub:
        await publisher.publish(update("before"))
        before = await next_item(sub)
        assert isinstance(before, pb.Event)
        # A fresh broker: new epochs, the old history is gone.
        node = await cores.restart(node, keep_history=False)
        await publisher.publish(update("after"))
        gap, other_gap = await next_item(sub), await next_item(sub)
        after = await next_item(sub)
    assert isinstance(gap, Gap)
    assert gap.topic == "package_updates"
    assert gap.reason == "epoch_changed"
    assert gap.since == before.position
    assert gap.position.epoch != before.position.epoch
    assert isinstance(after, pb.Event)
    assert after.package_update.package_id == "after"
    # Nothing was seen on anomalies, but events could have been lost there too.
    assert isinstance(other_gap, Gap)
    assert (other_gap.topic, other_gap.reason) == ("anomalies", "epoch_changed")


async def test_a_trimmed_history_is_announced_as_a_gap(cores: Cores) -> None:
    node = await cores.start(history_size=2)
    publisher = Client(node.address, timeout=5, backoff=FAST)
    subscriber = Client(node.address, backoff=FAST)
    async with publisher, subscriber, subscriber.subscribe("package_updates") as sub:
        await publisher.publish(update("p0"))
        await next_item(sub)
        node = await cores.restart(node, keep_history=True)
        await publisher.publish([update(f"p{i}") for i in range(1, 6)])
        gap = await next_item(sub)
        rest = [await next_item(sub), await next_item(sub)]
    assert isinstance(gap, Gap)
    assert gap.reason == "history_trimmed"
    assert all(isinstance(i, pb.Event) for i in rest)
    assert [i.package_update.package_id for i in rest if isinstance(i, pb.Event)] == ["p4", "p5"]


async def test_a_slow_consumer_is_cut_off_and_resumes_without_loss(cores: Cores) -> None:
    total = 2000
    batch = 50
    node = await cores.start(queue_size=batch, history_size=total, max_batch=batch)
    padding = "x" * 2000  # large events fill the transport's windows quickly
    events = [
        {
            "type": "package_update",
            "data": {"package_id": f"p{i}", "status": "created", "location": padding},
        }
        for i in range(total)
    ]
    client = Client(node.address, timeout=10, backoff=FAST)
    async with client, client.subscribe("package_updates") as sub:
        # Not reading while the core streams: its queue for us overflows.
        for start in range(0, total, batch):
            await client.publish(events[start : start + batch])
        received: list[int] = []
        while len(received) < total:
            item = await next_item(sub, timeout=10)
            assert isinstance(item, pb.Event), item
            received.append(item.position.offset)
    assert received == list(range(1, total + 1))
    assert sub.reconnects >= 1


async def test_errors_retrying_cannot_fix_end_the_subscription(
    recorder: tuple[_Recorder, str],
) -> None:
    servicer, address = recorder
    async with Client(address, backoff=FAST, token="t") as client:
        sub = client.subscribe("anomalies")
        with pytest.raises(PermissionDeniedError, match="subscribe is not allowed") as caught:
            await asyncio.wait_for(sub.start(), 5)
    assert caught.value.code == "PERMISSION_DENIED"
    assert len(servicer.metadata) == 1  # not retried
    assert servicer.metadata[0]["authorization"] == "Bearer t"


async def test_reconnect_attempts_can_be_bounded(cores: Cores) -> None:
    node = await cores.start()
    address = node.address
    await cores.stop(node)
    backoff = Backoff(initial=0.01, maximum=0.02, max_attempts=3)
    async with Client(address, backoff=backoff) as client:
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(client.subscribe("anomalies").start(), 5)


async def test_closing_ends_iteration(sdk_core: CoreNode, client: Client) -> None:
    sub = client.subscribe("system_health")
    await sub.start()
    await sub.aclose()
    with pytest.raises(StopAsyncIteration):
        await next_item(sub)
