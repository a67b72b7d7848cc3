"""``clearpath status``: the core's health and the bridge's figures (/readyz,
/metrics, /ws/status), as a table."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.cli.status import Fetched, figure_rows, histogram_quantile, render_table
from core.server import CoreNode
from tests.clients_helpers import run_cli
from tests.events import package
from tests.grpc_helpers import publish
from tests.http_helpers import serving
from tests.processes import clearpath_process
from tests.waiting import eventually
from tests.ws_helpers import recv_type

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

pytest_plugins = ["tests.clients_fixtures"]


@pytest.fixture
async def fake_bridge() -> AsyncIterator[str]:
    """An HTTP server answering /ws/status like the bridge does."""

    async def status(request: web.Request) -> web.Response:
        return web.json_response(
            {"connections": {"total": 3}, "upstream": {"state": "connected"}, "topics": ["a", "b"]}
        )

    app = web.Application()
    app.router.add_get("/ws/status", status)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_core_and_bridge_in_one_table(
    sdk_core: CoreNode, fake_bridge: str, capsys: CaptureFixture[str]
) -> None:
    code = await run_cli("status", "--core", sdk_core.address, "--bridge", fake_bridge)
    assert code == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["core", "health", "SERVING"] in rows
    assert ["core", "clearpath.realtime.v1.RealtimeService", "SERVING"] in rows
    assert ["bridge", "connections.total", "3"] in rows
    assert ["bridge", "upstream.state", "connected"] in rows
    assert ["bridge", "topics", "a,", "b"] in rows


async def test_an_unreachable_bridge_is_shown_not_fatal(
    sdk_core: CoreNode, capsys: CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARPATH_BRIDGE", f"http://127.0.0.1:{free_port()}")
    code = await run_cli("status", "--core", sdk_core.address, "--timeout", "2")
    assert code == 0
    out = capsys.readouterr().out
    assert "SERVING" in out
    assert "unreachable" in out.split("bridge", 1)[1]


async def test_an_unreachable_core_exits_1(capsys: CaptureFixture[str]) -> None:
    code = await run_cli(
        "status", "--core", f"127.0.0.1:{free_port()}", "--bridge", "", "--timeout", "2"
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "unreachable (UNAVAILABLE" in out
    assert "bridge" not in out


def test_render_table_aligns_columns() -> None:
    table = render_table([("a", "bb"), ("ccc", "d")])
    assert table.splitlines() == ["a    bb", "---  --", "ccc  d"]


# --- the figures: /metrics and /readyz -----------------------------------------------

#: A bridge's /metrics as prometheus-client writes it (labels abridged).
METRICS = """\
# HELP clearpath_connections Open WebSockets.
# TYPE clearpath_connections gauge
clearpath_connections{endpoint="/ws/map",node="b1",role="bridge"} 2.0
clearpath_connections{endpoint="/ws/packages",node="b1",role="bridge"} 1.0
# HELP clearpath_events_delivered_total Events written to subscribers.
# TYPE clearpath_events_delivered_total counter
clearpath_events_delivered_total{node="b1",path="live",role="bridge",topic="map_updates"} 90.0
clearpath_events_delivered_total{node="b1",path="live",role="bridge",topic="package_updates"} 10.0
clearpath_events_delivered_total{node="b1",path="resume",role="bridge",topic="map_updates"} 5.0
clearpath_events_delivered_total{node="b1",path="live",role="bridge",topic="canary"} 700.0
# HELP clearpath_events_dropped_total Events not delivered.
# TYPE clearpath_events_dropped_total counter
clearpath_events_dropped_total{node="b1",path="live",reason="slow_consumer",role="bridge"} 3.0
clearpath_events_dropped_total{node="b1",path="live",reason="unencodable",role="bridge"} 0.0
# HELP clearpath_slow_consumer_closes_total Sockets closed as slow consumers.
# TYPE clearpath_slow_consumer_closes_total counter
clearpath_slow_consumer_closes_total{node="b1",path="live",role="bridge"} 1.0
# HELP clearpath_delivery_latency_seconds From the core's acceptance to the write.
# TYPE clearpath_delivery_latency_seconds histogram
clearpath_delivery_latency_seconds_bucket{le="0.001",path="live",topic="map_updates"} 0.0
clearpath_delivery_latency_seconds_bucket{le="0.002",path="live",topic="map_updates"} 40.0
clearpath_delivery_latency_seconds_bucket{le="0.005",path="live",topic="map_updates"} 90.0
clearpath_delivery_latency_seconds_bucket{le="+Inf",path="live",topic="map_updates"} 90.0
clearpath_delivery_latency_seconds_count{path="live",topic="map_updates"} 90.0
clearpath_delivery_latency_seconds_sum{path="live",topic="map_updates"} 0.25
clearpath_delivery_latency_seconds_bucket{le="0.001",path="live",topic="package_updates"} 0.0
clearpath_delivery_latency_seconds_bucket{le="0.002",path="live",topic="package_updates"} 10.0
clearpath_delivery_latency_seconds_bucket{le="0.005",path="live",topic="package_updates"} 10.0
clearpath_delivery_latency_seconds_bucket{le="+Inf",path="live",topic="package_updates"} 10.0
clearpath_delivery_latency_seconds_count{path="live",topic="package_updates"} 10.0
clearpath_delivery_latency_seconds_sum{path="live",topic="package_updates"} 0.015
clearpath_delivery_latency_seconds_bucket{le="0.001",path="live",topic="canary"} 0.0
clearpath_delivery_latency_seconds_bucket{le="0.002",path="live",topic="canary"} 0.0
clearpath_delivery_latency_seconds_bucket{le="0.005",path="live",topic="canary"} 0.0
clearpath_delivery_latency_seconds_bucket{le="+Inf",path="live",topic="canary"} 700.0
clearpath_delivery_latency_seconds_count{path="live",topic="canary"} 700.0
clearpath_delivery_latency_seconds_sum{path="live",topic="canary"} 7000.0
"""
OPERATOR = "operator-token-for-tests"


def figures_bridge(
    *, metrics: int = 200, readyz: int | None = 200, ready_body: str | None = None
) -> web.Application:
    """A stub bridge: /ws/status, /readyz (None: not served) and /metrics (answered
    with ``metrics``; 401 without the operator token when that is 401)."""

    async def status(_: web.Request) -> web.Response:
        return web.json_response({"upstream": {"state": "connected"}, "slow_consumers_closed": 1})

    async def ready(_: web.Request) -> web.Response:
        assert readyz is not None
        body = ready_body or ('{"ready": true}' if readyz == 200 else '{"ready": false}')
        return web.Response(status=readyz, text=body, content_type="application/json")

    async def page(request: web.Request) -> web.Response:
        authorized = request.headers.get("Authorization") == f"Bearer {OPERATOR}"
        if metrics == 401 and not authorized:
            return web.Response(status=401, text="operator token required")
        return web.Response(text=METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/ws/status", status)
    app.router.add_get("/metrics", page)
    if readyz is not None:
        app.router.add_get("/readyz", ready)
    return app


def bridge_rows(out: str) -> dict[str, str]:
    """The bridge's rows of the table: item → value."""
    rows = {}
    for line in out.splitlines():
        component, _, rest = line.partition("  ")
        if component.strip() == "bridge":
            item, _, value = rest.strip().partition("  ")
            rows[item] = value.strip()
    return rows


