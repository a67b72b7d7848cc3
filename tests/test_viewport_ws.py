"""Viewport subscriptions on the WebSocket bridge against a real core and bridge:
``subscribe`` with a ``bbox``, ``viewport`` moving it in place (no gap, no
duplicate), resumes filtered by the box, the antimeridian, and every validation
error answered with an error frame on a socket that stays open."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from websockets.asyncio.client import ClientConnection

import bridge.session as bridge_session
from bridge.app import BridgeNode
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.viewport import BoundingBox
from tests.conftest import StartBridge, StartCore
from tests.events import package, sample
from tests.grpc_helpers import publish
from tests.test_bridge import get_json
from tests.ws_helpers import TIMEOUT, open_ws, recv, recv_type, send, subscribe

if TYPE_CHECKING:
    from clearpath.realtime.v1.service_pb2_grpc import RealtimeServiceAsyncStub as Stub

BOX = BoundingBox(west=-90, south=30, east=-80, north=45)
GRID_LATS = (29.99, 30.0, 37.5, 45.0, 45.01)
GRID_LONS = (-90.01, -90.0, -85.0, -80.0, -79.99)


def at(package_id: str, lat: float, lon: float) -> pb.Event:
    return sample("map_update", package_id=package_id, latitude=lat, longitude=lon)


def grid() -> list[pb.Event]:
    """Map updates inside, outside and on the edges of BOX, a package update after each row."""
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


async def read_until_end(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame up to the map update of package "end" (included)."""

    async def read() -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        while True:
            frame = await recv(ws)
            frames.append(frame)
            if frame["type"] == "map_update" and frame["data"]["package_id"] == "end":
                return frames

    return await asyncio.wait_for(read(), TIMEOUT)


def map_ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["package_id"] for f in frames if f["type"] == "map_update"]


async def test_subscribe_with_a_box_gets_exactly_the_map_updates_inside(
    bridge: BridgeNode, stub: Stub
) -> None:
    ws, _ = await open_ws(bridge, "/ws/connect")
    plain, _ = await open_ws(bridge, "/ws/connect")
    async with ws, plain:
        answer = await subscribe(ws, "map_updates", bbox=BOX.as_dict())
        assert answer["data"]["subscriptions"] == ["map_updates"]
        await subscribe(ws, "package_updates")
        await subscribe(plain, "map_updates")
        await subscribe(plain, "package_updates")
        events = [*grid(), at("end", 40, -85)]
        await publish(stub, *events)
        frames = await read_until_end(ws)
        everything = await read_until_end(plain)
    assert map_ids(frames) == inside(events, BOX)
    assert len(map_ids(frames)) == 3 * 3 + 1  # edges are inside
    updates = [f["data"]["package_id"] for f in frames if f["type"] == "package_update"]
    assert updates == [f"row-{i}" for i in range(len(GRID_LATS))]  # other topics unchanged
    assert len(map_ids(everything)) == len(GRID_LATS) * len(GRID_LONS) + 1


async def test_a_box_across_the_antimeridian(bridge: BridgeNode, stub: Stub) -> None:
    pacific = {"west": 170, "south": -20, "east": -170, "north": 20}
    lons = (169.9, 170.0, 179.5, 180.0, -180.0, -175.0, -170.0, -169.9, 0.0)
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with ws:
        await subscribe(ws, "map_updates", bbox=pacific)
        await publish(
            stub, *(at(f"m-{i}", 0, lon) for i, lon in enumerate(lons)), at("end", 0, 180)
        )
        frames = await read_until_end(ws)
    assert map_ids(frames) == ["m-1", "m-2", "m-3", "m-4", "m-5", "m-6", "end"]


