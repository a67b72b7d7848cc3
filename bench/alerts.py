"""L1, alerts under a map flood: how long an anomaly waits behind map updates.

``l1_subscribers`` WebSocket subscribers connect to ``/ws/map`` (map_updates, and
package_updates which nobody publishes) with ``?since=anomalies:EPOCH:OFFSET`` (the
position of one anomaly published first), so every one of them is subscribed to
map_updates and anomalies from the start. ``l1_slowed`` of them read at most
``l1_slow_bytes_per_s`` (a token bucket on reads, :class:`ThrottledWsSubscriber`); the
others read as fast as they can. The publisher floods map_updates at
``l1_map_rate`` events/s (gRPC batches of ``l1_map_batch`` over ``l1_map_keys``
package ids, **without** the latency marker) and publishes one anomaly every
``l1_alert_every_s`` with the marker in ``anomaly_detected.description``: only
alerts are timed. Map frames are counted apart (``"map_update"``), and so are
frames that say the server conflated or skipped some (``"conflated"``).

Run up to three times (``l1_variants``), each on a fresh server: with the defaults
(priority lanes and conflation on), without lanes
(``CLEARPATH_BRIDGE_PRIORITY_LANES=false``, ``CLEARPATH_CORE_PRIORITY_LANES=false``)
and without conflation (``CLEARPATH_BRIDGE_CONFLATE=none``). A server that does not
know a setting ignores it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.catchup import position_of, resume_path
from bench.events import anomaly_publish_request, map_publish_requests
from bench.loadgen.publisher import Publisher, PublishSpec, PublishStats, run_paced
from bench.loadgen.workers import WorkerGroup
from bench.stats import percentile
from bench.targets.base import ServerProcess, Target, TargetFailed
from bench.workloads import Context, Metrics, _cpu_window, _worker_cfg, ws_fields

__all__ = ["VARIANTS", "group_metrics", "run_l1"]

#: (row name, server environment)
VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("lanes", {}),
    (
        "no lanes",
        {"CLEARPATH_BRIDGE_PRIORITY_LANES": "false", "CLEARPATH_CORE_PRIORITY_LANES": "false"},
    ),
    ("no conflation", {"CLEARPATH_BRIDGE_CONFLATE": "none"}),
)
_MAP, _CONFLATED = '"map_update"', '"conflated"'


def group_metrics(results: list[dict[str, Any]], alerts: int, seconds: float) -> Metrics:
    """One group's figures (fast or slowed readers) from its workers' results."""
    conns = sum(int(r["connections"]) for r in results)
    received = sum(int(r["total"]) for r in results)
    lat = sorted(v for r in results for v in r["latency_us"])
    maps = sum(int(r["also_in_window"][0]) for r in results)
    m: Metrics = {
        "subscribers": conns,
        "alerts_lost": max(0, alerts * conns - received),
        "map_per_sub_s": round(maps / seconds / max(1, conns)),
        "map_deliveries_per_s": round(maps / seconds),
        "conflated_frames": sum(int(r["also_total"][1]) for r in results),
        "cut_off": sum(int(r["cut_off"]) for r in results),
        "loadgen_cpu_pct": round(max(float(r["cpu_window_s"]) for r in results) / seconds * 100, 1),
    }
    if lat:
        m["p50_ms"] = round(percentile(lat, 50) / 1000, 2)
        m["p99_ms"] = round(percentile(lat, 99) / 1000, 2)
        m["max_ms"] = round(max(int(r["latency_max_us"]) for r in results) / 1000, 2)
    return m


async def run_l1(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    p = ctx.params
    label = (
        f"{p.l1_subscribers} subs ({p.l1_slowed} at {p.l1_slow_bytes_per_s // 1024} KiB/s), "
        f"map {p.l1_map_rate:g}/s"
    )
    rows = [(name, env) for name, env in VARIANTS if name in p.l1_variants]
    return [(f"{name}: {label}", await _once(ctx, target, env)) for name, env in rows]


async def _once(ctx: Context, target: Target, env: dict[str, str]) -> Metrics:
    p = ctx.params
    fast_n = p.l1_subscribers - p.l1_slowed
    alert = anomaly_publish_request()
    async with ServerProcess(target, ctx.cpus.server, env) as ep:
        spec = ep.grpc_publish
        if ep.ws is None or spec is None or spec.kind != "grpc":
            raise TargetFailed("L1 needs WebSocket subscribers and gRPC Publish")
        common = {**ws_fields(ep.ws), "sample_every": 1, "count_also": [_MAP, _CONFLATED]}
        fast_cfg = _worker_cfg(ctx, "ws", **common)
        slow_cfg = _worker_cfg(
            ctx,
            "ws",
            **common,
            read_bytes_per_s=p.l1_slow_bytes_per_s,
            read_rcvbuf=p.l1_slow_rcvbuf,
        )
        # Workers first: forking once gRPC's threads run makes gRPC complain.
        async with (
            WorkerGroup(fast_cfg, fast_n, 1) as fast,
            WorkerGroup(slow_cfg, p.l1_slowed, 1) as slow,
        ):
            async with Publisher(spec, 1, 1, templates=[alert]) as one:
                epoch, offset = position_of(await one.publish())
            path = resume_path("/ws/map", "anomalies", epoch, offset)
            for group, n in ((fast, fast_n), (slow, p.l1_slowed)):
                conn = await group.connect(n, limit_s=60 + n / 50, path=path)
                if conn["ok"] < n:
                    raise TargetFailed(
                        f"only {conn['ok']}/{n} subscribers connected: {conn['errors']}"
                    )
            await asyncio.sleep(p.settle_s)
            t0 = time.time_ns() + 300_000_000
            t1 = t0 + int(p.l1_duration_s * 1e9)
            for group in (fast, slow):
                group.broadcast({"cmd": "window", "t0": t0, "t1": t1})
            cpu_task = asyncio.create_task(_cpu_window(ctx, ep.pid, t0, t1))
            flood, alerts = await asyncio.gather(_flood(spec, p, t0), _alerts(spec, p, t0, alert))
            cpu = await cpu_task
            if alerts.events == 0 or flood.events == 0:
                raise TargetFailed(
                    f"no event was accepted: {alerts.first_error or flood.first_error}"
                )
            # Wait for every alert (no "quiet" cut-short: a slowed reader is quiet a while).
            deadline = t1 + int(p.drain_s * 1e9)
            finish = {"cmd": "finish", "expect": alerts.events, "deadline": deadline,
                      "quiet_s": p.drain_s}  # fmt: skip
            for group in (fast, slow):
                group.broadcast(finish)
            fast_res, slow_res = await asyncio.gather(
                fast.results(limit_s=p.drain_s + 30), slow.results(limit_s=p.drain_s + 30)
            )
    seconds = p.l1_duration_s
    m: Metrics = {
        "alerts_published": alerts.events,
        "map_published_per_s": round(flood.events / seconds),
        "publish_errors": alerts.errors + flood.errors,
    }
    for prefix, res in (("fast_", fast_res), ("slow_", slow_res)):
        m.update({prefix + k: v for k, v in group_metrics(res, alerts.events, seconds).items()})
    m["map_deliveries_per_s"] = m["fast_map_deliveries_per_s"] + m["slow_map_deliveries_per_s"]
    m.update(cpu.metrics())
    return m


async def _flood(spec: PublishSpec, p: Any, t0: int) -> PublishStats:
    batch = p.l1_map_batch
    templates = map_publish_requests(batch, p.l1_map_keys)
    async with Publisher(spec, batch, 8, templates=templates) as pub:
        return await run_paced(
            pub, p.l1_map_rate / batch, t0, p.l1_duration_s, p.max_in_flight, p.drain_s
        )


async def _alerts(spec: PublishSpec, p: Any, t0: int, alert: bytes) -> PublishStats:
    async with Publisher(spec, 1, 2, templates=[alert]) as pub:
        return await run_paced(
            pub, 1 / p.l1_alert_every_s, t0, p.l1_duration_s, p.max_in_flight, p.drain_s
        )
