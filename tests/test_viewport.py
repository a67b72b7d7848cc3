"""Viewport boxes with plain calls: the inside rule (hypothesis, antimeridian,
edges), validation, the ``W,S,E,N`` query, the bridge's message models, the
session's filter and the ``position`` frames it tells about what it left out."""

from __future__ import annotations

import math
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bridge.session
from bridge.frames import Frame, event_frame
from bridge.messages import Subscribe, Viewport, parse
from bridge.session import POSITION_EVERY, Session
from clearpath.realtime.v1 import events_pb2 as pb
from core.auth import Identity
from core.errors import InvalidArgument
from core.hub import Hub
from core.viewport import MAX_QUERY_CHARS, BoundingBox, parse_bbox_query
from tests.events import sample

lats = st.floats(-90, 90)
lons = st.floats(-180, 180)


@st.composite
def boxes(draw: st.DrawFn) -> BoundingBox:
    south, north = sorted((draw(lats), draw(lats)))
    return BoundingBox(draw(lons), south, draw(lons), north)


def reference_contains(box: BoundingBox, lat: float, lon: float) -> bool:
    """The rule stated another way: a box crossing the antimeridian is two boxes,
    and a point on the antimeridian has two longitudes (180 and -180)."""
    if not box.south <= lat <= box.north:
        return False
    if box.west <= box.east:
        parts = [(box.west, box.east)]
    else:
        parts = [(box.west, 180.0), (-180.0, box.east)]
    names = {lon, -lon} if abs(lon) == 180 else {lon}
    return any(w <= x <= e for w, e in parts for x in names)


@given(boxes(), lats, lons)
def test_contains_follows_the_rule(box: BoundingBox, lat: float, lon: float) -> None:
    assert box.contains(lat, lon) is reference_contains(box, lat, lon)


@given(boxes())
def test_corners_and_edges_are_inside(box: BoundingBox) -> None:
    for lat in (box.south, box.north, (box.south + box.north) / 2):
        assert box.contains(lat, box.west)
        assert box.contains(lat, box.east)


@given(boxes(), lats, lons)
def test_a_crossing_box_and_its_complement_share_only_their_edges(
    box: BoundingBox, lat: float, lon: float
) -> None:
    if box.west == box.east or not box.south <= lat <= box.north:
        return
    flipped = BoundingBox(box.east, box.south, box.west, box.north)
    on_edge = lon in (box.west, box.east)
    # Every longitude is in the box or in its complement; only the edges are in both.
    assert box.contains(lat, lon) or flipped.contains(lat, lon)
    assert (box.contains(lat, lon) and flipped.contains(lat, lon)) is on_edge


def test_antimeridian_box() -> None:
    pacific = BoundingBox(170, -10, -170, 10)
    assert pacific.crosses_antimeridian
    for lon in (170.0, 175.0, 180.0, -180.0, -175.0, -170.0):
        assert pacific.contains(0, lon), lon
    for out in (169.999, 0.0, -169.999):
        assert not pacific.contains(0, out), out
    assert not pacific.contains(10.001, 175)


@given(boxes(), lats)
def test_the_antimeridian_is_one_meridian(box: BoundingBox, lat: float) -> None:
    assert box.contains(lat, 180.0) is box.contains(lat, -180.0)


@pytest.mark.parametrize(
    ("box", "lon"),
    [
        (BoundingBox(-180, -20, -170, 20), 180.0),  # an edge at -180 takes 180
        (BoundingBox(170, -20, 180, 20), -180.0),  # an edge at 180 takes -180
        (BoundingBox(175, -20, -180, 20), 180.0),
        (BoundingBox(180, -20, 180, 20), -180.0),  # the meridian line itself
    ],
)
def test_a_point_on_the_antimeridian_is_inside_an_edge_there(box: BoundingBox, lon: float) -> None:
    assert box.contains(0, lon)
    assert not box.contains(21, lon)  # latitudes still count
    assert not BoundingBox(-170, -20, 170, 20).contains(0, lon)  # a box that stops short