async def test_moving_the_box_in_place_misses_and_repeats_nothing(
    bridge: BridgeNode, stub: Stub
) -> None:
    """The box moves while events are being published: frames before the
    acknowledgement are judged by the old box, after it by the new one, and
    every event inside both boxes arrives exactly once, in order."""
    west = BoundingBox(west=-100, south=30, east=-85, north=45)
    east = BoundingBox(west=-90, south=30, east=-75, north=45)
    spots = {"both": (40.0, -87.5), "w": (40.0, -95.0), "e": (40.0, -80.0)}
    published: list[tuple[pb.Event, spb.PublishResult]] = []
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with ws:
        await subscribe(ws, "map_updates", bbox=west.as_dict())

        async def publisher() -> None:
            for _ in range(40):
                events = [at(name, *spots[name]) for name in ("both", "w", "e")]
                published.extend(zip(events, (await publish(stub, *events)).results, strict=True))
            end = at("end", *spots["both"])
            published.append((end, (await publish(stub, end)).results[0]))

        task = asyncio.create_task(publisher())
        frames: list[dict[str, Any]] = []
        while len(map_ids(frames)) < 10:
            frames.append(await recv(ws))
        await send(ws, "viewport", subscription_type="map_updates", bbox=east.as_dict())
        frames.extend(await read_until_end(ws))
        await asyncio.wait_for(task, TIMEOUT)
    acks = [i for i, f in enumerate(frames) if f["type"] == "viewport"]
    assert len(acks) == 1
    ack = frames[acks[0]]
    assert ack["data"] == {"subscription_type": "map_updates", "bbox": east.as_dict()}
    before = [f for f in frames[: acks[0]] if f["type"] == "map_update"]
    after = [f for f in frames[acks[0] :] if f["type"] == "map_update"]
    assert "e" not in map_ids(before)
    assert "w" not in map_ids(after)
    offsets = [f["position"]["offset"] for f in [*before, *after]]
    assert offsets == sorted(set(offsets))  # strictly increasing: nothing twice
    # Exactly the events inside the old box up to some cut, inside the new one after it.
    last_before = before[-1]["position"]["offset"]
    first_after = after[0]["position"]["offset"]
    assert any(
        offsets == expected(published, west, east, cut) for cut in range(last_before, first_after)
    ), offsets
    both = [r.position.offset for e, r in published if e.map_update.package_id in ("both", "end")]
    received = [f["position"]["offset"] for f in [*before, *after]]
    assert [o for o in received if o in set(both)] == both


def expected(
    published: list[tuple[pb.Event, spb.PublishResult]],
    old: BoundingBox,
    new: BoundingBox,
    cut: int,
) -> list[int]:
    """The offsets a socket whose box moved from ``old`` to ``new`` after ``cut`` gets."""
    return [
        r.position.offset
        for e, r in published
        if (old if r.position.offset <= cut else new).contains(
            e.map_update.latitude, e.map_update.longitude
        )
    ]


async def test_clearing_the_box_and_the_endpoint_subscription(
    bridge: BridgeNode, stub: Stub
) -> None:
    # /ws/map subscribes map_updates by itself: a viewport applies to it directly.
    ws, welcome = await open_ws(bridge, "/ws/map")
    assert "map_updates" in welcome["data"]["subscriptions"]
    async with ws:
        await send(ws, "viewport", subscription_type="map_updates", bbox=BOX.as_dict())
        ack = await recv_type(ws, "viewport")
        assert ack["data"]["bbox"] == BOX.as_dict()
        await publish(stub, at("out", 0, 0), at("end", 40, -85))
        assert map_ids(await read_until_end(ws)) == ["end"]
        await send(ws, "viewport", subscription_type="map_updates", bbox=None)
        ack = await recv_type(ws, "viewport")
        assert ack["data"] == {"subscription_type": "map_updates", "bbox": None}
        await publish(stub, at("out", 0, 0), at("end", 40, -85))
        assert map_ids(await read_until_end(ws)) == ["out", "end"]


async def test_a_resume_with_a_box_replays_only_what_is_inside(
    bridge: BridgeNode, stub: Stub
) -> None:
    start = (await publish(stub, at("start", 0, 0))).results[0].position
    events = grid()
    await publish(stub, *events)
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with ws:
        since = {"offset": start.offset, "epoch": start.epoch}
        answer = await subscribe(ws, "map_updates", since=since, bbox=BOX.as_dict())
        assert answer["data"]["recovered"] is True
        await publish(stub, at("end", 40, -85))
        frames = await read_until_end(ws)
    assert map_ids(frames) == [*inside(events, BOX), "end"]


BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "subscribe",
        {"subscription_type": "map_updates", "bbox": {**BOX.as_dict(), "south": "30"}},
        "data.bbox.south: Input should be a valid number",
    ),
    (
        "subscribe",
        {"subscription_type": "map_updates", "bbox": {**BOX.as_dict(), "west": True}},
        "data.bbox.west: Input should be a valid number",
    ),
    (
        "subscribe",
        {"subscription_type": "map_updates", "bbox": {**BOX.as_dict(), "south": 50}},
        "data.bbox: south must not be above north",
    ),
    (
        "viewport",
        {"subscription_type": "map_updates", "bbox": {**BOX.as_dict(), "north": 90.5}},
        "data.bbox.north: Input should be less than or equal to 90",
    ),
    (
        "viewport",
        {"subscription_type": "map_updates", "bbox": {**BOX.as_dict(), "east": 181}},
        "data.bbox.east: Input should be less than or equal to 180",
    ),
    (
        "subscribe",
        {"subscription_type": "anomalies", "bbox": BOX.as_dict()},
        "data.bbox: only map_updates takes a bounding box, not anomalies",
    ),
    (
        "viewport",
        {"subscription_type": "map_updates", "bbox": BOX.as_dict()},
        "data.subscription_type: not subscribed to map_updates; subscribe first",
    ),
    (
        "viewport",
        {"subscription_type": "anomalies", "bbox": BOX.as_dict()},
        "data.subscription_type: only map_updates has a viewport, not anomalies",
    ),
    ("viewport", {"subscription_type": "map_updates"}, "data.bbox: Field required"),
]


@pytest.mark.parametrize(("kind", "data", "message"), BAD)
async def test_every_bad_box_gets_an_error_frame_and_the_socket_stays_open(
    bridge: BridgeNode, stub: Stub, kind: str, data: dict[str, Any], message: str
) -> None:
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with ws:
        await send(ws, kind, **data)
        error = await recv(ws)
        assert error["type"] == "error", error
        assert error["data"]["code"] == "invalid_message"
        assert error["data"]["message"].startswith(message), error["data"]["message"]
        # Nothing changed, and the socket still answers.
        await send(ws, "ping")
        assert (await recv(ws))["type"] == "pong"
        answer = await subscribe(ws, "package_updates")
        assert answer["data"]["subscriptions"] == ["package_updates"]


async def test_a_refused_move_keeps_the_box(bridge: BridgeNode, stub: Stub) -> None:
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with ws:
        await subscribe(ws, "map_updates", bbox=BOX.as_dict())
        bad = {**BOX.as_dict(), "south": 60}
        await send(ws, "viewport", subscription_type="map_updates", bbox=bad)
        assert (await recv_type(ws, "error"))["data"]["code"] == "invalid_message"
        await publish(stub, at("out", 0, 0), at("end", 40, -85))
        assert map_ids(await read_until_end(ws)) == ["end"]


async def test_unsubscribing_forgets_the_box(bridge: BridgeNode, stub: Stub) -> None:
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with ws:
        await subscribe(ws, "map_updates", bbox=BOX.as_dict())
        await send(ws, "unsubscribe", subscription_type="map_updates")
        await recv_type(ws, "unsubscribed")
        await subscribe(ws, "map_updates")
        await publish(stub, at("out", 0, 0), at("end", 40, -85))
        assert map_ids(await read_until_end(ws)) == ["out", "end"]


