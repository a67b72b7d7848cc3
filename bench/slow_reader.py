"""Slow readers under a simulator-like flood: what a screen reading at a half or a
tenth of the publish rate gets, with priority lanes on and off and with several
``conflate_after_bytes``. Used to choose the bridge's slow-consumer defaults
(bench/results/slow-reader.md).

A real core and a real bridge (in this process, loopback ports), a publisher at a
fixed rate — map updates of ``--packages`` packages (90 %), package updates
(8 %), anomalies (2 %), dashboard metrics once a second, plus one timed probe
anomaly a second — and one socket per reader speed, each with a small receive
buffer, reading at most ``ratio`` times the frames published per tick. Reported
per run: the socket's queued bytes over time (median, max), frames received,
``conflated`` notices and frames skipped, catch-ups, whether it was cut off, and
the probe anomalies' publish-to-read latency (median, max).

Usage: ``python bench/slow_reader.py [--seconds 15] [--rate 4000] [--quick]``.
Runs are short (at most ``--seconds`` each) and bounded; the machine is noisy:
compare medians of runs side by side, not single figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.codec import event_from_frame
from core.config import CoreSettings
from core.server import CoreNode

__all__ = ["Run", "main"]

TICK = 0.05  # seconds between publishes and between reads


@dataclass
class Run:
    """One run's settings and what one slow socket saw."""

    lanes: bool
    conflate_after_bytes: int
    ratio: float
    seconds: float
    published: int = 0
    received: int = 0
    conflated_notices: int = 0
    skipped: int = 0
    catch_ups: int = 0
    cut_off: bool = False
    queue_bytes_median: float = 0.0
    queue_bytes_max: int = 0
    alert_ms_median: float | None = None
    alert_ms_max: float | None = None
    alerts_seen: int = 0
    alerts_sent: int = 0
    queue_samples: list[int] = field(default_factory=list, repr=False)


_ANOMALY = {
    "anomaly_type": "delayed_delivery",
    "severity": "high",
    "description": "flood",
    "recommended_action": "reroute",
    "confidence_score": 0.9,
    "detected_at": "2024-01-15T10:30:00Z",
}
_PACKAGE = {
    "tracking_number": "PKG123456789",
    "status": "in_transit",
    "location": "Chicago Distribution Center",
    "estimated_delivery": "2024-01-16T14:00:00Z",
    "last_scan_time": "2024-01-15T10:30:00Z",
    "carrier": "FedEx",
}


def _event(i: int, packages: int) -> pb.Event:
    kind, package = i % 50, f"pkg-{i % packages}"
    if kind == 0:
        data: dict[str, Any] = {**_ANOMALY, "package_id": package}
        return event_from_frame({"type": "anomaly_detected", "data": data})
    if kind < 5:
        return event_from_frame(
            {"type": "package_update", "data": {**_PACKAGE, "package_id": package}}
        )
    data = {
        "package_id": package,
        "vehicle_id": f"truck-{(i % packages) % 97}",  # a package stays on its truck
        "latitude": 30 + (i % 1000) / 100,
        "longitude": -90 + (i % 777) / 100,
        "heading": 270.0,
        "speed_kmh": 88.5,
        "route_id": "CHI-DEN",
        "next_stop": "Denver Hub",
        "status": "in_transit",
    }
    return event_from_frame({"type": "map_update", "data": data})


def _metrics(i: int) -> pb.Event:
    data = {
        "total_packages": i,
        "in_transit": i // 2,
        "delivered": i // 3,
        "delayed": i // 50,
        "anomalies": i // 50,
        "recovery_rate": 0.9,
        "avg_delivery_time": 2.5,
    }
    return event_from_frame({"type": "dashboard_metrics", "data": data})


def _probe(seq: int) -> pb.Event:
    data = {**_ANOMALY, "package_id": "probe", "description": f"{seq}:{time.time()!r}"}
    return event_from_frame({"type": "anomaly_detected", "data": data})


async def _socket(port: int) -> ClientConnection:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    url = f"ws://127.0.0.1:{port}/ws/connect"
    ws = await asyncio.wait_for(connect(url, sock=sock, max_queue=4, ping_interval=None), 10)
    await ws.recv()  # welcome
    for topic in ("map_updates", "package_updates", "anomalies", "dashboard_metrics"):
        await ws.send(
            orjson.dumps({"type": "subscribe", "data": {"subscription_type": topic}}).decode()
        )
        await ws.recv()
    return ws


