"""The simulator against a real core: what it publishes, subscribers receive."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clients.sdk import Client
from clients.simulator import run_simulator
from core.server import CoreNode
from core.topics import TOPIC_NAMES
from tests.clients_helpers import next_item, run_cli

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

    from tests.clients_fixtures import Cores

pytest_plugins = ["tests.clients_fixtures"]


async def test_published_events_reach_a_subscriber(sdk_core: CoreNode, client: Client) -> None:
    async with client.subscribe(list(TOPIC_NAMES.values())) as sub:
        sent = await run_simulator(client, rate=5000, packages=20, seed=1, count=300)
        received = [await next_item(sub) for _ in range(sent)]
    assert sent == 300
    assert all(isinstance(item, pb.Event) for item in received)
    kinds = {item.WhichOneof("payload") for item in received if isinstance(item, pb.Event)}
    assert {"package_update", "map_update", "dashboard_metrics", "system_health"} <= kinds


async def test_the_rate_is_kept(sdk_core: CoreNode) -> None:
    started = time.monotonic()
    sent = await run_simulator(sdk_core.address, rate=200, packages=10, seed=2, count=100)
    assert sent == 100
    assert time.monotonic() - started >= 0.4  # 100 events at 200/s: half a second


async def test_a_stop_event_ends_the_run(sdk_core: CoreNode, client: Client) -> None:
    stop = asyncio.Event()
    runner = asyncio.create_task(
        run_simulator(
            client, rate=100, packages=10, seed=3, stop=stop, on_progress=lambda _: stop.set()
        )
    )
    sent = await asyncio.wait_for(runner, 5)
    assert sent == 10  # one batch of a tenth of a second's events


async def test_a_duration_ends_the_run(sdk_core: CoreNode) -> None:
    sent = await asyncio.wait_for(run_simulator(sdk_core.address, rate=50, stop=0.3), 5)
    assert 0 < sent <= 20


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        await run_simulator("127.0.0.1:1", rate=0)


async def test_clearpath_simulate(sdk_core: CoreNode, capsys: CaptureFixture[str]) -> None:
    code = await run_cli(
        "simulate", "--core", sdk_core.address, "--rate", "2000", "--count", "120", "--seed", "5"
    )
    assert code == 0
    assert capsys.readouterr().out.startswith("published 120 events in ")
    offsets = [
        (await sdk_core.broker.history(topic, None)).position.offset for topic in TOPIC_NAMES
    ]
    assert sum(offsets) == 120


async def test_the_runner_waits_out_an_unavailable_core(cores: Cores) -> None:
    node = await cores.start()
    await cores.stop(node)
    runner = asyncio.create_task(run_simulator(node.address, rate=1000, seed=4, count=10))
    await asyncio.sleep(0)  # let it start, and fail, before the core is back
    back = await cores.restart_stopped(node)
    assert await asyncio.wait_for(runner, 10) == 10
    assert (await back.broker.history(pb.TOPIC_PACKAGE_UPDATES, None)).position.offset > 0


async def test_cancelling_the_runner_stops_it(sdk_core: CoreNode) -> None:
    # `clearpath serve --simulate` runs it as a task and cancels it on shutdown.
    published = asyncio.Event()
    runner = asyncio.create_task(
        run_simulator(sdk_core.address, rate=50, seed=6, on_progress=lambda _: published.set())
    )
    await asyncio.wait_for(published.wait(), 5)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 5)