async def test_a_catch_up_after_an_overflow_applies_the_box(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    # A reader that pauses overflows its 64 KiB queue again and again and catches up
    # from the cache or the core's history: the replayed frames are filtered by its box.
    core = await start_core(history_size=10_000, queue_size=10_000, max_batch=1000)
    bridge = await start_bridge(core.address, send_queue_bytes=64 * 1024, cache_size=200)
    ws, _ = await open_ws(bridge, "/ws/connect")
    total = 2000
    async with ws, grpc.aio.insecure_channel(core.address) as channel:
        await subscribe(ws, "map_updates", bbox=BOX.as_dict())
        stub = sgrpc.RealtimeServiceStub(channel)

        async def read() -> list[int]:
            offsets: list[int] = []
            while not offsets or offsets[-1] < total:
                frame = await recv(ws, 30)
                if "position" in frame:
                    offsets.append(frame["position"]["offset"])
                    if len(offsets) % 200 == 0:
                        await asyncio.sleep(0.2)  # not reading for a while: the point of the test
            return offsets

        reader = asyncio.create_task(asyncio.wait_for(read(), 60))
        for start in range(0, total, 100):
            # Odd offsets inside the box, even ones outside; unique packages (nothing conflated).
            events = [
                at(f"p{n}", 40, -85) if n % 2 else at(f"p{n}", 10, -85)
                for n in range(start + 1, start + 101)
            ]
            for event in events:
                event.map_update.next_stop = "z" * 2000
            await publish(stub, *events)
        await publish(stub, at("last", 40, -85))
        total += 1
        offsets = await reader
    assert offsets == [n for n in range(1, total + 1) if n % 2 or n == total]
    status = await get_json(bridge.url + "/ws/status")
    assert status["catch_ups"] >= 1


# --- ?bbox= at connect, position frames, already_live ---------------------------------


def since_query(position: pb.StreamPosition) -> str:
    return f"map_updates:{position.epoch}:{position.offset}"


async def test_map_resumes_at_connect_with_its_box_on_the_map_endpoint(
    bridge: BridgeNode, stub: Stub
) -> None:
    # A page reloaded on /ws/map with a stored position and a box: ?since= and ?bbox=
    # resume map_updates filtered by the box before any live frame, recovered, nothing lost.
    seen = (await publish(stub, at("seen", 40, -85))).results[0].position
    missed = [at("missed-in", 40, -85), at("missed-out", 0, 0), at("missed-edge", 45, -80)]
    await publish(stub, *missed)
    query = f"?since={since_query(seen)}&bbox={BOX.as_query()}"
    ws, welcome = await open_ws(bridge, "/ws/map" + query)
    async with ws:
        assert welcome["data"]["subscriptions"] == ["map_updates", "package_updates"]
        answer = await recv_type(ws, "subscribed")
        assert answer["data"]["subscription_type"] == "map_updates"
        assert answer["data"]["recovered"] is True
        await publish(stub, at("live-out", 0, 0), at("end", 40, -85))
        frames = await read_until_end(ws)
    assert map_ids(frames) == ["missed-in", "missed-edge", "end"]


async def test_bbox_at_connect_filters_the_endpoints_own_subscription(
    bridge: BridgeNode, stub: Stub
) -> None:
    ws, _ = await open_ws(bridge, f"/ws/map?bbox={BOX.as_query()}")
    async with ws:
        await publish(stub, at("out", 0, 0), at("end", 40, -85))
        assert map_ids(await read_until_end(ws)) == ["end"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("bbox=1,2,3", "bbox='1,2,3': expected W,S,E,N"),
        ("bbox=0,50,1,40", "bbox.south: must not be above north"),
        ("bbox=-90,30,-80,1_0", "bbox.north: '1_0' is not a plain decimal number"),
        ("since=map_updates:e:1&bbox=0,x,1,2", "bbox.south: 'x' is not a plain decimal number"),
    ],
)
async def test_a_bad_bbox_at_connect_is_http_400_naming_it(
    bridge: BridgeNode, query: str, message: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{bridge.url}/ws/map?{query}") as response,
    ):
        assert response.status == 400
        assert (await response.text()).startswith(message)


async def test_a_since_on_a_topic_already_live_says_why_it_is_not_replayed(
    bridge: BridgeNode, stub: Stub
) -> None:
    seen = (await publish(stub, at("seen", 40, -85))).results[0].position
    ws, _ = await open_ws(bridge, "/ws/map")
    async with ws:
        await publish(stub, at("live", 40, -85))
        await recv_type(ws, "map_update")
        since = {"offset": seen.offset, "epoch": seen.epoch}
        answer = await subscribe(ws, "map_updates", since=since, bbox=BOX.as_dict())
    assert answer["data"]["recovered"] is False
    assert answer["data"]["reason"] == "already_live"


