"""The Server-Sent Events endpoint (bridge/sse.py): a real core and a real bridge on
loopback ports, real HTTP clients (aiohttp, and raw sockets for the wire itself)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest

from bridge.app import BridgeNode, parse_last_event_id
from bridge.frames import Frame, control, event_frame
from bridge.session import Session, State
from bridge.sse import MAX_LAST_EVENT_ID, MAX_TOPIC_NAMES, SSESession, final_frame, parse_topics
from clearpath.realtime.v1 import events_pb2 as pb
from core.errors import InvalidArgument, SlowConsumer
from core.positions import Position
from core.server import CoreNode
from tests.auth_helpers import auth_settings, token
from tests.conftest import StartBridge
from tests.events import package, sample
from tests.grpc_helpers import publish
from tests.waiting import eventually
from tests.ws_helpers import TIMEOUT, open_ws, recv_events

if TYPE_CHECKING:
    from clearpath.realtime.v1.service_pb2_grpc import RealtimeServiceAsyncStub as Stub


# --- a small SSE client ---------------------------------------------------------------


@dataclass
class Event:
    """One SSE event as a browser's EventSource sees it."""

    data: dict[str, Any]
    id: str | None  # the id field of this event (None: none in it)
    last_id: str  # EventSource's lastEventId after it


@dataclass
class Stream:
    response: aiohttp.ClientResponse
    last_id: str = ""
    comments: list[str] = field(default_factory=list)
    pings: int = 0  # keepalive events (event: ping), kept aside as EventSource.onmessage does
    retry: int | None = None
    early: list[Event] = field(default_factory=list)  # read before the welcome

    async def next(self, within: float = TIMEOUT) -> Event:
        """The next message event (comments, retry lines and pings are kept aside)."""
        if self.early:
            return self.early.pop(0)

        async def read() -> Event:
            data: list[str] = []
            event_id: str | None = None
            kind = "message"
            while True:
                raw = await self.response.content.readline()
                assert raw, "the stream ended"
                line = raw.decode().rstrip("\n")
                if line == "":
                    if event_id is not None:
                        self.last_id = event_id
                    if data and kind == "ping":
                        assert data == ["{}"]
                        assert event_id is None
                        self.pings += 1
                    elif data:
                        return Event(orjson.loads("\n".join(data)), event_id, self.last_id)
                    data, event_id, kind = [], None, "message"
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    self.comments.append(value)
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event_id = value
                elif name == "event":
                    kind = value
                elif name == "retry":
                    self.retry = int(value)

        return await asyncio.wait_for(read(), within)

    async def frame(self, kind: str, within: float = TIMEOUT) -> Event:
        """The next event whose frame is of type ``kind``."""
        while True:
            event = await self.next(within)
            if event.data["type"] == kind:
                return event

    async def events(self, count: int, within: float = TIMEOUT) -> list[Event]:
        """The next ``count`` event frames (with a position), skipping control frames."""
        got: list[Event] = []
        while len(got) < count:
            event = await self.next(within)
            if "position" in event.data:
                got.append(event)
        return got

    async def ended(self, within: float = TIMEOUT) -> None:
        """Wait for the end of the body (the stream ended cleanly)."""

        async def rest() -> None:
            while await self.response.content.readline():
                pass

        await asyncio.wait_for(rest(), within)


