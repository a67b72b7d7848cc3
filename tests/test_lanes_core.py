"""Priority lanes and conflation on the gRPC path: a real core, Subscribe streams
whose reader stops (HTTP/2 flow control holds the rest in the core's queue) and
reads again; the SDK and the CLI surface ``Conflated``. README "Delivery classes,
priority lanes and conflation"."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.cli.subscribe import _tell_conflated
from clients.sdk import Client
from core.config import CoreSettings
from core.hub import Subscription
from core.server import CoreNode
from core.wire import Delivery
from tests.conftest import StartCore
from tests.events import package, sample
from tests.grpc_helpers import TIMEOUT, open_stream, publish
from tests.test_core_metrics import scrape, value
from tests.test_lanes_bridge import position, publish_positions
from tests.waiting import eventually

MAP, ANOMALIES, PACKAGES = pb.TOPIC_MAP_UPDATES, pb.TOPIC_ANOMALIES, pb.TOPIC_PACKAGE_UPDATES


def the_stream(core: CoreNode) -> Subscription[Delivery]:
    (sub,) = core.hub.subscriptions()
    return sub


def queued(sub: Subscription[Delivery], topic: int) -> int:
    """Events of ``topic`` in the stream's queue (white box: both lanes)."""
    lanes = [*(sub._urgent or ()), *sub._queue]
    return sum(1 for d in lanes if d is not None and d.topic == topic)


async def read_all(call: Any, *until: Any, within: float = 30) -> list[spb.SubscribeResponse]:
    """Messages until each of ``until`` (a test of one message) held for one."""
    got: list[spb.SubscribeResponse] = []
    waiting = list(until)

    async def read() -> None:
        while waiting:
            message = await call.read()
            assert isinstance(message, spb.SubscribeResponse), "stream ended"
            got.append(message)
            waiting[:] = [test for test in waiting if not test(message)]

    await asyncio.wait_for(read(), within)
    return got


def events(messages: list[spb.SubscribeResponse]) -> list[pb.Event]:
    return [m.event for m in messages if m.WhichOneof("kind") == "event"]


def reached(topic: int, offset: int = 1) -> Any:
    """A test of one message: an event of ``topic`` at ``offset`` or later."""
    return lambda m: (
        m.WhichOneof("kind") == "event"
        and m.event.topic == topic
        and m.event.position.offset >= offset
    )


@pytest.mark.parametrize("lanes", [True, False])
async def test_an_anomaly_overtakes_the_map_backlog_of_a_stalled_stream(
    start_core: StartCore, lanes: bool
) -> None:
    core = await start_core(
        queue_size=20_000, max_batch=1000, priority_lanes=lanes, conflate="none"
    )
    total = 8000
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [MAP, ANOMALIES])  # not read until the end
        await publish_positions(stub, 0, total, packages=total, pad=2000)  # ~16 MB
        sub = the_stream(core)
        await publish(stub, sample("anomaly_detected"))
        backlog = queued(sub, MAP)  # published before the anomaly, not yet taken
        assert backlog > 1000  # far behind: the test has teeth
        got = events(await read_all(call, reached(MAP, total), reached(ANOMALIES)))
        call.cancel()
    kinds = [e.topic for e in got]
    after = len(kinds) - 1 - kinds.index(ANOMALIES)
    if lanes:
        assert after >= backlog
    else:
        assert after == 0


