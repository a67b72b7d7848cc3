"""Priority lanes and conflation on the WebSocket path: a real core, a real bridge,
sockets that stop reading (a small receive buffer, a client that pauses) and read
again. README "Delivery classes, priority lanes and conflation"."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import grpc
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import WRITE_CHUNK, BridgeNode
from bridge.config import CONFLATE_AFTER_BYTES
from bridge.connection import Connection
from bridge.frames import Frame, control, event_frame
from bridge.session import Session
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.delivery import CONFLATION_KEYS, URGENT_TOPICS
from tests.conftest import StartBridge, StartCore
from tests.events import package, sample
from tests.grpc_helpers import publish
from tests.test_bridge import get_json
from tests.waiting import eventually
from tests.ws_helpers import TIMEOUT, recv, ws_url

MAP, ANOMALIES, PACKAGES = pb.TOPIC_MAP_UPDATES, pb.TOPIC_ANOMALIES, pb.TOPIC_PACKAGE_UPDATES


def position(i: int, packages: int, pad: int = 0) -> pb.Event:
    """The i-th map update of a fleet of ``packages``: package i % packages, at a
    latitude that grows with i (so the last one per package is recognizable)."""
    return sample(
        "map_update",
        package_id=f"pkg-{i % packages}",
        latitude=i / 1000,
        longitude=-87.0,
        next_stop="x" * pad,
    )


async def publish_positions(stub: Any, start: int, count: int, packages: int, pad: int = 0) -> None:
    for first in range(start, start + count, 500):
        n = min(500, start + count - first)
        await publish(stub, *(position(first + i, packages, pad) for i in range(n)))


@asynccontextmanager
async def slow_socket(bridge: BridgeNode, topics: list[str]) -> AsyncIterator[ClientConnection]:
    """A socket subscribed to ``topics`` that reads only when the test reads: a
    small receive buffer fixed before connecting, and a client that stops taking
    from the network once a few frames wait (no pings of its own)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", bridge.port))
    ws = await asyncio.wait_for(
        connect(ws_url(bridge, "/ws/connect"), sock=sock, max_queue=4, ping_interval=None),
        TIMEOUT,
    )
    try:
        assert (await recv(ws))["type"] == "welcome"
        for topic in topics:
            await ws.send(
                orjson.dumps({"type": "subscribe", "data": {"subscription_type": topic}}).decode()
            )
            assert (await recv(ws))["type"] == "subscribed"
        yield ws
    finally:
        await ws.close()


def only_session(bridge: BridgeNode) -> Session:
    (conn,) = bridge.bridge.connections.values()
    return conn.session


def queued(session: Session, topic: int) -> int:
    """Frames of ``topic`` in the socket's queue (white box: both lanes)."""
    sub = session.sub
    lanes = [*(sub._urgent or ()), *sub._queue]
    return sum(1 for frame in lanes if frame is not None and frame.topic == topic)


async def head(bridge: BridgeNode, topic: int, offset: int) -> None:
    """Wait until the bridge has dispatched ``topic`` up to ``offset``."""

    async def there() -> bool:
        at = bridge.bridge.upstream.position(topic)
        return at is not None and at.offset >= offset

    await eventually(there, within=30)


async def read_until(ws: ClientConnection, *until: Any, within: float = 30) -> list[dict[str, Any]]:
    """Frames until each of ``until`` (a test of one frame) held for one."""
    frames: list[dict[str, Any]] = []
    waiting = list(until)

    async def read() -> None:
        while waiting:
            frame = orjson.loads(await ws.recv())
            frames.append(frame)
            waiting[:] = [test for test in waiting if not test(frame)]

    await asyncio.wait_for(read(), within)
    return frames


def reached(offset: int) -> Any:
    """A test of one frame: an event at ``offset`` (the test's one topic)."""
    return lambda frame: frame.get("position", {}).get("offset") == offset


def offset_of(frame: dict[str, Any]) -> int:
    offset: int = frame["position"]["offset"]
    return offset


