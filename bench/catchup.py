"""W6, catch-up: subscribers resume from a position far back while events keep coming.

With nobody connected, the harness publishes one anchor event (its ``Publish``
response gives the topic's epoch and offset), then ``w6_back`` events. While a
paced live publisher goes on at ``w6_live_rate``, ``w6_subscribers`` WebSocket
subscribers connect with ``?since=package_updates:EPOCH:OFFSET`` (the anchor): each
must read every back event, then the live ones. A subscriber has *caught up* once it
has every back event and the newest event it read was published less than
``w6_fresh_ms`` before. The live publisher stops once every subscriber has caught
up, or after ``w6_limit_s``; the subscribers then get ``drain_s`` to read the rest.
Reported: time to caught up (p50/p99/max from its connect), catch-up throughput per
subscriber (events read by then / that time) and in total (all those events / the
slowest subscriber's time), events still missing at the end, subscribers cut off
(must be 0), and the ``recovered`` flags the resumes were answered with.

The server runs with ``CLEARPATH_CORE_HISTORY_SIZE`` set by :func:`history_size`,
so the resume is inside the core's history (its default, 10,000, is the whole
back window, with no room for the live events); the bridge's cache stays at its
default (1,000 frames), so the back events come from the core's ``History``, a
page at a time, as for a browser back from a long disconnection.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from bench.loadgen.publisher import Publisher, PublishStats, run_count, run_paced
from bench.loadgen.workers import WorkerGroup
from bench.stats import percentile
from bench.sysinfo import cores_busy, sample_tree
from bench.targets.base import ServerProcess, Target, TargetFailed
from bench.workloads import Context, CpuWindow, Metrics, _worker_cfg, ws_fields

__all__ = ["catchup_metrics", "history_size", "position_of", "resume_path", "run_w6"]

_BATCH = 100
_RECOVERED = ('"recovered":true', '"recovered":false')


def history_size(back: int, live_events: int) -> int:
    """Core history per topic for W6: twice what a resume must find (the back window
    and every live event), and never below the core's default of 10,000."""
    return max(10_000, 2 * (back + live_events))


def position_of(publish_response: bytes) -> tuple[str, int]:
    """``(epoch, offset)`` of the last event of a serialized ``PublishResponse``."""
    from clearpath.realtime.v1 import service_pb2

    resp = service_pb2.PublishResponse.FromString(publish_response)
    if not resp.results:
        raise TargetFailed("Publish returned no result")
    pos = resp.results[-1].position
    return pos.epoch, pos.offset


def resume_path(path: str, topic: str, epoch: str, offset: int) -> str:
    """``path`` with ``since=TOPIC:EPOCH:OFFSET`` added to its query."""
    since = urllib.parse.quote(f"{topic}:{epoch}:{offset}", safe=":")
    return f"{path}{'&' if '?' in path else '?'}since={since}"


def catchup_metrics(rows: list[list[int]], back: int) -> Metrics:
    """Figures from the workers' rows ``[ms to caught up or -1, events then, events
    now, ms to the back events or -1]`` (see ``bench.loadgen.worker``)."""
    done = [(row[0], row[1]) for row in rows if row[0] >= 0]
    read = sorted(max(1, row[3]) for row in rows if row[3] >= 0)
    m: Metrics = {
        "caught_up": len(done),
        "not_caught_up": len(rows) - len(done),
        "back_read": len(read),
        "back_events": back,
    }
    if read:
        m["back_read_p50_ms"] = round(percentile(read, 50))
        m["back_read_max_ms"] = read[-1]
    if not done:
        return m
    times = sorted(max(1, ms) for ms, _ in done)
    rates = sorted(ev / (max(1, ms) / 1000) for ms, ev in done)
    m.update(
        catchup_p50_ms=round(percentile(times, 50)),
        catchup_p99_ms=round(percentile(times, 99)),
        catchup_max_ms=times[-1],
        per_sub_catchup_ev_s=round(percentile(rates, 50)),
        per_sub_catchup_min_ev_s=round(rates[0]),
        total_catchup_ev_s=round(sum(ev for _, ev in done) / (times[-1] / 1000)),
    )
    return m


