"""Health that tells the truth: the readiness rules with plain calls, then /healthz,
/readyz and the canary against real cores (in-process, a paused process, Redis)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis

from bridge.app import BridgeNode
from bridge.health import CanaryProbe, readiness
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.errors import InvalidArgument
from core.topics import CANARY, EVENT_TYPES, INTERNAL_TOPICS, TOPIC_NAMES, TOPICS, topic_from_name
from core.validation import Limits, prepare_events
from tests.auth_helpers import auth_settings, bearer, token
from tests.conftest import StartBridge, StartCore, durable_core
from tests.events import package
from tests.grpc_helpers import open_stream, publish, read_events
from tests.processes import clearpath_process
from tests.waiting import eventually
from tests.ws_helpers import open_ws, recv, subscribe

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_fixtures"]

#: Fast canaries for the tests: a blocked path shows within TIMEOUT + INTERVAL.
INTERVAL = 0.2
TIMEOUT = 1.0
FAST = {"canary_interval": INTERVAL, "canary_timeout": TIMEOUT}


# --- the rules, with plain calls ----------------------------------------------------------


def ready_at(probe: CanaryProbe, now: float, **state: Any) -> Any:
    values = {"connected": True, "core_broker_up": True, **state}
    return readiness(canary=probe, now=now, interval=5.0, timeout=10.0, **values)


def test_a_canary_round_trip_is_measured_and_answers_the_earlier_ones() -> None:
    probe = CanaryProbe("me")
    assert probe.send(100.0) == 1
    assert probe.send(105.0) == 2
    assert probe.receive("me", 2, 105.25) == pytest.approx(0.25)
    assert (probe.sent, probe.seen) == (2, 2)
    assert probe.status(106.0) == {
        "source": "me",
        "sent_seq": 2,
        "seen_seq": 2,
        "round_trip_seconds": 0.25,
        "seen_age_seconds": 0.75,
        "unanswered": 0,
        "publish_failures": 0,
        "last_publish_error": "",
    }
    # 1 came back late, after 2: nothing changes; the path was already proven.
    assert probe.receive("me", 1, 107.0) is None
    assert probe.seen == 2


def test_other_sources_repeats_and_unsent_numbers_are_ignored() -> None:
    probe = CanaryProbe("me")
    probe.send(0.0)
    assert probe.receive("another-bridge", 1, 0.1) is None
    assert probe.receive("me", 2, 0.1) is None  # never sent
    assert probe.seen == 0
    assert probe.receive("me", 1, 0.1) is not None
    assert probe.receive("me", 1, 0.2) is None  # a repeat
    assert probe.seen == 1


def test_readiness_starts_false_then_follows_the_canary() -> None:
    probe = CanaryProbe("me")
    assert ready_at(probe, 0.0).body() == {"ready": False, "reason": "starting"}
    probe.send(1.0)
    assert ready_at(probe, 10.9).reason == "starting"  # not late yet
    assert ready_at(probe, 12.5).body() == {"ready": False, "reason": "canary late by 1.5s"}
    probe.receive("me", 1, 12.6)
    assert ready_at(probe, 13.0).body() == {
        "ready": True,
        "canary": {"round_trip_seconds": pytest.approx(11.6), "age_seconds": pytest.approx(0.4)},
    }


def test_an_unanswered_canary_makes_it_late_after_the_timeout_even_if_later_ones_wait() -> None:
    probe = CanaryProbe("me")
    probe.receive("me", probe.send(0.0), 0.01)
    probe.send(5.0)  # lost: the path broke
    probe.send(10.0)
    assert ready_at(probe, 14.9).ready
    assert ready_at(probe, 15.5).reason == "canary late by 0.5s"  # the oldest decides
    probe.receive("me", 2, 15.6)  # a late one came back: the path works again
    assert ready_at(probe, 15.7).ready
    assert ready_at(probe, 21.0).reason == "canary late by 1.0s"  # 3 is still out


def test_a_failed_publish_counts_as_not_seen() -> None:
    probe = CanaryProbe("me")
    probe.receive("me", probe.send(0.0), 0.01)
    probe.send(5.0)
    probe.failed("UNAVAILABLE: no core")
    assert probe.failures == 1
    assert probe.status(6.0)["last_publish_error"] == "UNAVAILABLE: no core"
    assert ready_at(probe, 14.0).ready
    assert not ready_at(probe, 15.5).ready


def test_canaries_that_stop_being_published_make_it_late() -> None:
    probe = CanaryProbe("me")
    probe.receive("me", probe.send(0.0), 0.01)
    assert ready_at(probe, 14.9).ready  # the next one is due at 5, back by 15
    assert ready_at(probe, 16.0).reason == "canary late by 1.0s"


def test_the_first_failing_check_is_the_reason() -> None:
    probe = CanaryProbe("me")
    probe.send(0.0)
    late = 100.0
    assert ready_at(probe, late, connected=False, core_broker_up=False).reason == "no upstream"
    assert ready_at(probe, late, core_broker_up=False).reason == "core broker unavailable"
    assert ready_at(probe, late).reason.startswith("canary late by")
    assert ready_at(probe, late, connected=False).body() == {
        "ready": False,
        "reason": "no upstream",
    }


def test_the_canary_is_an_internal_topic_that_validation_accepts() -> None:
    assert CANARY in INTERNAL_TOPICS
    assert CANARY not in TOPICS
    assert CANARY not in TOPIC_NAMES
    assert "canary" not in EVENT_TYPES
    with pytest.raises(InvalidArgument):
        topic_from_name("canary")  # no client can name it
    (ready,) = prepare_events([pb.Event(canary=pb.Canary(source="b", seq=1))], Limits())
    assert ready.topic == CANARY
    with pytest.raises(InvalidArgument, match=r"events\[0\].canary.source: required"):
        prepare_events([pb.Event(canary=pb.Canary(seq=1))], Limits())
    wrong = pb.Event(topic=pb.TOPIC_ANOMALIES, canary=pb.Canary(source="b"))
    with pytest.raises(InvalidArgument, match="belongs to canary, not anomalies"):
        prepare_events([wrong], Limits())


# --- real servers --------------------------------------------------------------------------


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def readyz(bridge: BridgeNode) -> tuple[int, dict[str, Any]]:
    return await get(bridge.url + "/readyz")


async def becomes_ready(bridge: BridgeNode, within: float = 10.0) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        status, body = await readyz(bridge)
        return body if status == 200 else None

    body: dict[str, Any] = await eventually(ready, within)
    return body


async def becomes_unready(bridge: BridgeNode, within: float) -> str:
    async def unready() -> str | None:
        status, body = await readyz(bridge)
        return str(body["reason"]) if status == 503 else None

    reason: str = await eventually(unready, within)
    return reason


async def canaries_seen(bridge: BridgeNode, count: int) -> None:
    """Wait until ``count`` more of the bridge's own canaries have come back."""
    probe = bridge.bridge.upstream.canary
    target = probe.seen + count

    async def seen() -> bool:
        return probe.seen >= target

    await eventually(seen, 10 * INTERVAL * count + 5)


