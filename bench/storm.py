"""W5: a reconnect storm. The bridge is killed under its clients and restarted.

``w5_clients`` browsers (C load generators implementing the web client's
reconnect schedule, ``clients/web/src/client.ts`` and ``backoff.ts``: attempt n
waits ``min(max, initial * factor^(n-1)) * (1 - jitter * r)``, attempts restart
once a socket heard anything, no limit on attempts within the run, 10 s to open a
socket) are connected to
``/ws/packages`` of ``clearpath bridge`` (``--workers w5_bridge_workers``);
events are published through the core at ``w5_rate`` a second all along; each
client tracks its last position. The bridge's process group is killed (SIGKILL)
and, ``w5_down_s`` later, started again on the same port; the clients reconnect
with ``?since=package_updates:EPOCH:OFFSET``. Once every client is back,
resumed and live, publishing goes on ``w5_after_s`` more, then stops, and every
client must reach the last event. Figures, per jitter share:

- time from the kill until every client is connected again (``welcome``), until
  it is resumed (``subscribed`` with ``recovered: true``; p50/p99/max) and until
  it receives an event published after the restart (live again);
- exactly once: gaps and duplicates in each client's offsets over the whole run,
  and how far behind the last event a client ended;
- refusals: HTTP statuses other than 101 (503: full, 429: per address) — none is
  expected — beside the connection refusals of the outage itself;
- clients that gave up (every attempt spent) and resumes answered
  ``recovered: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc

from bench.loadgen.cgen import GenGroup, build_wsgen
from bench.loadgen.publisher import Publisher, PublishStats
from bench.scale import (
    FD_BUDGET,
    WatchedServer,
    bridge_env,
    core_address,
    gen_shares,
    listen_overflows,
    server_cpus,
    wait_ready,
)
from bench.scale_config import ScaleParams
from bench.scale_stats import Hist, hist_count, hist_max, hist_quantile, merge_reports
from bench.targets.base import Endpoint, Target, TargetFailed
from bench.targets.scale import BridgeTarget

if TYPE_CHECKING:
    from bench.workloads import Context

__all__ = ["behind", "timeout_w5", "w5"]

Metrics = dict[str, Any]


def behind(last_offsets: Hist, head: int) -> tuple[int, int]:
    """(clients whose last offset is below ``head``, events they miss in all)."""
    clients = sum(n for offset, n in last_offsets if offset < head)
    events = sum((head - offset) * n for offset, n in last_offsets if offset < head)
    return clients, events


class _Paced:
    """Publishes one event per call at ``rate`` a second until :meth:`stop`."""

    def __init__(self, pub: Publisher, rate: float) -> None:
        self.pub = pub
        self.rate = rate
        self.stats = PublishStats()
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(64)
        self._calls: set[asyncio.Task[None]] = set()
        self.task = asyncio.create_task(self._run())

    async def _one(self) -> None:
        self.stats.issued_events += 1
        try:
            await self.pub.publish()
        except (TimeoutError, grpc.aio.AioRpcError, aiohttp.ClientError, RuntimeError) as exc:
            self.stats.errors += 1
            self.stats.first_error = self.stats.first_error or f"{type(exc).__name__}: {exc}"[:300]
        else:
            self.stats.events += 1
        finally:
            self._slots.release()

    async def _run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._one())
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
            i += 1
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=10)

    async def stop(self) -> PublishStats:
        self._stop.set()
        await self.task
        return self.stats


def _q(hist: Hist, q: float) -> float | None:
    value = hist_quantile(hist, q)
    return None if value is None else round(value / 1000, 3)


@dataclass
class _Storm:
    """What one storm measured on the harness side."""

    kill_ns: int = 0
    listening_ns: int = 0
    recovered: bool = False
    recover_wait_ns: int = 0
    head: int = -1
    drained: bool = False
    failed: int = 0
    stats: PublishStats = field(default_factory=PublishStats)
    log: dict[str, int] = field(default_factory=dict)
    overflows: int = 0


def _gen_args(host: str, port: int, sp: ScaleParams, jitter: float) -> dict[str, object]:
    return {"host": host, "port": port, "path": "/ws/packages", "mode": "storm",
            "topic": "package_updates", "jitter": jitter, "initial_ms": sp.initial_ms,
            "max_ms": sp.max_ms, "factor": sp.factor, "max_attempts": sp.max_attempts,
            "connect_timeout_ms": sp.connect_timeout_ms}  # fmt: skip


async def _sleep_until(ns: int) -> None:
    await asyncio.sleep(max(0.0, (ns - time.time_ns()) / 1e9))


async def _kill_and_restart(
    ctx: Context, bridge: WatchedServer, core: str, port: int, sp: ScaleParams, kill_ns: int
) -> WatchedServer:
    """SIGKILL ``bridge``'s process group at ``kill_ns``; ``w5_down_s`` later start a
    new one on the same port; return it once it listens."""
    await _sleep_until(kill_ns)
    assert bridge.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(bridge.proc.pid, signal.SIGKILL)
    await bridge.stop()
    await _sleep_until(kill_ns + int(sp.w5_down_s * 1e9))
    target = BridgeTarget(core, workers=sp.w5_bridge_workers, port=port, env=bridge_env(FD_BUDGET))
    target.ready_timeout_s = 60.0
    restarted = WatchedServer(target, server_cpus(ctx))
    await restarted.start()
    return restarted


async def _run_storm(
    ctx: Context, gens: GenGroup, core_ep: Endpoint, bridge: WatchedServer, port: int,
    out: _Storm,
) -> WatchedServer:  # fmt: skip
    """Publish, kill, restart, wait for the clients; the bridge running at the end."""
    sp, n = ctx.scale, ctx.scale.w5_clients
    assert core_ep.grpc_publish is not None
    async with Publisher(core_ep.grpc_publish, 1, 1) as pub:
        paced = _Paced(pub, sp.w5_rate)
        t_pub = time.time_ns()
        ok, prog = await gens.wait_for(lambda p: p["positioned"] >= n, sp.w5_before_s + 20)
        if not ok:
            await paced.stop()
            raise TargetFailed(f"only {prog['positioned']}/{n} clients got an event")
        out.kill_ns = max(t_pub + int(sp.w5_before_s * 1e9), time.time_ns() + 200_000_000)
        overflows = listen_overflows()
        gens.broadcast(f"kill {out.kill_ns}")
        bridge = await _kill_and_restart(ctx, bridge, core_address(core_ep), port, sp, out.kill_ns)
        out.listening_ns = time.time_ns()
        gens.broadcast(f"live {out.listening_ns}")
        out.recovered, prog = await gens.wait_for(
            lambda p: p["resumed"] + p["failed"] >= n and p["live"] + p["failed"] >= n,
            sp.w5_recover_limit_s,
        )
        out.failed = prog["failed"]
        out.overflows = listen_overflows() - overflows
        out.recover_wait_ns = time.time_ns()
        await asyncio.sleep(sp.w5_after_s)
        out.stats = await paced.stop()
    await asyncio.sleep(0.5)
    out.head = gens.progress()["max_offset"]
    out.drained, _ = await gens.wait_for(lambda p: p["min_offset"] >= out.head, sp.drain_limit_s)
    return bridge


async def _storm(ctx: Context, target: Target, sp: ScaleParams, jitter: float) -> Metrics:
    n, workers = sp.w5_clients, sp.w5_bridge_workers
    binary = build_wsgen()
    out = _Storm()
    async with WatchedServer(target, server_cpus(ctx)) as core_ep:
        first = BridgeTarget(
            core_address(core_ep), workers=workers, port=0, env=bridge_env(FD_BUDGET)
        )
        bridge = WatchedServer(first, server_cpus(ctx))
        await bridge.start()
        try:
            assert first.bound is not None
            host, port = first.bound
            await wait_ready(host, port, workers, 60.0)
            extra = _gen_args(host, port, sp, jitter)
            shares = gen_shares(n, sp.w5_loadgens, sp.w5_open_rate, ctx.cpus.loadgen, extra)
            async with GenGroup(binary, shares) as gens:
                ok, prog = await gens.wait_for(
                    lambda p: p["welcomed"] >= n, n / sp.w5_open_rate * 2 + 30
                )
                if not ok:
                    raise TargetFailed(f"only {prog['welcomed']}/{n} storm clients connected")
                bridge = await _run_storm(ctx, gens, core_ep, bridge, port, out)
                reports = await gens.stop()
            out.log = dict(bridge.counts)
        finally:
            await bridge.stop()
    return _metrics(sp, jitter, merge_reports(reports), out)


def _metrics(sp: ScaleParams, jitter: float, r: dict[str, Any], out: _Storm) -> Metrics:
    behind_clients, behind_events = behind(r["last_offsets"], out.head)
    restart_s = (out.listening_ns - out.kill_ns) / 1e9
    resumed_p99 = hist_quantile(r["resumed_ms"], 99)
    m: Metrics = {
        "clients": sp.w5_clients,
        "jitter": jitter,
        "bridge_workers": sp.w5_bridge_workers,
        "rate": sp.w5_rate,
        "restart_s": round(restart_s, 2),
        "bridge_start_s": round(restart_s - sp.w5_down_s, 2),
        "outage_events": round(restart_s * sp.w5_rate),
        "all_recovered": out.recovered and out.failed == 0,
        "back": hist_count(r["back_ms"]),
        "back_p50_s": _q(r["back_ms"], 50),
        "back_p99_s": _q(r["back_ms"], 99),
        "all_back_s": _q(r["back_ms"], 100),
        "resumed": hist_count(r["resumed_ms"]),
        "resumed_p50_s": _q(r["resumed_ms"], 50),
        "resumed_p99_s": _q(r["resumed_ms"], 99),
        "resumed_max_s": _q(r["resumed_ms"], 100),
        "resumed_p99_after_restart_s": (
            None if resumed_p99 is None else round(resumed_p99 / 1000 - restart_s, 3)
        ),
        "live_p50_s": _q(r["live_ms"], 50),
        "live_p99_s": _q(r["live_ms"], 99),
        "live_max_s": _q(r["live_ms"], 100),
        "never_back": r["never_back"],
        "gave_up": r["gave_up"],
        "recovered_false": r["recovered_false"],
        "duplicates": r["duplicates"],
        "gap_events": r["gap_events"],
        "clients_with_gaps": r["clients_with_gaps"],
        "clients_with_duplicates": r["clients_with_duplicates"],
        "behind_clients_at_end": behind_clients,
        "behind_events_at_end": behind_events,
        "drained": out.drained,
        "refused_healthy": sum(int(v) for k, v in r["http_status"].items() if k in ("503", "429")),
        "http_status": r["http_status"],
        "connect_errors": r["connect_errors"],
        "close_codes": r["close_codes"],
        "error_codes": r["error_codes"],
        "listen_overflows": out.overflows,
        "attempts_p50": hist_quantile(r["back_attempts"], 50),
        "attempts_max": hist_max(r["back_attempts"]),
        "published_events": out.stats.events,
        "publish_errors": out.stats.errors,
        "recover_wait_s": round((out.recover_wait_ns - out.kill_ns) / 1e9, 2),
        "loadgen_cpu_s": r["cpu_s"],
        "loadgen_rss_mib": round(int(r.get("rss_kib", 0)) / 1024, 1),
        "bridge_log": out.log,
    }
    if out.stats.first_error:
        m["first_publish_error"] = out.stats.first_error
    return m


async def w5(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    """One storm per jitter share of ``w5_jitters``, each with fresh processes."""
    sp = ctx.scale
    out: list[tuple[str, Metrics]] = []
    if not sp.w5_clients:
        return out
    for jitter in sp.w5_jitters:
        label = f"{sp.w5_clients} clients, jitter {jitter:g}"
        out.append((label, await _storm(ctx, target, sp, jitter)))
    return out


def timeout_w5(sp: ScaleParams) -> float:
    """W5's hard limit: per jitter share, opening, publishing and every bounded wait."""
    one = (
        2 * sp.w5_clients / sp.w5_open_rate
        + sp.w5_before_s
        + sp.w5_down_s
        + sp.w5_recover_limit_s
        + sp.w5_after_s
        + sp.drain_limit_s
        + 200
    )
    return len(sp.w5_jitters) * one