@pytest.mark.parametrize("lanes", [True, False])
async def test_an_anomaly_overtakes_the_map_backlog_of_a_stalled_socket(
    start_core: StartCore, start_bridge: StartBridge, lanes: bool
) -> None:
    core = await start_core(queue_size=20_000, max_batch=1000, history_size=20_000)
    bridge = await start_bridge(
        core.address, priority_lanes=lanes, conflate="none", slow_timeout=60, ping_interval=60
    )
    total = 8000
    async with (
        grpc.aio.insecure_channel(core.address) as channel,
        slow_socket(bridge, ["map_updates", "anomalies"]) as ws,
    ):
        stub = sgrpc.RealtimeServiceStub(channel)
        # ~2 kB frames, no key repeated: 16 MB, more than the kernel's buffers hold.
        await publish_positions(stub, 0, total, packages=total, pad=2000)
        await head(bridge, MAP, total)
        session = only_session(bridge)
        await publish(stub, sample("anomaly_detected"))
        await head(bridge, ANOMALIES, 1)
        backlog = queued(session, MAP)  # queued before the anomaly, still unsent
        assert backlog > 1000  # the socket is far behind: the test has teeth
        frames = await read_until(
            ws,
            lambda frame: frame["type"] == "anomaly_detected",
            lambda frame: frame["type"] == "map_update" and offset_of(frame) == total,
        )
    kinds = [f["type"] for f in frames if f["type"] in ("map_update", "anomaly_detected")]
    after = len(kinds) - 1 - kinds.index("anomaly_detected")  # map frames after it
    if lanes:
        assert after >= backlog  # ahead of every map frame that waited for the socket
    else:
        assert after == 0  # one queue: behind the whole backlog


