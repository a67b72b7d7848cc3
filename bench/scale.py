"""W4: many idle WebSocket connections on one machine, and one event fanned out to all.

A core (the ``clearpath-workers`` target) and ``clearpath bridge --workers N`` run
pinned to the server core; ``w4_loadgens`` C load generators
(``bench/loadgen/c/wsgen.c``) on the load-generator core open ``w4_connections``
sockets to ``/ws/packages`` at ``w4_rate`` a second in all, each bound to one of
the loopback source addresses 127.0.0.2-9 (one address has ~28k ports towards
one destination), and idle, answering pings. Figures:

- RSS per connection: the bridge processes' RSS (summed) after minus before,
  over the connections open; the core's apart (it holds one stream per worker);
- time to open all: from the first connect to the last ``welcome``;
- how the kernel spread the sockets over the workers (``SO_REUSEPORT``);
- one event published through the core: max (and p50/p99) over the sockets of
  its receive time minus its publish time;
- the load generators' own RSS.

A second variant offers ``w4_cap_connections`` sockets to one bridge process
(``max_connections`` = ``w4_cap_max_connections``) to see what one process holds
under the 20,000 open-file cap and how it refuses the rest (HTTP 503, a reset,
or nothing: a connect timeout), whether it lives on, and what it logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.loadgen.cgen import GenGroup, build_wsgen
from bench.loadgen.publisher import Publisher
from bench.scale_config import SOURCE_ADDRESSES, ScaleParams
from bench.scale_stats import hist_count, hist_max, hist_quantile, merge_reports, spread
from bench.sysinfo import median_rss, process_children, sample_tree
from bench.targets.base import Endpoint, ServerProcess, Target, TargetFailed
from bench.targets.scale import BridgeTarget

if TYPE_CHECKING:
    from bench.workloads import Context

__all__ = [
    "FD_BUDGET",
    "WatchedServer",
    "bridge_env",
    "children",
    "core_address",
    "gen_shares",
    "listen_overflows",
    "server_cpus",
    "timeout_w4",
    "w4",
    "wait_ready",
]

Metrics = dict[str, Any]

#: Sockets one process may be given: the 20,000 open-file cap less what every
#: process holds besides (stdio, epoll, its upstream, listening sockets, logs).
FD_BUDGET = 19_500
#: Log lines worth counting in a bridge's output.
_WATCH = {
    "tracebacks": re.compile(r"Traceback"),
    "errors": re.compile(r"\bERROR\b|Too many open files|EMFILE"),
    "refusals": re.compile(r"refused a socket"),
    "no_pong": re.compile(r"no pong within"),
    "slow_consumers": re.compile(r"took nothing for"),
}
#: What the bridge logs at INFO about sockets it refused or dropped: counted, not errors.
_NOT_ERRORS = frozenset({"refusals", "no_pong", "slow_consumers"})


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


class WatchedServer(ServerProcess):
    """A :class:`ServerProcess` that also counts log lines of interest (``_WATCH``)
    and keeps the first error with its traceback (at most 40 lines)."""

    def __init__(self, target: Target, cpus: frozenset[int]) -> None:
        super().__init__(target, cpus)
        self.counts: Counter[str] = Counter()
        self.first_errors: list[str] = []
        self._keeping = False

    async def _drain_output(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            matched = False
            for name, pattern in _WATCH.items():
                if pattern.search(line):
                    self.counts[name] += 1
                    matched = matched or name not in _NOT_ERRORS
            if matched and not self.first_errors:
                self._keeping = True
            elif self._keeping and _LOG_LINE.match(line):
                self._keeping = False  # the next log record: the first error is whole
            if self._keeping and len(self.first_errors) < 40:
                self.first_errors.append(line[:300])


def bridge_env(max_connections: int) -> dict[str, str]:
    """The bridge settings of W4/W5: ``max_connections`` per process, and no cap per
    source address (every client here comes from 8 loopback addresses, not from
    one address each as browsers do)."""
    return {
        "CLEARPATH_BRIDGE_MAX_CONNECTIONS": str(max_connections),
        "CLEARPATH_BRIDGE_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    }


def core_address(ep: Endpoint) -> str:
    """``host:port`` of a core endpoint."""
    assert ep.grpc_publish is not None
    return f"{ep.grpc_publish.host}:{ep.grpc_publish.port}"


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the bridge pool's workers), from /proc."""
    return process_children().get(pid, [])