@asynccontextmanager
async def sse(
    bridge: BridgeNode, query: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    """An open stream on ``/sse?query`` whose welcome frame was read."""
    async with aiohttp.ClientSession() as client:
        response = await asyncio.wait_for(
            client.get(f"{bridge.url}/sse?{query}", headers=headers or {}), TIMEOUT
        )
        assert response.status == 200, await response.text()
        stream = Stream(response)
        # The welcome, and any frame of an urgent topic that overtook it (priority lanes).
        while (first := await stream.next()).data["type"] != "welcome":
            stream.early.append(first)
        try:
            yield stream
        finally:
            response.close()


async def refused(
    bridge: BridgeNode, query: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{bridge.url}/sse?{query}", headers=headers or {}) as response,
    ):
        assert response.headers.get("Content-Type", "").startswith("text/plain")
        return response.status, await response.text()


def offsets(events: list[Event]) -> list[int]:
    return [e.data["position"]["offset"] for e in events]


# --- delivery -----------------------------------------------------------------------


async def test_delivers_the_websocket_frames_with_ids(bridge: BridgeNode, stub: Stub) -> None:
    ws, _ = await open_ws(bridge, "/ws/packages")
    async with sse(bridge, "topics=package_updates") as stream:
        assert stream.retry == 500  # sent before the welcome
        await publish(stub, *(package(f"p{i}") for i in range(3)))
        got = await stream.events(3)
        over_ws = await recv_events(ws, 3)
        assert [e.data for e in got] == over_ws  # the same frames, byte for byte in JSON
        epoch = got[0].data["position"]["epoch"]
        assert [e.id for e in got] == [f"package_updates:{epoch}:{n}" for n in (1, 2, 3)]
    await ws.close()


async def test_welcome_and_status_show_the_stream(bridge: BridgeNode) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{bridge.url}/sse?topics=anomalies,%20package_updates") as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache, no-store"
        stream = Stream(response)
        welcome = (await stream.next()).data["data"]
        assert welcome["endpoint"] == "/sse"
        assert welcome["subscriptions"] == ["anomalies", "package_updates"]
        async with client.get(bridge.url + "/ws/status") as status_response:
            status = await status_response.json()
        assert status["connections"]["by_endpoint"] == {"/sse": 1}
        assert status["subscribers"]["anomalies"] == 1
        async with client.get(bridge.url + "/ws/connections") as conns_response:
            (conn,) = await conns_response.json()
        assert conn["endpoint"] == "/sse"
        assert conn["subscriptions"] == ["anomalies", "package_updates"]


async def test_a_client_that_leaves_is_forgotten_at_once(bridge: BridgeNode) -> None:
    # Pins the aiohttp internal the stream learns it from (RequestHandler.set_parser:
    # feed_eof when the connection is lost): long before any keepalive round.
    async with sse(bridge, "topics=anomalies"):
        assert len(bridge.bridge.connections) == 1

    async def forgotten() -> bool:
        return not bridge.bridge.connections and not bridge.bridge.admission.by_address

    await eventually(forgotten, within=2)


async def test_ids_carry_every_topic_and_resume_them_all(bridge: BridgeNode, stub: Stub) -> None:
    anomaly = sample("anomaly_detected")
    async with sse(bridge, "topics=package_updates,anomalies") as stream:
        await publish(stub, package("a"), anomaly, package("b"))
        first = await stream.events(3)
        # Every topic's position in every id (a quiet topic: where it was subscribed);
        # anomalies may overtake package updates (an urgent topic), never each other.
        epochs = {e.data["subscription_type"]: e.data["position"]["epoch"] for e in first}
        at = {"package_updates": 0, "anomalies": 0}
        for event in first:
            at[event.data["subscription_type"]] = event.data["position"]["offset"]
            assert event.id == ",".join(f"{t}:{epochs[t]}:{at[t]}" for t in at)
        last = first[-1].last_id
    # Missed on both topics while away; resumed from the one id a browser resends.
    await publish(stub, sample("anomaly_detected"), package("c"), sample("anomaly_detected"))
    async with sse(bridge, "topics=package_updates,anomalies", {"Last-Event-ID": last}) as stream:
        await publish(stub, package("live"))
        frames = [(await stream.next()).data for _ in range(6)]
        subscribed = [f["data"] for f in frames if f["type"] == "subscribed"]
        assert {s["subscription_type"] for s in subscribed} == {"package_updates", "anomalies"}
        assert all(s["recovered"] for s in subscribed)
        by_topic: dict[str, list[int]] = {}
        for f in frames:
            if "position" in f:
                by_topic.setdefault(f["subscription_type"], []).append(f["position"]["offset"])
        assert by_topic == {"anomalies": [2, 3], "package_updates": [3, 4]}


async def test_resume_after_a_disconnect_has_no_gap_and_no_duplicate(
    bridge: BridgeNode, stub: Stub
) -> None:
    seen: list[int] = []
    last = ""
    # Three streams, each dropped mid-flow while events keep being published.
    for round_ in range(3):
        headers = {"Last-Event-ID": last} if last else {}
        async with sse(bridge, "topics=package_updates", headers) as stream:
            publishing = asyncio.create_task(
                publish(stub, *(package(f"r{round_}-{i}") for i in range(20)))
            )
            got = await stream.events(10)  # leave before the rest arrives
            seen += offsets(got)
            last = got[-1].last_id
            await publishing
    async with sse(bridge, "topics=package_updates", {"Last-Event-ID": last}) as stream:
        rest = await stream.events(60 - len(seen))
        seen += offsets(rest)
    assert seen == list(range(1, 61))


async def test_since_and_last_event_id_the_header_wins(bridge: BridgeNode, stub: Stub) -> None:
    response = await publish(stub, *(package(f"p{i}") for i in range(6)))
    epoch = response.results[0].position.epoch
    query = f"topics=package_updates&since=package_updates:{epoch}:1"
    async with sse(bridge, query, {"Last-Event-ID": f"package_updates:{epoch}:4"}) as stream:
        assert offsets(await stream.events(2)) == [5, 6]


async def test_a_quiet_topic_resumes_from_where_the_stream_started(
    bridge: BridgeNode, stub: Stub
) -> None:
    await publish(stub, sample("anomaly_detected"))  # anomalies at 1 before the stream

    async def seen() -> bool:  # by the bridge, or the stream would get it live
        at = bridge.bridge.upstream.position(pb.TOPIC_ANOMALIES)
        return at is not None and at.offset == 1

    await eventually(seen)
    async with sse(bridge, "topics=anomalies,package_updates") as stream:
        await publish(stub, package("p"))
        (event,) = await stream.events(1)
        assert event.id is not None
        assert parse_last_event_id(event.id)[pb.TOPIC_ANOMALIES].offset == 1
        assert parse_last_event_id(event.id)[pb.TOPIC_PACKAGE_UPDATES].offset == 1
    await publish(stub, sample("anomaly_detected"))  # missed on the quiet topic
    headers = {"Last-Event-ID": event.id}
    async with sse(bridge, "topics=anomalies,package_updates", headers) as s:
        (missed,) = await s.events(1)
        assert missed.data["subscription_type"] == "anomalies"
        assert missed.data["position"]["offset"] == 2


async def test_a_quiet_resumed_topic_stays_in_the_id_across_reconnects(
    bridge: BridgeNode, stub: Stub
) -> None:
    # A browser resends only the last id: a topic resumed by it and quiet since must
    # still be in the next stream's ids, or the next reconnect loses its events.
    query = "topics=package_updates,anomalies"
    async with sse(bridge, query) as stream:
        await publish(stub, sample("anomaly_detected"), package("a"))
        last = (await stream.events(2))[-1].last_id
    async with sse(bridge, query, {"Last-Event-ID": last}) as stream:
        await publish(stub, package("b"))  # only package_updates is busy
        (event,) = await stream.events(1)
        assert event.id is not None
        assert parse_last_event_id(event.id)[pb.TOPIC_ANOMALIES].offset == 1
        last = event.last_id
    await publish(stub, sample("anomaly_detected"))  # missed while away
    async with sse(bridge, query, {"Last-Event-ID": last}) as stream:
        (missed,) = await stream.events(1)
        assert (missed.data["subscription_type"], missed.data["position"]["offset"]) == (
            "anomalies",
            2,
        )


async def test_a_quiet_topic_of_the_url_since_is_not_replayed_twice(
    bridge: BridgeNode, stub: Stub
) -> None:
    # An EventSource's URL (and its since=) never changes: the id must move past it.
    response = await publish(stub, sample("anomaly_detected"), package("a"))
    anomalies, packages = (r.position.epoch for r in response.results)
    query = (
        f"topics=package_updates,anomalies&since=anomalies:{anomalies}:1"
        f"&since=package_updates:{packages}:1"
    )
    async with sse(bridge, query) as stream:
        await publish(stub, sample("anomaly_detected"))
        last = (await stream.events(1))[-1].last_id
    async with sse(bridge, query, {"Last-Event-ID": last}) as stream:
        await publish(stub, package("b"))
        (event,) = await stream.events(1)
        last = event.last_id
    async with sse(bridge, query, {"Last-Event-ID": last}) as stream:
        await publish(stub, package("c"))
        (event,) = await stream.events(1)  # not anomalies 2 again
        assert (event.data["subscription_type"], event.data["position"]["offset"]) == (
            "package_updates",
            3,
        )


async def test_a_gap_moves_the_id_to_where_the_stream_continues(
    bridge: BridgeNode, stub: Stub
) -> None:
    response = await publish(stub, package("a"))
    epoch = response.results[0].position.epoch
    headers = {"Last-Event-ID": "package_updates:gone-epoch:7"}
    async with sse(bridge, "topics=package_updates", headers) as stream:
        told = await stream.frame("subscribed")
        assert told.data["data"]["recovered"] is False
        # A quiet topic: the frame that told the gap carries the new position.
        assert told.id == f"package_updates:{epoch}:0"


# --- bad positions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "names"),
    [
        ("garbage", "TOPIC:EPOCH:OFFSET"),
        ("package_updates:e:twelve", "OFFSET a number"),
        ("package_updates:e:-1", "OFFSET a number"),
        (f"package_updates:e:{2**64}", "below 2**64"),
        ("parcels:e:1", "unknown subscription type 'parcels'"),
        ("package_updates:" + "e" * 65 + ":1", "EPOCH is at most 64"),
        ("x" * (MAX_LAST_EVENT_ID + 1), f"at most {MAX_LAST_EVENT_ID} characters"),
        (",".join(["package_updates:e:1"] * 8), "at most 7 positions"),
    ],
)
async def test_an_unreadable_last_event_id_is_400(
    bridge: BridgeNode, header: str, names: str
) -> None:
    status, text = await refused(bridge, "topics=package_updates", {"Last-Event-ID": header})
    assert status == 400
    assert text.startswith("Last-Event-ID")
    assert names in text
    assert not bridge.bridge.connections


