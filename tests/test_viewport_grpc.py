"""Viewport subscriptions on gRPC against a real core: the ``bbox`` filter sends
exactly the map updates inside, other topics unchanged; moving the box is a new
Subscribe with ``since``; bad boxes are INVALID_ARGUMENT naming the field; the
SDK's ``bbox=`` and the CLI's ``--bbox``."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import grpc
import orjson
import pytest

import core.filters as core_filters
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.sdk import Client, Gap, InvalidArgumentError
from clients.sdk._resume import ResumeState
from core.server import CoreNode
from core.viewport import BoundingBox
from tests.clients_helpers import FAST, next_item, run_cli
from tests.conftest import StartCore
from tests.events import package, sample
from tests.grpc_helpers import TIMEOUT, open_stream, publish, read_events
from tests.waiting import eventually

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

    from tests.clients_fixtures import Cores

pytest_plugins = ["tests.clients_fixtures"]

#: The box of most tests: around the US Midwest.
BOX = BoundingBox(west=-90, south=30, east=-80, north=45)
#: Latitudes and longitudes around and on BOX's edges.
GRID_LATS = (29.99, 30.0, 37.5, 45.0, 45.01)
GRID_LONS = (-90.01, -90.0, -85.0, -80.0, -79.99)


def at(package_id: str, lat: float, lon: float) -> pb.Event:
    return sample("map_update", package_id=package_id, latitude=lat, longitude=lon)


def grid() -> list[pb.Event]:
    """Map updates on a grid inside, outside and on the edges of BOX, with a
    package update after each row (another topic, which the box must not touch)."""
    events: list[pb.Event] = []
    for i, lat in enumerate(GRID_LATS):
        events.extend(at(f"g-{i}-{j}", lat, lon) for j, lon in enumerate(GRID_LONS))
        events.append(package(f"row-{i}"))
    return events


def inside(events: list[pb.Event], box: BoundingBox) -> list[str]:
    return [
        e.map_update.package_id
        for e in events
        if e.HasField("map_update") and box.contains(e.map_update.latitude, e.map_update.longitude)
    ]


def proto_box(box: BoundingBox) -> spb.BoundingBox:
    return spb.BoundingBox(west=box.west, south=box.south, east=box.east, north=box.north)


async def read_until(call: object, package_id: str) -> list[pb.Event]:
    """Events up to and including the map update of ``package_id`` (the sentinel)."""
    events: list[pb.Event] = []
    while not events or events[-1].map_update.package_id != package_id:
        events.extend(await read_events(call, 1))
    return events


async def test_a_boxed_subscriber_gets_exactly_the_map_updates_inside(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    topics = [pb.TOPIC_MAP_UPDATES, pb.TOPIC_PACKAGE_UPDATES]
    boxed, _ = await open_stream(stub, topics, filter=spb.SubscriptionFilter(bbox=proto_box(BOX)))
    plain, _ = await open_stream(stub, topics)
    events = [*grid(), at("end", 40, -85)]
    await publish(stub, *events)
    got = await read_until(boxed, "end")
    everything = await read_until(plain, "end")
    boxed.cancel()
    plain.cancel()
    assert [e.map_update.package_id for e in got if e.HasField("map_update")] == inside(events, BOX)
    assert len(inside(events, BOX)) == 3 * 3 + 1  # the edges are inside
    # Other topics are unchanged: the same package updates, in the same order.
    updates = [e.package_update.package_id for e in got if e.HasField("package_update")]
    assert updates == [
        e.package_update.package_id for e in everything if e.HasField("package_update")
    ]
    assert updates == [f"row-{i}" for i in range(len(GRID_LATS))]
    assert len(everything) == len(events)


async def test_a_box_across_the_antimeridian(stub: sgrpc.RealtimeServiceAsyncStub) -> None:
    pacific = BoundingBox(west=170, south=-20, east=-170, north=20)
    spec = spb.SubscriptionFilter(bbox=proto_box(pacific))
    call, _ = await open_stream(stub, [pb.TOPIC_MAP_UPDATES], filter=spec)
    lons = (169.9, 170.0, 179.5, 180.0, -180.0, -175.0, -170.0, -169.9, 0.0)
    events = [at(f"m-{i}", 0, lon) for i, lon in enumerate(lons)]
    await publish(stub, *events, at("end", 10, 175))
    got = await read_until(call, "end")
    call.cancel()
    assert [e.map_update.package_id for e in got] == [
        "m-1",
        "m-2",
        "m-3",
        "m-4",
        "m-5",
        "m-6",
        "end",
    ]


async def test_moving_the_box_is_a_new_subscribe_with_since(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    west = BoundingBox(west=-100, south=30, east=-85, north=45)
    east = BoundingBox(west=-90, south=30, east=-75, north=45)
    # "both" is inside both boxes, "w" only in the west box, "e" only in the east one.
    spots = {"both": (40.0, -87.5), "w": (40.0, -95.0), "e": (40.0, -80.0)}
    published: list[tuple[pb.Event, spb.PublishResult]] = []

    async def publish_rounds(n: int) -> None:
        events = [at(name, *spots[name]) for _ in range(n) for name in ("both", "w", "e")]
        published.extend(zip(events, (await publish(stub, *events)).results, strict=True))

    def expected(box: BoundingBox, after: int, upto: int) -> list[int]:
        return [
            r.position.offset
            for e, r in published
            if after < r.position.offset <= upto
            and box.contains(e.map_update.latitude, e.map_update.longitude)
        ]

    spec = spb.SubscriptionFilter(bbox=proto_box(west))
    call, _ = await open_stream(stub, [pb.TOPIC_MAP_UPDATES], filter=spec)
    await publish_rounds(3)
    got = await read_events(call, 6)
    call.cancel()
    last = got[-1].position
    assert [e.position.offset for e in got] == expected(west, 0, last.offset)
    # Published between the two streams: the new one replays what is inside its box.
    await publish_rounds(2)
    spec = spb.SubscriptionFilter(bbox=proto_box(east))
    since = [spb.TopicPosition(topic=pb.TOPIC_MAP_UPDATES, position=last)]
    call, confirmed = await open_stream(stub, [pb.TOPIC_MAP_UPDATES], filter=spec, since=since)
    assert confirmed.topics[0].recovered
    await publish_rounds(2)
    moved = await read_events(call, 1 + 4 * 2)  # the last round's "e", then four rounds
    call.cancel()
    end = published[-1][1].position.offset
    assert [e.position.offset for e in moved] == expected(east, last.offset, end)
    # So every "both" event arrived exactly once across the two streams, in order.
    both = [e.position.offset for e in [*got, *moved] if e.map_update.package_id == "both"]
    assert both == [r.position.offset for e, r in published if e.map_update.package_id == "both"]


@pytest.mark.parametrize(
    ("box", "field"),
    [
        (spb.BoundingBox(west=0, south=10, east=1, north=5), "filter.bbox.south"),
        (spb.BoundingBox(west=0, south=1, east=1, north=91), "filter.bbox.north"),
        (spb.BoundingBox(west=-181, south=1, east=1, north=5), "filter.bbox.west"),
        (spb.BoundingBox(west=0, south=1, east=float("nan"), north=5), "filter.bbox.east"),
    ],
)
async def test_a_bad_box_is_invalid_argument_naming_the_field(
    stub: sgrpc.RealtimeServiceAsyncStub, box: spb.BoundingBox, field: str
) -> None:
    request = spb.SubscribeRequest(
        topics=[pb.TOPIC_MAP_UPDATES], filter=spb.SubscriptionFilter(bbox=box)
    )
    call = stub.Subscribe(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")


# --- the SDK and the CLI -------------------------------------------------------------------


def frame_at(package_id: str, lat: float, lon: float) -> dict[str, object]:
    data = {"package_id": package_id, "latitude": lat, "longitude": lon}
    return {"type": "map_update", "data": data}


async def test_the_sdk_subscribes_with_a_box(client: Client) -> None:
    async with client.subscribe("map_updates", bbox=(-90, 30, -80, 45)) as sub:
        await client.publish(
            [frame_at("out", 10, -85), frame_at("in", 40, -85), frame_at("edge", 45, -80)]
        )
        got = [await anext(sub) for _ in range(2)]
    assert [e.map_update.package_id for e in got] == ["in", "edge"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ((0, 10, 1, 5), "bbox.south: must not be above north"),
        ((0, 1, 200, 5), "bbox.east: must be between -180 and 180"),
        ((0, 1, 2), "bbox: expected (west, south, east, north)"),
        ({"west": 0, "south": 1, "east": 2}, "bbox.north: required"),
    ],
)
async def test_the_sdk_refuses_a_bad_box_before_sending(
    client: Client, bbox: object, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.subscribe("map_updates", bbox=bbox)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


async def test_the_sdk_takes_a_box_in_filters_too(client: Client) -> None:
    box = {"west": 170, "south": -10, "east": -170, "north": 10}
    async with client.subscribe("map_updates", filters={"bbox": box}) as sub:
        await client.publish([frame_at("out", 0, 0), frame_at("in", 0, 179)])
        got = await anext(sub)
    assert got.map_update.package_id == "in"  # type: ignore[union-attr]


async def test_the_cli_takes_bbox(
    sdk_core: CoreNode, client: Client, capsys: CaptureFixture[str]
) -> None:
    results = await client.publish(
        [frame_at("start", 0, 0), frame_at("out", 10, -85), frame_at("in", 40, -85)]
    )
    first = results[0].position
    code = await run_cli(
        "subscribe", "map_updates", "--core", sdk_core.address, "--bbox=-90,30,-80,45",
        "--since", f"map_updates:{first.epoch}:{first.offset}", "--count", "1",
    )  # fmt: skip
    assert code == 0
    frames = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["data"]["package_id"] for f in frames] == ["in"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["map_updates", "--bbox", "1,2,3"], "--bbox='1,2,3': expected W,S,E,N"),
        (["map_updates", "--bbox=0,50,1,40"], "--bbox.south: must not be above north"),
        (["map_updates", "--bbox=0,x,1,40"], "--bbox.south: 'x' is not a plain decimal number"),
        (["map_updates", "--bbox=-90,30,-80,1_0"], "--bbox.north: '1_0' is not a plain decimal"),
        (["map_updates", "--bbox=-90, 30, -80, 45"], "--bbox.south: ' 30' is not a plain decimal"),
        (["anomalies", "--bbox=0,1,2,3"], "--bbox applies to map_updates only"),
    ],
)
async def test_the_cli_refuses_a_bad_bbox(
    capsys: CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert await run_cli("subscribe", "--core", "127.0.0.1:1", *args) == 2
    assert expected in capsys.readouterr().err


# --- where a filtered stream is: Heartbeat.positions -----------------------------------


def heartbeat_positions(message: spb.SubscribeResponse) -> dict[int, pb.StreamPosition]:
    if message.WhichOneof("kind") != "heartbeat":
        return {}
    return {p.topic: p.position for p in message.heartbeat.positions}


async def read_until_told(call: Any, offset: int) -> list[spb.SubscribeResponse]:
    """Messages up to a heartbeat telling map_updates at ``offset`` or later."""

    async def read() -> list[spb.SubscribeResponse]:
        messages: list[spb.SubscribeResponse] = []
        while True:
            message = await call.read()
            assert isinstance(message, spb.SubscribeResponse), "stream ended"
            messages.append(message)
            told = heartbeat_positions(message).get(pb.TOPIC_MAP_UPDATES)
            if told is not None and told.offset >= offset:
                return messages

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_a_quiet_box_is_told_where_the_topic_went_so_its_resume_is_recovered(
    start_core: StartCore,
) -> None:
    # 150 map updates outside the box, more than the history's 100: the idle stream's
    # heartbeat says where map_updates went, and resuming from there is recovered.
    core = await start_core(history_size=100, heartbeat_interval=0.3, max_batch=100)
    box = spb.SubscriptionFilter(bbox=proto_box(BOX))
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(stub, [pb.TOPIC_MAP_UPDATES], filter=box)
        await publish(stub, at("inside", 40, -85))
        first = (await read_events(call, 1))[0].position
        for start in range(0, 150, 50):
            last = await publish(stub, *[at(f"out-{start + i}", 0, 0) for i in range(50)])
        head = last.results[-1].position
        messages = await read_until_told(call, head.offset)
        call.cancel()
        assert heartbeat_positions(messages[-1]) == {pb.TOPIC_MAP_UPDATES: head}
        assert all(m.WhichOneof("kind") == "heartbeat" for m in messages)  # nothing else sent
        for since, recovered in ((head, True), (first, False)):
            resume = [spb.TopicPosition(topic=pb.TOPIC_MAP_UPDATES, position=since)]
            call, confirmed = await open_stream(
                stub, [pb.TOPIC_MAP_UPDATES], filter=box, since=resume
            )
            call.cancel()
            assert confirmed.topics[0].recovered is recovered


async def test_heartbeat_positions_every_n_events_left_out_never_ahead_of_an_event(
    start_core: StartCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No idle heartbeat during the test (interval 60 s): positions come from the count
    # of events left out, each in a heartbeat after every event queued before it.
    monkeypatch.setattr(core_filters, "TELL_EVERY", 20)
    core = await start_core(history_size=1000, heartbeat_interval=60, max_batch=100)
    box = spb.SubscriptionFilter(bbox=proto_box(BOX), package_ids=["keep", "in"])
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(
            stub, [pb.TOPIC_MAP_UPDATES, pb.TOPIC_PACKAGE_UPDATES], filter=box, max_batch=8
        )
        for _ in range(5):
            events = [at("in", 40, -85 if i % 7 == 0 else 0) for i in range(30)]
            events += [package("keep" if i % 3 == 0 else "other") for i in range(12)]
            await publish(stub, *events)
        tail = await publish(stub, *[at("in", 0, 0) for _ in range(20)])
        messages = await read_until_told(call, tail.results[0].position.offset)
        call.cancel()
    known: dict[int, int] = {}
    told = 0
    for message in messages:
        events = list(message.batch.events) if message.HasField("batch") else []
        events += [message.event] if message.HasField("event") else []
        for event in events:
            assert event.position.offset > known.get(event.topic, 0), (event.position, known)
            known[event.topic] = event.position.offset
        for topic, position in heartbeat_positions(message).items():
            told += 1
            known[topic] = max(known.get(topic, 0), position.offset)
    assert told >= 3  # package_ids left out package updates: told too


async def test_a_busy_stream_is_told_after_a_heartbeat_interval(start_core: StartCore) -> None:
    # Events inside the filter keep the stream from ever idling; the map updates left
    # out are still told once it was not told for the heartbeat interval.
    core = await start_core(history_size=1000, heartbeat_interval=0.3)
    box = spb.SubscriptionFilter(bbox=proto_box(BOX))
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        call, _ = await open_stream(
            stub, [pb.TOPIC_MAP_UPDATES, pb.TOPIC_PACKAGE_UPDATES], filter=box
        )
        left_out = (await publish(stub, at("out", 0, 0))).results[0].position

        async def ping_pong() -> pb.StreamPosition:
            while True:  # one event at a time, each read before the next is published
                await publish(stub, package("busy"))
                message = await call.read()
                assert isinstance(message, spb.SubscribeResponse), "stream ended"
                if told := heartbeat_positions(message).get(pb.TOPIC_MAP_UPDATES):
                    return told
                assert message.WhichOneof("kind") == "event", message

        told = await asyncio.wait_for(ping_pong(), TIMEOUT)
        call.cancel()
    assert told == left_out


async def test_the_sdk_resumes_from_the_positions_heartbeats_tell(cores: Cores) -> None:
    # The reviewer's scenario through the SDK: a quiet box, 150 map updates outside it,
    # the core restarts (same history): the stream resumes recovered, with no Gap.
    node = await cores.start(history_size=100, heartbeat_interval=0.3, max_batch=100)
    client = Client(node.address, timeout=5, backoff=FAST)
    async with client, client.subscribe("map_updates", bbox=(-90, 30, -80, 45)) as sub:
        await client.publish(frame_at("inside", 40, -85))
        assert (await next_item(sub)).map_update.package_id == "inside"  # type: ignore[union-attr]
        for _ in range(3):
            last = await client.publish([frame_at("out", 0, 0)] * 50)
        head = last[-1].position
        reading = asyncio.create_task(next_item(sub, TIMEOUT))

        async def advanced() -> bool:
            return sub.positions["map_updates"].offset == head.offset

        await eventually(advanced)
        node = await cores.restart(node, keep_history=True)
        await client.publish(frame_at("after", 40, -85))
        item = await reading
    assert not isinstance(item, Gap), item
    assert item.map_update.package_id == "after"


def test_the_sdk_advances_only_forward_in_the_same_epoch() -> None:
    state = ResumeState([pb.TOPIC_MAP_UPDATES, pb.TOPIC_ANOMALIES])
    state.advance([told(pb.TOPIC_MAP_UPDATES, 9, "e")])  # no position yet: ignored
    assert state.positions == {}
    confirmed = spb.SubscriptionConfirmed()
    confirmed.topics.add(topic=pb.TOPIC_MAP_UPDATES, position=pos(5, "e"), recovered=True)
    state.confirm(confirmed)
    state.advance([told(pb.TOPIC_MAP_UPDATES, 4, "e"), told(pb.TOPIC_ANOMALIES, 3, "e")])
    assert state.positions == {pb.TOPIC_MAP_UPDATES: pos(5, "e")}
    state.advance([told(pb.TOPIC_MAP_UPDATES, 7, "other-epoch")])
    assert state.positions == {pb.TOPIC_MAP_UPDATES: pos(5, "e")}
    state.advance([told(pb.TOPIC_MAP_UPDATES, 8, "e")])
    assert state.positions == {pb.TOPIC_MAP_UPDATES: pos(8, "e")}
    event = at("p", 0, 0)
    event.topic = pb.TOPIC_MAP_UPDATES
    event.position.CopyFrom(pos(8, "e"))
    assert not state.accept(event)  # what a heartbeat told is not delivered again


def pos(offset: int, epoch: str) -> pb.StreamPosition:
    return pb.StreamPosition(offset=offset, epoch=epoch)


def told(topic: int, offset: int, epoch: str) -> spb.TopicPosition:
    return spb.TopicPosition(topic=topic, position=pos(offset, epoch))  # type: ignore[arg-type]


async def test_an_all_zero_box_is_the_point_at_zero_zero(
    stub: sgrpc.RealtimeServiceAsyncStub,
) -> None:
    zero = spb.SubscriptionFilter(bbox=spb.BoundingBox())
    call, _ = await open_stream(stub, [pb.TOPIC_MAP_UPDATES], filter=zero)
    await publish(stub, at("chicago", 41.9, -87.6), at("null-island", 0, 0))
    events = await read_events(call, 1)
    call.cancel()
    assert [e.map_update.package_id for e in events] == ["null-island"]


async def test_the_sdk_sends_an_all_zero_box_as_a_box(client: Client) -> None:
    async with client.subscribe("map_updates", bbox=(0, 0, 0, 0)) as sub:
        await client.publish([frame_at("chicago", 41.9, -87.6), frame_at("null-island", 0, 0)])
        item = await next_item(sub)
    assert item.map_update.package_id == "null-island"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bbox": (10**400, 0, 0, 0)}, "bbox.west: must be a number of degrees"),
        (
            {"filters": {"bbox": {"west": 10**400, "south": 0, "east": 0, "north": 0}}},
            "filter.bbox.west: must be a number of degrees",
        ),
        (
            {"filters": spb.SubscriptionFilter(bbox=spb.BoundingBox(west=0, south=50, north=40))},
            "filter.bbox.south: must not be above north",
        ),
        (
            {"filters": spb.SubscriptionFilter(bbox=spb.BoundingBox(west=math.nan))},
            "filter.bbox.west: must be a finite number",
        ),
    ],
)
async def test_the_sdk_refuses_every_bad_box_before_sending(
    client: Client, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.subscribe("map_updates", **kwargs)
    assert str(caught.value).startswith(message)
