"""The core's entrance attacked: every RPC needs a valid bearer token, claims decide
what a caller may publish and read, each identity's publish rate is bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.auth import mint
from core.server import CoreNode
from tests.auth_helpers import SECRET, auth_settings, bearer, token
from tests.conftest import StartCore
from tests.events import sample
from tests.grpc_helpers import TIMEOUT

pytestmark = pytest.mark.timeout(60)

OPS = bearer(token("ops", operator=True, publish="*"))


@pytest.fixture
async def core(start_core: StartCore) -> CoreNode:
    return await start_core(
        heartbeat_interval=0.5,
        history_size=100,
        publish_rate=100,
        publish_burst=50,
        **auth_settings(),
    )


@pytest.fixture
async def stub(core: CoreNode) -> AsyncIterator[sgrpc.RealtimeServiceAsyncStub]:
    async with grpc.aio.insecure_channel(core.address) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


def request(*events: pb.Event) -> spb.PublishRequest:
    return spb.PublishRequest(events=list(events))


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call, TIMEOUT)  # type: ignore[arg-type]
    return info.value


BAD_TOKENS = {
    "missing": None,
    "expired": token("svc", publish="*", now=time.time() - 300, lifetime=60),
    "not yet valid": token("svc", publish="*", not_before=time.time() + 300),
    "wrong key": mint(subject="svc", key="another-secret-that-is-32-bytes-long!!", publish="*"),
    "tampered": token("svc").rsplit(".", 1)[0] + "." + token("svc", publish="*").rsplit(".", 1)[1],
    "garbage": "not-a-jwt",
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_every_bad_token_is_unauthenticated_on_every_rpc(
    stub: sgrpc.RealtimeServiceAsyncStub, kind: str
) -> None:
    value = BAD_TOKENS[kind]
    metadata = () if value is None else bearer(value)
    forged = sample("system_health", status="down")
    error = await refused(stub.Publish(request(forged), metadata=metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    if value is not None:
        assert value not in (error.details() or "")
    call = stub.Subscribe(spb.SubscribeRequest(topics=[pb.TOPIC_SYSTEM_HEALTH]), metadata=metadata)
    error = await refused(call.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(
        stub.History(spb.HistoryRequest(topic=pb.TOPIC_SYSTEM_HEALTH), metadata=metadata)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_forged_health_event_was_never_stored(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    await refused(stub.Publish(request(sample("system_health", status="down"))))
    page = await stub.History(spb.HistoryRequest(topic=pb.TOPIC_SYSTEM_HEALTH), metadata=OPS)
    assert page.state.position.offset == 0  # nothing was ever stored


async def test_health_needs_no_token(core: CoreNode) -> None:
    async with grpc.aio.insecure_channel(core.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_publish_only_to_the_topics_of_the_token(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    scanner = bearer(token("scanner", publish=["package_updates"]))
    ok = await stub.Publish(request(sample("package_update")), metadata=scanner)
    assert ok.results[0].position.offset == 1
    error = await refused(
        stub.Publish(
            request(sample("package_update"), sample("anomaly_detected")), metadata=scanner
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "events[1]" in (error.details() or "")
    assert "anomalies" in (error.details() or "")
    # All or nothing: the allowed event of the refused batch was not stored either.
    again = await stub.Publish(request(sample("package_update")), metadata=scanner)
    assert again.results[0].position.offset == 2
    reader = bearer(token("reader"))
    error = await refused(stub.Publish(request(sample("package_update")), metadata=reader))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_subscribe_only_to_the_topics_of_the_token(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    metadata = bearer(token("alice", subscribe=["package_updates"]))
    call = stub.Subscribe(
        spb.SubscribeRequest(topics=[pb.TOPIC_PACKAGE_UPDATES, pb.TOPIC_ANOMALIES]),
        metadata=metadata,
    )
    error = await refused(call.read())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "anomalies" in (error.details() or "")
    error = await refused(
        stub.History(spb.HistoryRequest(topic=pb.TOPIC_ANOMALIES), metadata=metadata)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_notifications_come_from_the_tokens_subject(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    alice = bearer(token("alice"))
    call = stub.Subscribe(spb.SubscribeRequest(topics=[pb.TOPIC_NOTIFICATIONS]), metadata=alice)
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert isinstance(first, spb.SubscribeResponse)
    assert first.HasField("confirmed")
    published = await stub.Publish(
        request(
            sample("notification", notification_id="to-bob", user_id="bob"),
            sample("notification", notification_id="to-alice", user_id="alice"),
            sample("notification", notification_id="to-all", user_id=""),
        ),
        metadata=OPS,
    )
    seen: list[str] = []
    while len(seen) < 2:
        response = await asyncio.wait_for(call.read(), TIMEOUT)
        assert isinstance(response, spb.SubscribeResponse)
        events = [response.event] if response.HasField("event") else list(response.batch.events)
        seen += [e.notification.notification_id for e in events]
    assert seen == ["to-alice", "to-all"]
    call.cancel()
    snoop = stub.Subscribe(
        spb.SubscribeRequest(
            topics=[pb.TOPIC_NOTIFICATIONS], filter=spb.SubscriptionFilter(user_id="bob")
        ),
        metadata=alice,
    )
    error = await refused(snoop.read())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    since = pb.StreamPosition(offset=0, epoch=published.results[0].position.epoch)
    page = await stub.History(
        spb.HistoryRequest(topic=pb.TOPIC_NOTIFICATIONS, since=since), metadata=alice
    )
    assert [e.notification.notification_id for e in page.events] == ["to-alice", "to-all"]


async def test_each_identity_has_its_own_publish_rate(stub: sgrpc.RealtimeServiceAsyncStub) -> None:
    # burst 50, 100/s: a batch of 50 passes, one of 51 right after does not.
    a = bearer(token("svc-a", publish="*"))
    b = bearer(token("svc-b", publish="*"))
    fifty = request(*(sample("package_update") for _ in range(50)))
    await stub.Publish(fifty, metadata=a)
    error = await refused(
        stub.Publish(request(*(sample("package_update") for _ in range(51))), metadata=a)
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "events/s" in (error.details() or "")
    await stub.Publish(fifty, metadata=b)  # another identity: its own bucket


async def test_a_stream_ends_when_its_token_expires(stub: sgrpc.RealtimeServiceAsyncStub) -> None:
    short = bearer(mint(subject="alice", key=SECRET, lifetime=2))
    call = stub.Subscribe(spb.SubscribeRequest(topics=[pb.TOPIC_PACKAGE_UPDATES]), metadata=short)
    error = await refused(_drain(call))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (error.details() or "")


async def _drain(
    call: grpc.aio.UnaryStreamCall[spb.SubscribeRequest, spb.SubscribeResponse],
) -> None:
    async for _ in call:
        pass