def test_whole_world_and_nan() -> None:
    world = BoundingBox(-180, -90, 180, 90)
    assert world.contains(90, 180)
    assert world.contains(-90, -180)
    assert not world.contains(math.nan, 0)
    assert not world.contains(0, math.nan)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((0, 10, 1, 5), "bbox.south: must not be above north"),
        ((0, -91, 1, 5), "bbox.south: must be between -90 and 90"),
        ((0, 1, 1, 90.5), "bbox.north: must be between -90 and 90"),
        ((-181, 1, 1, 5), "bbox.west: must be between -180 and 180"),
        ((0, 1, 180.01, 5), "bbox.east: must be between -180 and 180"),
        ((math.nan, 1, 2, 3), "bbox.west: must be a finite number"),
        ((0, math.inf, 2, 3), "bbox.south: must be a finite number"),
        ((True, 1, 2, 3), "bbox.west: must be a number, got bool"),
        ((0, "1", 2, 3), "bbox.south: must be a number, got str"),
        ((0, 1, None, 3), "bbox.east: must be a number, got NoneType"),
        ((10**400, 1, 2, 3), "bbox.west: must be a number of degrees, got a huge integer"),
        ((0, 1, 2, -(10**309)), "bbox.north: must be a number of degrees"),
        ((0, 1, 10**308, 3), "bbox.east: must be between -180 and 180"),
    ],
)
def test_invalid_boxes_name_the_field(values: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        BoundingBox.of(*values)
    with pytest.raises(InvalidArgument, match=f"^filter.{message}"):
        BoundingBox.of(*values, where="filter.bbox")


def test_the_constructor_validates_too() -> None:
    with pytest.raises(InvalidArgument, match=r"bbox\.south"):
        BoundingBox(0, 5, 1, 1)


def test_from_mapping() -> None:
    box = BoundingBox.from_mapping({"west": -10, "south": 1, "east": 10, "north": 2})
    assert box == BoundingBox(-10.0, 1.0, 10.0, 2.0)
    assert box.as_dict() == {"west": -10, "south": 1, "east": 10, "north": 2}
    with pytest.raises(InvalidArgument, match=r"^bbox\.north: required"):
        BoundingBox.from_mapping({"west": -10, "south": 1, "east": 10})
    with pytest.raises(InvalidArgument, match=r"^bbox\.up: unknown field"):
        BoundingBox.from_mapping({"west": -10, "south": 1, "east": 10, "north": 2, "up": 1})
    with pytest.raises(InvalidArgument, match=r"^bbox: must be an object"):
        BoundingBox.from_mapping([1, 2, 3, 4])


@given(boxes())
def test_query_round_trips(box: BoundingBox) -> None:
    assert parse_bbox_query(box.as_query()) == box


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", r"^bbox='1,2,3': expected W,S,E,N"),
        ("1,2,3,4,5", "expected W,S,E,N"),
        ("", "expected W,S,E,N"),
        ("a,2,3,4", "^bbox.west: 'a' is not a plain decimal number"),
        ("1,2,3,nan", "^bbox.north: 'nan' is not a plain decimal number"),
        ("1,2,3,inf", "^bbox.north: 'inf' is not a plain decimal number"),
        ("1,2,3,1e999", "^bbox.north: must be a finite number"),
        ("1,2,3,1e3", "^bbox.north: must be between -90 and 90"),
        ("1,50,3,40", "^bbox.south: must not be above north"),
        # Python-only number syntax is not a plain decimal number.
        ("-90,30,-80,1_0", "^bbox.north: '1_0' is not a plain decimal number"),
        ("-90, 30,-80,45", "^bbox.south: ' 30' is not a plain decimal number"),
        ("-90,30 ,-80,45", "^bbox.south: '30 ' is not a plain decimal number"),
        ("+1,2,3,4", "^bbox.west: '\\+1' is not a plain decimal number"),
        ("1,2,3,0x10", "^bbox.north: '0x10' is not a plain decimal number"),
        ("1.,2,3,4", "^bbox.west: '1.' is not a plain decimal number"),
        (".5,2,3,4", "^bbox.west: '.5' is not a plain decimal number"),
        ("1,2,3,\u0665", "^bbox.north: '\u0665' is not a plain decimal number"),  # Arabic 5
        ("-90,30,-80,45,", "expected W,S,E,N"),
        ("1," * 100 + "1", f"^bbox: at most {MAX_QUERY_CHARS} characters"),
    ],
)
def test_bad_queries_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_bbox_query(text)


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("-125,24,-66,50", BoundingBox(-125, 24, -66, 50)),
        ("-125.5,24.25,-66.0,50", BoundingBox(-125.5, 24.25, -66, 50)),
        ("1e-05,-0.0,1E1,2e+1", BoundingBox(1e-05, 0, 10, 20)),  # JSON and repr exponents
    ],
)
def test_plain_decimal_numbers(text: str, box: BoundingBox) -> None:
    assert parse_bbox_query(text) == box


# --- the bridge's message models ------------------------------------------------------


def message(kind: str, **data: Any) -> str:
    return orjson.dumps({"type": kind, "data": data}).decode()


BOX = {"west": -90, "south": 30, "east": -80, "north": 45}


