"""A subscriber worker process: many lean connections, driven by JSON lines on stdin.

Started by the harness as ``python -m bench.loadgen.worker '<config json>'``. It
speaks one JSON object per line on stdin (commands) and stdout (replies):

* ``{"cmd": "connect", "n": N}``: open N more connections; reply ``connected``
  (``"path": P`` opens them on that WebSocket path instead of the configured one).
* ``{"cmd": "window", "t0": ns, "t1": ns}``: count events received in [t0, t1]
  and read CPU time and unread socket bytes at both ends; from then on, report
  ``{"event": "progress", "min": M, "caught_up": C}`` (the fewest events any
  connection the server has not cut off has; how many resuming connections caught
  up) every 20 ms, so a publisher can stay a bounded number of events ahead.
* ``{"cmd": "finish", "expect": E|null, "deadline": ns, "quiet_s": s}``: wait
  until every connection has E events, or nothing arrived for ``quiet_s``, or the
  deadline; reply ``result`` and exit. With ``"end_window": true`` a window still
  open ends now (CPU and unread bytes are read now) instead of being waited for.
  ``{"cmd": "close"}`` replies at once.

The worker also exits by itself after ``max_lifetime_s`` or when stdin closes.

WebSocket options in the config: ``ws_proto: "nats"`` (NATS inside the socket,
subscribed to ``nats_subject``); ``read_bytes_per_s`` (slowed readers);
``catchup_back`` and ``catchup_fresh_ms`` (note when each connection caught up
after a resume); ``count_also`` (other strings to count, e.g. ``"map_update"``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from typing import Any

from bench.loadgen.h2_client import GrpcStreamSubscriber
from bench.loadgen.tally import Tally
from bench.loadgen.ws_client import WsSubscriber
from bench.loadgen.ws_variants import (
    CatchupWsSubscriber,
    NatsWsSubscriber,
    ThrottledWsSubscriber,
)

__all__ = ["least_events", "main"]

Conn = WsSubscriber | GrpcStreamSubscriber


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.tally = Tally(also=tuple(w.encode() for w in cfg.get("count_also", ())))
        self.conns: list[Conn] = []
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.cpu_t0 = self.cpu_t1 = 0.0
        self.unread_t1 = 0
        self.unread_t1_max = 0
        self.last_rx_total = -1
        self.last_rx_change = time.monotonic()

    def _make(self, index: int) -> Conn:
        cfg = self.cfg
        sample = index % max(1, int(cfg["sample_every"])) == 0
        if cfg["kind"] == "ws":
            host, port, path, tally = cfg["host"], int(cfg["port"]), cfg["path"], self.tally
            wait_first = bool(cfg.get("wait_first", False))
            if cfg.get("ws_proto") == "nats":
                return NatsWsSubscriber(
                    host, port, path, tally, sample=sample, subject=cfg["nats_subject"]
                )
            if cfg.get("read_bytes_per_s"):
                return ThrottledWsSubscriber(
                    host, port, path, tally, sample=sample, wait_first_frame=wait_first,
                    bytes_per_s=float(cfg["read_bytes_per_s"]),
                    rcvbuf=int(cfg.get("read_rcvbuf", 0)),
                )  # fmt: skip
            if cfg.get("catchup_back"):
                return CatchupWsSubscriber(
                    host, port, path, tally, sample=sample, wait_first_frame=wait_first,
                    back=int(cfg["catchup_back"]),
                    fresh_ns=int(float(cfg.get("catchup_fresh_ms", 250)) * 1e6),
                )  # fmt: skip
            return WsSubscriber(
                cfg["host"],
                int(cfg["port"]),
                cfg["path"],
                self.tally,
                sample=sample,
                wait_first_frame=bool(cfg.get("wait_first", False)),
            )
        return GrpcStreamSubscriber(
            f"{cfg['host']}:{cfg['port']}",
            cfg["path"],
            bytes.fromhex(cfg["request_hex"]),
            self.tally,
            sample=sample,
        )

    async def _open(self, index: int, sem: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        timeout = float(self.cfg.get("connect_timeout", 10.0))
        async with sem:
            proto = self._make(index)
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: proto, self.cfg["host"], int(self.cfg["port"])),
                    timeout,
                )
                await asyncio.wait_for(proto.ready, timeout)
            except (TimeoutError, OSError, ConnectionError) as exc:
                self.failed += 1
                self.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
                proto.close()
                return
            self.conns.append(proto)

    async def connect(self, n: int) -> dict[str, Any]:
        started = time.monotonic()
        sem = asyncio.Semaphore(int(self.cfg.get("connect_concurrency", 100)))
        base = int(self.cfg.get("index_offset", 0)) + len(self.conns) + self.failed
        await asyncio.gather(*(self._open(base + i, sem) for i in range(n)))
        return {
            "event": "connected",
            "ok": len(self.conns),
            "failed": self.failed,
            "errors": dict(self.errors.most_common(3)),
            "seconds": round(time.monotonic() - started, 3),
        }

    async def progress(self) -> None:
        while True:
            caught_up = sum(
                1 for c in self.conns if isinstance(c, CatchupWsSubscriber) and c.caught_up_ns
            )
            _emit({"event": "progress", "min": least_events(self.conns), "caught_up": caught_up})
            await asyncio.sleep(0.02)

    async def window(self, t0: int, t1: int) -> None:
        self.tally.set_window(t0, t1)
        await asyncio.sleep(max(0.0, (t0 - time.time_ns()) / 1e9))
        self.cpu_t0 = _cpu_s()
        await asyncio.sleep(max(0.0, (t1 - time.time_ns()) / 1e9))
        self.end_window()

    def end_window(self) -> None:
        """Read CPU time and unread socket bytes: the window's end."""
        self.cpu_t1 = _cpu_s()
        unread = [c.unread_bytes() for c in self.conns]
        self.unread_t1 = sum(unread)
        self.unread_t1_max = max(unread, default=0)

    async def finish(self, expect: int | None, deadline_ns: int, quiet_s: float) -> None:
        while time.time_ns() < deadline_ns:
            if expect is not None and all(c.events >= expect for c in self.conns):
                return
            total = self.tally.total
            now = time.monotonic()
            if total != self.last_rx_total:
                self.last_rx_total, self.last_rx_change = total, now
            elif now - self.last_rx_change >= quiet_s:
                return
            await asyncio.sleep(0.05)

    def result(self) -> dict[str, Any]:
        t = self.tally
        per_conn = [c.events for c in self.conns]
        lat = list(t.latencies)
        if len(lat) > 50_000:
            lat = random.Random(6).sample(lat, 50_000)
        ended = [c for c in self.conns if c.is_over() or _cut_off(c)]
        reasons: Counter[str] = Counter()
        for c in ended:
            if isinstance(c, WsSubscriber):
                reasons[f"ws close {c.close_code}"] += 1
            else:
                reasons[c.end_reason or "closed"] += 1
        return {
            "event": "result",
            "connections": len(self.conns),
            "failed": self.failed,
            "ended_early": len(ended),
            "cut_off": sum(1 for c in self.conns if _cut_off(c)),
            "also_total": t.also_total,
            "also_in_window": t.also_in_window,
            "catchup": _catchups(self.conns),
            "end_reasons": dict(reasons.most_common(5)),
            "total": t.total,
            "before_window": t.before_window,
            "in_window": t.in_window,
            "after_window": t.after_window,
            "per_conn_min": min(per_conn, default=0),
            "per_conn_max": max(per_conn, default=0),
            "latency_us": [v // 1000 for v in lat],
            "latency_seen": t.latency_seen,
            "latency_max_us": t.max_latency_ns // 1000,
            "cpu_window_s": round(self.cpu_t1 - self.cpu_t0, 4),
            "cpu_total_s": round(_cpu_s(), 4),
            "unread_at_t1_bytes": self.unread_t1,
            "unread_at_t1_max_conn_bytes": self.unread_t1_max,
        }

    def close_all(self) -> None:
        for c in self.conns:
            c.close()


def least_events(conns: list[Conn]) -> int:
    """The fewest events any connection has, among those the server has not cut off
    (a cut-off connection no longer holds the publisher back); among all if every
    one was cut off; 0 without connections."""
    live = [c.events for c in conns if not _cut_off(c)]
    return min(live or [c.events for c in conns], default=0)


def _cut_off(c: Conn) -> bool:
    """Whether the server ended this connection (before the worker closed it)."""
    return c.cut_off() if isinstance(c, WsSubscriber) else c.is_over()


def _catchups(conns: list[Conn]) -> list[list[int]]:
    """``[ms to caught up or -1, events then, events now, ms to the back events or -1]``
    per resuming connection (ms from its connect)."""
    return [
        [
            (c.caught_up_ns - c.opened_ns) // 1_000_000 if c.caught_up_ns else -1,
            c.events_at_caught_up,
            c.events,
            (c.back_ns - c.opened_ns) // 1_000_000 if c.back_ns else -1,
        ]
        for c in conns
        if isinstance(c, CatchupWsSubscriber)
    ]


async def _serve(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker(cfg)
    window_task: asyncio.Task[None] | None = None
    progress_task: asyncio.Task[None] | None = None
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "connect":
            if "path" in cmd:
                worker.cfg["path"] = str(cmd["path"])
            _emit(await worker.connect(int(cmd["n"])))
        elif kind == "window":
            window_task = asyncio.create_task(worker.window(int(cmd["t0"]), int(cmd["t1"])))
            progress_task = asyncio.create_task(worker.progress())
        elif kind == "finish":
            if window_task is not None and cmd.get("end_window") and not window_task.done():
                window_task.cancel()
                worker.tally.set_window(worker.tally.t0_ns, time.time_ns())
                worker.end_window()
            elif window_task is not None:
                await window_task
            expect = cmd.get("expect")
            await worker.finish(
                None if expect is None else int(expect),
                int(cmd["deadline"]),
                float(cmd.get("quiet_s", 1.0)),
            )
            if progress_task is not None:
                progress_task.cancel()
            _emit(worker.result())
            break
        elif kind == "close":
            for task in (window_task, progress_task):
                if task is not None:
                    task.cancel()
            _emit(worker.result())
            break
    if progress_task is not None:
        progress_task.cancel()
    worker.close_all()
    await asyncio.sleep(0.05)


def main() -> None:
    cfg: dict[str, Any] = json.loads(sys.argv[1])
    cpus = cfg.get("cpus")
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    import resource as res

    _soft, hard = res.getrlimit(res.RLIMIT_NOFILE)
    res.setrlimit(res.RLIMIT_NOFILE, (hard, hard))
    lifetime = float(cfg.get("max_lifetime_s", 300.0))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(asyncio.wait_for(_serve(cfg), lifetime))
    except TimeoutError:
        _emit({"event": "error", "error": f"worker lifetime {lifetime}s exceeded"})
        sys.exit(3)


if __name__ == "__main__":
    main()