async def test_the_figures_of_metrics_and_readiness_are_rows(
    sdk_core: CoreNode, capsys: CaptureFixture[str]
) -> None:
    async with serving(figures_bridge()) as port:
        code = await run_cli(
            "status", "--core", sdk_core.address, "--bridge", f"http://127.0.0.1:{port}"
        )
    assert code == 0
    rows = bridge_rows(capsys.readouterr().out)
    assert rows["ready"] == "yes"
    assert rows["connections"] == "3"
    # By path, the readiness canary left out.
    assert rows["delivered.live"] == "100"
    assert rows["delivered.resume"] == "5"
    assert rows["delivered.total"] == "105"
    assert rows["dropped.total"] == "3"
    assert rows["dropped.slow_consumer"] == "3"
    assert "dropped.unencodable" not in rows
    assert rows["slow_consumer_closes"] == "1"
    # 100 observations, 50 in (1ms, 2ms], 50 in (2ms, 5ms]: the 50th is the last of the
    # first bucket (2.0ms), the 99th is 49/50 into the second (2 + 3 * 0.98 = 4.94ms).
    assert rows["latency.p50"] == "2.0ms"
    assert rows["latency.p99"] == "4.9ms"
    assert rows["upstream.state"] == "connected"  # /ws/status still follows


