"""The workloads: each starts its target's server, drives it, and returns metrics.

All of them follow the same shape: start the server pinned to the server core,
start subscriber worker processes pinned to the load-generator cores, connect,
open a measurement window [t0, t1] agreed by wall clock, publish from this
process, then let the subscribers drain (bounded) and collect their counts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench import scale_config
from bench.config import Params
from bench.loadgen.publisher import Publisher, PublishSpec, PublishStats, run_max, run_paced
from bench.loadgen.workers import WorkerGroup
from bench.scale import timeout_w4, w4
from bench.stats import percentile
from bench.storm import timeout_w5, w5
from bench.sysinfo import CpuPlan, cores_busy, median_rss, sample_tree
from bench.targets.base import Endpoint, ServerProcess, Target, TargetFailed, WsSpec

__all__ = ["WORKLOADS", "Context", "Metrics", "run_workload"]

Metrics = dict[str, Any]


@dataclass(frozen=True)
class Context:
    params: Params
    cpus: CpuPlan
    workers: int
    #: W4's and W5's sizes (bench/scale_config.py).
    scale: scale_config.ScaleParams = field(default_factory=scale_config.full)


def ws_fields(ws: WsSpec, path: str | None = None) -> dict[str, Any]:
    """A worker's config for WebSocket subscribers to ``ws`` (at ``path`` if given)."""
    fields: dict[str, Any] = {
        "host": ws.host,
        "port": ws.port,
        "path": ws.path if path is None else path,
        "wait_first": ws.wait_first,
    }
    if ws.proto == "nats":
        fields.update(ws_proto="nats", nats_subject=ws.subject)
    return fields


def _worker_cfg(ctx: Context, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "cpus": sorted(ctx.cpus.loadgen),
        "connect_concurrency": 100,
        "connect_timeout": 15.0,
        "max_lifetime_s": 240.0,
        **extra,
    }


@dataclass(frozen=True)
class CpuWindow:
    """CPU use over a window: the server's process tree, and each side's cores."""

    server_s: float
    server_core_busy_s: float
    loadgen_core_busy_s: float
    seconds: float

    def metrics(self) -> Metrics:
        pct = 100 / self.seconds
        m: Metrics = {"server_cpu_pct": round(self.server_s * pct, 1)}
        if self.server_core_busy_s or self.loadgen_core_busy_s:
            others = max(0.0, self.server_core_busy_s - self.server_s)
            m["server_core_others_pct"] = round(others * pct, 1)
            m["loadgen_core_busy_pct"] = round(self.loadgen_core_busy_s * pct, 1)
        return m


async def _cpu_window(ctx: Context, pid: int, t0: int, t1: int) -> CpuWindow:
    await asyncio.sleep(max(0.0, (t0 - time.time_ns()) / 1e9))
    a = sample_tree(pid)
    sa, la = cores_busy(ctx.cpus.server)[0], cores_busy(ctx.cpus.loadgen)[0]
    await asyncio.sleep(max(0.0, (t1 - time.time_ns()) / 1e9))
    b = sample_tree(pid)
    sb, lb = cores_busy(ctx.cpus.server)[0], cores_busy(ctx.cpus.loadgen)[0]
    # Busy time per core is normalised to one core, like the other CPU figures.
    n_load = max(1, len(ctx.cpus.loadgen))
    return CpuWindow(b.cpu_s - a.cpu_s, sb - sa, (lb - la) / n_load, (t1 - t0) / 1e9)


def _merge(results: list[dict[str, Any]], duration: float, expected_per_conn: int) -> Metrics:
    lat = sorted(v for r in results for v in r["latency_us"])
    conns = sum(int(r["connections"]) for r in results)
    received = sum(int(r["total"]) for r in results)
    in_window = sum(int(r["in_window"]) for r in results)
    loadgen_cpu = max(float(r["cpu_window_s"]) for r in results) / duration * 100
    m: Metrics = {
        "subscribers": conns,
        "deliveries_per_s": round(in_window / duration),
        "received": received,
        "expected": expected_per_conn * conns,
        "lost": max(0, expected_per_conn * conns - received),
        "per_conn_min": min(int(r["per_conn_min"]) for r in results),
        "ended_early": sum(int(r["ended_early"]) for r in results),
        "cut_off": sum(int(r.get("cut_off", 0)) for r in results),
        "loadgen_cpu_pct": round(loadgen_cpu, 1),
        "unread_kib_at_t1": round(sum(int(r["unread_at_t1_bytes"]) for r in results) / 1024, 1),
        "latency_samples": sum(int(r["latency_seen"]) for r in results),
    }
    if lat:
        for q in (50, 90, 99):
            m[f"p{q}_ms"] = round(percentile(lat, q) / 1000, 2)
        m["max_ms"] = round(max(int(r["latency_max_us"]) for r in results) / 1000, 2)
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r["end_reasons"].items():
            reasons[k] = reasons.get(k, 0) + int(v)
    if reasons:
        m["end_reasons"] = reasons
    return m


