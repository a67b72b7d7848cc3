"""Reconnect delays: exponential backoff with jitter, one formula for every client.

The SDK's subscriptions and the bridge's upstream use :class:`Backoff`; the web
client's ``clients/web/src/backoff.ts`` implements the same formula: attempt
``n`` (1-based) waits ``base(n) * (1 - jitter * r)`` with
``base(n) = min(maximum, initial * factor ** (n - 1))`` and ``r`` uniform in
[0, 1). Pure; no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """How long a subscription waits before its n-th consecutive reconnect attempt.

    The delay grows ``initial * factor**n`` up to ``maximum`` seconds, and a
    random ``jitter`` share of it is taken off so that many clients cut off
    together do not come back together. ``max_attempts`` consecutive failures
    (None: no limit) end the subscription with the last error.
    """

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("Backoff needs 0 < initial <= maximum")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Backoff needs factor >= 1 and 0 <= jitter <= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Backoff.max_attempts must be at least 1 (or None)")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt ``attempt`` (0 for the first one)."""
        if attempt <= 0:
            return 0.0
        ceiling = min(self.maximum, self.initial * self.factor ** (attempt - 1))
        return ceiling * (1 - self.jitter * rand())