async def run_w6(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    p = ctx.params
    n = p.w6_subscribers
    live_events = int(p.w6_live_rate * p.w6_limit_s)
    history = history_size(p.w6_back, live_events)
    env = {"CLEARPATH_CORE_HISTORY_SIZE": str(history)}
    calls = -(-p.w6_back // _BATCH)
    async with ServerProcess(target, ctx.cpus.server, env) as ep:
        if ep.ws is None or ep.grpc_publish is None:
            raise TargetFailed("W6 needs WebSocket subscribers and gRPC Publish")
        cfg = _worker_cfg(
            ctx,
            "ws",
            **ws_fields(ep.ws),
            sample_every=max(1, n // p.latency_conns),
            catchup_back=calls * _BATCH,
            catchup_fresh_ms=p.w6_fresh_ms,
            count_also=list(_RECOVERED),
        )
        # Workers first: forking once gRPC's threads run makes gRPC complain.
        async with WorkerGroup(cfg, n, ctx.workers) as group:
            async with Publisher(ep.grpc_publish, 1, 1) as one:
                epoch, offset = position_of(await one.publish())
            async with Publisher(ep.grpc_publish, _BATCH, 8) as pub:
                back = await run_count(pub, calls, 8, limit_s=60)
            if back.errors:
                raise TargetFailed(f"publishing the back events failed: {back.first_error}")
            path = resume_path(ep.ws.path, "package_updates", epoch, offset)
            t0 = time.time_ns() + 200_000_000
            group.broadcast({"cmd": "window", "t0": t0, "t1": t0 + int(p.w6_limit_s * 1e9)})
            live_task = asyncio.create_task(
                _live(ep.grpc_publish, p, t0, stop=lambda: group.caught_up() >= n)
            )
            try:
                await asyncio.sleep(max(0.0, (t0 - time.time_ns()) / 1e9))
                cpu0, wall0 = _cpu_now(ctx, ep.pid), time.monotonic()
                conn = await group.connect(n, limit_s=60 + n / 50, path=path)
                if conn["ok"] < n:
                    errors = conn["errors"]
                    raise TargetFailed(f"only {conn['ok']}/{n} subscribers connected: {errors}")
                live = await live_task
                cpu1, wall1 = _cpu_now(ctx, ep.pid), time.monotonic()
            finally:
                live_task.cancel()
                await asyncio.gather(live_task, return_exceptions=True)
            expect = back.events + live.issued_events
            deadline = time.time_ns() + int(p.drain_s * 1e9)
            finish = {"cmd": "finish", "expect": expect, "deadline": deadline,
                      "quiet_s": p.quiet_s, "end_window": True}  # fmt: skip
            group.broadcast(finish)
            results = await group.results(limit_s=p.drain_s + 30)
    seconds = max(1e-3, wall1 - wall0)
    m = _metrics(results, back.events, back.events + live.events, p.w6_live_rate, seconds)
    server, server_core, loadgen_core = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    m.update(CpuWindow(server, server_core, loadgen_core, seconds).metrics())
    m["live_s"] = round(seconds, 2)
    m["core_history_size"] = history
    m["connect_s"] = conn["seconds"]
    return [(f"{n} subs, {p.w6_back:,} back + {p.w6_live_rate:g}/s live", m)]


async def _live(spec: Any, p: Any, t0: int, stop: Callable[[], bool]) -> PublishStats:
    async with Publisher(spec, 1, 4) as pub:
        return await run_paced(
            pub, p.w6_live_rate, t0, p.w6_limit_s, p.max_in_flight, p.drain_s, stop
        )


def _cpu_now(ctx: Context, pid: int) -> tuple[float, float, float]:
    """CPU seconds so far: the server's process tree, the server's and the load
    generator's cores (the latter per core), as :class:`CpuWindow` wants them."""
    n_load = max(1, len(ctx.cpus.loadgen))
    return (
        sample_tree(pid).cpu_s,
        cores_busy(ctx.cpus.server)[0],
        cores_busy(ctx.cpus.loadgen)[0] / n_load,
    )


def _metrics(
    results: list[dict[str, Any]], back: int, accepted: int, rate: float, seconds: float
) -> Metrics:
    rows = [row for r in results for row in r["catchup"]]
    conns = sum(int(r["connections"]) for r in results)
    received = sum(int(r["total"]) for r in results)
    recovered = [sum(int(r["also_total"][i]) for r in results) for i in range(len(_RECOVERED))]
    m: Metrics = {
        "subscribers": conns,
        "live_rate": rate,
        **catchup_metrics(rows, back),
        "received": received,
        "expected": accepted * conns,
        "lost": max(0, accepted * conns - received),
        "cut_off": sum(int(r["cut_off"]) for r in results),
        "recovered_true": recovered[0],
        "recovered_false": recovered[1],
        "loadgen_cpu_pct": round(max(float(r["cpu_window_s"]) for r in results) / seconds * 100, 1),
    }
    return m