async def test_a_slowed_map_stream_stays_open_and_ends_with_every_latest_position(
    start_core: StartCore,
) -> None:
    core = await start_core(queue_size=2000, max_batch=1000, conflate_after=100, metrics_port=0)
    total, packages = 10_000, 300  # five times the queue: without conflation, cut off
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [MAP])
        await publish_positions(stub, 0, total, packages, pad=500)
        messages = await read_all(call, reached(MAP, total))
        call.cancel()
        dropped = value(
            await scrape(core), "clearpath_events_dropped_total", path="grpc", reason="conflated"
        )
    notices = [m.conflated for m in messages if m.WhichOneof("kind") == "conflated"]
    got = events(messages)
    assert notices
    assert {n.topic for n in notices} == {MAP}
    offsets = [e.position.offset for e in got]
    assert offsets == sorted(set(offsets))
    assert (offsets[0], offsets[-1]) == (1, total)
    assert sum(n.skipped for n in notices) == total - len(got)  # every skip was told
    assert dropped == total - len(got)  # and counted
    latest = {e.map_update.package_id: e.map_update.latitude for e in got}
    for p in range(packages):
        last = max(i for i in range(total - packages, total) if i % packages == p)
        assert latest[f"pkg-{p}"] == pytest.approx(last / 1000)


async def test_never_drop_topics_and_every_event_streams_are_never_conflated(
    start_core: StartCore,
) -> None:
    core = await start_core(queue_size=8000, max_batch=1000, conflate_after=10)
    total = 3000
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        packages, _ = await open_stream(stub, [PACKAGES])
        maps, _ = await open_stream(stub, [MAP], every_event=True)
        big = "x" * 500
        for _ in range(total // 500):
            await publish(stub, *(package("pkg-1", location=big) for _ in range(500)))
            await publish(stub, *(position(0, 1, pad=500) for _ in range(500)))
        for call, topic in ((packages, PACKAGES), (maps, MAP)):
            messages = await read_all(call, reached(topic, total))
            call.cancel()
            assert not [m for m in messages if m.WhichOneof("kind") == "conflated"]
            assert [e.position.offset for e in events(messages)] == list(range(1, total + 1))


async def test_the_sdk_counts_what_was_conflated(start_core: StartCore) -> None:
    core = await start_core(queue_size=2000, max_batch=1000, conflate_after=50)
    total = 3000
    async with Client(core.address) as client, client.subscribe(["map_updates"]) as sub:
        async with grpc.aio.insecure_channel(core.address) as channel:
            await publish_positions(sgrpc.RealtimeServiceStub(channel), 0, total, 20, pad=2000)
        received = 0

        async def read() -> None:
            nonlocal received
            async for event in sub:
                assert isinstance(event, pb.Event)
                received += 1
                if event.position.offset == total:
                    return

        await asyncio.wait_for(read(), TIMEOUT * 3)
    assert sub.conflated["map_updates"] > 0
    assert received + sub.conflated["map_updates"] == total


def test_core_settings_check_conflation() -> None:
    assert CoreSettings.model_validate({}).conflate_after_events == 4096 // 4
    assert CoreSettings.model_validate({"conflate": "none"}).conflation == {}
    with pytest.raises(ValueError, match="anomalies is never conflated"):
        CoreSettings.model_validate({"conflate": "anomalies"})
    with pytest.raises(ValueError, match="must be below queue_size"):
        CoreSettings.model_validate({"queue_size": 1000, "max_batch": 1000, "conflate_after": 1000})


def test_the_cli_tells_each_new_conflation_once_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    told: dict[str, int] = {}
    _tell_conflated({"map_updates": 412}, told)
    _tell_conflated({"map_updates": 412}, told)  # nothing new
    _tell_conflated({"map_updates": 500, "system_health": 3}, told)
    out = capsys.readouterr()
    assert out.out == ""  # stdout stays pure JSON lines
    assert out.err.splitlines() == [
        "clearpath: conflated map_updates: 412 superseded events skipped "
        "(the stream was behind; the newest of each key follows)",
        "clearpath: conflated map_updates: 88 superseded events skipped "
        "(the stream was behind; the newest of each key follows)",
        "clearpath: conflated system_health: 3 superseded events skipped "
        "(the stream was behind; the newest of each key follows)",
    ]


async def test_an_overflowing_stream_gets_everything_it_had_queued_then_resource_exhausted(
    start_core: StartCore,
) -> None:
    core = await start_core(queue_size=500, max_batch=250, history_size=100_000)
    total = 10_000
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [PACKAGES])  # not read until it overflowed
        sub = the_stream(core)
        queued: list[int] = []  # white box: what was queued when it overflowed
        wake = sub.on_ready

        def on_ready() -> None:
            if sub.overflowed and not queued:
                queued.append(len(sub))
            wake()

        sub.on_ready = on_ready
        big = "L" * 2000  # ~20 MB in all: past gRPC's windows and the queue
        for _ in range(total // 250):
            await publish(stub, *(package("p", location=big) for _ in range(250)))
        assert sub.overflowed
        assert queued[0] > 64 * 2  # more than a round or two waited: the test has teeth
        offsets: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(TIMEOUT * 3):
                while True:
                    message = await call.read()
                    assert isinstance(message, spb.SubscribeResponse)
                    if message.WhichOneof("kind") == "event":
                        offsets.append(message.event.position.offset)
    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Every event before the first one refused arrived, then the stream ended.
    assert sub.refused is not None
    first_refused = sub.refused[PACKAGES].event.position.offset
    assert offsets == list(range(1, first_refused))


async def test_map_updates_of_vehicles_alone_keep_each_vehicles_latest_position(
    start_core: StartCore,
) -> None:
    core = await start_core(queue_size=100, max_batch=100)  # behind from 25 queued
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [MAP])
        filler = [sample("map_update", package_id=f"pkg-{i}") for i in range(30)]
        trucks = [
            sample("map_update", package_id="", vehicle_id=f"truck-{v}", latitude=40.0 + v)
            for v in range(10)
        ]
        moved = sample("map_update", package_id="", vehicle_id="truck-0", latitude=50.0)
        await publish(stub, *filler, *trucks, moved)  # one batch: the stream is behind
        messages = await read_all(call, reached(MAP, 41))
        call.cancel()
    latest = {
        e.map_update.vehicle_id: e.map_update.latitude
        for e in events(messages)
        if not e.map_update.package_id
    }
    assert latest == {f"truck-{v}": 50.0 if v == 0 else 40.0 + v for v in range(10)}
    notices = [m.conflated for m in messages if m.WhichOneof("kind") == "conflated"]
    assert [(n.topic, n.skipped) for n in notices] == [(MAP, 1)]  # truck-0's first position


