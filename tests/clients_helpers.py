"""Helpers of the client tests (SDK, CLI, simulator) that are not fixtures."""

from __future__ import annotations

import asyncio

from clearpath.realtime.v1 import events_pb2 as pb
from clients.sdk import Backoff, Gap, Subscription

__all__ = ["FAST", "next_item", "run_cli"]

#: Reconnect quickly in tests.
FAST = Backoff(initial=0.05, maximum=0.5)


async def next_item(sub: Subscription, timeout: float = 5.0) -> pb.Event | Gap:
    """The subscription's next item, or TimeoutError."""
    return await asyncio.wait_for(anext(sub), timeout)


async def run_cli(*args: str) -> int:
    """``clearpath ARGS`` in a worker thread (its own event loop); the exit code."""
    from clients.cli.app import main

    def call() -> int:
        try:
            return main(list(args))
        except SystemExit as exc:  # argparse errors exit
            return int(exc.code or 0)

    return await asyncio.wait_for(asyncio.to_thread(call), 30)
