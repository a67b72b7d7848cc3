"""The bridge's entrance attacked: tokens, claims, refresh and expiry, origins, caps,
abuse, operator endpoints. A real core and bridge with authentication on; real
WebSocket and HTTP clients."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from core.server import CoreNode
from tests.auth_helpers import SECRET, auth_settings, bearer, token
from tests.conftest import StartBridge, StartCore
from tests.events import sample
from tests.waiting import eventually
from tests.ws_helpers import TIMEOUT, recv, recv_events, recv_type, send, subscribe, ws_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def core(start_core: StartCore) -> CoreNode:
    return await start_core(heartbeat_interval=0.5, history_size=100, **auth_settings())


@pytest.fixture
async def secured(core: CoreNode, start_bridge: StartBridge) -> BridgeNode:
    """A bridge requiring tokens, authenticated to the core as an operator."""
    return await start_bridge(
        core.address,
        ping_interval=5,
        auth_timeout=0.5,
        core_token=token("bridge", operator=True),
        **auth_settings(),
    )


async def publish_as(core: CoreNode, *events: Any) -> None:
    """Publish with an operator's token."""
    import grpc

    from clearpath.realtime.v1 import service_pb2 as spb
    from clearpath.realtime.v1 import service_pb2_grpc as sgrpc

    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        await stub.Publish(
            spb.PublishRequest(events=list(events)),
            metadata=bearer(token("ops", operator=True, publish="*")),
            timeout=TIMEOUT,
        )


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the bridge closes ``ws``; its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def authed(
    bridge: BridgeNode, path: str, value: str
) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(ws_url(bridge, path))
    await send(ws, "auth", token=value)
    welcome = await recv_type(ws, "welcome")
    return ws, welcome


# --- authenticating ---------------------------------------------------------------------


async def test_a_socket_that_never_authenticates_is_closed_4008(secured: BridgeNode) -> None:
    async with connect(ws_url(secured, "/ws/packages")) as ws:
        started = time.monotonic()
        code, reason = await closed_with(ws)
    assert code == 4008, reason
    assert "auth" in reason
    assert time.monotonic() - started < 0.5 + 2.0


