"""``clearpath subscribe``: JSON lines in the bridge's frame shape, resume, filters."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from clients.cli.subscribe import parse_filters, parse_since
from clients.sdk import Client, StreamPosition
from core.codec import event_to_frame
from core.server import CoreNode
from tests.clients_helpers import run_cli

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

pytest_plugins = ["tests.clients_fixtures"]

CLEARPATH = str(Path(sys.executable).with_name("clearpath"))


def update(package_id: str) -> dict[str, object]:
    return {"type": "package_update", "data": {"package_id": package_id, "status": "in_transit"}}


async def test_prints_frames_until_interrupted(sdk_core: CoreNode, client: Client) -> None:
    process = await asyncio.create_subprocess_exec(
        CLEARPATH, "subscribe", "package_updates", "anomalies", "--core", sdk_core.address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        notice = await asyncio.wait_for(process.stderr.readline(), 20)
        assert notice.startswith(b"subscribed to package_updates, anomalies")
        data = {"package_id": "p1", "anomaly_type": "damaged", "severity": "low"}
        anomaly = {"type": "anomaly_detected", "data": data}
        results = await client.publish([update("p1"), anomaly])
        lines = [await asyncio.wait_for(process.stdout.readline(), 10) for _ in results]
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    frames = [orjson.loads(line) for line in lines]
    assert [f["type"] for f in frames] == ["package_update", "anomaly_detected"]
    assert [f["subscription_type"] for f in frames] == ["package_updates", "anomalies"]
    assert [f["id"] for f in frames] == [r.id for r in results]
    assert frames[0]["data"] == {
        "package_id": "p1",
        "tracking_number": "",
        "status": "in_transit",
        "location": "",
        "estimated_delivery": None,
        "last_scan_time": None,
        "carrier": "",
    }
    assert code == 0


async def test_since_and_filters_select_events(
    sdk_core: CoreNode, client: Client, capsys: CaptureFixture[str]
) -> None:
    results = await client.publish([update("p0"), update("a"), update("c"), update("b")])
    first = results[0].position
    code = await run_cli(
        "subscribe", "package_updates", "--core", sdk_core.address,
        "--since", f"package_updates:{first.epoch}:{first.offset}",
        "--filter", "package_ids=a", "--filter", "package-ids=b", "--count", "2",
    )  # fmt: skip
    assert code == 0
    frames = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["data"]["package_id"] for f in frames] == ["a", "b"]
    # The same frames as the bridge's, byte for byte in content.
    async with client.subscribe("package_updates", since={"package_updates": first}) as sub:
        expected = [event_to_frame(await anext(sub)) for _ in range(3)]  # type: ignore[arg-type]
    assert frames == [expected[0], expected[2]]


async def test_a_gap_is_reported_on_stderr(
    sdk_core: CoreNode, client: Client, capsys: CaptureFixture[str]
) -> None:
    await client.publish(update("p1"))
    code = await run_cli(
        "subscribe", "package_updates", "--core", sdk_core.address,
        "--since", "package_updates:some-old-epoch:41", "--count", "1",
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "gap in package_updates: events after some-old-epoch:41 are lost (epoch_changed)" in (
        captured.err
    )
    assert orjson.loads(captured.out)["data"]["package_id"] == "p1"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["parcels"], "invalid choice: 'parcels'"),
        (["anomalies", "--filter", "min_severity"], "expected KEY=VALUE"),
        (["anomalies", "--filter", "min_severity=dire"], "filter.min_severity: 'dire' is not"),
        (["anomalies", "--filter", "colour=red"], "filter: unknown key 'colour'"),
        (["anomalies", "--since", "anomalies:12"], "expected TYPE:EPOCH:OFFSET"),
        (["anomalies", "--since", "map_updates:e:1"], "since.map_updates: the topic is not"),
    ],
)  # fmt: skip
async def test_bad_arguments_exit_2_before_connecting(
    capsys: CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert await run_cli("subscribe", "--core", "127.0.0.1:1", *args) == 2
    assert expected in capsys.readouterr().err


def test_parsers() -> None:
    assert parse_filters(["package_ids=a,b", "package_ids=c", "min_severity=high"]) == {
        "package_ids": ["a", "b", "c"],
        "min_severity": "high",
    }
    assert parse_since(["anomalies:abc:7"]) == {"anomalies": StreamPosition(epoch="abc", offset=7)}