def _publish_metrics(stats: PublishStats, duration: float) -> Metrics:
    lag = sorted(stats.lag_us)
    m: Metrics = {
        "published_events": stats.events,
        "published_per_s": round(stats.events / duration, 1),
        "publish_errors": stats.errors,
        "publisher_cpu_pct": round(stats.cpu_s / max(stats.elapsed_s, 1e-9) * 100, 1),
    }
    if lag:
        m["publish_lag_p99_ms"] = round(percentile(lag, 99) / 1000, 2)
    if stats.first_error:
        m["first_publish_error"] = stats.first_error
    return m


async def _subscribe_and_publish(
    ctx: Context,
    ep: Endpoint,
    group: WorkerGroup,
    n: int,
    publish: PublishSpec | None,
    *,
    paced_rate: float | None,
    duration: float,
    batch: int,
    concurrency: int,
    ahead: int = 0,
) -> Metrics:
    p = ctx.params
    conn = await group.connect(n, limit_s=60 + n / 50)
    if conn["ok"] < n:
        raise TargetFailed(f"only {conn['ok']}/{n} subscribers connected: {conn['errors']}")
    await asyncio.sleep(p.settle_s)
    t0 = time.time_ns() + 300_000_000
    t1 = t0 + int(duration * 1e9)
    group.broadcast({"cmd": "window", "t0": t0, "t1": t1})
    cpu_task = asyncio.create_task(_cpu_window(ctx, ep.pid, t0, t1))
    stats: PublishStats | None = None
    if publish is not None:
        async with Publisher(publish, batch, concurrency) as pub:
            if paced_rate is not None:
                stats = await run_paced(pub, paced_rate, t0, duration, p.max_in_flight, p.drain_s)
            else:
                gate = group.slowest if ahead else None
                stats = await run_max(pub, t0, duration, concurrency, gate, ahead)
        if stats.events == 0:
            raise TargetFailed(f"no event was accepted: {stats.first_error}")
    cpu = await cpu_task
    expect = None if stats is None else stats.issued_events
    # Without a publisher (a self-driven raw stream) there is nothing to drain.
    deadline = t1 + (int(p.drain_s * 1e9) if publish is not None else 0)
    group.broadcast({"cmd": "finish", "expect": expect, "deadline": deadline, "quiet_s": p.quiet_s})
    results = await group.results(limit_s=p.drain_s + 30)
    m = _merge(results, duration, 0 if stats is None else stats.events)
    if stats is None:
        del m["lost"], m["expected"]
    else:
        m.update(_publish_metrics(stats, duration))
    m.update(cpu.metrics())
    m["server_rss_mib"] = round(sample_tree(ep.pid).rss_bytes / 2**20, 1)
    m["connect_s"] = conn["seconds"]
    return m