def server_cpus(ctx: Context) -> frozenset[int]:
    """W4's and W5's server side may use every core (several bridge processes are
    what ``--workers`` is for); empty (not pinned) when the run does not pin."""
    return ctx.cpus.server | ctx.cpus.loadgen


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listening socket's accept
    queue was full (``TcpExt: ListenOverflows``, machine-wide); 0 if unreadable."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


async def wait_ready(host: str, port: int, workers: int, limit_s: float) -> None:
    """Wait until ``/readyz`` answered 200 from every worker (each request on a new
    connection, which the kernel may hand to any worker; the worker is named in
    ``X-ClearPath-Worker``); TargetFailed after ``limit_s``."""
    seen: set[str] = set()
    deadline = time.monotonic() + limit_s
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise TargetFailed(f"only {len(seen)}/{workers} bridge workers ready in {limit_s}s")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(
                    f"http://{host}:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    await response.read()
                    if response.status == 200:
                        seen.add(response.headers.get("X-ClearPath-Worker", "1/1").split()[0])
                        continue
            await asyncio.sleep(0.05)


def gen_shares(
    n: int, procs: int, rate: float, cpus: frozenset[int], extra: dict[str, object]
) -> list[list[str]]:
    """``wsgen run`` arguments for ``procs`` processes sharing ``n`` connections and
    ``rate`` opens a second; each uses every source address. TargetFailed when a
    process would exceed :data:`FD_BUDGET`."""
    base, more = divmod(n, procs)
    if base + (1 if more else 0) > FD_BUDGET:
        raise TargetFailed(
            f"{n} connections over {procs} load generators is over {FD_BUDGET} "
            "sockets a process: give more load generators"
        )
    shares = []
    for i in range(procs):
        count = base + (1 if i < more else 0)
        args: dict[str, object] = {
            "n": count,
            "rate": max(1.0, rate * count / max(1, n)),
            "src": ",".join(SOURCE_ADDRESSES),
            "seed": i + 1,
            "report_ms": 200,
            **extra,
        }
        if cpus:
            args["cpus"] = ",".join(map(str, sorted(cpus)))
        shares.append([f"{k}={v}" for k, v in args.items()])
    return shares


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _s(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 2)


async def _fleet(ctx: Context, target: Target, sp: ScaleParams) -> Metrics:
    n, workers = sp.w4_connections, sp.w4_bridge_workers
    if math.ceil(n / workers) > FD_BUDGET:
        raise TargetFailed(f"{n} sockets over {workers} bridge workers: over {FD_BUDGET} each")
    binary = build_wsgen()
    async with WatchedServer(target, server_cpus(ctx)) as core_ep:
        bridge = BridgeTarget(
            core_address(core_ep), workers=workers, port=0, env=bridge_env(FD_BUDGET)
        )
        bridge.ready_timeout_s = 60.0
        bridge_proc = WatchedServer(bridge, server_cpus(ctx))
        async with bridge_proc:
            bep = bridge_proc.proc
            assert bep is not None
            assert bridge.bound is not None
            host, port = bridge.bound
            await wait_ready(host, port, workers, 60.0)
            await asyncio.sleep(1.0)
            pids = children(bep.pid) if workers > 1 else [bep.pid]
            fd0 = {pid: _fds(pid) for pid in pids}
            rss_w0 = {pid: sample_tree(pid).rss_bytes for pid in pids}
            rss0, core0 = await median_rss(bep.pid), sample_tree(core_ep.pid).rss_bytes
            cpu0, overflows0 = sample_tree(bep.pid).cpu_s, listen_overflows()
            shares = gen_shares(
                n,
                sp.w4_loadgens,
                sp.w4_rate,
                ctx.cpus.loadgen,
                # A socket that does not open is retried as a browser would.
                {"host": host, "port": port, "path": "/ws/packages", "mode": "idle",
                 "retry": 1, "connect_timeout_ms": sp.connect_timeout_ms,
                 "initial_ms": sp.initial_ms, "max_ms": sp.max_ms, "factor": sp.factor,
                 "max_attempts": sp.max_attempts},
            )  # fmt: skip
            async with GenGroup(binary, shares) as gens:
                opened, prog = await gens.wait_for(
                    lambda p: p["welcomed"] + p["failed"] >= n,
                    n / sp.w4_rate * 2 + 60,
                )
                cpu1, overflows1 = sample_tree(bep.pid).cpu_s, listen_overflows()
                await asyncio.sleep(2.0)
                rss1, core1 = await median_rss(bep.pid), sample_tree(core_ep.pid).rss_bytes
                per_worker = [_fds(pid) - fd0[pid] for pid in pids]
                rss_w = [sample_tree(pid).rss_bytes - rss_w0[pid] for pid in pids]
                open_now = gens.progress()["open"]
                async with Publisher(core_ep.grpc_publish, 1, 1) as pub:  # type: ignore[arg-type]
                    await pub.publish(time.time_ns())
                reached, _ = await gens.wait_for(
                    lambda p: p["markers"] >= p["open"], sp.marker_limit_s
                )
                reports = await gens.stop()
            alive = bridge_proc.alive()
            counts = dict(bridge_proc.counts)
    r = merge_reports(reports)
    welcomed = hist_count(r["open_ms"])
    loadgen_rss = sum(int(x["rss_kib"]) for x in reports) * 1024
    m: Metrics = {
        "connections": n,
        "connected": welcomed,
        "open_at_end": open_now,
        "all_opened": opened and welcomed == n,
        "open_s": round((r["last_welcome_ns"] - r["start_ns"]) / 1e9, 2) if welcomed else None,
        "open_p50_s": _s(hist_quantile(r["open_ms"], 50)),
        "bridge_cpu_s_opening": round(cpu1 - cpu0, 2),
        "bridge_cpu_ms_per_conn": round((cpu1 - cpu0) * 1000 / max(1, welcomed), 3),
        "listen_overflows": overflows1 - overflows0,
        "rss_per_conn_kib": round((rss1 - rss0) / max(1, open_now) / 1024, 2),
        "bridge_rss_before_mib": round(rss0 / 2**20, 1),
        "bridge_rss_after_mib": round(rss1 / 2**20, 1),
        "core_rss_delta_mib": round((core1 - core0) / 2**20, 1),
        "bridge_workers": workers,
        "per_worker_sockets": per_worker,
        "per_worker_rss_mib": [round(b / 2**20, 1) for b in rss_w],
        "worker_spread": spread(per_worker),
        "marker_reached": hist_count(r["marker_ms"]),
        "marker_all": reached,
        "marker_max_ms": round(int(r["marker_max_us"]) / 1000, 1),
        "marker_p50_ms": _ms(hist_quantile(r["marker_ms"], 50)),
        "marker_p99_ms": _ms(hist_quantile(r["marker_ms"], 99)),
        "loadgens": len(reports),
        "loadgen_rss_mib": round(loadgen_rss / 2**20, 1),
        "loadgen_rss_per_conn_bytes": round(loadgen_rss / max(1, welcomed)),
        "loadgen_cpu_s": r["cpu_s"],
        "failed": prog["failed"],
        "ended_early": prog["ended"],
        "retries": int(r["attempts"]) - n,
        "gave_up": r["gave_up"],
        "connect_errors": r["connect_errors"],
        "http_status": r["http_status"],
        "close_codes": r["close_codes"],
        "pings_answered": r["pings"],
        "bridge_alive": alive,
        "bridge_log": counts,
    }
    return m


async def _healthz(host: str, port: int, limit_s: float) -> bool:
    """Whether ``/healthz`` answers 200 within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(
                    f"http://{host}:{port}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.2)
    return False


async def _cap(ctx: Context, target: Target, sp: ScaleParams) -> Metrics:
    n = sp.w4_cap_connections
    binary = build_wsgen()
    async with WatchedServer(target, server_cpus(ctx)) as core_ep:
        bridge = BridgeTarget(
            core_address(core_ep), workers=1, port=0, env=bridge_env(sp.w4_cap_max_connections)
        )
        bridge_proc = WatchedServer(bridge, server_cpus(ctx))
        async with bridge_proc:
            bep = bridge_proc.proc
            assert bep is not None
            assert bridge.bound is not None
            host, port = bridge.bound
            await wait_ready(host, port, 1, 60.0)
            await asyncio.sleep(1.0)
            rss0 = await median_rss(bep.pid)
            procs = math.ceil(n / FD_BUDGET)
            shares = gen_shares(
                n,
                procs,
                sp.w4_rate,
                ctx.cpus.loadgen,
                # A socket the bridge does not answer within 5 s is given up on and
                # retried as a browser would, 5 attempts in all.
                {"host": host, "port": port, "path": "/ws/packages", "mode": "idle",
                 "retry": 1, "connect_timeout_ms": 5000, "initial_ms": sp.initial_ms,
                 "max_ms": sp.max_ms, "factor": sp.factor, "max_attempts": sp.max_attempts},
            )  # fmt: skip
            async with GenGroup(binary, shares) as gens:
                await gens.wait_for(
                    lambda p: p["welcomed"] + p["failed"] >= n,
                    n / sp.w4_rate * 2 + 60,
                )
                await asyncio.sleep(2.0)
                rss1 = await median_rss(bep.pid)
                fds = _fds(bep.pid)
                open_now = gens.progress()["open"]
                reports = await gens.stop()
            # The load generators are gone, and their sockets with them: the bridge
            # should serve again.
            healthy = await _healthz(host, port, 15.0)
            alive = bridge_proc.alive()
            counts = dict(bridge_proc.counts)
            first_errors = list(bridge_proc.first_errors)
    r = merge_reports(reports)
    connected = hist_count(r["open_ms"])
    return {
        "offered": n,
        "max_connections": sp.w4_cap_max_connections,
        "connected": connected,
        "open_at_end": open_now,
        # Neither connected nor refused with an HTTP status: reset, closed or timed out.
        "unanswered": n - connected - sum(int(v) for v in r["http_status"].values()),
        "bridge_fds": fds,
        "rss_mib": round(rss1 / 2**20, 1),
        "rss_per_conn_kib": round((rss1 - rss0) / max(1, open_now) / 1024, 2),
        "refused_http": r["http_status"],
        "connect_errors": r["connect_errors"],
        "retries": int(r["attempts"]) - n,
        "gave_up": r["gave_up"],
        "bridge_alive": alive,
        "healthz_after": healthy,
        "bridge_log": counts,
        "bridge_first_errors": first_errors,
        "open_s": round((r["last_welcome_ns"] - r["start_ns"]) / 1e9, 2),
        "max_open_ms": hist_max(r["open_ms"]),
    }


async def w4(ctx: Context, target: Target) -> list[tuple[str, Metrics]]:
    """W4's variants: the fleet, and (when sized) one process at its cap."""
    sp = ctx.scale
    out: list[tuple[str, Metrics]] = []
    if sp.w4_connections:
        label = f"{sp.w4_connections} idle, {sp.w4_bridge_workers} workers"
        out.append((label, await _fleet(ctx, target, sp)))
    if sp.w4_cap_connections:
        label = f"one process, {sp.w4_cap_connections} offered"
        out.append((label, await _cap(ctx, target, sp)))
    return out


def timeout_w4(sp: ScaleParams) -> float:
    """W4's hard limit: both variants' opening at the rate, doubled, plus margins."""
    opening = (sp.w4_connections + sp.w4_cap_connections) / sp.w4_rate
    return 2 * opening + 300 + sp.marker_limit_s
