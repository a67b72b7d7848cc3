"""Publishing the model's events through the SDK at a steady rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from clearpath.realtime.v1 import events_pb2 as pb
from clients.sdk import Client, UnavailableError
from clients.simulator._model import NetworkModel

__all__ = ["run_simulator"]

log = logging.getLogger("clearpath.simulator")

#: Events per Publish call at most; a call carries about a tenth of a second's events.
MAX_BATCH = 500


async def run_simulator(
    target: str | Client | None = None,
    *,
    rate: float = 50.0,
    packages: int = 200,
    seed: int | None = None,
    stop: asyncio.Event | float | None = None,
    count: int | None = None,
    on_progress: Callable[[int], object] | None = None,
) -> int:
    """Publish a simulated logistics network's events until told to stop.

    ``target`` is a core address (default: ``$CLEARPATH_CORE`` or
    localhost:50051) or an open :class:`~clients.sdk.Client` (left open).
    ``rate`` is events per second, ``packages`` the packages in flight,
    ``seed`` makes the traffic reproducible. It runs until ``stop`` is set
    (an :class:`asyncio.Event`), for ``stop`` seconds (a number), after
    ``count`` events, or until cancelled. While the core is unreachable it
    retries the same batch with backoff. ``on_progress`` is called with the
    running total after each call. Returns the number of events published.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if count is not None and count < 0:
        raise ValueError("count must not be negative")
    loop = asyncio.get_running_loop()
    stopped = stop if isinstance(stop, asyncio.Event) else asyncio.Event()
    deadline = loop.time() + stop if isinstance(stop, int | float) else None
    model = NetworkModel(packages, seed)
    pending: deque[pb.Event] = deque()
    batch_size = max(1, min(MAX_BATCH, round(rate / 10)))
    started, sent = loop.time(), 0

    async def pause(seconds: float) -> None:
        if deadline is not None:
            seconds = min(seconds, deadline - loop.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), max(seconds, 0.0))

    def done() -> bool:
        over = deadline is not None and loop.time() >= deadline
        return stopped.is_set() or over or (count is not None and sent >= count)

    async with _client(target) as client:
        while not done():
            size = batch_size if count is None else min(batch_size, count - sent)
            while len(pending) < size:
                pending.extend(model.step(datetime.now(UTC)))
            batch = [pending.popleft() for _ in range(size)]
            if not await _publish(client, batch, pause, done):
                break
            sent += len(batch)
            if on_progress is not None:
                on_progress(sent)
            await pause(started + sent / rate - loop.time())
    log.info("simulator published %d events", sent)
    return sent


async def _publish(
    client: Client,
    batch: list[pb.Event],
    pause: Callable[[float], Awaitable[None]],
    done: Callable[[], bool],
) -> bool:
    """Publish ``batch``, retrying while the core is unavailable; False if stopped first."""
    delay = 0.5
    while True:
        try:
            await client.publish(batch)
            return True
        except UnavailableError as exc:
            log.warning("core unavailable (%s); retrying in %.1f s", exc, delay)
        await pause(delay)
        if done():
            return False
        delay = min(delay * 2, 10.0)


@contextlib.asynccontextmanager
async def _client(target: str | Client | None) -> AsyncIterator[Client]:
    if isinstance(target, Client):
        yield target
        return
    async with Client(target) as client:
        yield client
