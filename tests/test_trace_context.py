"""``published_at`` and ``traceparent`` on events: set by the core at Publish (the
trace context taken from the call's metadata), kept through history and Redis, and
shown in the JSON frames the bridge sends browsers."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bridge.app import BridgeNode
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.codec import encode_frame, event_from_frame, event_to_frame, millis_text
from core.server import CoreNode
from core.validation import valid_traceparent
from tests.conftest import StartCore
from tests.events import package
from tests.grpc_helpers import TIMEOUT, open_stream, read_events
from tests.redis_server import RedisServer
from tests.ws_helpers import open_ws, recv_events

pytest_plugins = ["tests.redis_fixtures"]

PKG = pb.TOPIC_PACKAGE_UPDATES
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACE, True),
        (OTHER, True),
        (TRACE.upper(), False),  # upper-case hex
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", False),  # all-zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", False),  # zero parent
        ("01" + TRACE[2:], False),  # another version
        ("ff" + TRACE[2:], False),
        (TRACE + "-extra", False),
        (TRACE[:-1], False),
        (" " + TRACE, False),
        ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", False),
        ("", False),
    ],
)
def test_traceparent_format(value: str, valid: bool) -> None:
    assert valid_traceparent(value) is valid


@asynccontextmanager
async def stub_of(node: CoreNode) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(node.address) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


async def publish_with(stub: Any, events: list[pb.Event], metadata: Any = ()) -> Any:
    request = spb.PublishRequest(events=events)
    return await stub.Publish(request, metadata=metadata, timeout=TIMEOUT)


async def test_traceparent_of_the_call_and_published_at_reach_subscribers(core: CoreNode) -> None:
    async with stub_of(core) as stub:
        call, _ = await open_stream(stub, [PKG])
        own = package("own")
        own.traceparent = OTHER  # an event's own trace context is kept
        before = time.time_ns()
        await publish_with(stub, [package("a"), own], (("traceparent", TRACE),))
        after = time.time_ns()
        first, second = await read_events(call, 2)
        call.cancel()
    assert first.traceparent == TRACE
    assert second.traceparent == OTHER
    stamped = first.published_at.ToNanoseconds()
    assert before <= stamped <= after
    assert second.published_at == first.published_at  # one clock read per call
    frame = event_to_frame(first)
    assert frame["traceparent"] == TRACE
    assert frame["published_at"] == millis_text(first.published_at)


@pytest.mark.parametrize(
    "metadata",
    [
        (("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"),),
        (("traceparent", "not a trace"),),
        (("traceparent", TRACE.upper()),),
        (),
    ],
)
async def test_an_invalid_or_absent_traceparent_is_ignored(
    core: CoreNode, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with stub_of(core) as stub:
        call, _ = await open_stream(stub, [PKG])
        bad_own = package("bad-own")
        bad_own.traceparent = "garbage"
        reply = await publish_with(stub, [package("x"), bad_own], metadata)  # not an error
        assert len(reply.results) == 2
        events = await read_events(call, 2)
        call.cancel()
    assert [e.traceparent for e in events] == ["", ""]
    assert all(e.published_at.seconds > 0 for e in events)
    assert "traceparent" not in event_to_frame(events[0])


async def test_a_publisher_cannot_set_published_at(core: CoreNode) -> None:
    forged = package("forged")
    forged.published_at.FromSeconds(1_000_000)
    async with stub_of(core) as stub:
        call, _ = await open_stream(stub, [PKG])
        before = time.time_ns()
        await publish_with(stub, [forged])
        (event,) = await read_events(call, 1)
        call.cancel()
    assert event.published_at.ToNanoseconds() >= before


async def test_published_at_and_traceparent_survive_history(start_core: StartCore) -> None:
    node = await start_core()
    async with stub_of(node) as stub:
        first = (await publish_with(stub, [package("h")], (("traceparent", TRACE),))).results[0]
        since = [
            spb.TopicPosition(topic=PKG, position=pb.StreamPosition(epoch=first.position.epoch))
        ]
        call, _ = await open_stream(stub, [PKG], since=since)
        (replayed,) = await read_events(call, 1)
        call.cancel()
        start = pb.StreamPosition(epoch=first.position.epoch)
        request = spb.HistoryRequest(topic=PKG, since=start, limit=10)
        page = await stub.History(request, timeout=TIMEOUT)
    assert replayed.traceparent == TRACE
    assert replayed.published_at.seconds > 0
    assert page.events[0].published_at == replayed.published_at


async def test_published_at_and_traceparent_survive_redis(
    start_core: StartCore, redis_server: RedisServer
) -> None:
    publisher = await start_core(broker_url=redis_server.url)
    reader = await start_core(broker_url=redis_server.url)
    async with stub_of(publisher) as a, stub_of(reader) as b:
        live, _ = await open_stream(b, [PKG])
        before = time.time_ns()
        reply = await publish_with(a, [package("r")], (("traceparent", TRACE),))
        (event,) = await read_events(live, 1)  # via Redis, on another node
        live.cancel()
        since = [
            spb.TopicPosition(
                topic=PKG, position=pb.StreamPosition(epoch=reply.results[0].position.epoch)
            )
        ]
        again, _ = await open_stream(b, [PKG], since=since)
        (replayed,) = await read_events(again, 1)
        again.cancel()
    assert event.traceparent == replayed.traceparent == TRACE
    assert event.published_at == replayed.published_at
    assert event.published_at.ToNanoseconds() >= before


async def test_browsers_get_published_at_and_traceparent(
    core: CoreNode, bridge: BridgeNode
) -> None:
    ws, _ = await open_ws(bridge, "/ws/packages")
    async with stub_of(core) as stub:
        await publish_with(stub, [package("b")], (("traceparent", TRACE),))
    (frame,) = await recv_events(ws, 1)
    await ws.close()
    assert frame["traceparent"] == TRACE
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["published_at"])


def test_frame_keys_keep_their_order_and_new_ones_come_last() -> None:
    event = package("k")
    event.id = "e1"
    plain = event_to_frame(event)
    assert list(plain) == ["type", "subscription_type", "id", "position", "data", "timestamp"]
    event.published_at.CopyFrom(Timestamp(seconds=1705314600, nanos=42_999_999))
    event.traceparent = TRACE
    frame = orjson.loads(encode_frame(event_to_frame(event)))
    assert list(frame)[:6] == list(plain)
    assert list(frame)[6:] == ["published_at", "traceparent"]
    assert frame["published_at"] == "2024-01-15T10:30:00.042Z"  # milliseconds, truncated
    event.published_at.CopyFrom(Timestamp(seconds=1705314600))
    assert event_to_frame(event)["published_at"] == "2024-01-15T10:30:00.000Z"


def test_a_received_frame_can_be_published_again() -> None:
    event = package("again")
    event.published_at.GetCurrentTime()
    event.traceparent = TRACE
    back = event_from_frame(orjson.loads(encode_frame(event_to_frame(event))))
    # What a subscriber saw is not taken: the core stamps a new event anew.
    assert not back.HasField("published_at")
    assert back.traceparent == ""
    assert back.package_update == event.package_update