async def test_auth_message_then_welcome_and_endpoint_topics(
    core: CoreNode, secured: BridgeNode
) -> None:
    ws, welcome = await authed(secured, "/ws/packages", token("alice"))
    async with ws:
        assert welcome["data"]["subject"] == "alice"
        assert welcome["data"]["subscriptions"] == ["package_updates"]
        assert isinstance(welcome["data"]["expires_at"], float | int)
        await publish_as(core, sample("package_update"))
        [event] = await recv_events(ws, 1)
        assert event["type"] == "package_update"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (token("alice", now=time.time() - 300, lifetime=60), "expired"),
        (token("alice", not_before=time.time() + 300), "not yet valid"),
        ("garbage", "malformed"),
        (token("alice") + "x", "signature"),
    ],
)
async def test_bad_tokens_in_the_auth_message_close_4001(
    secured: BridgeNode, bad: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with connect(ws_url(secured, "/ws/packages")) as ws:
        await send(ws, "auth", token=bad)
        code, reason = await closed_with(ws)
    assert code == 4001
    assert why in reason.lower()
    assert bad not in reason
    ours = [r for r in caplog.records if r.name.startswith("clearpath")]
    assert ours, "the bridge logged nothing"
    assert all(bad not in r.getMessage() for r in ours), "token logged"


async def test_wrong_key_and_alg_none_are_refused(secured: BridgeNode) -> None:
    from core.auth import mint

    other = mint(subject="alice", key="another-secret-that-is-32-bytes-long!!")
    none = _unsigned({"sub": "alice", "exp": int(time.time()) + 600})
    for bad in (other, none):
        async with connect(ws_url(secured, "/ws/packages")) as ws:
            await send(ws, "auth", token=bad)
            code, _ = await closed_with(ws)
        assert code == 4001


def _unsigned(claims: dict[str, Any]) -> str:
    import base64

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_token_in_the_query_or_the_subprotocol(secured: BridgeNode) -> None:
    async with connect(ws_url(secured, f"/ws/packages?token={token('alice')}")) as ws:
        welcome = await recv(ws)
        assert welcome["type"] == "welcome"
        assert welcome["data"]["subject"] == "alice"
    offered = ["clearpath.v1", f"clearpath.bearer.{token('bob')}"]
    async with connect(ws_url(secured, "/ws/packages"), subprotocols=offered) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "clearpath.v1"
        welcome = await recv(ws)
        assert welcome["data"]["subject"] == "bob"
    async with connect(ws_url(secured, "/ws/packages?token=nope")) as ws:
        code, _ = await closed_with(ws)
        assert code == 4001


async def test_messages_before_auth_are_refused_then_auth_works(secured: BridgeNode) -> None:
    async with connect(ws_url(secured, "/ws/connect")) as ws:
        await send(ws, "subscribe", subscription_type="package_updates")
        error = await recv_type(ws, "error")
        assert error["data"]["code"] == "unauthorized"
        await send(ws, "auth", token=token("alice"))
        welcome = await recv_type(ws, "welcome")
        assert welcome["data"]["subscriptions"] == []
        subscribed = await subscribe(ws, "package_updates")
        assert subscribed["data"]["subscriptions"] == ["package_updates"]


# --- claims decide ------------------------------------------------------------------------


async def test_a_forbidden_subscription_changes_nothing(secured: BridgeNode) -> None:
    ws, _ = await authed(secured, "/ws/connect", token("alice", subscribe=["package_updates"]))
    async with ws:
        await subscribe(ws, "package_updates")
        await send(ws, "subscribe", subscription_type="system_health")
        error = await recv_type(ws, "error")
        assert error["data"]["code"] == "forbidden"
        assert "system_health" in error["data"]["message"]
        await send(ws, "unsubscribe", subscription_type="package_updates")
        unsubscribed = await recv_type(ws, "unsubscribed")
        assert unsubscribed["data"]["subscriptions"] == []


async def test_endpoint_topics_the_token_may_not_read_are_left_out(
    secured: BridgeNode,
) -> None:
    ws, welcome = await authed(
        secured, "/ws/dashboard", token("alice", subscribe=["notifications"])
    )
    async with ws:
        assert welcome["data"]["subscriptions"] == ["notifications"]
        error = await recv_type(ws, "error")
        assert error["data"]["code"] == "forbidden"
        assert "dashboard_metrics" in error["data"]["message"]


async def test_a_users_notifications_reach_only_that_user(
    core: CoreNode, secured: BridgeNode
) -> None:
    alice, _ = await authed(secured, "/ws/dashboard", token("alice"))
    bob, _ = await authed(secured, "/ws/dashboard", token("bob"))
    ops, _ = await authed(secured, "/ws/dashboard", token("ops", operator=True))
    async with alice, bob, ops:
        await publish_as(
            core,
            sample("notification", notification_id="to-alice", user_id="alice"),
            sample("notification", notification_id="to-bob", user_id="bob"),
            sample("notification", notification_id="to-all", user_id=""),
        )

        async def seen(ws: ClientConnection) -> list[str]:
            ids: list[str] = []
            while "to-all" not in ids:
                [frame] = await recv_events(ws, 1)
                ids.append(frame["data"]["notification_id"])
            return ids

        assert await seen(alice) == ["to-alice", "to-all"]
        assert await seen(bob) == ["to-bob", "to-all"]
        assert await seen(ops) == ["to-alice", "to-bob", "to-all"]


async def test_a_resume_replays_only_the_users_notifications(
    core: CoreNode, secured: BridgeNode
) -> None:
    ws, _ = await authed(secured, "/ws/connect", token("ops", operator=True))
    async with ws:
        subscribed = await subscribe(ws, "notifications")
        epoch = subscribed["data"]["position"]["epoch"]
        start = subscribed["data"]["position"]["offset"]
    await publish_as(
        core,
        sample("notification", notification_id="a1", user_id="alice"),
        sample("notification", notification_id="b1", user_id="bob"),
        sample("notification", notification_id="all", user_id=""),
    )
    ws, _ = await authed(secured, "/ws/connect", token("alice"))
    async with ws:
        resumed = await subscribe(ws, "notifications", since={"offset": start, "epoch": epoch})
        assert resumed["data"]["recovered"] is True
        frames = await recv_events(ws, 2)
        assert [f["data"]["notification_id"] for f in frames] == ["a1", "all"]


# --- refresh and expiry -------------------------------------------------------------------


async def test_refresh_in_place_keeps_the_stream_without_a_gap(
    core: CoreNode, secured: BridgeNode
) -> None:
    ws, welcome = await authed(secured, "/ws/packages", token("alice", lifetime=30))
    async with ws:
        await publish_as(core, sample("package_update", package_id="p1"))
        [first] = await recv_events(ws, 1)
        await send(ws, "refresh", token=token("alice", lifetime=600))
        refreshed = await recv_type(ws, "refreshed")
        assert refreshed["data"]["expires_at"] > welcome["data"]["expires_at"] + 500
        await publish_as(core, sample("package_update", package_id="p2"))
        [second] = await recv_events(ws, 1)
        assert second["position"]["offset"] == first["position"]["offset"] + 1


async def test_a_refresh_for_another_subject_closes_4001(secured: BridgeNode) -> None:
    ws, _ = await authed(secured, "/ws/packages", token("alice"))
    async with ws:
        await send(ws, "refresh", token=token("mallory"))
        code, reason = await closed_with(ws)
    assert code == 4001
    assert "subject" in reason


async def test_a_refresh_that_drops_a_topic_unsubscribes_it(secured: BridgeNode) -> None:
    ws, _ = await authed(secured, "/ws/dashboard", token("alice"))
    async with ws:
        await send(ws, "refresh", token=token("alice", subscribe=["notifications"]))
        unsubscribed = await recv_type(ws, "unsubscribed")
        assert unsubscribed["data"]["subscriptions"] == ["notifications"]
        await recv_type(ws, "refreshed")


async def test_without_refresh_the_socket_closes_at_expiry_4003(secured: BridgeNode) -> None:
    # exp is whole seconds: between 1 and 2 s from now.
    ws, welcome = await authed(secured, "/ws/packages", token("alice", lifetime=2))
    async with ws:
        code, reason = await closed_with(ws)
        closed_at = time.time()
    assert code == 4003, reason
    assert closed_at >= welcome["data"]["expires_at"] - 0.05
    assert closed_at < welcome["data"]["expires_at"] + 2.0


# --- origins, caps, abuse -------------------------------------------------------------------


async def test_origins(core: CoreNode, start_bridge: StartBridge) -> None:
    default = await start_bridge(
        core.address, core_token=token("b", operator=True), **auth_settings()
    )
    url = ws_url(default, f"/ws/packages?token={token('alice')}")
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    same = f"http://127.0.0.1:{default.port}"
    async with connect(url, origin=same) as ws:  # type: ignore[arg-type]
        assert (await recv(ws))["type"] == "welcome"
    async with connect(url) as ws:  # no Origin: not a browser
        assert (await recv(ws))["type"] == "welcome"
    listed = await start_bridge(
        core.address,
        core_token=token("b", operator=True),
        allowed_origins="https://app.example.com",
        **auth_settings(),
    )
    url = ws_url(listed, f"/ws/packages?token={token('alice')}")
    async with connect(url, origin="https://app.example.com") as ws:  # type: ignore[arg-type]
        assert (await recv(ws))["type"] == "welcome"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin=f"http://127.0.0.1:{listed.port}")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert listed.bridge.status()["refusals"]["origin"] == 1