def test_subscribe_and_viewport_carry_a_box() -> None:
    sub = parse(message("subscribe", subscription_type="map_updates", bbox=BOX))
    assert isinstance(sub, Subscribe)
    assert sub.data.bbox is not None
    assert sub.data.bbox.box() == BoundingBox(-90, 30, -80, 45)
    moved = parse(message("viewport", subscription_type="map_updates", bbox=BOX))
    assert isinstance(moved, Viewport)
    assert moved.data.bbox is not None
    cleared = parse(message("viewport", subscription_type="map_updates", bbox=None))
    assert isinstance(cleared, Viewport)
    assert cleared.data.bbox is None


@pytest.mark.parametrize(
    ("bbox", "message_text"),
    [
        ({**BOX, "south": "30"}, "data.bbox.south: Input should be a valid number"),
        ({**BOX, "west": True}, "data.bbox.west: Input should be a valid number"),
        ({**BOX, "east": None}, "data.bbox.east: Input should be a valid number"),
        ({**BOX, "north": 91}, "data.bbox.north: Input should be less than or equal to 90"),
        ({**BOX, "west": -180.5}, "data.bbox.west: Input should be greater than or equal to -180"),
        ({**BOX, "south": 50}, "data.bbox: south must not be above north (50.0 > 45.0)"),
        ({"west": 1, "south": 2, "east": 3}, "data.bbox.north: Field required"),
        ({**BOX, "zoom": 3}, "data.bbox.zoom: Extra inputs are not permitted"),
        ([1, 2, 3, 4], "data.bbox: Input should be a valid dictionary"),
    ],
)
def test_bad_boxes_in_messages_name_the_field(bbox: Any, message_text: str) -> None:
    for kind in ("subscribe", "viewport"):
        with pytest.raises(InvalidArgument) as caught:
            parse(message(kind, subscription_type="map_updates", bbox=bbox))
        assert str(caught.value).startswith(message_text), str(caught.value)


def test_viewport_needs_its_box_even_if_null() -> None:
    with pytest.raises(InvalidArgument, match=r"^data\.bbox: Field required"):
        parse(message("viewport", subscription_type="map_updates"))


def test_non_finite_json_numbers_are_not_json() -> None:
    text = '{"type":"viewport","data":{"subscription_type":"map_updates","bbox":'
    text += '{"west":NaN,"south":1,"east":2,"north":3}}}'
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        parse(text)


# --- the session's filter --------------------------------------------------------------


def map_frame(lat: float, lon: float, offset: int, epoch: str = "e") -> Frame:
    event = sample("map_update", latitude=lat, longitude=lon)
    event.topic = pb.TOPIC_MAP_UPDATES
    event.position.offset = offset
    event.position.epoch = epoch
    frame = event_frame(event)
    assert frame.encodes()
    return frame


def other_frame(offset: int) -> Frame:
    event = sample("package_update")
    event.topic = pb.TOPIC_PACKAGE_UPDATES
    event.position.offset = offset
    event.position.epoch = "e"
    frame = event_frame(event)
    assert frame.encodes()
    return frame


def test_map_frames_carry_their_position() -> None:
    frame = map_frame(41.5, -87.25, 1)
    assert (frame.latitude, frame.longitude) == (41.5, -87.25)
    other = other_frame(1)
    assert math.isnan(other.latitude)
    assert math.isnan(other.longitude)


def test_session_filters_map_updates_by_its_viewport() -> None:
    session = Session("s", "/ws/connect", "test", max_bytes=1 << 20)
    assert session.sub._accepts is None  # no box, user or floor: the fast path
    session.set_viewport(BoundingBox(-90, 30, -80, 45))
    assert session.sub._accepts is not None
    inside, edge, outside = map_frame(40, -85, 1), map_frame(45, -90, 2), map_frame(40, -70, 3)
    assert session.sub.offer(inside)
    assert session.sub.offer(edge)
    assert not session.sub.offer(outside)
    assert session.sub.offer(other_frame(1))  # other topics pass
    assert session.stats.filtered[pb.TOPIC_MAP_UPDATES] == 1
    # Replays skip what is outside; send() counts it as taken so a replay goes on.
    assert session.for_me(inside)
    assert not session.for_me(outside)
    assert session.send(outside)
    assert session.stats.filtered[pb.TOPIC_MAP_UPDATES] == 2
    # Moving the box keeps what is queued; clearing it restores the fast path.
    queued = len(session.sub)
    session.set_viewport(BoundingBox(-75, 30, -60, 45))
    assert len(session.sub) == queued
    assert session.sub.offer(map_frame(40, -70, 4))
    assert not session.sub.offer(map_frame(40, -85, 5))
    session.set_viewport(None)
    assert session.sub._accepts is None
    assert session.viewport is None


