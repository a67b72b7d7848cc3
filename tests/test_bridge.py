"""The WebSocket bridge: a real core and a real bridge on loopback ports, real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from bridge.app import BridgeNode
from bridge.session import State
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import CoreNode
from core.topics import EVENT_TYPES, PAYLOAD_TOPIC, TOPIC_NAMES
from tests.conftest import StartBridge, durable_core
from tests.events import SAMPLES, package, sample
from tests.grpc_helpers import publish
from tests.waiting import eventually
from tests.ws_helpers import (
    TIMEOUT,
    open_ws,
    recv,
    recv_events,
    recv_type,
    send,
    subscribe,
    ws_url,
)

if TYPE_CHECKING:
    from clearpath.realtime.v1.service_pb2_grpc import RealtimeServiceAsyncStub as Stub


async def test_clearpathai_original_ping_test(bridge: BridgeNode) -> None:
    # ClearPathAI's backend test as written, adjusted for the welcome frame and the port.
    async with websockets.connect(ws_url(bridge, "/ws/connect")) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "ping", "data": {}}))
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_welcome_lists_the_connection_and_subscription_types(bridge: BridgeNode) -> None:
    ws, welcome = await open_ws(bridge, "/ws/connect")
    data = welcome["data"]
    assert data["endpoint"] == "/ws/connect"
    assert data["subscriptions"] == []
    assert data["subscription_types"] == list(TOPIC_NAMES.values())
    assert len(data["connection_id"]) == 12
    assert welcome["timestamp"].endswith("Z")
    await ws.close()


@pytest.mark.parametrize(
    ("path", "topics"),
    [
        ("/ws/packages", ["package_updates"]),
        ("/ws/dashboard", ["dashboard_metrics", "notifications"]),
        ("/ws/map", ["map_updates", "package_updates"]),
        ("/ws/agents", ["agent_activity", "system_health"]),
    ],
)
async def test_auto_subscribing_endpoints(
    bridge: BridgeNode, stub: Stub, path: str, topics: list[str]
) -> None:
    ws, welcome = await open_ws(bridge, path)
    assert welcome["data"]["subscriptions"] == topics
    # One event of every type: exactly the endpoint's topics arrive, in publish order.
    await publish(stub, *(sample(kind) for kind in EVENT_TYPES))
    got = await recv_events(ws, len(topics))
    expected = [k for k in EVENT_TYPES if TOPIC_NAMES[PAYLOAD_TOPIC[k]] in topics]
    assert [f["type"] for f in got] == expected
    await ws.close()


async def test_events_arrive_as_the_documented_frames_at_subscribers_only(
    bridge: BridgeNode, stub: Stub
) -> None:
    subscribers = [await open_ws(bridge, "/ws/connect") for _ in range(3)]
    for ws, _ in subscribers:
        confirmed = await subscribe(ws, "package_updates")
        assert confirmed["data"]["subscriptions"] == ["package_updates"]
        assert confirmed["data"]["recovered"] is True
        await subscribe(ws, "anomalies")
        await subscribe(ws, "dashboard_metrics")
    other, _ = await open_ws(bridge, "/ws/connect")
    await subscribe(other, "system_health")
    await publish(
        stub, sample("package_update"), sample("anomaly_detected"), sample("dashboard_metrics")
    )
    for ws, _ in subscribers:
        frames = await recv_events(ws, 3)
        for frame, kind, topic in zip(
            frames,
            ["package_update", "anomaly_detected", "dashboard_metrics"],
            ["package_updates", "anomalies", "dashboard_metrics"],
            strict=True,
        ):
            assert frame["type"] == kind
            assert frame["data"] == SAMPLES[kind]
            assert frame["timestamp"] == "2024-01-15T10:30:00Z"
            assert frame["subscription_type"] == topic
            assert frame["position"]["offset"] == 1
            assert frame["id"]
    # The other socket got nothing of these: its next frame answers our ping.
    await send(other, "ping")
    assert (await recv(other))["type"] == "pong"
    for ws, _ in [*subscribers, (other, None)]:
        await ws.close()


async def test_one_encoding_per_event_whatever_the_number_of_sockets(
    bridge: BridgeNode, stub: Stub
) -> None:
    sockets = [await open_ws(bridge, "/ws/packages") for _ in range(5)]
    await publish(stub, package("a"))
    raw = [await asyncio.wait_for(ws.recv(), TIMEOUT) for ws, _ in sockets]
    assert len(set(raw)) == 1  # the very same bytes went to every socket
    assert bridge.bridge.upstream.events == 1
    for ws, _ in sockets:
        await ws.close()


async def test_unsubscribe_stops_delivery(bridge: BridgeNode, stub: Stub) -> None:
    ws, _ = await open_ws(bridge, "/ws/map")
    await send(ws, "unsubscribe", subscription_type="map_updates")
    frame = await recv_type(ws, "unsubscribed")
    assert frame["data"] == {
        "subscription_type": "map_updates",
        "subscriptions": ["package_updates"],
    }
    await publish(stub, sample("map_update"), package("after"))
    (got,) = await recv_events(ws, 1)
    assert got["type"] == "package_update"
    # Unsubscribing what is not subscribed is harmless too.
    await send(ws, "unsubscribe", subscription_type="anomalies")
    assert (await recv_type(ws, "unsubscribed"))["data"]["subscription_type"] == "anomalies"
    await ws.close()


async def test_subscribing_twice_is_harmless(bridge: BridgeNode, stub: Stub) -> None:
    ws, _ = await open_ws(bridge, "/ws/connect")
    await subscribe(ws, "anomalies")
    again = await subscribe(ws, "anomalies")
    assert again["data"]["subscriptions"] == ["anomalies"]
    await publish(stub, sample("anomaly_detected"), sample("anomaly_detected"))
    got = await recv_events(ws, 2)
    assert [f["position"]["offset"] for f in got] == [1, 2]  # once each
    await ws.close()


async def test_status_endpoints_report_what_is_true(bridge: BridgeNode, stub: Stub) -> None:
    a, wa = await open_ws(bridge, "/ws/packages")
    b, _ = await open_ws(bridge, "/ws/dashboard")
    c, _ = await open_ws(bridge, "/ws/connect")
    await subscribe(c, "package_updates")
    await publish(stub, package("x"))
    await recv_events(a, 1)
    await recv_events(c, 1)
    async with aiohttp.ClientSession() as http:
        async with http.get(bridge.url + "/ws/status") as response:
            status = await response.json()
        async with http.get(bridge.url + "/ws/connections") as response:
            connections = await response.json()
    assert status["connections"]["total"] == 3
    assert status["connections"]["by_endpoint"] == {
        "/ws/packages": 1,
        "/ws/dashboard": 1,
        "/ws/connect": 1,
    }
    assert status["subscribers"]["package_updates"] == 2
    assert status["subscribers"]["dashboard_metrics"] == 1
    assert status["subscribers"]["anomalies"] == 0
    # welcome x3, subscribed x1, the event x2
    assert status["frames_sent"] == 6
    assert status["frames_dropped"] == 0
    assert status["upstream"]["state"] == "connected"
    assert status["upstream"]["positions"]["package_updates"]["offset"] == 1
    assert status["uptime_seconds"] > 0
    by_id = {conn["id"]: conn for conn in connections}
    mine = by_id[wa["data"]["connection_id"]]
    assert mine["endpoint"] == "/ws/packages"
    assert mine["subscriptions"] == ["package_updates"]
    assert mine["frames_sent"] == 2
    assert mine["send_queue_depth"] == 0
    assert mine["remote_address"] == "127.0.0.1"
    assert mine["user"] is None
    assert mine["connected_at"] > 0
    for ws in (a, b, c):
        await ws.close()


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.json()


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "dance", "data": {}}', "invalid_message"),
        ('{"type": "subscribe", "data": {}}', "invalid_message"),
        ('{"type": "subscribe", "data": {"subscription_type": 5}}', "invalid_message"),
        (
            '{"type": "subscribe", "data": {"subscription_type": "x", "extra": 1}}',
            "invalid_message",
        ),
        (
            '{"type": "subscribe", "data": {"subscription_type": "parcels"}}',
            "unknown_subscription_type",
        ),
        (
            '{"type": "unsubscribe", "data": {"subscription_type": "parcels"}}',
            "unknown_subscription_type",
        ),
        ("[1, 2]", "invalid_message"),
        (
            '{"type": "subscribe", "data": {"subscription_type": "anomalies", '
            '"since": {"offset": -1, "epoch": "e"}}}',
            "invalid_message",
        ),
    ],
)
async def test_bad_messages_get_an_error_frame_and_the_socket_stays(
    bridge: BridgeNode, stub: Stub, message: str, code: str
) -> None:
    ws, _ = await open_ws(bridge, "/ws/packages")
    bystander, _ = await open_ws(bridge, "/ws/packages")
    await ws.send(message)
    error = await recv(ws)
    assert error["type"] == "error"
    assert error["data"]["code"] == code
    assert error["data"]["message"]
    assert "Traceback" not in error["data"]["message"]
    await send(ws, "ping")
    assert (await recv(ws))["type"] == "pong"
    await publish(stub, package("still-here"))
    for sock in (ws, bystander):
        (frame,) = await recv_events(sock, 1)
        assert frame["data"]["package_id"] == "still-here"
    await ws.close()
    await bystander.close()


async def test_binary_frame_closes_1003(bridge: BridgeNode) -> None:
    ws, _ = await open_ws(bridge, "/ws/connect")
    await ws.send(b"\x00\x01")
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1003
    assert "binary" in info.value.rcvd.reason


async def test_oversized_frame_closes_1009(start_bridge: StartBridge, core: CoreNode) -> None:
    bridge = await start_bridge(core.address, max_message_bytes=1024)
    ws, _ = await open_ws(bridge, "/ws/connect")
    await send(ws, "ping", pad="x" * 4096)
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1009

    async def forgotten() -> bool:  # the bridge cleans up and lives on
        return bool((await get_json(bridge.url + "/ws/status"))["connections"]["total"] == 0)

    await eventually(forgotten)
    ws2, _ = await open_ws(bridge, "/ws/connect")
    await send(ws2, "ping")
    assert (await recv(ws2))["type"] == "pong"
    await ws2.close()


async def test_rate_limit(start_bridge: StartBridge, core: CoreNode) -> None:
    bridge = await start_bridge(core.address, rate_limit=1, rate_burst=3)
    ws, _ = await open_ws(bridge, "/ws/connect")
    for _ in range(5):
        await send(ws, "ping")
    kinds = [(await recv(ws))["type"] for _ in range(5)]
    assert kinds[:3] == ["pong", "pong", "pong"]
    assert kinds[3:] == ["error", "error"]
    await ws.close()


async def test_rate_limited_error_code(start_bridge: StartBridge, core: CoreNode) -> None:
    bridge = await start_bridge(core.address, rate_limit=1, rate_burst=1)
    ws, _ = await open_ws(bridge, "/ws/connect")
    await send(ws, "ping")
    await send(ws, "ping")
    assert (await recv(ws))["type"] == "pong"
    error = await recv(ws)
    assert error["data"]["code"] == "rate_limited"
    await ws.close()


async def test_dead_connection_is_closed_and_forgotten(
    start_bridge: StartBridge, core: CoreNode
) -> None:
    bridge = await start_bridge(core.address, ping_interval=0.4)
    async with aiohttp.ClientSession() as http:
        # autoping=False: this client never answers the server's pings, like a dead peer.
        ws = await http.ws_connect(ws_url(bridge, "/ws/packages"), autoping=False)
        welcome = orjson.loads((await ws.receive(timeout=TIMEOUT)).data)
        conn_id = welcome["data"]["connection_id"]
        connections = await get_json(bridge.url + "/ws/connections")
        assert conn_id in {c["id"] for c in connections}
        kinds = []
        while True:
            msg = await ws.receive(timeout=TIMEOUT)
            kinds.append(msg.type)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert aiohttp.WSMsgType.PING in kinds
        await ws.close()

    async def forgotten() -> bool:
        return conn_id not in {c["id"] for c in await get_json(bridge.url + "/ws/connections")}

    await eventually(forgotten)


async def open_stalled(bridge: BridgeNode, path: str) -> tuple[asyncio.StreamReader, Any]:
    """A WebSocket client that completes the handshake and then stops reading.

    Its receive buffer is fixed small before connecting (no autotuning), so
    the server's socket buffers fill after a few MB.
    """
    host, port = "127.0.0.1", bridge.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")
    writer.transport.pause_reading()  # type: ignore[attr-defined]  # stop reading: the kernel buffers fill up
    return reader, writer


async def test_stalled_browser_does_not_delay_others_and_is_closed(
    start_bridge: StartBridge, core: CoreNode, stub: Stub
) -> None:
    # Its queue overflows (it catches up from history instead), then it takes nothing
    # for slow_timeout: closed.
    bridge = await start_bridge(core.address, send_queue_bytes=256 * 1024, slow_timeout=1)
    _, stalled = await open_stalled(bridge, "/ws/packages")
    fast, _ = await open_ws(bridge, "/ws/packages")
    big = "x" * 4000
    received = 0
    for batch in range(40):
        await publish(stub, *(package(f"p{batch}-{i}", location=big) for i in range(50)))
        frames = await recv_events(fast, 50)
        assert [f["position"]["offset"] for f in frames] == list(range(received + 1, received + 51))
        received += 50

    async def closed() -> dict[str, Any] | None:
        status: dict[str, Any] = await get_json(bridge.url + "/ws/status")
        return status if status["slow_consumers_closed"] == 1 else None

    status = await eventually(closed)
    assert status["connections"]["total"] == 1
    assert status["frames_dropped"] > 0
    stalled.close()
    await fast.close()


async def test_slow_consumer_gets_error_and_1013(
    start_core: Any, start_bridge: StartBridge
) -> None:
    # A client that reads, but only after it was found to take nothing for slow_timeout.
    core = await start_core()  # default queues: the bridge's own upstream keeps up
    bridge = await start_bridge(core.address, send_queue_bytes=256 * 1024, slow_timeout=0.5)
    channel = grpc.aio.insecure_channel(core.address)
    stub = sgrpc.RealtimeServiceStub(channel)
    reader, writer = await open_stalled(bridge, "/ws/packages")
    big = "x" * 4000
    for batch in range(40):
        await publish(stub, *(package(f"p{batch}-{i}", location=big) for i in range(50)))

    async def overflowed() -> bool:
        return all(c.session.state is not State.OPEN for c in bridge.bridge.connections.values())

    await eventually(overflowed)
    # Read again within close_timeout, before the bridge aborts the connection.
    writer.transport.resume_reading()

    async def read_all() -> bytes:
        chunks = []
        while chunk := await reader.read(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    data = await asyncio.wait_for(read_all(), TIMEOUT)
    # What was written before the overflow, then the error frame and a close frame with 1013.
    assert b'"code":"slow_consumer"' in data
    assert b"\x88" + bytes([len(data) - data.rindex(b"\x88") - 2]) + b"\x03\xf5" in data
    writer.close()
    await channel.close()


async def test_resume_with_since_replays_from_the_bridge_cache(
    bridge: BridgeNode, stub: Stub
) -> None:
    ws, _ = await open_ws(bridge, "/ws/packages")
    await publish(stub, *(package(f"p{i}") for i in range(3)))
    seen = await recv_events(ws, 3)
    last = seen[-1]["position"]
    await ws.close()
    await publish(stub, *(package(f"missed{i}") for i in range(4)))
    # Reconnect on /ws/connect and subscribe with the last position seen.
    ws, _ = await open_ws(bridge, "/ws/connect")
    confirmed = await subscribe(ws, "package_updates", since=last)
    assert confirmed["data"]["recovered"] is True
    assert confirmed["data"]["position"]["offset"] == 7
    await publish(stub, package("live"))
    got = await recv_events(ws, 5)
    assert [f["data"]["package_id"] for f in got] == [
        "missed0",
        "missed1",
        "missed2",
        "missed3",
        "live",
    ]
    assert [f["position"]["offset"] for f in got] == [4, 5, 6, 7, 8]
    resumes = (await get_json(bridge.url + "/ws/status"))["resumes"]
    assert resumes == {
        "recovered": 1,
        "not_recovered": 0,
        "frames_from_cache": 4,
        "frames_from_core": 0,
    }
    await ws.close()


async def test_resume_on_an_auto_endpoint_with_since_in_the_url(
    bridge: BridgeNode, stub: Stub
) -> None:
    response = await publish(stub, *(package(f"p{i}") for i in range(5)))
    first = response.results[1].position
    url = ws_url(bridge, f"/ws/packages?since=package_updates:{first.epoch}:{first.offset}")
    async with websockets.connect(url) as ws:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        confirmed = await recv_type(ws, "subscribed")
        assert confirmed["data"]["recovered"] is True
        got = await recv_events(ws, 3)
        assert [f["position"]["offset"] for f in got] == [3, 4, 5]


async def test_resume_from_the_core_when_the_cache_is_too_short(
    start_bridge: StartBridge, core: CoreNode, stub: Stub
) -> None:
    bridge = await start_bridge(core.address, cache_size=2)
    response = await publish(stub, *(package(f"p{i}") for i in range(10)))
    since = response.results[2].position  # offset 3; the cache holds only 9 and 10
    ws, _ = await open_ws(bridge, "/ws/connect")
    confirmed = await subscribe(
        ws, "package_updates", since={"offset": since.offset, "epoch": since.epoch}
    )
    assert confirmed["data"]["recovered"] is True
    await publish(stub, package("live"))
    got = await recv_events(ws, 8)
    assert [f["position"]["offset"] for f in got] == list(range(4, 12))
    assert got[-1]["data"]["package_id"] == "live"
    resumes = (await get_json(bridge.url + "/ws/status"))["resumes"]
    assert resumes["frames_from_core"] == 7  # 4..10: the cache held only 9 and 10
    assert resumes["recovered"] == 1
    await ws.close()


async def test_resume_too_old_says_not_recovered(
    start_core: Any, start_bridge: StartBridge
) -> None:
    core = await start_core(history_size=3)
    bridge = await start_bridge(core.address, cache_size=2)
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        response = await publish(stub, *(package(f"p{i}") for i in range(10)))
        since = response.results[0].position

        # Until the bridge has seen them, events 2..10 are still to come live: wait.
        async def seen_all() -> bool:
            head = bridge.bridge.upstream.position(pb.TOPIC_PACKAGE_UPDATES)
            return head is not None and head.offset == 10

        await eventually(seen_all)
        ws, _ = await open_ws(bridge, "/ws/connect")
        confirmed = await subscribe(
            ws, "package_updates", since={"offset": since.offset, "epoch": since.epoch}
        )
        # Told, with why and where the stream continues; then what the core still has.
        assert confirmed["data"]["recovered"] is False
        assert confirmed["data"]["reason"] == "history_trimmed"
        assert confirmed["data"]["position"] == {"offset": 1, "epoch": since.epoch}
        kept = await recv_events(ws, 3)
        assert [f["position"]["offset"] for f in kept] == [8, 9, 10]
        await publish(stub, package("live"))
        (got,) = await recv_events(ws, 1)
        assert got["data"]["package_id"] == "live"
        assert got["position"]["offset"] == 11
        await ws.close()


async def test_core_restart_with_browsers_connected_loses_nothing(
    start_core: Any, start_bridge: StartBridge
) -> None:
    core, restart = await durable_core(start_core)
    # Slow retries: what is published right after the restart reaches the core first.
    bridge = await start_bridge(core.address, reconnect_initial=1.0, reconnect_max=1.0)
    browsers = [await open_ws(bridge, "/ws/packages") for _ in range(3)]
    # No dashboard_metrics event was published before the outage: a quiet topic.
    dashboard, _ = await open_ws(bridge, "/ws/dashboard")
    async with grpc.aio.insecure_channel(core.address) as channel:
        await publish(sgrpc.RealtimeServiceStub(channel), *(package(f"a{i}") for i in range(5)))
    for ws, _ in browsers:
        await recv_events(ws, 5)

    async def still_connected() -> None:  # browsers stay connected while the core is away
        for ws, _ in browsers:
            await send(ws, "ping")
            assert (await recv(ws))["type"] == "pong"

    restarted = await restart(still_connected)
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        # Published before the bridge is back: only the core's history has these.
        await publish(sgrpc.RealtimeServiceStub(channel), *(package(f"b{i}") for i in range(5)))
        await publish(sgrpc.RealtimeServiceStub(channel), sample("dashboard_metrics"))
    for ws, _ in browsers:
        got = await recv_events(ws, 5, within=15)
        assert [f["data"]["package_id"] for f in got] == [f"b{i}" for i in range(5)]
        assert [f["position"]["offset"] for f in got] == [6, 7, 8, 9, 10]
        await ws.close()
    (metrics,) = await recv_events(dashboard, 1, within=15)
    assert metrics["type"] == "dashboard_metrics"
    assert metrics["position"]["offset"] == 1
    await dashboard.close()
    status = await get_json(bridge.url + "/ws/status")
    assert status["upstream"]["state"] == "connected"
    assert status["upstream"]["reconnects"] >= 1
    assert status["upstream"]["history_gaps"] == 0
    # The path: the bridge's own stream resumed from the core's history (5 + 1 events
    # after the 5 before); no socket resumed (they stayed connected).
    assert status["upstream"]["events_received"] == 11
    assert status["resumes"]["recovered"] == status["resumes"]["not_recovered"] == 0


async def test_upstream_state_is_reported_while_the_core_is_away(
    start_core: Any, start_bridge: StartBridge
) -> None:
    core = await start_core()
    bridge = await start_bridge(core.address)
    await core.stop(0)

    async def reconnecting() -> dict[str, Any] | None:
        status: dict[str, Any] = await get_json(bridge.url + "/ws/status")
        return status if status["upstream"]["state"] == "reconnecting" else None

    status = await eventually(reconnecting)
    assert status["upstream"]["last_error"]


async def test_shutdown_closes_sockets_with_going_away(
    start_bridge: StartBridge, core: CoreNode
) -> None:
    bridge = await start_bridge(core.address)
    ws, _ = await open_ws(bridge, "/ws/connect")
    await asyncio.wait_for(bridge.stop(), TIMEOUT)
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1001


async def test_batch_mode_sends_arrays(bridge: BridgeNode, stub: Stub) -> None:
    async with websockets.connect(ws_url(bridge, "/ws/packages?batch=1")) as ws:
        first = orjson.loads(await ws.recv())
        frames = first if isinstance(first, list) else [first]
        assert frames[0]["type"] == "welcome"
        await publish(stub, *(package(f"p{i}") for i in range(20)))
        got: list[dict[str, Any]] = []
        while len(got) < 20:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            got += message if isinstance(message, list) else [message]
        assert [f["position"]["offset"] for f in got] == list(range(1, 21))


async def test_resume_on_a_quiet_topic_goes_live_without_waiting_for_an_event(
    core: CoreNode, stub: Stub, start_bridge: StartBridge
) -> None:
    response = await publish(stub, *(package(f"p{i}") for i in range(3)))
    first = response.results[0].position
    bridge = await start_bridge(core.address)  # it has seen nothing on the topic
    ws, welcome = await open_ws(bridge, "/ws/connect")
    confirmed = await subscribe(
        ws, "package_updates", since={"offset": first.offset, "epoch": first.epoch}
    )
    assert confirmed["data"]["recovered"] is True
    got = await recv_events(ws, 2)
    assert [f["position"]["offset"] for f in got] == [2, 3]

    async def live() -> bool:
        conns = await get_json(bridge.url + "/ws/connections")
        mine = [c for c in conns if c["id"] == welcome["data"]["connection_id"]]
        return mine[0]["subscriptions"] == ["package_updates"] and core.service.streams == 1

    await eventually(live)  # the history stream to the core is closed, with no new event
    await publish(stub, package("live"))
    (frame,) = await recv_events(ws, 1)
    assert frame["position"]["offset"] == 4
    await send(ws, "ping")
    assert (await recv(ws))["type"] == "pong"  # and nothing was sent twice
    await ws.close()
