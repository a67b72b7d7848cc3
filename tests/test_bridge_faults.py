"""Faults the bridge must contain: an event it cannot encode, a bug in its upstream,
bogus resume positions, a core that lost its history (issue 9, defects 2, 3, 6, 7, 8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from bridge.frames import Frame
from bridge.upstream import Upstream
from bridge.writer import Flusher
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import CoreNode
from core.service import SERVICE_NAME
from core.topics import TOPICS
from core.wire import varint
from tests.conftest import StartBridge, StartCore
from tests.events import package
from tests.grpc_helpers import publish, serving
from tests.test_bridge import get_json
from tests.waiting import eventually
from tests.ws_helpers import TIMEOUT, open_ws, recv, recv_events, subscribe

PKG = pb.TOPIC_PACKAGE_UPDATES


# --- an event this bridge cannot encode (defect 2) ---------------------------------------


def unknown_payload_event(offset: int) -> bytes:
    """A serialized Event whose payload is a oneof member this bridge's protos lack
    (field 99), as a core built from newer protos would send it."""
    event = pb.Event(
        id=f"e{offset}", topic=PKG, position=pb.StreamPosition(offset=offset, epoch="e")
    )
    payload = b"\x0a\x03new"  # a message with one string field
    data = event.SerializeToString() + varint(99 << 3 | 2) + varint(len(payload)) + payload
    return b"\x12" + varint(len(data)) + data  # SubscribeResponse.event


class NewerCore:
    """A gRPC server that streams what the test puts in ``messages`` to a Subscribe."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            self._subscribe,
            request_deserializer=spb.SubscribeRequest.FromString,
            response_serializer=lambda b: b,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Subscribe": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _subscribe(self, request: spb.SubscribeRequest, context: Any) -> AsyncIterator[bytes]:
        confirmed = spb.SubscriptionConfirmed(
            topics=[spb.TopicState(topic=t, position=pb.StreamPosition(epoch="e")) for t in TOPICS]  # type: ignore[arg-type]
        )
        yield spb.SubscribeResponse(confirmed=confirmed).SerializeToString()
        while True:
            yield await self.messages.get()


@pytest.fixture
async def newer_core() -> AsyncIterator[NewerCore]:
    core = NewerCore()
    async with serving(core.server):
        yield core


async def test_an_event_that_cannot_be_encoded_is_counted_and_skipped(
    newer_core: NewerCore, start_bridge: StartBridge
) -> None:
    bridge = await start_bridge(f"127.0.0.1:{newer_core.port}")
    sockets = [(await open_ws(bridge, "/ws/packages"))[0] for _ in range(3)]
    newer_core.messages.put_nowait(unknown_payload_event(1))
    good = package("after").__deepcopy__()
    good.id = "good"
    good.topic = PKG
    good.position.CopyFrom(pb.StreamPosition(offset=2, epoch="e"))
    newer_core.messages.put_nowait(spb.SubscribeResponse(event=good).SerializeToString())
    for ws in sockets:  # every socket gets the next event: none was taken down
        (frame,) = await recv_events(ws, 1)
        assert frame["id"] == "good"
        assert frame["position"]["offset"] == 2
        await ws.close()
    status = await get_json(bridge.url + "/ws/status")
    assert status["frames_unencodable"] == 1
    assert status["slow_consumers_closed"] == 0
    assert status["upstream"]["state"] == "connected"


class _Flushable:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.flushed = 0
        self.failed: list[Exception] = []

    def flush(self) -> None:
        if self.fail:
            raise ValueError("cannot encode")
        self.flushed += 1

    def flush_failed(self, exc: Exception) -> None:
        self.failed.append(exc)


async def test_the_flusher_isolates_each_socket() -> None:
    flusher = Flusher(0)
    sockets = [_Flushable(fail=i == 1) for i in range(4)]
    for conn in sockets:
        flusher.mark(conn)
    await asyncio.sleep(0)  # the flush runs on the next loop turn
    assert [c.flushed for c in sockets] == [1, 0, 1, 1]
    assert len(sockets[1].failed) == 1
    assert flusher.failures == 1


# --- a bug in the upstream (defect 3) ------------------------------------------------------


async def test_the_upstream_survives_a_bug_logs_counts_and_restarts(
    core: CoreNode, stub: Any
) -> None:
    frames: list[Frame] = []
    calls = 0

    def on_frame(frame: Frame) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        frames.append(frame)

    overrides: dict[str, Any] = {"core": core.address, "reconnect_initial": 0.05}
    settings = BridgeSettings(**overrides)
    upstream = Upstream(settings, on_frame)
    upstream.start()
    try:
        await asyncio.wait_for(upstream.wait_connected(), TIMEOUT)
        await publish(stub, package("boom"))

        async def restarted() -> bool:
            return upstream.errors == 1 and upstream.state == "connected"

        await eventually(restarted)
        assert "internal error" in upstream.status()["last_error"]
        await publish(stub, package("next"))

        async def delivered() -> bool:
            return len(frames) == 1

        await eventually(delivered)
        assert frames[0].offset == 2
    finally:
        await upstream.stop()