async def _scrape(url: str, hz: float, times: list[float]) -> None:
    """GET ``url`` ``hz`` times a second until cancelled; each duration into ``times``."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        while True:
            started = time.perf_counter()
            async with http.get(url) as response:
                body = await response.read()
                if response.status != 200 or not body:
                    raise TargetFailed(f"{url}: HTTP {response.status}")
            times.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, 1 / hz - (time.perf_counter() - started)))


async def _ws_fanout(
    ctx: Context,
    target: Target,
    n: int,
    rate: float | None,
    scrape_hz: float = 0,
    ahead: int | None = None,
) -> Metrics:
    p = ctx.params
    duration = p.w1_duration_s if rate is not None else p.w2_duration_s
    async with ServerProcess(target, ctx.cpus.server) as ep:
        assert ep.ws is not None
        times: list[float] = []
        scraper = None
        if scrape_hz and ep.metrics_url:
            scraper = asyncio.create_task(_scrape(ep.metrics_url, scrape_hz, times))
        cfg = _worker_cfg(
            ctx,
            "ws",
            **ws_fields(ep.ws),
            sample_every=max(1, n // (p.latency_conns if rate is not None else p.w2_latency_conns)),
        )
        async with WorkerGroup(cfg, n, ctx.workers) as group:
            m = await _subscribe_and_publish(
                ctx,
                ep,
                group,
                n,
                ep.ws_publish,
                paced_rate=rate,
                duration=duration,
                batch=1 if rate is not None else p.w2_batch,
                concurrency=p.w2_concurrency,
                ahead=0 if rate is not None else (p.w2_ahead if ahead is None else ahead),
            )
        if scraper is not None:
            scraper.cancel()
            await asyncio.gather(scraper, return_exceptions=True)
            if scraper.done() and not scraper.cancelled() and scraper.exception():
                raise TargetFailed(f"scraping /metrics failed: {scraper.exception()}")
            m["scrapes"] = len(times)
            m["scrape_ms_p50"] = round(sorted(times)[len(times) // 2] * 1000, 2) if times else None
    if rate is not None:
        m["offered_deliveries_per_s"] = round(rate * n)
    return m


async def w1(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    p = ctx.params
    variant = f"{p.w1_subscribers} subs x {p.w1_rate:g}/s"
    out = [(variant, await _ws_fanout(ctx, target, p.w1_subscribers, p.w1_rate))]
    if p.w1_scrape_hz and getattr(target, "metrics", False):
        # The same load with /metrics scraped meanwhile: what observing it costs.
        scraped = await _ws_fanout(ctx, target, p.w1_subscribers, p.w1_rate, p.w1_scrape_hz)
        out.append((f"{variant} + /metrics {p.w1_scrape_hz:g}/s", scraped))
    return out


async def w1l(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    """W1's paced publisher to few subscribers: latency when nothing is saturated."""
    p = ctx.params
    variant = f"{p.w1l_subscribers} subs x {p.w1_rate:g}/s"
    return [(variant, await _ws_fanout(ctx, target, p.w1l_subscribers, p.w1_rate))]