async def test_a_slowed_map_socket_stays_connected_and_ends_with_every_latest_position(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core(queue_size=20_000, max_batch=1000, history_size=20_000)
    # Without conflation the 4 MB published would overflow 1 MiB: a catch-up.
    bridge = await start_bridge(
        core.address,
        send_queue_bytes=1024 * 1024,
        conflate_after_bytes=64 * 1024,
        slow_timeout=60,
        ping_interval=60,
    )
    total, packages = 10_000, 300
    async with (
        grpc.aio.insecure_channel(core.address) as channel,
        slow_socket(bridge, ["map_updates"]) as ws,
    ):
        stub = sgrpc.RealtimeServiceStub(channel)
        frames: list[dict[str, Any]] = []
        for start in range(0, total, 2000):  # reads a little between bursts
            await publish_positions(stub, start, 2000, packages)
            frames += await read_until(ws, lambda frame: True)
        await head(bridge, MAP, total)
        frames += await read_until(ws, reached(total))
        status = await get_json(bridge.url + "/ws/status")
    events = [f for f in frames if f["type"] == "map_update"]
    notices = [f for f in frames if f["type"] == "conflated"]
    assert notices, "the socket fell behind: conflation must have happened"
    assert {n["data"]["subscription_type"] for n in notices} == {"map_updates"}
    skipped = sum(n["data"]["skipped"] for n in notices)
    offsets = [offset_of(f) for f in events]
    assert offsets == sorted(set(offsets))  # strictly increasing
    # Every frame it did not receive was announced.
    assert (offsets[0], offsets[-1]) == (1, total)
    assert skipped == total - len(offsets)
    latest: dict[str, float] = {}
    for f in events:
        latest[f["data"]["package_id"]] = f["data"]["latitude"]
    for p in range(packages):  # the last published position of every package arrived
        last = max(i for i in range(total - packages, total) if i % packages == p)
        assert latest[f"pkg-{p}"] == pytest.approx(last / 1000)
    assert status["catch_ups"] == 0  # degraded, never cut off or caught up
    assert status["slow_consumers_closed"] == 0


async def test_a_slowed_package_socket_gets_every_event(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    # Never-drop topics are never conflated: the byte bound sends it to a catch-up.
    core = await start_core(queue_size=20_000, max_batch=1000, history_size=20_000)
    bridge = await start_bridge(
        core.address,
        send_queue_bytes=256 * 1024,
        conflate_after_bytes=16 * 1024,
        slow_timeout=60,
        ping_interval=60,
    )
    total = 3000
    async with (
        grpc.aio.insecure_channel(core.address) as channel,
        slow_socket(bridge, ["package_updates"]) as ws,
    ):
        stub = sgrpc.RealtimeServiceStub(channel)
        big = "x" * 400
        for _start in range(0, total, 500):
            await publish(stub, *(package("pkg-1", location=big) for _ in range(500)))
        await head(bridge, PACKAGES, total)
        frames = await read_until(ws, reached(total))
        status = await get_json(bridge.url + "/ws/status")
    assert not [f for f in frames if f["type"] == "conflated"]
    offsets = [offset_of(f) for f in frames if f["type"] == "package_update"]
    assert offsets == list(range(1, total + 1))
    assert status["catch_ups"] >= 1  # it overflowed, and caught up from history


async def test_a_socket_reading_at_half_the_publish_rate_is_not_cut_off(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    slow_timeout = 1.0
    core = await start_core(queue_size=20_000, max_batch=1000, history_size=20_000)
    bridge = await start_bridge(
        core.address,
        send_queue_bytes=256 * 1024,
        conflate_after_bytes=32 * 1024,
        slow_timeout=slow_timeout,
        ping_interval=60,
    )
    # 4,000 map updates (~1.3 kB) a second: more than the kernel's buffers hold.
    packages, per_tick, tick, pad = 50, 200, 0.05, 1000
    async with (
        grpc.aio.insecure_channel(core.address) as channel,
        slow_socket(bridge, ["map_updates"]) as ws,
    ):
        stub = sgrpc.RealtimeServiceStub(channel)
        stop = asyncio.Event()
        published = 0

        async def publisher() -> None:
            nonlocal published
            while not stop.is_set():
                await publish(
                    stub, *(position(published + i, packages, pad) for i in range(per_tick))
                )
                published += per_tick
                await asyncio.sleep(tick)

        received = notices = 0

        async def reader() -> None:  # half the publisher's frames a second, at most
            nonlocal received, notices
            while not stop.is_set():
                for _ in range(per_tick // 2):
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                    received += frame["type"] == "map_update"
                    notices += frame["type"] == "conflated"
                await asyncio.sleep(tick)

        publishing, reading = asyncio.create_task(publisher()), asyncio.create_task(reader())
        started = time.monotonic()
        with suppress(TimeoutError):  # the reader fails (e.g. the socket closed) or time is up
            await asyncio.wait_for(asyncio.shield(reading), slow_timeout * 2 + 1)
        # Still reading when time was up: never cut off (read before stop, which
        # lets the reader end its loop while the publisher finishes).
        cut_off = reading.done()
        stop.set()
        await publishing
        elapsed = time.monotonic() - started
        assert not cut_off
        reading.cancel()
        with suppress(asyncio.CancelledError):
            await reading
        status = await get_json(bridge.url + "/ws/status")
        assert ws.close_code is None  # still open
    assert elapsed > slow_timeout * 2
    assert status["slow_consumers_closed"] == 0
    assert notices > 0  # it was behind, and degraded
    assert 0 < received < published


# --- control frames keep their place (plain calls on a session) ------------------------


def production_session() -> Session:
    """A session with the bridge's default lanes and conflation (see Bridge.__init__)."""
    return Session(
        "x",
        "/ws/connect",
        "127.0.0.1",
        max_bytes=32 << 20,
        urgent=URGENT_TOPICS,
        urgent_after=WRITE_CHUNK,
        conflate=frozenset(CONFLATION_KEYS),
        conflate_after=CONFLATE_AFTER_BYTES,
    )


def event_at(event: pb.Event, topic: int, offset: int, epoch: str = "ep") -> Frame:
    event.topic = topic  # type: ignore[assignment]
    event.position.offset = offset
    event.position.epoch = epoch
    return event_frame(event)


def decode(data: bytes) -> list[dict[str, Any]]:
    """The frames of one write: whole unmasked text frames (RFC 6455 §5.2), decoded."""
    frames: list[dict[str, Any]] = []
    at = 0
    while at < len(data):
        size, header = data[at + 1] & 0x7F, 2
        if size == 126:
            size, header = int.from_bytes(data[at + 2 : at + 4]), 4
        elif size == 127:
            size, header = int.from_bytes(data[at + 2 : at + 10]), 10
        frames.append(orjson.loads(data[at + header : at + header + size]))
        at += header + size
    return frames


def written(session: Session) -> list[dict[str, Any]]:
    """Every frame the session writes, write after write, decoded."""
    frames: list[dict[str, Any]] = []
    while data := session.take(WRITE_CHUNK):
        frames += decode(data)
    return frames


def test_a_replay_of_urgent_events_never_overtakes_the_welcome_and_its_subscribed_frame() -> None:
    session = production_session()
    session.sub.topics.add(ANOMALIES)
    assert session.send(control("welcome", {"connection_id": "x"}))
    data = {"subscription_type": "anomalies", "recovered": True}
    assert session.send(control("subscribed", data, about=ANOMALIES))
    for i in range(1, 1001):  # ~400 kB: past the write that goes out in arrival order
        anomaly = sample("anomaly_detected", description="d" * 300)
        assert session.send(event_at(anomaly, ANOMALIES, i), replay=True)
    assert session.pending > WRITE_CHUNK  # the urgent lane is engaged: the test has teeth
    frames = written(session)
    assert [f["type"] for f in frames[:2]] == ["welcome", "subscribed"]
    assert [f["position"]["offset"] for f in frames[2:]] == list(range(1, 1001))


def test_a_gap_notice_comes_before_the_urgent_events_after_the_gap() -> None:
    session = production_session()
    for i in range(1, 1001):  # ~650 kB of package updates wait for the socket
        assert session.send(event_at(package(f"p{i}", location="L" * 300), PACKAGES, i, "OLD"))
    position = {"offset": 0, "epoch": "NEW"}
    gap = {"subscription_type": "anomalies", "recovered": False, "position": position}
    assert session.send(control("subscribed", gap, about=ANOMALIES))
    for i in range(1, 6):  # the new epoch, live: the urgent lane
        assert session.send(event_at(sample("anomaly_detected"), ANOMALIES, i, "NEW"))
    assert session.send(control("pong"))  # about no topic: urgent, after what came before it
    frames = written(session)
    kinds = [(f["type"], f.get("position", {}).get("offset")) for f in frames]
    assert kinds[:7] == [
        ("subscribed", None),
        *(("anomaly_detected", i) for i in range(1, 6)),
        ("pong", None),
    ]
    assert [offset for kind, offset in kinds[7:]] == list(range(1, 1001))  # then the backlog
    # A client applying positions.ts's rules ends where it is: after NEW:5.
    cursor = {"offset": 7, "epoch": "OLD"}
    for f in frames:
        if f["type"] == "anomaly_detected":
            cursor = f["position"]
        elif f["type"] == "subscribed":
            cursor = f["data"]["position"]
    assert cursor == {"offset": 5, "epoch": "NEW"}


# --- the same on a real bridge ---------------------------------------------------------


async def publish_anomalies(stub: Any, count: int, pad: int) -> None:
    for first in range(0, count, 500):
        n = min(500, count - first)
        await publish(stub, *(sample("anomaly_detected", description="d" * pad) for _ in range(n)))


@pytest.mark.parametrize("how", ["message", "query"])
async def test_a_resume_replay_of_anomalies_comes_right_after_its_subscribed_frame(
    start_core: StartCore, start_bridge: StartBridge, how: str
) -> None:
    core = await start_core()
    bridge = await start_bridge(core.address, ping_interval=60)
    async with grpc.aio.insecure_channel(core.address) as channel:
        await publish_anomalies(sgrpc.RealtimeServiceStub(channel), 1000, pad=1000)  # ~1.2 MB
    await head(bridge, ANOMALIES, 1000)
    at = bridge.bridge.upstream.position(ANOMALIES)
    assert at is not None
    path = "/ws/connect" + (f"?since=anomalies:{at.epoch}:0" if how == "query" else "")
    async with connect(ws_url(bridge, path), max_size=None) as ws:
        assert (await recv(ws))["type"] == "welcome"
        if how == "message":
            since = {"offset": 0, "epoch": at.epoch}
            data = {"subscription_type": "anomalies", "since": since}
            await ws.send(orjson.dumps({"type": "subscribe", "data": data}).decode())
        frames = await read_until(ws, reached(1000))
    assert frames[0]["type"] == "subscribed"
    assert frames[0]["data"]["recovered"] is True
    assert [offset_of(f) for f in frames[1:]] == list(range(1, 1001))


async def test_a_gap_notice_of_a_resume_comes_before_the_events_after_the_gap(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core(history_size=200)
    bridge = await start_bridge(core.address, cache_size=0, ping_interval=60)
    async with grpc.aio.insecure_channel(core.address) as channel:
        await publish_anomalies(sgrpc.RealtimeServiceStub(channel), 400, pad=2000)  # ~0.9 MB
    await head(bridge, ANOMALIES, 400)
    at = bridge.bridge.upstream.position(ANOMALIES)
    assert at is not None
    async with connect(ws_url(bridge, "/ws/connect"), max_size=None) as ws:
        assert (await recv(ws))["type"] == "welcome"
        data = {"subscription_type": "anomalies", "since": {"offset": 10, "epoch": at.epoch}}
        await ws.send(orjson.dumps({"type": "subscribe", "data": data}).decode())
        frames = await read_until(ws, reached(400))
    notice = frames[0]
    assert notice["type"] == "subscribed"
    assert notice["data"]["recovered"] is False
    resumed = notice["data"]["position"]["offset"]
    offsets = [offset_of(f) for f in frames[1:]]
    assert resumed < offsets[0] <= 201  # the oldest retained, after the notice
    assert offsets == list(range(offsets[0], 401))


async def test_a_socket_that_keeps_reading_gets_a_whole_replay_unconflated(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core()
    bridge = await start_bridge(core.address, ping_interval=60)
    async with grpc.aio.insecure_channel(core.address) as channel:
        # 1,000 map updates of 100 packages, ~0.6 MB: more than CONFLATE_AFTER_BYTES.
        await publish_positions(sgrpc.RealtimeServiceStub(channel), 0, 1000, 100, pad=400)
    await head(bridge, MAP, 1000)
    at = bridge.bridge.upstream.position(MAP)
    assert at is not None
    url = ws_url(bridge, f"/ws/connect?since=map_updates:{at.epoch}:0")
    async with connect(url, max_size=None) as ws:
        assert (await recv(ws))["type"] == "welcome"
        frames = await read_until(ws, reached(1000))
    assert frames[0]["type"] == "subscribed"
    assert frames[0]["data"]["recovered"] is True
    assert not [f for f in frames if f["type"] == "conflated"]
    assert [offset_of(f) for f in frames[1:]] == list(range(1, 1001))


# --- a replay's pace (Connection.send_many with a simulated writer) ----------------------


class Paced:
    """What :meth:`Connection.send_many` uses of a connection: its session, and the
    event the writer sets when the socket took bytes."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._space: asyncio.Event | None = None

    async def replay(self, frames: list[Frame]) -> None:
        await Connection.send_many(self, frames)  # type: ignore[arg-type]

    def write(self) -> list[dict[str, Any]]:
        """One write of the flusher: a chunk taken (its frames), and the replay told."""
        frames = decode(self.session.take(WRITE_CHUNK))
        if self._space is not None:
            self._space.set()
        return frames


def map_frames(count: int, keys: int) -> list[Frame]:
    """A replay of ``count`` map updates of ``keys`` packages (~500 bytes each)."""
    return [event_at(position(i, keys, pad=400), MAP, i + 1) for i in range(count)]


async def turn() -> None:
    """Let the replay task run until it waits again."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_replay_keeps_the_queue_of_a_reading_socket_below_the_conflation_threshold() -> (
    None
):
    session = production_session()
    conn = Paced(session)
    replay = asyncio.create_task(conn.replay(map_frames(2000, keys=10)))  # ~1 MB, 10 keys
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while not replay.done():
            await turn()
            assert session.pending < CONFLATE_AFTER_BYTES  # never behind by its own replay
            frames += conn.write()
    await replay
    assert [offset_of(f) for f in frames] == list(range(1, 2001))  # no notice, no gap


async def test_live_frames_that_keep_a_socket_behind_never_starve_a_replay() -> None:
    session = production_session()
    conn = Paced(session)
    replay = asyncio.create_task(conn.replay(map_frames(2000, keys=10)))
    live = 0
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while not replay.done():
            await turn()
            frames += conn.write()
            for _ in range(700):  # ~300 kB of live package updates after every write
                live += 1
                assert session.send(event_at(package("p", location="L" * 300), PACKAGES, live))
            assert session.pending > CONFLATE_AFTER_BYTES  # behind anyway: the test has teeth
            if live > 100 * 700:
                break
    assert replay.done()  # it went on, a write at a time
    await replay
    frames += written(session)
    # None of its frames was superseded, though the socket was behind.
    assert [offset_of(f) for f in frames if f["type"] == "map_update"] == list(range(1, 2001))
    assert not [f for f in frames if f["type"] == "conflated"]