async def test_connections_per_address_and_per_identity(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    node = await start_bridge(
        core.address,
        core_token=token("b", operator=True),
        max_connections_per_address=3,
        max_connections_per_identity=2,
        **auth_settings(),
    )
    first, _ = await authed(node, "/ws/connect", token("alice"))
    second, _ = await authed(node, "/ws/connect", token("alice"))
    third = await connect(ws_url(node, "/ws/connect"))
    await send(third, "auth", token=token("alice"))
    code, reason = await closed_with(third)
    assert code == 4029, reason
    # The closed one left: an address slot is free again, but not an identity slot.
    bob, _ = await authed(node, "/ws/connect", token("bob"))
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(node, "/ws/connect"))
    assert refused.value.response.status_code == 429
    for ws in (first, second, bob):
        await ws.close()

    async def gone() -> bool:
        return not node.bridge.connections

    await eventually(gone)
    assert not node.bridge.admission.by_address
    assert not node.bridge.admission.by_subject


async def test_subscriptions_per_socket_are_capped(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    node = await start_bridge(
        core.address, core_token=token("b", operator=True), max_subscriptions=1, **auth_settings()
    )
    ws, _ = await authed(node, "/ws/connect", token("alice"))
    async with ws:
        await subscribe(ws, "package_updates")
        await send(ws, "subscribe", subscription_type="anomalies")
        error = await recv_type(ws, "error")
        assert error["data"]["code"] == "resource_exhausted"
        await send(ws, "subscribe", subscription_type="package_updates")  # already held: fine
        assert (await recv_type(ws, "subscribed"))["data"]["subscriptions"] == ["package_updates"]


async def test_sustained_abuse_after_rate_limiting_closes_1008(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    node = await start_bridge(
        core.address,
        core_token=token("b", operator=True),
        rate_limit=1,
        rate_burst=2,
        abuse_limit=5,
        **auth_settings(),
    )
    ws, _ = await authed(node, "/ws/connect", token("alice"))
    async with ws:
        for _ in range(20):
            await send(ws, "ping")
        code, reason = await closed_with(ws)
    assert code == 1008, reason
    assert node.bridge.status()["refusals"]["abuse"] == 1


# --- operator endpoints -----------------------------------------------------------------------


async def test_operator_endpoints_need_an_operator_token(secured: BridgeNode) -> None:
    alice_token = token("alice")
    ws, _ = await authed(secured, "/ws/packages", alice_token)
    async with ws, aiohttp.ClientSession() as http:
        async with http.get(f"{secured.url}/ws/connections") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {alice_token}"}
        async with http.get(f"{secured.url}/ws/connections", headers=headers) as response:
            assert response.status == 403
        operator = {"Authorization": f"Bearer {token('ops', operator=True)}"}
        async with http.get(f"{secured.url}/ws/connections", headers=operator) as response:
            assert response.status == 200
            text = await response.text()
            [entry] = orjson.loads(text)
            assert entry["user"] == "alice"
            assert alice_token not in text
        async with http.get(f"{secured.url}/ws/status") as response:
            public = await response.json()
            assert set(public) == {"status", "upstream", "readiness", "connections"}
            assert public["connections"] == {"total": 1}  # a count, no addresses
            assert public["status"] == "ok"
            assert public["upstream"] == {"connected": True}
            assert set(public["readiness"]) <= {"ready", "reason", "canary"}
        async with http.get(f"{secured.url}/ws/status", headers=operator) as response:
            assert (await response.json())["connections"]["total"] == 1
        async with http.get(f"{secured.url}/ws/status", headers=headers) as response:
            assert response.status == 403


# --- safe defaults ------------------------------------------------------------------------------


def test_a_public_address_without_auth_refuses_to_start() -> None:
    public: dict[str, Any] = {"host": "0.0.0.0"}
    with pytest.raises(ValidationError, match="--insecure"):
        BridgeSettings(**public)
    insecure: dict[str, Any] = {**public, "insecure": True}
    assert BridgeSettings(**insecure).insecure
    secured: dict[str, Any] = {**public, "auth_secret": SECRET}
    assert BridgeSettings(**secured).host == "0.0.0.0"
    for host in ("127.0.0.1", "localhost", "::1"):
        loopback: dict[str, Any] = {"host": host}
        assert BridgeSettings(**loopback).host == host


async def test_auth_off_says_so_and_lets_tokens_be(
    core: CoreNode, start_bridge: StartBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    node = await start_bridge(core.address, core_token=token("b", operator=True))
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)
    async with connect(ws_url(node, "/ws/packages")) as ws:
        welcome = await recv(ws)
        assert welcome["data"]["subject"] is None
        await send(ws, "auth", token="anything")
        refreshed = await recv_type(ws, "refreshed")
        assert refreshed["data"]["expires_at"] is None
