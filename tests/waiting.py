"""Bounded waiting for state that is only observable by asking (HTTP status, counters)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 10.0) -> T:
    """Ask ``check`` every 20 ms until it returns something truthy.

    Raises TimeoutError after ``within`` seconds.
    """

    async def poll() -> T:
        # The state lives in another component; asking is the only way to see it.
        while not (result := await check()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return result

    return await asyncio.wait_for(poll(), within)