# --- position frames: what the filters left out --------------------------------------

MAP: int = pb.TOPIC_MAP_UPDATES
NOTES: int = pb.TOPIC_NOTIFICATIONS
PKG: int = pb.TOPIC_PACKAGE_UPDATES


def unframe(data: bytes) -> list[dict[str, Any]]:
    """The JSON frames in ``take()``'s bytes: unmasked WebSocket text frames."""
    frames: list[dict[str, Any]] = []
    i = 0
    while i < len(data):
        assert data[i] == 0x81
        length, i = data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        frames.append(orjson.loads(data[i : i + length]))
        i += length
    return frames


def boxed_session(**kw: Any) -> tuple[Session, Hub[Frame], list[int]]:
    """A session subscribed to map_updates, package_updates and notifications,
    with BOX as its viewport, as user "me"."""
    ready: list[int] = []
    session = Session(
        "s", "/ws/connect", "test", max_bytes=1 << 22, on_ready=lambda: ready.append(1), **kw
    )
    session.authenticated(Identity("me", None, frozenset(), False, None))
    session.set_viewport(BoundingBox(-90, 30, -80, 45))
    hub: Hub[Frame] = Hub()
    hub.add(session.sub)
    for topic in (MAP, PKG, NOTES):
        hub.subscribe(session.sub, topic)
    return session, hub, ready


def note_frame(offset: int, user: str) -> Frame:
    event = sample("notification", user_id=user)
    event.topic = pb.TOPIC_NOTIFICATIONS
    event.position.offset = offset
    event.position.epoch = "e"
    frame = event_frame(event)
    assert frame.encodes()
    return frame


def positions_in(frames: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (f["data"]["subscription_type"], f["data"]["position"]["offset"])
        for f in frames
        if f["type"] == "position"
    ]


def test_the_newest_frame_left_out_is_told_once_when_nothing_is_queued() -> None:
    session, hub, _ = boxed_session()
    assert session.position_frames() == []  # nothing left out
    for offset in (1, 2, 3):
        hub.dispatch(map_frame(0, 0, offset))  # outside the box
    hub.dispatch(note_frame(7, "someone-else"))
    told = [orjson.loads(f.data) for f in session.position_frames()]
    assert positions_in(told) == [("map_updates", 3), ("notifications", 7)]
    assert told[0] == {
        "type": "position",
        "data": {"subscription_type": "map_updates", "position": {"offset": 3, "epoch": "e"}},
        "timestamp": told[0]["timestamp"],
    }
    assert session.position_frames() == []  # told once


def test_no_position_overtakes_a_queued_frame() -> None:
    session, hub, _ = boxed_session()
    hub.dispatch(map_frame(40, -85, 1))  # inside: queued
    hub.dispatch(map_frame(0, 0, 2))  # outside
    assert session.position_frames() == []  # frame 1 waits: nothing is told
    assert [f["position"]["offset"] for f in unframe(session.take(1 << 20))] == [1]
    assert positions_in([orjson.loads(f.data) for f in session.position_frames()]) == [
        ("map_updates", 2)
    ]


def test_a_frame_sent_after_the_skipped_ones_says_as_much() -> None:
    session, hub, _ = boxed_session()
    hub.dispatch(map_frame(0, 0, 1))  # outside
    hub.dispatch(map_frame(40, -85, 2))  # inside
    session.take(1 << 20)
    assert session.position_frames() == []  # frame 2 told the client more
    hub.dispatch(map_frame(0, 0, 3))
    hub.dispatch(map_frame(40, -85, 4, epoch="f"))  # another epoch says nothing of 3
    session.take(1 << 20)
    assert positions_in([orjson.loads(f.data) for f in session.position_frames()]) == [
        ("map_updates", 3)
    ]


def test_a_topic_being_resumed_keeps_its_position_for_later() -> None:
    session, hub, _ = boxed_session()
    hub.dispatch(map_frame(0, 0, 5))
    session.resume_started(MAP)
    assert session.position_frames() == []
    session.resume_ended(MAP)
    assert positions_in([orjson.loads(f.data) for f in session.position_frames()]) == [
        ("map_updates", 5)
    ]
    hub.dispatch(map_frame(0, 0, 6))
    hub.unsubscribe(session.sub, MAP)
    assert session.position_frames() == []  # not subscribed: nothing to tell