async def test_what_the_bridge_does_not_serve_is_said_not_raised(
    sdk_core: CoreNode, capsys: CaptureFixture[str]
) -> None:
    async with serving(figures_bridge(metrics=401, readyz=None)) as port:
        bridge = f"http://127.0.0.1:{port}"
        code = await run_cli("status", "--core", sdk_core.address, "--bridge", bridge)
        assert code == 0
        captured = capsys.readouterr()
        rows = bridge_rows(captured.out)
        assert rows["metrics"] == "HTTP 401: an operator token is needed (--token)"
        assert rows["ready"] == "unknown (HTTP 404: not served)"
        assert rows["upstream.state"] == "connected"
        assert "Traceback" not in captured.err
        # With the operator's token the figures come.
        args = ("status", "--core", sdk_core.address, "--bridge", bridge, "--token", OPERATOR)
        assert await run_cli(*args) == 0
        rows = bridge_rows(capsys.readouterr().out)
        assert rows["delivered.total"] == "105"
        assert "metrics" not in rows


async def test_an_older_bridge_shows_its_status_and_says_what_is_missing(
    sdk_core: CoreNode, fake_bridge: str, capsys: CaptureFixture[str]
) -> None:
    assert await run_cli("status", "--core", sdk_core.address, "--bridge", fake_bridge) == 0
    rows = bridge_rows(capsys.readouterr().out)
    assert rows["metrics"] == "HTTP 404: not served by this bridge"
    assert rows["ready"] == "unknown (HTTP 404: not served)"
    assert rows["connections.total"] == "3"


@pytest.mark.parametrize(
    ("code", "body", "shown"),
    [
        (503, '{"ready": false, "reason": "no upstream"}', "no (no upstream)"),
        (503, "not json", "unknown (HTTP 503, not the expected JSON)"),
        (200, '{"ready": "yes"}', "unknown (HTTP 200, not the expected JSON)"),
    ],
)
async def test_readiness_is_shown_with_its_reason(
    sdk_core: CoreNode, capsys: CaptureFixture[str], code: int, body: str, shown: str
) -> None:
    async with serving(figures_bridge(readyz=code, ready_body=body)) as port:
        bridge = f"http://127.0.0.1:{port}"
        assert await run_cli("status", "--core", sdk_core.address, "--bridge", bridge) == 0
    assert bridge_rows(capsys.readouterr().out)["ready"] == shown


def test_unreadable_metrics_are_one_row() -> None:
    rows = figure_rows(Fetched(200, "this is { not prometheus"))
    assert len(rows) == 1
    assert rows[0][0] == "metrics"
    assert rows[0][1].startswith("unreadable")


def test_no_observations_no_latency() -> None:
    rows = dict(figure_rows(Fetched(200, "")))
    assert rows["latency.p50"] == "- (no events delivered)"
    assert rows["delivered.total"] == "0"


def test_histogram_quantile_as_prometheus_estimates_it() -> None:
    inf = float("inf")
    buckets = {0.001: 0.0, 0.002: 40.0, 0.005: 100.0, inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.002 + 0.003 * 10 / 60)
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.001 + 0.001 * 20 / 40)
    assert histogram_quantile(0.5, {0.1: 10.0, inf: 10.0}) == pytest.approx(0.05)  # from 0
    assert histogram_quantile(0.99, {0.1: 1.0, inf: 10.0}) == inf  # beyond the last bound
    assert histogram_quantile(0.5, {0.1: 0.0, inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


async def test_status_of_a_real_serve_process(capsys: CaptureFixture[str]) -> None:
    async with clearpath_process(
        "serve", "--grpc-port", "0", "--http-port", "0", listening="bridge"
    ) as running:
        bridge = running.address
        async with aiohttp.ClientSession() as session:

            async def ready() -> dict[str, Any] | None:
                async with session.get(f"{bridge}/ws/status") as response:
                    body: dict[str, Any] = await response.json()
                return body if body["upstream"]["state"] == "connected" else None

            core = (await eventually(ready))["upstream"]["core"]
        async with connect(bridge.replace("http", "ws") + "/ws/packages") as ws:
            await recv_type(ws, "welcome")
            async with grpc.aio.insecure_channel(core) as channel:
                await publish(sgrpc.RealtimeServiceStub(channel), package("seen"))
            await recv_type(ws, "package_update")
            assert await run_cli("status", "--core", core, "--bridge", bridge) == 0
    rows = bridge_rows(capsys.readouterr().out)
    assert rows["upstream.state"] == "connected"
    assert rows["ready"] in ("yes", "no (starting)")
    assert "metrics" not in rows, rows.get("metrics")  # served, no auth
    assert int(rows["connections"]) >= 1
    assert int(rows["delivered.total"]) >= 1
    assert rows["latency.p50"].endswith("ms") or rows["latency.p50"].endswith("s")