async def w2(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    p = ctx.params
    variant = f"{p.w2_subscribers} subs, max"
    return [(variant, await _ws_fanout(ctx, target, p.w2_subscribers, None))]


async def w2w(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    """W2 with the publisher allowed ``w2w_ahead`` events ahead of the slowest subscriber."""
    p = ctx.params
    variant = f"{p.w2_subscribers} subs, max, {p.w2w_ahead:,} ahead"
    fanout = await _ws_fanout(ctx, target, p.w2_subscribers, None, ahead=p.w2w_ahead)
    return [(variant, fanout)]


async def w6(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    """W6, catch-up: see :mod:`bench.catchup`."""
    from bench.catchup import run_w6

    return await run_w6(ctx, target)


async def l1(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    """L1, alerts under a map flood: see :mod:`bench.alerts`."""
    from bench.alerts import run_l1

    return await run_l1(ctx, target)


async def w3(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    n = ctx.params.w3_connections
    warm = max(1, min(50, n // 10))
    async with ServerProcess(target, ctx.cpus.server) as ep:
        assert ep.ws is not None
        cfg = _worker_cfg(
            ctx,
            "ws",
            **ws_fields(ep.ws),
            sample_every=1,
        )
        async with WorkerGroup(cfg, n, ctx.workers) as group:
            first = await group.connect(warm, limit_s=60)
            await asyncio.sleep(0.5)
            rss0 = await median_rss(ep.pid)
            rest = await group.connect(n - warm, limit_s=60 + n / 50)
            connected = first["ok"] + rest["ok"] - warm
            if first["ok"] < warm or connected < n - warm:
                raise TargetFailed(f"only {connected + warm}/{n} connected: {rest['errors']}")
            await asyncio.sleep(1.0)
            rss1 = await median_rss(ep.pid)
            group.broadcast({"cmd": "close"})
            results = await group.results(limit_s=30)
    per_conn = (rss1 - rss0) / (n - warm)
    return [
        (
            f"{n} idle",
            {
                "connections": n,
                "rss_per_conn_kib": round(per_conn / 1024, 2),
                "rss_before_mib": round(rss0 / 2**20, 1),
                "rss_after_mib": round(rss1 / 2**20, 1),
                "connect_s": rest["seconds"],
                "ended_early": sum(int(r["ended_early"]) for r in results),
            },
        )
    ]


async def g1(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    p = ctx.params
    out: list[tuple[str, Metrics]] = []
    async with ServerProcess(target, ctx.cpus.server) as ep:
        assert ep.grpc_publish is not None
        for batch in p.g1_batches:
            async with Publisher(ep.grpc_publish, batch, p.g1_concurrency) as pub:
                t0 = time.time_ns() + 200_000_000
                t1 = t0 + int(p.g1_duration_s * 1e9)
                cpu_task = asyncio.create_task(_cpu_window(ctx, ep.pid, t0, t1))
                stats = await run_max(pub, t0, p.g1_duration_s, p.g1_concurrency)
                cpu = await cpu_task
            if stats.events == 0:
                raise TargetFailed(f"no event was accepted: {stats.first_error}")
            m: Metrics = {
                "events_per_s": round(stats.events / stats.elapsed_s),
                "calls_per_s": round(stats.calls / stats.elapsed_s),
                "errors": stats.errors,
                "publisher_cpu_pct": round(stats.cpu_s / stats.elapsed_s * 100, 1),
                **cpu.metrics(),
            }
            out.append((f"batch={batch}", m))
    return out


async def g2(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    p = ctx.params
    out: list[tuple[str, Metrics]] = []
    for n in p.g2_streams:
        async with ServerProcess(target, ctx.cpus.server) as ep:
            stream = ep.grpc_stream
            assert stream is not None
            own_flow = stream.kind == "raw"
            # A raw stream flows from the moment it opens: give it enough seconds
            # to cover connecting, settling and the window, and no more.
            seconds = 3 + n / 100 + p.settle_s + p.g2_duration_s
            cfg = _worker_cfg(
                ctx,
                "grpc",
                host=stream.host,
                port=stream.port,
                path=stream.method,
                request_hex=stream.request(seconds).hex(),
                sample_every=max(1, n // p.latency_conns),
            )
            async with WorkerGroup(cfg, n, ctx.workers) as group:
                m = await _subscribe_and_publish(
                    ctx,
                    ep,
                    group,
                    n,
                    None if own_flow else ep.grpc_publish,
                    paced_rate=None,
                    duration=p.g2_duration_s,
                    batch=p.g2_batch,
                    concurrency=p.g2_concurrency,
                    ahead=g2_allowance(p.g2_ahead, n),
                )
            if own_flow:
                for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "latency_samples"):
                    m.pop(k, None)
        out.append((f"{n} streams", m))
    return out


def g2_allowance(ahead: int, streams: int) -> int:
    """G2's publisher allowance for ``streams`` streams: ``ahead`` shared by the
    streams, at least 500 each — one stream may run 2,000 ahead (the slowest is
    reported every 20 ms, so 500 would cap it at ~25k events/s, below the raw
    ceiling), a hundred only 500 (2,000 ahead of each would be seconds of queue)."""
    return max(500, ahead // max(1, streams))


WORKLOADS = {
    "W1": w1,
    "W1l": w1l,
    "W2": w2,
    "W2w": w2w,
    "W3": w3,
    "W6": w6,
    "L1": l1,
    "G1": g1,
    "G2": g2,
    "W4": w4,
    "W5": w5,
}


def timeout_for(workload: str, p: Params, scale: scale_config.ScaleParams | None = None) -> float:
    """A hard limit for one workload run; past it the run is cancelled and killed."""
    per = {
        "W1": 2 * (p.w1_duration_s + p.drain_s + 90),
        "W1l": p.w1_duration_s + p.drain_s + 90,
        "W2": p.w2_duration_s + p.drain_s + 60,
        "W2w": p.w2_duration_s + p.drain_s + 60,
        "W6": p.w6_limit_s + p.drain_s + 90 + p.w6_subscribers / 50,
        "L1": len(p.l1_variants) * (p.l1_duration_s + p.drain_s + 60),
        "W3": 120 + p.w3_connections / 50,
        "G1": len(p.g1_batches) * (p.g1_duration_s + 70) + 30,
        "G2": len(p.g2_streams) * (p.g2_duration_s + p.drain_s + 40),
        "W4": timeout_w4(scale or scale_config.full()),
        "W5": timeout_w5(scale or scale_config.full()),
    }
    return per[workload]


async def run_workload(ctx: Context, workload: str, target: Target) -> list[tuple[str, Metrics]]:
    return await asyncio.wait_for(
        WORKLOADS[workload](ctx, target), timeout_for(workload, ctx.params, ctx.scale)
    )