async def test_a_position_of_another_epoch_or_ahead_is_told_not_recovered(
    bridge: BridgeNode, stub: Stub
) -> None:
    response = await publish(stub, *(package(f"p{i}") for i in range(3)))
    epoch = response.results[0].position.epoch
    for header, reason in (
        ("package_updates:not-this-epoch:2", "epoch_changed"),
        (f"package_updates:{epoch}:99", "position_ahead"),
    ):
        async with sse(bridge, "topics=package_updates", {"Last-Event-ID": header}) as stream:
            told = (await stream.frame("subscribed")).data["data"]
            assert told["recovered"] is False
            assert told["reason"] == reason
            await publish(stub, package("next"))
            (event,) = await stream.events(1)
            assert is_after(event.data["position"], told["position"])


def is_after(position: dict[str, Any], told: dict[str, Any]) -> bool:
    return bool(position["epoch"] != told["epoch"] or position["offset"] > told["offset"])


def test_last_event_id_parsing_names_the_header() -> None:
    assert parse_last_event_id("") == {}
    assert parse_last_event_id("anomalies:e:3,package_updates:f:0") == {
        pb.TOPIC_ANOMALIES: (3, "e"),
        pb.TOPIC_PACKAGE_UPDATES: (0, "f"),
    }
    with pytest.raises(InvalidArgument, match=r"^Last-Event-ID: since='x'"):
        parse_last_event_id("x")