async def one_run(
    lanes: bool, conflate_after: int, ratio: float, seconds: float, rate: int, packages: int
) -> Run:
    """Start a core and a bridge, flood for ``seconds``, read one socket at ``ratio``."""
    run = Run(lanes, conflate_after, ratio, seconds)
    core = CoreNode(
        CoreSettings.model_validate(
            {"port": 0, "queue_size": 50_000, "max_batch": 1000, "history_size": 50_000}
        )
    )
    await core.start()
    bridge = BridgeNode(
        BridgeSettings.model_validate(
            {
                "port": 0,
                "core": core.address,
                "static_dir": None,
                "priority_lanes": lanes,
                "conflate_after_bytes": conflate_after,
                "conflate": "default" if conflate_after else "none",
                "ping_interval": 120,
            }
        )
    )
    await bridge.start()
    await asyncio.wait_for(bridge.bridge.upstream.wait_connected(), 10)
    channel = grpc.aio.insecure_channel(core.address)
    stub = sgrpc.RealtimeServiceStub(channel)
    ws = await _socket(bridge.port)
    stop = asyncio.Event()
    latencies: list[float] = []
    per_tick = max(1, int(rate * TICK))

    async def publisher() -> None:
        i = seq = 0
        next_probe = time.monotonic() + 1.0
        while not stop.is_set():
            events = [_event(i + k, packages) for k in range(per_tick)]
            i += per_tick
            if i // per_tick % int(1 / TICK) == 0:
                events.append(_metrics(i))
            await stub.Publish(spb.PublishRequest(events=events), timeout=10)
            run.published += len(events)
            if time.monotonic() >= next_probe:
                seq += 1
                await stub.Publish(spb.PublishRequest(events=[_probe(seq)]), timeout=10)
                run.alerts_sent += 1
                next_probe += 1.0
            await asyncio.sleep(TICK)

    async def reader() -> None:
        budget = max(1, int(per_tick * ratio))
        while True:
            for _ in range(budget):
                frame = orjson.loads(await ws.recv())
                kind = frame["type"]
                if kind == "conflated":
                    run.conflated_notices += 1
                    run.skipped += frame["data"]["skipped"]
                elif "position" in frame:
                    run.received += 1
                    if kind == "anomaly_detected" and frame["data"]["package_id"] == "probe":
                        sent = float(frame["data"]["description"].split(":")[1])
                        latencies.append(time.time() - sent)
            await asyncio.sleep(TICK)

    async def sampler() -> None:
        while not stop.is_set():
            for conn in bridge.bridge.connections.values():
                run.queue_samples.append(conn.session.sub.bytes)
            await asyncio.sleep(0.25)

    tasks = [asyncio.create_task(f()) for f in (publisher, sampler)]
    reading = asyncio.create_task(reader())
    try:
        await asyncio.wait_for(asyncio.shield(reading), seconds)
    except TimeoutError:
        pass
    except Exception:  # the socket was closed: cut off
        run.cut_off = True
    stop.set()
    await asyncio.gather(*tasks)
    run.cut_off = run.cut_off or reading.done() or bool(bridge.bridge.slow_closed)
    reading.cancel()
    with contextlib.suppress(BaseException):  # cancelled, or the close that cut it off
        await reading
    run.catch_ups = bridge.bridge.catch_ups
    samples = run.queue_samples or [0]
    run.queue_bytes_median = statistics.median(samples)
    run.queue_bytes_max = max(samples)
    run.alerts_seen = len(latencies)
    if latencies:
        run.alert_ms_median = round(statistics.median(latencies) * 1000, 1)
        run.alert_ms_max = round(max(latencies) * 1000, 1)
    await ws.close()
    await channel.close()
    await bridge.stop()
    await core.stop(0)
    return run


def _table(runs: list[Run]) -> str:
    head = (
        "| lanes | conflate_after | reads | published | received | skipped (notices) "
        "| catch-ups | cut off | queue median / max | alert median / max ms (seen/sent) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [
        f"| {'on' if r.lanes else 'off'} | {r.conflate_after_bytes // 1024} KiB "
        f"| 1/{round(1 / r.ratio)} | {r.published} | {r.received} "
        f"| {r.skipped} ({r.conflated_notices}) | {r.catch_ups} | {'yes' if r.cut_off else 'no'} "
        f"| {r.queue_bytes_median / 1024:.0f} / {r.queue_bytes_max / 1024:.0f} KiB "
        f"| {r.alert_ms_median} / {r.alert_ms_max} ({r.alerts_seen}/{r.alerts_sent}) |"
        for r in runs
    ]
    return head + "\n".join(rows) + "\n"


async def _main(args: argparse.Namespace) -> list[Run]:
    plans: list[tuple[bool, int, float]] = []
    for ratio in (0.5, 0.1):
        plans.append((True, 0, ratio))  # lanes, no conflation
        plans.append((False, 0, ratio))  # neither
        for after in args.conflate_after:
            plans.append((True, after * 1024, ratio))
    if args.quick:
        plans = plans[:2]
    runs = []
    for lanes, after, ratio in plans:
        run = await one_run(lanes, after, ratio, args.seconds, args.rate, args.packages)
        print(_table([run]).splitlines()[-1], flush=True)
        runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/slow_reader.py", description=__doc__)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each run (<= 20)")
    ap.add_argument("--rate", type=int, default=4000, help="events published per second")
    ap.add_argument("--packages", type=int, default=1000, help="packages on the map")
    ap.add_argument(
        "--conflate-after",
        type=int,
        nargs="+",
        default=[256, 1024, 4096],
        metavar="KIB",
        help="conflate_after_bytes values to try, KiB",
    )
    ap.add_argument("--quick", action="store_true", help="two short runs")
    ap.add_argument("--json", type=Path, help="write the runs here")
    args = ap.parse_args(argv)
    args.seconds = min(args.seconds, 20.0)
    runs = asyncio.run(_main(args))
    print(_table(runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