async def test_events_superseded_in_a_stream_that_ended_before_telling_are_counted(
    start_core: StartCore,
) -> None:
    core = await start_core(queue_size=4000, max_batch=1000, conflate_after=200, metrics_port=0)
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [MAP, PACKAGES])  # never read
        sub = the_stream(core)
        big = "L" * 3000
        for _ in range(40):  # until gRPC's windows are full and the stream is behind
            await publish(stub, *(package("p", location=big) for _ in range(250)))
            if len(sub) > 500:
                break
        await publish(stub, *(position(i, 5) for i in range(1000)))
        superseded = sum((sub._skipped or {}).values())  # white box: not yet told
        assert superseded > 500  # the test has teeth
        call.cancel()

        async def ended() -> bool:
            return core.service.streams == 0

        await eventually(ended)
        dropped = value(
            await scrape(core), "clearpath_events_dropped_total", path="grpc", reason="conflated"
        )
    assert dropped == superseded


async def test_within_one_publish_batch_each_topic_keeps_its_order(start_core: StartCore) -> None:
    # README: order across topics is not guaranteed (an urgent event of a batch may go
    # ahead of the batch's other topics), within a topic it always is.
    core = await start_core()
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [PACKAGES, ANOMALIES])
        batch = [package(f"p{i}") for i in range(100)]
        batch += [sample("anomaly_detected") for _ in range(3)]
        batch += [package(f"p{i}") for i in range(100, 200)]
        await publish(stub, *batch)
        got = events(await read_all(call, reached(PACKAGES, 200), reached(ANOMALIES, 3)))
        call.cancel()
    for topic, count in ((PACKAGES, 200), (ANOMALIES, 3)):
        assert [e.position.offset for e in got if e.topic == topic] == list(range(1, count + 1))