def test_topics_parsing() -> None:
    assert parse_topics(" anomalies, anomalies,package_updates ") == (
        pb.TOPIC_ANOMALIES,
        pb.TOPIC_PACKAGE_UPDATES,
    )
    for bad in (None, "", " , "):
        with pytest.raises(InvalidArgument, match=r"^topics: required"):
            parse_topics(bad)
    with pytest.raises(InvalidArgument, match="'parcels'"):
        parse_topics("anomalies,parcels")
    # Every name is checked, however many come before it; repeats count.
    with pytest.raises(InvalidArgument, match="'parcels'"):
        parse_topics(",".join(["anomalies"] * 8 + ["parcels"]))
    assert parse_topics(",".join(["anomalies"] * MAX_TOPIC_NAMES)) == (pb.TOPIC_ANOMALIES,)
    with pytest.raises(InvalidArgument, match=rf"^topics: at most {MAX_TOPIC_NAMES} names, got"):
        parse_topics(",".join(["anomalies"] * (MAX_TOPIC_NAMES + 1)))


# --- refusals before the stream -----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("", "topics: required"),
        ("topics=parcels", "unknown subscription type 'parcels'"),
        ("topics=" + ",".join(["anomalies"] * 8 + ["parcels"]), "'parcels'"),
        ("topics=" + ",".join(["anomalies"] * 33), "topics: at most 32 names"),
        ("topics=anomalies&since=anomalies:e", "since="),
        ("topics=anomalies&batch=1", "batch: not supported"),
        ("topics=map_updates&bbox=1,2,3", "bbox"),
    ],
)
async def test_bad_requests_are_400_naming_the_parameter(
    bridge: BridgeNode, query: str, text: str
) -> None:
    status, body = await refused(bridge, query)
    assert (status, text in body) == (400, True), body


