"""A token bucket: the rate limit of browser messages and of publishing identities."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; pure, clock passed in."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float, count: int = 1) -> bool:
        """Spend ``count`` tokens if there are that many (none spent otherwise)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False
