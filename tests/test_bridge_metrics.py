"""The bridge's metrics (bridge/metrics.py): the delivery counters and latency with
plain calls, then ``GET /metrics`` of a real bridge and core: deliveries, latency and
connections, a slow consumer's close, a socket's lag, filters, rate limits, auth."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from bridge.frames import Frame, control
from bridge.metrics import Deliveries
from bridge.session import Session
from bridge.workers import WorkerPool
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.metrics import Latency, Metrics
from core.positions import Position
from core.server import CoreNode
from tests.auth_helpers import auth_settings, token
from tests.conftest import StartBridge, StartCore
from tests.events import package, sample
from tests.grpc_helpers import publish
from tests.test_bridge import open_stalled
from tests.test_bridge_auth import authed, closed_with, publish_as
from tests.test_bridge_catchup import publish_packages
from tests.waiting import eventually
from tests.ws_helpers import TIMEOUT, open_ws, recv_events, recv_type, send, ws_url

from websockets.asyncio.client import connect  # isort: skip

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PACKAGES = ("path", "websocket"), ("topic", "package_updates")


# --- the counters, with plain calls ---------------------------------------------------------


def frames(n: int, topic: int = pb.TOPIC_PACKAGE_UPDATES, ago: float = 0.003) -> list[Frame]:
    """``n`` encoded event frames published ``ago`` seconds ago (0: no publish time)."""
    out = []
    for i in range(n):
        frame = Frame(b'{"type":"x"}', topic, i + 1, "e")
        frame.encodes()
        frame.published = time.time() - ago if ago else 0.0
        out.append(frame)
    return out


def latency(d: Deliveries, topic: str = "package_updates") -> tuple[float, float]:
    """(count, sum) of the latency histogram of ``topic``."""
    (sample,) = [
        s
        for s in d.latency.family("l", "", ["path", "topic"]).samples
        if s.name == "l_count" and s.labels["topic"] == topic
    ]
    (total,) = [
        s.value
        for s in d.latency.family("l", "", ["path", "topic"]).samples
        if s.name == "l_sum" and s.labels["topic"] == topic
    ]
    return sample.value, total


def test_the_same_frames_written_to_many_sockets_are_counted_once_each() -> None:
    d = Deliveries()
    batch = frames(3)
    for _ in range(100):  # fan-out: socket after socket takes the same frames
        d.taken(batch, {pb.TOPIC_PACKAGE_UPDATES})
    d.taken(frames(2), {pb.TOPIC_PACKAGE_UPDATES})  # another write settles the tally
    d.settle()
    assert d.delivered[pb.TOPIC_PACKAGE_UPDATES] == 302
    count, seconds = latency(d)
    assert count == 302
    assert 302 * 0.003 <= seconds < 302 * 1.0
    assert d.latency.quantile(0.5) == 0.005  # 3 ms: the 5 ms bucket


def test_control_frames_and_frames_without_a_publish_time_are_not_timed() -> None:
    d = Deliveries()
    welcome = control("welcome")
    d.taken([welcome], {0})
    d.taken([welcome, *frames(2, ago=0)], {0, pb.TOPIC_PACKAGE_UPDATES})
    d.taken(frames(4, ago=0), {pb.TOPIC_PACKAGE_UPDATES})
    d.settle()
    assert d.delivered[0] == 0
    assert d.delivered[pb.TOPIC_PACKAGE_UPDATES] == 6
    assert list(d.latency.family("l", "", ["path", "topic"]).samples) == []


def test_frames_spread_over_buckets_and_replays() -> None:
    d = Deliveries()
    spread = [*frames(1, ago=0.3), *frames(2, ago=0.001)]
    d.taken(spread, {pb.TOPIC_PACKAGE_UPDATES})
    d.taken(frames(5), {pb.TOPIC_PACKAGE_UPDATES}, replaying={pb.TOPIC_PACKAGE_UPDATES})
    mixed = [*frames(2, pb.TOPIC_MAP_UPDATES), *frames(1)]
    d.taken(mixed, {pb.TOPIC_MAP_UPDATES, pb.TOPIC_PACKAGE_UPDATES})
    d.settle()
    assert d.delivered[pb.TOPIC_PACKAGE_UPDATES] == 9
    assert d.delivered[pb.TOPIC_MAP_UPDATES] == 2
    assert latency(d)[0] == 4  # the replayed five are counted, not timed
    assert latency(d, "map_updates")[0] == 2
    assert d.latency.quantile(1.0) == 0.5


def test_a_backlog_over_many_buckets_is_observed_as_frame_by_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time()
    monkeypatch.setattr("bridge.metrics._clock", lambda: now)
    d, reference = Deliveries(), Latency()
    backlog = frames(300)
    for i, frame in enumerate(backlog):  # from 20 s ago to now; some without a time
        frame.published = 0.0 if i % 7 == 0 else now - 20.0003 + i * 0.0666
    windows = [backlog[start : start + 120] for start in range(0, 300, 40)]
    for window in windows:  # sockets at different points of the backlog
        d.taken(window, {pb.TOPIC_PACKAGE_UPDATES})
        for frame in window:
            if frame.published:
                reference.observe(("websocket", "package_updates"), now - frame.published)
    d.settle()
    assert d.delivered[pb.TOPIC_PACKAGE_UPDATES] == sum(map(len, windows))

    def buckets(histogram: Latency) -> dict[str, float]:
        family = histogram.family("l", "", ["path", "topic"])
        return {s.labels["le"]: s.value for s in family.samples if s.name == "l_bucket"}

    ours, theirs = buckets(d.latency), buckets(reference)
    assert ours["+Inf"] == sum(1 for w in windows for f in w if f.published)
    assert ours == theirs
    assert d.latency.family("l", "", ["path", "topic"]).samples[-1].value == pytest.approx(
        reference.family("l", "", ["path", "topic"]).samples[-1].value
    )


def test_lag_is_what_is_queued_plus_what_a_resume_has_yet_to_replay() -> None:
    topic = pb.TOPIC_PACKAGE_UPDATES
    session = Session("s", "/ws/connect", "r", max_bytes=1 << 20)
    heads: dict[int, Position] = {topic: Position(105, "e")}

    def head(topic: int) -> Position | None:
        return heads.get(topic)

    assert session.lag(head) == 0
    session.resume_started(topic, Position(5, "e"))
    assert session.lag(head) == 100
    replayed = frames(10)
    for i, frame in enumerate(replayed):
        frame.offset = 6 + i
        assert session.send(frame)
    assert session.lag(head) == 100  # 10 queued, 90 still to replay
    session.take(1 << 20)
    assert session.lag(head) == 90
    assert session.info(head)["lag"] == 90
    session.resume_ended(topic)
    assert session.lag(head) == 0
    # A resume of another epoch than the head's: the distance is unknown.
    session.resume_started(topic, Position(5, "other"))
    assert session.lag(head) == 0


# --- a real bridge --------------------------------------------------------------------------


async def scrape(node: BridgeNode, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of ``/metrics`` by (name, labels without role and node)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(node.url + "/metrics", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            assert labels.pop("role") == "bridge"
            assert labels.pop("node") == f"pid-{os.getpid()}"
            samples[s.name, frozenset(labels.items())] = s.value
    return samples


def value(samples: Samples, name: str, *labels: tuple[str, str]) -> float:
    return samples.get((name, frozenset(labels)), 0.0)


async def connections(node: BridgeNode) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/ws/connections") as r:
        result: list[dict[str, Any]] = await r.json()
        return result


async def test_deliveries_latency_and_connections(bridge: BridgeNode, stub: Any) -> None:
    sockets = [(await open_ws(bridge, "/ws/packages"))[0] for _ in range(3)]
    dashboard, _ = await open_ws(bridge, "/ws/dashboard")
    before = await scrape(bridge)
    assert value(before, "clearpath_connections", ("endpoint", "/ws/packages")) == 3
    assert value(before, "clearpath_connections", ("endpoint", "/ws/dashboard")) == 1
    assert value(before, "clearpath_connections", ("endpoint", "/ws/map")) == 0
    assert value(before, "clearpath_subscriptions", *PACKAGES) == 3
    assert value(before, "clearpath_upstream_up") == 1
    assert value(before, "clearpath_info", ("version", "0.1.0")) == 1

    events = [package(f"p{i}") for i in range(20)]
    for event in events:  # the core stamps it too; set here, the test needs no core support
        event.published_at.GetCurrentTime()
    await publish(stub, *events)
    for ws in sockets:
        assert len(await recv_events(ws, 20)) == 20

    after = await scrape(bridge)
    delivered = "clearpath_events_delivered_total"
    assert value(after, delivered, *PACKAGES) - value(before, delivered, *PACKAGES) == 60
    timed = "clearpath_delivery_latency_seconds_count"
    assert value(after, timed, *PACKAGES) - value(before, timed, *PACKAGES) == 60
    seconds = "clearpath_delivery_latency_seconds_sum"
    assert 0 <= value(after, seconds, *PACKAGES) < 60 * TIMEOUT
    assert value(after, "clearpath_subscriber_lag_events_count", ("path", "websocket")) == 4
    for ws in (*sockets, dashboard):
        await ws.close()


async def test_a_slow_consumer_close_counts_the_frames_it_dropped(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core()
    node = await start_bridge(core.address, slow_timeout=0.5)
    _, stalled = await open_stalled(node, "/ws/packages")

    async with grpc.aio.insecure_channel(core.address) as channel:
        await publish_packages(sgrpc.RealtimeServiceStub(channel), 2000, size=4000)

    async def closed() -> Samples | None:
        samples = await scrape(node)
        path = ("path", "websocket")
        return samples if value(samples, "clearpath_slow_consumer_closes_total", path) else None

    samples = await eventually(closed)
    assert value(samples, "clearpath_slow_consumer_closes_total", ("path", "websocket")) == 1
    dropped = "clearpath_events_dropped_total"
    assert value(samples, dropped, ("path", "websocket"), ("reason", "slow_consumer")) > 0
    assert value(samples, dropped, ("path", "websocket"), ("reason", "closed")) == 0
    stalled.close()


async def test_a_socket_that_does_not_read_shows_its_lag(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core()
    node = await start_bridge(core.address, slow_timeout=60)
    reader, _ = await open_ws(node, "/ws/packages")
    _, stalled = await open_stalled(node, "/ws/packages")

    async with grpc.aio.insecure_channel(core.address) as channel:
        await publish_packages(sgrpc.RealtimeServiceStub(channel), 2000, size=4000)
    assert len(await recv_events(reader, 2000, within=30)) == 2000

    async def behind() -> list[dict[str, Any]] | None:
        conns = await connections(node)
        return conns if any(c["lag"] > 0 for c in conns) else None

    conns = await eventually(behind)
    lags = sorted(c["lag"] for c in conns)
    assert lags[0] == 0  # the reader
    stuck = max(conns, key=lambda c: c["lag"])
    assert stuck["lag"] == stuck["send_queue_depth"] > 0  # no resume: what is queued
    samples = await scrape(node)
    path = ("path", "websocket")
    assert value(samples, "clearpath_subscriber_lag_events_count", path) == 2
    assert value(samples, "clearpath_subscriber_lag_events_bucket", path, ("le", "0.0")) == 1
    assert value(samples, "clearpath_queue_depth_max", path) == stuck["send_queue_bytes"] > 0
    assert value(samples, "clearpath_queue_depth_bytes_count", path) == 2
    stalled.close()
    await reader.close()


async def test_metrics_with_auth_need_an_operator_token_and_count_auth_and_filters(
    start_core: StartCore, start_bridge: StartBridge
) -> None:
    core = await start_core(history_size=100, **auth_settings())
    node = await start_bridge(
        core.address,
        auth_timeout=5,
        core_token=token("bridge", operator=True),
        rate_limit=1,
        rate_burst=1,
        abuse_limit=100,
        **auth_settings(),
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(node.url + "/metrics") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
        user = {"Authorization": f"Bearer {token('alice')}"}
        async with http.get(node.url + "/metrics", headers=user) as response:
            assert response.status == 403
    operator = {"Authorization": f"Bearer {token('ops', operator=True)}"}

    # A bad token closes its socket (4001): an auth failure.
    bad = await asyncio.wait_for(connect(ws_url(node, "/ws/connect")), TIMEOUT)
    await send(bad, "auth", token="not-a-token")
    assert (await closed_with(bad))[0] == 4001

    alice, _ = await authed(node, "/ws/dashboard", token("alice"))
    async with alice:
        await publish_as(
            core,
            sample("notification", notification_id="to-bob", user_id="bob"),
            sample("notification", notification_id="to-alice", user_id="alice"),
        )
        [frame] = await recv_events(alice, 1)
        assert frame["data"]["notification_id"] == "to-alice"
        for _ in range(3):  # a burst of one: the next ones are refused
            await send(alice, "ping")
        error = await recv_type(alice, "error")
        assert error["data"]["code"] == "rate_limited"
        samples = await scrape(node, operator)
    notifications = ("path", "websocket"), ("topic", "notifications")
    assert value(samples, "clearpath_events_filtered_total", *notifications) == 1
    assert value(samples, "clearpath_events_delivered_total", *notifications) == 1
    assert value(samples, "clearpath_auth_failures_total", ("path", "websocket")) == 1
    assert value(samples, "clearpath_refusals_total", ("reason", "unauthorized")) == 1
    assert value(samples, "clearpath_refusals_total", ("reason", "operator_unauthorized")) == 1
    limited = ("path", "websocket"), ("kind", "message")
    assert value(samples, "clearpath_rate_limited_total", *limited) >= 1


async def test_a_shared_metrics_gets_the_bridges_source_while_it_runs(core: CoreNode) -> None:
    shared = Metrics("serve", "here")
    overrides: dict[str, Any] = {"port": 0, "core": core.address, "static_dir": None}
    settings = BridgeSettings(**overrides)
    node = BridgeNode(settings, metrics=shared)
    assert node.metrics is shared
    await node.start()
    try:
        text = shared.expose().decode()
        assert 'clearpath_connections{endpoint="/ws/packages",node="here",role="serve"} 0.0' in text
    finally:
        await node.stop()
    assert shared.sources == []


async def test_metrics_is_open_without_auth(bridge: BridgeNode) -> None:
    async with aiohttp.ClientSession() as http, http.get(bridge.url + "/metrics") as response:
        assert response.status == 200
        assert "clearpath_events_delivered_total" in await response.text()


async def test_each_worker_serves_its_own_metrics_on_its_own_port(core: CoreNode) -> None:
    overrides: dict[str, Any] = {"port": 0, "core": core.address, "static_dir": None}
    pool = WorkerPool(BridgeSettings(**overrides), 2, metrics_port=0)
    await asyncio.wait_for(pool.start(), 30)
    try:
        assert sorted(pool.metrics_ports) == [1, 2]
        async with aiohttp.ClientSession() as http:
            for index, port in pool.metrics_ports.items():
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                assert f'node="worker-{index}"' in text
                assert 'role="bridge"' in text
                async with http.get(f"http://127.0.0.1:{port}/ws/status") as response:
                    assert response.status == 404  # only /metrics on a worker's own port
    finally:
        assert await pool.stop() == 0