async def test_auth_401_403_and_a_token_by_query_or_header(
    core: CoreNode, start_bridge: StartBridge, stub: Stub
) -> None:
    bridge = await start_bridge(core.address, **auth_settings())
    status, text = await refused(bridge, "topics=anomalies")
    assert (status, text.startswith("unauthorized: missing token")) == (401, True)
    status, _ = await refused(bridge, "topics=anomalies&token=not.a.jwt")
    assert status == 401
    limited = token("bob", subscribe=["anomalies"])
    query = f"topics=package_updates,notifications&token={limited}"
    status, text = await refused(bridge, query)
    assert (status, text) == (403, "this token may not subscribe to package_updates, notifications")
    assert bridge.bridge.refusals["forbidden"] == 1
    assert bridge.bridge.refusals["unauthorized"] == 2
    assert not bridge.bridge.connections
    by_bearer = {"Authorization": f"Bearer {limited}"}
    async with (
        sse(bridge, f"topics=anomalies&token={limited}") as by_query,
        sse(bridge, "topics=anomalies", by_bearer) as by_header,
    ):
        await publish(stub, sample("anomaly_detected"))
        for stream in (by_query, by_header):
            (event,) = await stream.events(1)
            assert event.data["type"] == "anomaly_detected"


async def test_a_forbidden_topic_is_an_error_frame_and_the_others_stream(
    core: CoreNode, start_bridge: StartBridge, stub: Stub
) -> None:
    # As a WebSocket subscribe: one forbidden topic does not refuse the whole stream
    # (a client retrying the same URL would be refused in a loop).
    bridge = await start_bridge(core.address, **auth_settings())
    limited = token("bob", subscribe=["anomalies"])
    query = f"topics=package_updates,anomalies,notifications&token={limited}"
    async with sse(bridge, query) as stream:
        errors = [(await stream.frame("error")).data["data"] for _ in range(2)]
        assert errors == [
            {"code": "forbidden", "message": f"this token may not subscribe to {name}"}
            for name in ("package_updates", "notifications")
        ]
        await publish(stub, package("p"), sample("anomaly_detected"))
        (event,) = await stream.events(1)
        assert event.data["subscription_type"] == "anomalies"
        assert event.id is not None
        assert event.id.startswith("anomalies:")
        (conn,) = bridge.bridge.connections.values()
        assert conn.session.sub.topics == {pb.TOPIC_ANOMALIES}
    assert bridge.bridge.refusals["forbidden"] == 0


