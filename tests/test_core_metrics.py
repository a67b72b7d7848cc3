"""The core's metrics and its HTTP endpoint (/metrics, /healthz, /readyz): a real
core on free ports, real gRPC clients, and the page scraped over HTTP and parsed
with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.server import CoreNode
from tests.auth_helpers import auth_settings, bearer, token
from tests.conftest import StartCore
from tests.events import package, sample
from tests.grpc_helpers import TIMEOUT, open_stream, publish, read_events
from tests.processes import clearpath_process
from tests.waiting import eventually

if TYPE_CHECKING:
    from tests.redis_fixtures import StartRedis

pytest_plugins = ["tests.redis_fixtures"]

PKG = pb.TOPIC_PACKAGE_UPDATES
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def get(url: str) -> tuple[int, str, str]:
    """Status, Content-Type and body of ``GET url``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, timeout=aiohttp.ClientTimeout(TIMEOUT)) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape(node: CoreNode) -> Samples:
    """Every sample of the node's /metrics page: (name, labels) → value."""
    status, content_type, text = await get(f"http://127.0.0.1:{node.metrics_port}/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    assert len(found) <= 1, f"{name}{labels}: {len(found)} samples"
    return found[0] if found else 0.0


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@asynccontextmanager
async def stub_of(node: CoreNode, **options: Any) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(node.address, **options) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


async def test_the_endpoint_is_off_unless_a_port_is_given(start_core: StartCore) -> None:
    node = await start_core()
    assert node.metrics_port is None
    # The figures are still kept: a process embedding the core may expose them.
    assert b"clearpath_streams" in node.metrics.expose()


async def test_healthz_and_readyz_answer_on_a_started_core(start_core: StartCore) -> None:
    node = await start_core(metrics_port=0)
    assert node.metrics_port
    base = f"http://127.0.0.1:{node.metrics_port}"
    assert (await get(f"{base}/healthz"))[0] == 200
    status, content_type, body = await get(f"{base}/readyz")
    assert (status, content_type.split(";")[0]) == (200, "application/json")
    assert '"ready": true' in body.replace('":true', '": true')
    samples = await scrape(node)
    assert value(samples, "clearpath_broker_up") == 1
    assert value(samples, "clearpath_streams", path="grpc") == 0
    (info,) = [ls for (n, ls) in samples if n == "clearpath_info"]
    assert dict(info)["version"]
    assert dict(info)["role"] == "core"
    assert dict(info)["node"] == node.node_name == node.address  # bound to 127.0.0.1


async def test_published_delivered_and_latency_count_every_event(start_core: StartCore) -> None:
    node = await start_core(metrics_port=0)
    events, streams = 7, 3
    async with stub_of(node) as stub:
        calls = [(await open_stream(stub, [PKG]))[0] for _ in range(streams)]
        before = await scrape(node)
        assert value(before, "clearpath_subscriptions", path="grpc", topic="package_updates") == 3
        assert value(before, "clearpath_streams", path="grpc") == 3
        assert value(before, "clearpath_subscriptions", path="grpc", topic="anomalies") == 0
        await publish(stub, *(package(f"p{i}") for i in range(events - 2)))
        await publish(stub, package("q1"), package("q2"))
        for call in calls:
            await read_events(call, events)
        after = await scrape(node)
        for call in calls:
            call.cancel()
    topic = {"topic": "package_updates"}
    assert grew(before, after, "clearpath_events_published_total", outcome="ok", **topic) == 7
    delivered = grew(before, after, "clearpath_events_delivered_total", path="grpc", **topic)
    assert delivered == events * streams
    latency = "clearpath_delivery_latency_seconds"
    assert grew(before, after, f"{latency}_count", path="grpc", **topic) == events * streams
    assert grew(before, after, f"{latency}_bucket", path="grpc", le="+Inf", **topic) == 21
    # Loopback, an idle machine or not: well under ten seconds each.
    assert value(after, f"{latency}_sum", path="grpc", **topic) < events * streams * 10
    assert value(after, "clearpath_queue_depth_count", path="grpc") == streams
    assert value(after, "clearpath_subscriber_lag_events_count", path="grpc") == streams


async def test_history_replays_count_as_delivered_not_as_latency(start_core: StartCore) -> None:
    node = await start_core(metrics_port=0)
    async with stub_of(node) as stub:
        first = (await publish(stub, package("a"), package("b"))).results[0].position
        before = await scrape(node)
        since = [spb.TopicPosition(topic=PKG, position=pb.StreamPosition(epoch=first.epoch))]
        call, _ = await open_stream(stub, [PKG], since=since)
        await read_events(call, 2)
        after = await scrape(node)
        call.cancel()
    labels = {"path": "grpc", "topic": "package_updates"}
    assert grew(before, after, "clearpath_events_delivered_total", **labels) == 2
    assert grew(before, after, "clearpath_delivery_latency_seconds_count", **labels) == 0


async def test_filtered_events_are_counted(start_core: StartCore) -> None:
    node = await start_core(metrics_port=0)
    async with stub_of(node) as stub:
        wanted = spb.SubscriptionFilter(package_ids=["keep"])
        call, _ = await open_stream(stub, [PKG], filter=wanted)
        before = await scrape(node)
        await publish(stub, package("drop"), package("keep"), package("drop"))
        (got,) = await read_events(call, 1)
        assert got.package_update.package_id == "keep"
        after = await scrape(node)
        call.cancel()
    labels = {"path": "grpc", "topic": "package_updates"}
    assert grew(before, after, "clearpath_events_filtered_total", **labels) == 2
    assert grew(before, after, "clearpath_events_delivered_total", **labels) == 1


async def test_refused_publishes_are_counted_by_outcome(start_core: StartCore) -> None:
    node = await start_core(metrics_port=0)
    async with stub_of(node) as stub:
        before = await scrape(node)
        bad = sample("anomaly_detected", confidence_score=1.5)
        with pytest.raises(grpc.aio.AioRpcError):
            await publish(stub, package("fine"), bad)
        with pytest.raises(grpc.aio.AioRpcError):
            await publish(stub)  # no event at all
        after = await scrape(node)
    name = "clearpath_events_published_total"
    assert grew(before, after, name, topic="package_updates", outcome="invalid") == 1
    assert grew(before, after, name, topic="anomalies", outcome="invalid") == 1
    assert grew(before, after, name, topic="unknown", outcome="invalid") == 1
    assert grew(before, after, name, topic="package_updates", outcome="ok") == 0


async def test_unauthenticated_forbidden_and_rate_limited_publishes(
    start_core: StartCore,
) -> None:
    node = await start_core(metrics_port=0, publish_burst=3, publish_rate=0.001, **auth_settings())
    reader = bearer(token("reader"))  # may subscribe, not publish
    writer = bearer(token("writer", publish=["*"]))
    async with stub_of(node) as stub:
        before = await scrape(node)
        for metadata in ((), bearer("not-a-token")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Publish(
                    spb.PublishRequest(events=[package(), package()]),
                    metadata=metadata,
                    timeout=TIMEOUT,
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Publish(
                spb.PublishRequest(events=[package()]), metadata=reader, timeout=TIMEOUT
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.Publish(
            spb.PublishRequest(events=[package()] * 3), metadata=writer, timeout=TIMEOUT
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Publish(
                spb.PublishRequest(events=[package()]), metadata=writer, timeout=TIMEOUT
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        after = await scrape(node)
    name, topic = "clearpath_events_published_total", "package_updates"
    assert grew(before, after, name, topic=topic, outcome="unauthenticated") == 4
    assert grew(before, after, name, topic=topic, outcome="forbidden") == 1
    assert grew(before, after, name, topic=topic, outcome="ok") == 3
    assert grew(before, after, name, topic=topic, outcome="rate_limited") == 1
    assert grew(before, after, "clearpath_auth_failures_total", path="grpc") == 2
    assert grew(before, after, "clearpath_rate_limited_total", path="grpc", kind="publish") == 1


async def test_a_slow_subscriber_shows_as_a_close_and_as_dropped_events(
    start_core: StartCore,
) -> None:
    node = await start_core(metrics_port=0, queue_size=100, max_batch=100, heartbeat_interval=5)
    big = "x" * 4000  # ~4 kB events fill the HTTP/2 window of the stalled stream fast
    total = 3000
    async with stub_of(node) as stub:
        stalled, _ = await open_stream(stub, [PKG])  # never read until the end
        fast, _ = await open_stream(stub, [PKG])
        before = await scrape(node)
        for batch in range(total // 100):
            await publish(stub, *(package(f"p{batch}-{i}", location=big) for i in range(100)))
            await read_events(fast, 100)
        during = await scrape(node)
        assert value(during, "clearpath_queue_depth_max", path="grpc") == 100
        lagging = value(during, "clearpath_subscriber_lag_events_bucket", path="grpc", le="100.0")
        assert lagging == 1  # the fast one; the stalled one: 100 queued and more missed

        async def drain() -> int:
            received = 0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    message = await stalled.read()
                    received += message.WhichOneof("kind") == "event"
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return received

        received = await asyncio.wait_for(drain(), 30)
        after = await eventually(lambda: _closed(node))
        fast.cancel()
    assert grew(before, after, "clearpath_slow_consumer_closes_total", path="grpc") == 1
    dropped = grew(
        before, after, "clearpath_events_dropped_total", path="grpc", reason="slow_consumer"
    )
    handed = grew(
        before, after, "clearpath_events_delivered_total", path="grpc", topic="package_updates"
    )
    handed -= total  # the fast one's
    # Each event went to the stalled stream or was dropped: refused after the
    # overflow, or still queued when the stream ended.
    assert handed + dropped == total
    assert 0 < received <= handed
    assert dropped > 0


async def _closed(node: CoreNode) -> Samples | None:
    samples = await scrape(node)
    return samples if value(samples, "clearpath_streams", path="grpc") == 1 else None


async def test_readyz_follows_a_redis_broker_down_and_back(
    start_core: StartCore, start_redis: StartRedis
) -> None:
    redis = await start_redis(appendonly=True, appendfsync="always")
    node = await start_core(broker_url=redis.url, metrics_port=0)
    url = f"http://127.0.0.1:{node.metrics_port}/readyz"
    assert (await get(url))[0] == 200
    await redis.kill()

    async def unready() -> str | None:
        status, _, body = await get(url)
        return body if status == 503 else None

    assert "broker unavailable" in await eventually(unready, within=15)
    assert (await get(url.replace("readyz", "healthz")))[0] == 200  # alive all along
    assert value(await scrape(node), "clearpath_broker_up") == 0
    await redis.start()

    async def ready() -> bool:
        return (await get(url))[0] == 200

    await eventually(ready, within=20)
    samples = await scrape(node)
    assert value(samples, "clearpath_broker_up") == 1
    assert value(samples, "clearpath_broker_reconnects_total") == 1


async def test_readyz_is_503_once_stopping(start_core: StartCore) -> None:
    node = await start_core(metrics_port=0)
    assert node.readiness() is None
    node._broker_state(False)
    assert node.readiness() == "broker unavailable"
    node._broker_state(True)
    node.serving = False  # what stop() does first
    status, _, body = await get(f"http://127.0.0.1:{node.metrics_port}/readyz")
    assert status == 503
    assert "not serving" in body


async def test_clearpath_serve_shares_one_metrics_between_core_and_bridge() -> None:
    args = ("serve", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0")
    async with clearpath_process(*args, listening="core metrics") as process:
        status, _, text = await get(f"{process.address}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    roles = {s.labels["role"] for f in families.values() for s in f.samples}
    assert roles == {"serve"}
    assert "clearpath_broker_up" in families  # the core's
    assert "clearpath_connections" in families  # the bridge's