# --- bogus resume positions (defects 6 and 7) ----------------------------------------------


async def test_a_position_ahead_of_the_topic_is_not_recovered_and_loses_nothing(
    bridge: BridgeNode, stub: Any
) -> None:
    epoch = (await publish(stub, package("one"))).results[0].position.epoch
    ws, _ = await open_ws(bridge, "/ws/connect")
    answer = await subscribe(ws, "package_updates", since={"offset": 6, "epoch": epoch})
    assert answer["data"]["recovered"] is False
    assert answer["data"]["reason"] == "position_ahead"
    assert answer["data"]["position"] == {"offset": 1, "epoch": epoch}
    await publish(stub, *(package(f"live{i}") for i in range(3)))
    assert [f["position"]["offset"] for f in await recv_events(ws, 3)] == [2, 3, 4]
    await ws.close()


async def test_a_position_ahead_in_the_url_is_not_recovered_either(
    bridge: BridgeNode, stub: Any
) -> None:
    epoch = (await publish(stub, package("one"))).results[0].position.epoch
    ws, _ = await open_ws(bridge, f"/ws/packages?since=package_updates:{epoch}:6")
    answer = await recv(ws)
    assert (answer["type"], answer["data"]["recovered"]) == ("subscribed", False)
    await publish(stub, package("two"))
    assert [f["position"]["offset"] for f in await recv_events(ws, 1)] == [2]
    await ws.close()


@pytest.mark.parametrize(
    "since",
    [
        "package_updates:x:99999999999999999999999",  # more than uint64
        "package_updates:x:18446744073709551616",  # 2**64: just past the limit
        "package_updates:x:%C2%B2",  # a superscript two: str.isdigit() but not a number
        "package_updates:x:-1",
        "package_updates:x:",
        "package_updates:" + "e" * 65 + ":1",  # an epoch longer than any
        "parcels:x:1",
        "package_updates:x",
    ],
)
async def test_a_bad_since_is_a_400_naming_the_parameter(bridge: BridgeNode, since: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = bridge.url + "/ws/packages?since=" + since
        async with http.get(url, headers={"Connection": "Upgrade", "Upgrade": "websocket"}) as r:
            assert r.status == 400
            text = await r.text()
    assert "since" in text or "subscription type" in text
    assert "Traceback" not in text


async def test_the_largest_offset_is_accepted(bridge: BridgeNode) -> None:
    ws, _ = await open_ws(bridge, "/ws/packages?since=package_updates:x:18446744073709551615")
    answer = await recv(ws)
    assert (answer["type"], answer["data"]["recovered"]) == ("subscribed", False)
    await ws.close()


# --- the core lost its history (defect 8) --------------------------------------------------


async def test_sockets_are_told_when_the_core_lost_history(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core()
    port = core.port
    bridge = await start_bridge(core.address, reconnect_initial=0.2, reconnect_max=0.2)
    packages, _ = await open_ws(bridge, "/ws/packages")
    dashboard, _ = await open_ws(bridge, "/ws/dashboard")
    async with grpc.aio.insecure_channel(core.address) as channel:
        old = (await publish(sgrpc.RealtimeServiceStub(channel), package("old"))).results[0]
    await recv_events(packages, 1)
    await core.stop(0)
    restarted = await start_core(port=port)  # in memory: a new epoch, history gone
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        new = (await publish(sgrpc.RealtimeServiceStub(channel), package("new"))).results[0]
    assert new.position.epoch != old.position.epoch
    notice = await recv(packages, within=15)
    assert notice["type"] == "subscribed"
    assert notice["data"]["subscription_type"] == "package_updates"
    assert notice["data"]["recovered"] is False
    assert notice["data"]["reason"] == "epoch_changed"
    assert notice["data"]["position"] == {"offset": 0, "epoch": new.position.epoch}
    (event,) = await recv_events(packages, 1)  # what the new epoch holds follows
    assert event["position"] == {"offset": 1, "epoch": new.position.epoch}
    # One notice per live topic of each socket.
    kinds = {(await recv(dashboard, within=15))["data"]["subscription_type"] for _ in range(2)}
    assert kinds == {"dashboard_metrics", "notifications"}
    status = await get_json(bridge.url + "/ws/status")
    assert status["upstream"]["history_gaps"] == 7
    await packages.close()
    await dashboard.close()
