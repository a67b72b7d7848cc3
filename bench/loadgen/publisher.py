"""Publishers: one event (or one batch) per call, paced or as fast as accepted.

They run in the harness process, pinned with the load generator. Each call's
body is a pre-built template whose latency placeholders are stamped with the
wall-clock time just before the call is issued, so latency is measured from the
moment the publisher hands the event to the system under test.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import grpc

from bench.events import grpc_publish_request, json_event, nats_publish, stamp
from bench.loadgen.nats import NatsConnection, NatsError

__all__ = ["PublishSpec", "PublishStats", "Publisher", "run_count", "run_max", "run_paced"]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass(frozen=True)
class PublishSpec:
    """Where and how a target accepts events: HTTP POST of one JSON event, gRPC
    ``Publish``, or NATS ``PUB`` on ``path`` (the subject) over TCP."""

    kind: Literal["http", "grpc", "nats"]
    host: str
    port: int
    path: str


@dataclass
class PublishStats:
    """What a publishing run did; ``events`` counts only accepted calls."""

    calls: int = 0
    events: int = 0
    issued_events: int = 0
    errors: int = 0
    first_error: str = ""
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    lag_us: list[int] = field(default_factory=list)


class Publisher:
    """A connection to one target's publish path.

    Each call sends ``batch`` events (one for HTTP). ``templates`` (gRPC only)
    replaces the package-update request: calls cycle through them in turn, and
    ``batch`` must be the number of events each one holds.
    """

    def __init__(
        self,
        spec: PublishSpec,
        batch: int,
        concurrency: int,
        templates: Sequence[bytes] = (),
    ) -> None:
        self.spec = spec
        self.batch = 1 if spec.kind == "http" else batch
        if spec.kind == "http":
            self._templates = [json_event()]
        elif spec.kind == "nats":
            self._templates = [nats_publish(spec.path, batch)]
        else:
            self._templates = list(templates) or [grpc_publish_request(batch)]
        self.template = self._templates[0]
        self._next = 0
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] | None = None
        self._nats: NatsConnection | None = None

    async def __aenter__(self) -> Publisher:
        s = self.spec
        if s.kind == "http":
            connector = aiohttp.TCPConnector(limit=self._concurrency + 4)
            self._session = aiohttp.ClientSession(
                f"http://{s.host}:{s.port}",
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=60),
            )
        elif s.kind == "nats":
            self._nats = NatsConnection(s.host, s.port)
            await self._nats.open()
        else:
            self._channel = grpc.aio.insecure_channel(f"{s.host}:{s.port}")
            self._call = self._channel.unary_unary(s.path)
            await asyncio.wait_for(self._channel.channel_ready(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._channel is not None:
            await self._channel.close(None)
        if self._nats is not None:
            await self._nats.close()

    async def publish(self, now_ns: int | None = None) -> bytes:
        """Publish one call's worth of events; return the gRPC response (b"" for the
        others); raise on any failure."""
        template = self._templates[self._next]
        self._next = (self._next + 1) % len(self._templates)
        body = stamp(template, now_ns)
        if self._nats is not None:
            await self._nats.request(body)
            return b""
        if self._session is not None:
            async with self._session.post(
                self.spec.path, data=body, headers={"content-type": "application/json"}
            ) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"HTTP {resp.status}")
            return b""
        assert self._call is not None
        return bytes(await self._call(body, timeout=60))


async def _one(pub: Publisher, stats: PublishStats) -> None:
    stats.issued_events += pub.batch
    try:
        await pub.publish()
    except (
        TimeoutError,
        grpc.aio.AioRpcError,
        aiohttp.ClientError,
        RuntimeError,
        NatsError,
        OSError,
    ) as exc:
        stats.errors += 1
        if not stats.first_error:
            stats.first_error = f"{type(exc).__name__}: {exc}"[:300]
        return
    stats.calls += 1
    stats.events += pub.batch


async def run_paced(
    pub: Publisher,
    rate: float,
    t0_ns: int,
    duration_s: float,
    max_in_flight: int,
    settle_s: float,
    stop: Callable[[], bool] | None = None,
) -> PublishStats:
    """Issue calls at ``rate``/s from ``t0_ns`` for ``duration_s`` (or until ``stop()``
    says so: it is asked before each call).

    At most ``max_in_flight`` calls are outstanding; a call that must wait for a
    slot is issued late, and its lateness is recorded in ``lag_us``. After the
    window, outstanding calls get ``settle_s`` more to finish.
    """
    stats = PublishStats()
    sem = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * duration_s)
    await asyncio.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
    cpu0 = _cpu_s()
    start = time.monotonic()
    end_ns = t0_ns + int(duration_s * 1e9)

    async def slot_call() -> None:
        try:
            await _one(pub, stats)
        finally:
            sem.release()

    for i in range(total):
        due = t0_ns + int(i * 1e9 / rate)
        delay = (due - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await sem.acquire()
        now = time.time_ns()
        if now > end_ns or (stop is not None and stop()):
            sem.release()
            break
        stats.lag_us.append(max(0, (now - due) // 1000))
        task = asyncio.create_task(slot_call())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=settle_s)
        for t in pending:
            t.cancel()
    stats.elapsed_s = time.monotonic() - start
    stats.cpu_s = _cpu_s() - cpu0
    return stats


async def run_max(
    pub: Publisher,
    t0_ns: int,
    duration_s: float,
    concurrency: int,
    gate: Callable[[], int] | None = None,
    ahead: int = 0,
) -> PublishStats:
    """Keep ``concurrency`` calls outstanding from ``t0_ns`` for ``duration_s``.

    With ``gate`` (the events the slowest subscriber has received), a call is
    issued only while fewer than ``ahead`` events are published but not yet
    received by every subscriber: "as fast as delivered" rather than "as fast as
    accepted", for systems whose Publish returns before the fan-out is done.
    """
    stats = PublishStats()
    await asyncio.sleep(max(0.0, (t0_ns - time.time_ns()) / 1e9))
    cpu0 = _cpu_s()
    start = time.monotonic()
    end = start + duration_s

    async def loop() -> None:
        while time.monotonic() < end:
            while gate is not None and stats.issued_events - gate() >= ahead:
                if time.monotonic() >= end:
                    return
                await asyncio.sleep(0.002)
            await _one(pub, stats)
            if stats.errors and not stats.calls:
                return

    await asyncio.wait_for(asyncio.gather(*(loop() for _ in range(concurrency))), duration_s + 65)
    stats.elapsed_s = time.monotonic() - start
    stats.cpu_s = _cpu_s() - cpu0
    return stats


async def run_count(pub: Publisher, calls: int, concurrency: int, limit_s: float) -> PublishStats:
    """Make ``calls`` calls, ``concurrency`` at a time, as fast as they are accepted;
    give up (TimeoutError) after ``limit_s``."""
    stats = PublishStats()
    cpu0 = _cpu_s()
    start = time.monotonic()
    todo = iter(range(calls))

    async def loop() -> None:
        for _ in todo:
            await _one(pub, stats)
            if stats.errors and not stats.calls:
                return

    await asyncio.wait_for(asyncio.gather(*(loop() for _ in range(concurrency))), limit_s)
    stats.elapsed_s = time.monotonic() - start
    stats.cpu_s = _cpu_s() - cpu0
    return stats