@pytest.fixture
async def live(start_core: StartCore, start_bridge: StartBridge) -> BridgeNode:
    core = await start_core()
    return await start_bridge(core.address, **FAST)


async def test_ready_after_start_and_the_canary_in_status(live: BridgeNode) -> None:
    assert await get(live.url + "/healthz") == (200, {"status": "alive"})
    body = await becomes_ready(live)
    assert set(body) == {"ready", "canary"}
    assert body["canary"]["round_trip_seconds"] < TIMEOUT
    await canaries_seen(live, 2)
    _, status = await get(live.url + "/ws/status")
    canary = status["upstream"]["canary"]
    assert canary["source"] == live.bridge.upstream.canary.source
    assert canary["seen_seq"] >= 2
    assert canary["sent_seq"] >= canary["seen_seq"]
    assert 0 <= canary["round_trip_seconds"] < TIMEOUT
    assert canary["seen_age_seconds"] is not None
    assert (canary["interval_seconds"], canary["timeout_seconds"]) == (INTERVAL, TIMEOUT)
    # Canaries are not events of the bridge: not counted, not cached, no position kept.
    assert status["upstream"]["events_received"] == 0
    assert "canary" not in status["upstream"]["positions"]
    assert CANARY not in live.bridge.upstream.cache


async def test_readiness_follows_a_stopped_and_restarted_core_while_liveness_stays(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core, restart = await durable_core(start_core)
    bridge = await start_bridge(core.address, **FAST)
    await becomes_ready(bridge)

    async def while_down() -> None:
        assert await becomes_unready(bridge, 5) == "no upstream"
        assert await get(bridge.url + "/healthz") == (200, {"status": "alive"})

    await restart(while_down)
    await becomes_ready(bridge)
    assert await get(bridge.url + "/healthz") == (200, {"status": "alive"})


async def test_the_canary_catches_a_core_that_keeps_its_connections_but_delivers_nothing(
    start_bridge: StartBridge,
) -> None:
    serve = ("serve", "--no-bridge", "--grpc-port", "0")
    async with clearpath_process(*serve, listening="core") as core:
        bridge = await start_bridge(core.address, **FAST)
        await becomes_ready(bridge)
        core.pause()  # TCP stays open: the stream looks connected
        try:
            reason = await becomes_unready(bridge, TIMEOUT + INTERVAL + 1)
            assert reason.startswith("canary late by"), reason
            assert bridge.bridge.upstream.state == "connected"
            assert await get(bridge.url + "/healthz") == (200, {"status": "alive"})
        finally:
            core.resume()
        await becomes_ready(bridge)


async def test_browsers_never_see_canary_frames(live: BridgeNode) -> None:
    ws, _ = await open_ws(live, "/ws/connect")
    for name in TOPIC_NAMES.values():
        assert (await subscribe(ws, name))["data"]["subscription_type"] == name
    await canaries_seen(live, 3)
    async with grpc.aio.insecure_channel(live.settings.core) as channel:
        await publish(sgrpc.RealtimeServiceStub(channel), package("after-canaries"))
    # Frames reach a socket in order: had a canary been sent, it would come first.
    frame = await recv(ws)
    assert frame["type"] == "package_update", frame
    assert frame["data"]["package_id"] == "after-canaries"
    assert live.bridge.hub.count(CANARY) == 0
    await ws.close()


async def test_grpc_subscribers_of_the_seven_topics_never_see_canaries(live: BridgeNode) -> None:
    async with grpc.aio.insecure_channel(live.settings.core) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        seven, _ = await open_stream(stub, TOPICS)
        canaries, _ = await open_stream(stub, [CANARY])  # auth off: everyone is an operator
        (seen,) = await read_events(canaries, 1)
        assert seen.canary.source == live.bridge.upstream.canary.source
        await canaries_seen(live, 3)
        await publish(stub, package("after-canaries"))
        (first,) = await read_events(seven, 1)
        assert first.package_update.package_id == "after-canaries"
        seven.cancel()
        canaries.cancel()


async def test_only_operators_may_use_the_canary_topic(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core(**auth_settings())
    operator_token = token("bridge", operator=True)
    bridge = await start_bridge(core.address, core_token=operator_token, **FAST, **auth_settings())
    # Public with auth on too; the bridge's operator token may publish and read the canary.
    await becomes_ready(bridge)
    assert await get(bridge.url + "/healthz") == (200, {"status": "alive"})
    canary = pb.Event(canary=pb.Canary(source="intruder", seq=1))
    everything = token("alice", subscribe=["*"], publish=["*"])
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        meta = bearer(everything)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Publish(spb.PublishRequest(events=[canary]), metadata=meta)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "operator" in str(refused.value.details())
        for topics in ([CANARY], [*TOPICS, CANARY]):
            call = stub.Subscribe(spb.SubscribeRequest(topics=topics), metadata=meta)  # type: ignore[arg-type]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.History(spb.HistoryRequest(topic=CANARY), metadata=meta)  # type: ignore[arg-type]
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # An operator may.
        operator = bearer(token("ops", operator=True))
        await stub.Publish(spb.PublishRequest(events=[canary]), metadata=operator)
        page = await stub.History(spb.HistoryRequest(topic=CANARY), metadata=operator)  # type: ignore[arg-type]
        assert page.state.position.offset >= 1


async def test_the_canary_works_on_the_redis_broker(
    redis_server: RedisServer, start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core(broker_url=redis_server.url)
    bridge = await start_bridge(core.address, **FAST)
    await becomes_ready(bridge)
    await canaries_seen(bridge, 3)
    redis = Redis.from_url(redis_server.url)
    try:
        # Stored like any topic, in its own stream with its own (tiny) retention.
        assert 3 <= await redis.xlen("{clearpath}:stream:canary") <= 100 + 100
    finally:
        await redis.aclose()
    await asyncio.wait_for(core.stop(0), 10)
    assert await becomes_unready(bridge, 5) == "no upstream"
