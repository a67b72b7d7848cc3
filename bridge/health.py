"""Liveness and readiness of a bridge: the rules, as plain functions of plain values.

Liveness (``GET /healthz``) has no rule: the process answered, so its event loop
runs. It never depends on the core, so an orchestrator does not restart a bridge
for an outage of something else.

Readiness (``GET /readyz``) says whether a browser connecting now gets events.
The first check that fails is the reason (:func:`readiness`):

1. ``no upstream``: the bridge's Subscribe stream to the core is not connected.
2. ``core broker unavailable``: the core says so in its heartbeats.
3. ``canary late by Xs``: a canary of this bridge is overdue. Every
   ``canary_interval`` the bridge publishes a canary to itself through the core
   (the whole path an event takes: Publish, broker, the core's hub, its own
   stream); each must come back within ``canary_timeout`` of its publishing. A
   publish that failed counts as not back. Only the canary catches a core that
   keeps its connections open but delivers nothing (stuck, paused, a broken
   fan-out).
4. ``starting``: connected, but no canary has come back yet.

:class:`CanaryProbe` keeps the canary's books (what was sent when, what came
back); time is passed in (monotonic seconds), so every rule is tested with plain
calls in ``tests/test_health.py``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["CanaryProbe", "Readiness", "readiness"]

#: Unanswered canaries remembered (for their round trip); older ones are forgotten,
#: which only ever makes the oldest unanswered one look younger than it is.
_REMEMBERED = 1024


class CanaryProbe:
    """The canaries one bridge (``source``) sent and saw come back.

    ``sent`` is the last sequence number published (or tried), ``seen`` the last
    one that came back; ``round_trip`` is the seconds from publishing to receiving
    of the last one seen (None before any).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sent = 0
        self.seen = 0
        self.round_trip: float | None = None
        #: Publishes that failed (each counts as a canary that did not come back).
        self.failures = 0
        self.last_error = ""
        self._unanswered: deque[tuple[int, float]] = deque(maxlen=_REMEMBERED)
        self._sent_at: float | None = None
        self._seen_at: float | None = None

    def send(self, now: float) -> int:
        """A canary is published at ``now``: its sequence number."""
        self.sent += 1
        self._unanswered.append((self.sent, now))
        self._sent_at = now
        return self.sent

    def failed(self, error: str) -> None:
        """The last publish failed: that canary stays unanswered (and goes late)."""
        self.failures += 1
        self.last_error = error

    def receive(self, source: str, seq: int, now: float) -> float | None:
        """A canary arrived at ``now`` on the bridge's stream: its round trip in
        seconds when it is this bridge's and newer than the last one seen, else
        None (another bridge's, a repeat, or never sent)."""
        if source != self.source or not self.seen < seq <= self.sent:
            return None
        sent_at = None
        # A canary coming back answers every earlier one: the path works.
        while self._unanswered and self._unanswered[0][0] <= seq:
            number, at = self._unanswered.popleft()
            if number == seq:
                sent_at = at
        self.seen = seq
        self._seen_at = now
        if sent_at is not None:
            self.round_trip = now - sent_at
        return self.round_trip if sent_at is not None else None

    def overdue(self, now: float, interval: float, timeout: float) -> float | None:
        """Seconds past ``timeout`` that a canary is late at ``now``, or None.

        Late: the oldest unanswered canary was published more than ``timeout``
        ago; or, with none unanswered, none was published for ``interval +
        timeout`` (the next one is that late, the publishing itself stalled).
        None before the first canary.
        """
        if self._unanswered:
            due = self._unanswered[0][1] + timeout
        elif self._sent_at is not None:
            due = self._sent_at + interval + timeout
        else:
            return None
        return now - due if now > due else None

    def seen_age(self, now: float) -> float | None:
        """Seconds since the last canary came back (None before any)."""
        return None if self._seen_at is None else now - self._seen_at

    def status(self, now: float) -> dict[str, Any]:
        """The ``upstream.canary`` part of ``/ws/status``."""
        return {
            "source": self.source,
            "sent_seq": self.sent,
            "seen_seq": self.seen,
            "round_trip_seconds": _rounded(self.round_trip),
            "seen_age_seconds": _rounded(self.seen_age(now)),
            "unanswered": len(self._unanswered),
            "publish_failures": self.failures,
            "last_publish_error": self.last_error,
        }


@dataclass(frozen=True)
class Readiness:
    """Whether the bridge is ready, why not (``reason``), and its last canary."""

    ready: bool
    reason: str = ""
    round_trip: float | None = None
    seen_age: float | None = None

    def body(self) -> dict[str, Any]:
        """The JSON of ``/readyz``: nothing a stranger could use beyond this."""
        if not self.ready:
            return {"ready": False, "reason": self.reason}
        canary = {
            "round_trip_seconds": _rounded(self.round_trip),
            "age_seconds": _rounded(self.seen_age),
        }
        return {"ready": True, "canary": canary}


def readiness(
    *,
    connected: bool,
    core_broker_up: bool,
    canary: CanaryProbe,
    now: float,
    interval: float,
    timeout: float,
) -> Readiness:
    """The readiness rule (see the module docstring), at ``now``."""
    if not connected:
        return Readiness(False, "no upstream")
    if not core_broker_up:
        return Readiness(False, "core broker unavailable")
    late = canary.overdue(now, interval, timeout)
    if late is not None:
        return Readiness(False, f"canary late by {late:.1f}s")
    if not canary.seen:
        return Readiness(False, "starting")
    return Readiness(True, "", canary.round_trip, canary.seen_age(now))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)