async def quiet_box(
    start_core: StartCore, start_bridge: StartBridge, **bridge_settings: Any
) -> tuple[BridgeNode, Stub, grpc.aio.Channel]:
    """A core keeping 100 events per topic and a bridge caching 10."""
    core = await start_core(history_size=100, queue_size=1000, max_batch=100)
    bridge = await start_bridge(core.address, cache_size=10, **bridge_settings)
    channel = grpc.aio.insecure_channel(core.address)
    return bridge, sgrpc.RealtimeServiceStub(channel), channel


async def test_a_quiet_box_is_told_where_the_topic_went_so_its_resume_is_recovered(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    # While 150 map updates land outside its box (more than the core's history), a
    # socket that reads everything gets none of them; the bridge's position frame
    # keeps its resume position fresh, so reconnecting is recovered, not a false gap.
    bridge, stub, channel = await quiet_box(start_core, start_bridge, ping_interval=0.3)
    async with channel:
        ws, _ = await open_ws(bridge, "/ws/connect")
        async with ws:
            await subscribe(ws, "map_updates", bbox=BOX.as_dict())
            await publish(stub, at("inside", 40, -85))
            last_frame = (await recv_type(ws, "map_update"))["position"]
            for start in range(0, 150, 50):
                last = await publish(stub, *[at(f"out-{start + i}", 0, 0) for i in range(50)])
            told = await recv_type(ws, "position")
        head = last.results[-1].position
        assert told["data"] == {
            "subscription_type": "map_updates",
            "position": {"offset": head.offset, "epoch": head.epoch},
        }
        await publish(stub, at("after", 40, -85))
        for since, recovered in ((told["data"]["position"], True), (last_frame, False)):
            ws, _ = await open_ws(bridge, "/ws/connect")
            async with ws:
                answer = await subscribe(ws, "map_updates", since=since, bbox=BOX.as_dict())
                assert answer["data"]["recovered"] is recovered, answer
                if recovered:
                    assert (await recv_type(ws, "map_update"))["data"]["package_id"] == "after"
                else:  # what the socket's own last frame would have said
                    assert answer["data"]["reason"] == "history_trimmed"


async def test_a_position_frame_every_n_frames_left_out_and_never_ahead_of_a_frame(
    start_core: StartCore, start_bridge: StartBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No keepalive round during the test (ping_interval 60 s): the position frames
    # come from the count of frames left out, and none overtakes a frame of its topic.
    monkeypatch.setattr(bridge_session, "POSITION_EVERY", 20)
    bridge, stub, channel = await quiet_box(start_core, start_bridge, ping_interval=60)
    async with channel:
        ws, _ = await open_ws(bridge, "/ws/connect")
        async with ws:
            await subscribe(ws, "map_updates", bbox=BOX.as_dict())
            frames: list[dict[str, Any]] = []
            for batch in range(5):
                events = [at(f"b{batch}-{i}", 40, -85 if i % 7 == 0 else 0) for i in range(30)]
                await publish(stub, *events)
                # 25 left out: past 20, a position frame follows (read before the next
                # batch, or one write could carry them all, told once).
                told = sum(f["type"] == "position" for f in frames)
                while sum(f["type"] == "position" for f in frames) == told:
                    frames.append(await recv(ws))
            # 20 more left out: a position frame within them, whatever the count was.
            tail = (await publish(stub, *[at(f"tail-{i}", 0, 0) for i in range(20)])).results
            while (
                not frames
                or frames[-1]["type"] != "position"
                or (frames[-1]["data"]["position"]["offset"] < tail[0].position.offset)
            ):
                frames.append(await recv(ws))
    known = 0
    for frame in frames:
        if frame["type"] == "position":
            known = max(known, frame["data"]["position"]["offset"])
        elif frame["type"] == "map_update":
            assert frame["position"]["offset"] > known, (frame, known)
            known = frame["position"]["offset"]
    assert sum(f["type"] == "position" for f in frames) >= 2