async def test_token_expiry_ends_the_stream_with_an_error(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    bridge = await start_bridge(core.address, **auth_settings())
    async with sse(bridge, f"topics=anomalies&token={token('alice', lifetime=1)}") as stream:
        error = (await stream.frame("error", within=5)).data["data"]
        assert error["code"] == "token_expired"
        assert error["close_code"] == 4003
        await stream.ended()


async def test_origin_and_caps_count_websockets_and_streams_together(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    bridge = await start_bridge(core.address, max_connections_per_address=2)
    status, _ = await refused(bridge, "topics=anomalies", {"Origin": "http://evil.example"})
    assert status == 403
    ws, _ = await open_ws(bridge, "/ws/connect")
    async with sse(bridge, "topics=anomalies"):
        status, text = await refused(bridge, "topics=anomalies")
        assert (status, text) == (429, "too many connections from this address")
    await ws.close()


async def test_max_connections_and_the_identity_cap_before_the_stream(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    bridge = await start_bridge(
        core.address, max_connections=2, max_connections_per_identity=1, **auth_settings()
    )
    alice = token("alice")
    async with sse(bridge, f"topics=anomalies&token={alice}"):
        status, text = await refused(bridge, f"topics=anomalies&token={alice}")
        assert (status, text) == (429, "at most 1 connections per user")
        assert bridge.bridge.refusals["per_identity"] == 1
        async with sse(bridge, f"topics=anomalies&token={token('bob')}"):
            status, text = await refused(bridge, f"topics=anomalies&token={token('carol')}")
            assert (status, text) == (503, "too many connections")


async def test_head_is_405_and_holds_no_slot(bridge: BridgeNode) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.head(f"{bridge.url}/sse?topics=anomalies") as response,
    ):
        assert response.status == 405
        assert response.headers["Allow"] == "GET"
        assert not bridge.bridge.connections
        assert not bridge.bridge.admission.by_address


async def test_metrics_count_streams_by_endpoint(bridge: BridgeNode) -> None:
    async with (
        sse(bridge, "topics=anomalies"),
        aiohttp.ClientSession() as client,
        client.get(bridge.url + "/metrics") as response,
    ):
        text = await response.text()
    assert any('endpoint="/sse"' in line and line.endswith(" 1.0") for line in text.splitlines())


# --- the wire -----------------------------------------------------------------------


async def raw_get(
    port: int, path: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def test_chunked_framing_is_exact_and_the_stream_ends_with_the_last_chunk(
    bridge: BridgeNode, stub: Stub
) -> None:
    reader, writer = await raw_get(bridge.port, "/sse?topics=package_updates")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding: chunked" in head
    await publish(stub, package("a"), package("b"))

    async def chunk() -> bytes:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        body = await reader.readexactly(size + 2)
        assert body.endswith(b"\r\n")
        return body[:-2]

    bodies = [await asyncio.wait_for(chunk(), TIMEOUT) for _ in range(2)]
    assert bodies[0] == b"retry: 500\n\n"
    # The welcome carries the id the stream starts at: a reconnect before any event
    # resumes the topic from where it was subscribed.
    assert bodies[1].startswith(b"id: package_updates:")
    assert b'\ndata: {"type":"welcome"' in bodies[1]
    text = b""
    while text.count(b"id: ") < 2:
        text += await asyncio.wait_for(chunk(), TIMEOUT)
    assert text.endswith(b"\n\n")
    assert text.count(b"\ndata: ") == 2
    await bridge.stop()  # shutdown: the going_away frame, then the last chunk
    rest = b""
    while (body := await asyncio.wait_for(chunk(), TIMEOUT)) != b"":
        rest += body
    assert rest.startswith(b'data: {"type":"error"')
    final = orjson.loads(rest.removeprefix(b"data: ").strip())
    assert final["data"] == {
        "code": "going_away",
        "message": "server shutting down",
        "close_code": 1001,
    }
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed after it
    writer.close()


async def test_keepalive_is_a_named_ping_event(core: CoreNode, start_bridge: StartBridge) -> None:
    bridge = await start_bridge(core.address, ping_interval=0.2)
    async with sse(bridge, "topics=anomalies") as stream:
        # Nothing is published: the pings come while the next message is awaited, as
        # events a page can listen to (event: ping), never as messages or comments.
        with pytest.raises(TimeoutError):
            await stream.next(within=1)
        assert stream.pings >= 2
        assert stream.comments == []
        assert len(bridge.bridge.connections) == 1  # a stream is never dropped for no pong


async def test_a_stalled_stream_does_not_hurt_a_websocket_and_is_closed(
    start_bridge: StartBridge, core: CoreNode, stub: Stub
) -> None:
    bridge = await start_bridge(core.address, send_queue_bytes=256 * 1024, slow_timeout=1)
    reader, writer = await raw_get(bridge.port, "/sse?topics=package_updates", rcvbuf=4096)
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    writer.transport.pause_reading()  # type: ignore[attr-defined]  # stop reading: buffers fill
    fast, _ = await open_ws(bridge, "/ws/packages")
    big = "x" * 4000
    received = 0
    for batch in range(40):
        await publish(stub, *(package(f"p{batch}-{i}", location=big) for i in range(50)))
        frames = await recv_events(fast, 50)
        assert [f["position"]["offset"] for f in frames] == list(range(received + 1, received + 51))
        received += 50

    async def closed() -> bool:
        return bridge.bridge.slow_closed == 1 and len(bridge.bridge.connections) == 1

    await eventually(closed)
    assert bridge.bridge.catch_ups >= 1  # it overflowed and caught up before it stalled
    writer.close()
    await fast.close()


# --- plain calls --------------------------------------------------------------------


def _frames() -> list[Frame]:
    events = [package(f"p{i}") for i in range(3)]
    for i, event in enumerate(events, 1):
        event.position.offset = i
        event.position.epoch = "E"
    return [control("pong"), *(event_frame(e) for e in events)]


def websocket_payloads(wire: bytes) -> list[bytes]:
    """The payloads of unmasked WebSocket text frames, one after the other."""
    payloads = []
    while wire:
        size, start = wire[1], 2
        if size == 126:
            size, start = int.from_bytes(wire[2:4]), 4
        elif size == 127:
            size, start = int.from_bytes(wire[2:10]), 10
        payloads.append(wire[start : start + size])
        wire = wire[start + size :]
    return payloads


def test_sse_session_takes_what_a_websocket_session_takes() -> None:
    # The bookkeeping of SSESession.take mirrors Session.take: the same frames leave
    # the queue, with the same counts, whatever either does to choose them.
    ws, stream = (
        Session("a", "/ws/connect", "r", max_bytes=2**20),
        SSESession("b", "r", max_bytes=2**20, chunked=False),
    )
    frames = _frames()  # once: a control frame's timestamp is the time it was built
    for session in (ws, stream):
        for frame in frames:
            assert session.send(frame)
    wire, text = ws.take(2**20), stream.take(2**20)
    payloads = [line[6:] for line in text.split(b"\n") if line.startswith(b"data: ")]
    assert payloads == websocket_payloads(wire)  # the same JSON, in the same order
    assert len(payloads) == 4
    assert (ws.frames_sent, len(ws.sub)) == (stream.frames_sent, len(stream.sub)) == (4, 0)
    assert stream.delivered(pb.TOPIC_PACKAGE_UPDATES)
    assert stream.cursor() == "package_updates:E:3"


def test_sse_session_frames_and_cursor() -> None:
    session = SSESession("s", "r", max_bytes=2**20)
    session.seed({pb.TOPIC_ANOMALIES: None})
    assert session.cursor() == ""
    frames = _frames()
    session.seed({pb.TOPIC_ANOMALIES: frames[1]})
    assert session.cursor() == "anomalies:E:1"
    body = session.events([*frames[:2], control("pong")])
    pong = body.split(b"\n\n")[2] + b"\n\n"
    assert body == (
        # The first frame carries the cursor the stream starts at, later control frames
        # only a cursor they moved; every event frame carries it.
        b"id: anomalies:E:1\ndata: " + frames[0].data + b"\n\n"
        b"id: package_updates:E:1,anomalies:E:1\ndata: " + frames[1].data + b"\n\n" + pong
    )
    assert pong.startswith(b'data: {"type":"pong"')
    assert session.chunk(b"abc") == b"3\r\nabc\r\n"
    assert session.preamble() == b"c\r\nretry: 500\n\n\r\n"
    assert session.keepalive() == b"16\r\nevent: ping\ndata: {}\n\n\r\n"
    session.begin_close(1001, "bye")
    assert session.state is State.CLOSING
    assert session.take(100) == b""


def _telling(kind: str, topic: str, at: tuple[int, str], **more: Any) -> Frame:
    data = {"subscription_type": topic, "position": {"offset": at[0], "epoch": at[1]}, **more}
    return control(kind, data)


def test_subscribed_and_position_frames_move_the_cursor_as_a_client_moves_its_own() -> None:
    session = SSESession("s", "r", max_bytes=2**20, chunked=False)
    session.seed({pb.TOPIC_ANOMALIES: Position(4, "A")})  # resumed after anomalies:A:4

    def ids(*frames: Frame) -> list[str | None]:
        """The id line of each event written for ``frames`` (None: none)."""
        out = []
        for event in session.events(frames).split(b"\n\n")[:-1]:
            first = event.split(b"\n")[0].decode()
            out.append(first.removeprefix("id: ") if first.startswith("id: ") else None)
        return out

    assert ids(control("welcome")) == ["anomalies:A:4"]
    # Recovered: the replay follows, the topic stays where it resumes after; a topic
    # with no position yet starts at the one told.
    recovered = _telling("subscribed", "anomalies", (9, "A"), recovered=True)
    assert ids(recovered) == [None]
    started = _telling("subscribed", "package_updates", (7, "P"), recovered=True)
    assert ids(started) == ["package_updates:P:7,anomalies:A:4"]
    # Not recovered: where the stream continues, carried by that very frame.
    gap = _telling("subscribed", "anomalies", (0, "B"), recovered=False, reason="epoch_changed")
    assert ids(gap) == ["package_updates:P:7,anomalies:B:0"]
    # position frames (events a filter left out): forward only, within the epoch.
    assert ids(_telling("position", "package_updates", (5, "P"))) == [None]
    assert ids(_telling("position", "package_updates", (3, "Q"))) == [None]
    assert ids(_telling("position", "map_updates", (3, "M"))) == [None]  # no position yet
    assert ids(_telling("position", "package_updates", (8, "P"))) == [
        "package_updates:P:8,anomalies:B:0"
    ]
    assert session.cursor() == "package_updates:P:8,anomalies:B:0"


def test_final_frames() -> None:
    going = orjson.loads(final_frame(1001, "server shutting down", None).data)
    assert going["data"] == {
        "code": "going_away",
        "message": "server shutting down",
        "close_code": 1001,
    }
    slow = orjson.loads(final_frame(1013, "too slow", SlowConsumer("too slow")).data)
    assert slow["data"]["code"] == "slow_consumer"
    assert slow["data"]["close_code"] == 1013