def test_replays_note_what_they_leave_out() -> None:
    session, _, _ = boxed_session()
    assert not session.for_me(map_frame(0, 0, 8))  # a replay skips it
    assert session.send(map_frame(0, 0, 9))  # or send() does, when the box moved
    assert positions_in([orjson.loads(f.data) for f in session.position_frames()]) == [
        ("map_updates", 9)
    ]


def test_every_position_every_frames_left_out_the_next_write_tells() -> None:
    session, hub, ready = boxed_session()
    for offset in range(1, POSITION_EVERY):
        hub.dispatch(map_frame(0, 0, offset))
    assert ready == []  # nothing queued, nothing to write yet
    hub.dispatch(map_frame(0, 0, POSITION_EVERY))
    assert ready == [1]  # the socket is marked for a write
    assert positions_in(unframe(session.take(1 << 20))) == [("map_updates", POSITION_EVERY)]
    assert session.take(1 << 20) == b""
    # Busy with frames inside the box: told after them, once nothing is left queued.
    for offset in range(POSITION_EVERY + 1, 2 * POSITION_EVERY + 1):
        hub.dispatch(map_frame(0, 0, offset))
    hub.dispatch(map_frame(40, -85, 2 * POSITION_EVERY + 1))
    hub.dispatch(map_frame(0, 0, 2 * POSITION_EVERY + 2))
    assert positions_in(unframe(session.take(1 << 20))) == [("map_updates", 2 * POSITION_EVERY + 2)]


def test_an_unfiltered_socket_never_pays_for_it() -> None:
    session = Session("s", "/ws/connect", "test", max_bytes=1 << 20)
    session.sub.topics.add(MAP)
    assert session.sub._accepts is None
    assert session.send(map_frame(0, 0, 1))
    assert session.position_frames() == []


# One step of a socket's life: a frame dispatched (topic, inside its filter or not),
# a write, or the keepalive round telling positions.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("dispatch"), st.sampled_from((MAP, NOTES, PKG)), st.booleans()),
        st.tuples(st.just("write"), st.integers(1, 3), st.just(False)),
        st.tuples(st.just("round"), st.just(0), st.just(False)),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(steps, st.booleans(), st.sampled_from((2, 3, POSITION_EVERY)))
@example(  # frame 1 of map_updates still queued when the second frame left out is
    [("dispatch", PKG, True), ("dispatch", MAP, True)]
    + [("dispatch", MAP, False)] * 2
    + [("write", 1, False)],
    False,
    2,
)
def test_a_position_is_never_followed_by_an_older_frame_of_its_topic(
    script: list[tuple[str, int, bool]], lanes: bool, every: int
) -> None:
    """Whatever the interleaving of dispatches, partial writes and keepalive
    rounds, with priority lanes or without, telling after ``every`` frames left
    out: after a ``position`` frame, every frame of its topic is newer; and once
    all is written and told, the last offset the client knows of each topic is
    the topic's last."""
    urgent = {"urgent": frozenset({NOTES}), "urgent_after": 1} if lanes else {}
    with patch.object(bridge.session, "POSITION_EVERY", every):
        written, offsets = run_script(script, urgent)
    known: dict[str, int] = {}
    for frame in written:
        if frame["type"] == "position":
            name, at = frame["data"]["subscription_type"], frame["data"]["position"]["offset"]
        else:
            name, at = frame["subscription_type"], frame["position"]["offset"]
            assert at > known.get(name, 0), (name, at, "after a position or frame at", known)
        known[name] = max(known.get(name, 0), at)
    names = {MAP: "map_updates", NOTES: "notifications", PKG: "package_updates"}
    assert known == {names[t]: n for t, n in offsets.items() if n}


def run_script(
    script: list[tuple[str, int, bool]], options: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The frames a boxed session writes for ``script``, then all it has left and
    the positions it tells; and the last offset of each topic."""
    session, hub, _ = boxed_session(**options)
    offsets = {MAP: 0, NOTES: 0, PKG: 0}
    written: list[dict[str, Any]] = []
    size = len(map_frame(40, -85, 1).wire)
    for kind, arg, inside in script:
        if kind == "dispatch":
            offsets[arg] += 1
            n = offsets[arg]
            if arg == MAP:
                hub.dispatch(map_frame(40, -85, n) if inside else map_frame(0, 0, n))
            elif arg == NOTES:
                hub.dispatch(note_frame(n, "me" if inside else "someone-else"))
            else:
                hub.dispatch(other_frame(n))
        elif kind == "write":
            written += unframe(session.take(arg * size))
        else:
            for frame in session.position_frames():
                session.send(frame)
    while data := session.take(1 << 20):
        written += unframe(data)
    for frame in session.position_frames():
        session.send(frame)
    written += unframe(session.take(1 << 20))
    return written, offsets
