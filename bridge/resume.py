"""Resuming a socket's topic after a position: a pure plan and a thin runner.

:func:`next_step` decides, from plain values, what a resume does next: replay
frames from the bridge's cache, ask the core's history, or go live (with a
floor when what was replayed is ahead of the bridge's own stream). The
runner, :func:`run_resume`, carries the steps out; going live happens with no
await after the decision, so the next live frame is the next offset: nothing
is sent twice and nothing is skipped. A resume the core cannot recover is told
(``recovered: false``, the reason, and where the stream continues) and goes on
with what the core still has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.frames import Frame, encodable
from bridge.pages import Page
from core.positions import GapReason, HasPosition, Position, after_gap, gap_reason

__all__ = ["AskCore", "GoLive", "Replay", "Report", "Source", "next_step", "run_resume"]


@dataclass(frozen=True, slots=True)
class Replay:
    """Send these cached frames (consecutive, after the socket's position)."""

    frames: Sequence[Frame]


@dataclass(frozen=True, slots=True)
class AskCore:
    """Read the next page of the core's history after the socket's position."""


@dataclass(frozen=True, slots=True)
class GoLive:
    """Subscribe to the bridge's stream now; refuse live frames up to ``floor``."""

    floor: Position | None


Step = Replay | AskCore | GoLive


def next_step(
    last: Position,
    head: Position | None,
    cached: Sequence[Frame] | None,
    core_head: Position | None,
) -> Step:
    """What to do for a socket whose last position on a topic is ``last``.

    ``head`` is the last position the bridge's stream saw on the topic (None:
    none yet); ``cached`` the bridge's cached frames after ``last`` (None: the
    cache does not reach back that far); ``core_head`` the core's latest
    position once the core answered this resume (None: not asked yet) — the
    positions up to it are real, which a socket's own claim may not be.
    """
    if head is not None and last.epoch == head.epoch:
        if last.offset == head.offset:
            return GoLive(None)
        if last.offset < head.offset:
            return Replay(cached) if cached else AskCore()
    if core_head is not None and last.epoch == core_head.epoch and last.offset >= core_head.offset:
        # Caught up with the core, ahead of the bridge's stream (or of another epoch
        # than it): that stream brings the rest; what was replayed is held back.
        return GoLive(last)
    return AskCore()


@dataclass(slots=True)
class Report:
    """What one resume did, for ``/ws/status``."""

    #: Frames replayed from the bridge's cache, and from the core's history.
    from_cache: int = 0
    from_core: int = 0
    #: Whether every event after the position could be replayed.
    recovered: bool = True
    #: Frames skipped because they could not be encoded.
    unencodable: int = 0


class Source(Protocol):
    """What a resume reads: the bridge's stream position and cache, and the core
    (:class:`bridge.upstream.Upstream`)."""

    def position(self, topic: int) -> Position | None: ...

    def cached_after(self, topic: int, after: HasPosition) -> list[Frame] | None: ...

    async def history_page(self, topic: int, since: HasPosition) -> Page:
        """The core's history of ``topic`` after ``since``, one page, as frames."""
        ...


async def run_resume(
    topic: int,
    since: Position,
    source: Source,
    *,
    send_many: Callable[[Sequence[Frame]], Awaitable[None]],
    tell: Callable[[bool, Position, GapReason | None], None],
    go_live: Callable[[Position | None], None],
) -> Report:
    """Replay what a socket missed on ``topic`` after ``since``, then go live.

    ``tell(recovered, position, reason)`` queues the ``subscribed`` frame: once
    before anything is replayed, and again only to report a gap. Raises
    :class:`core.errors.Unavailable` when the core is needed and unreachable.
    """
    last, told, core_head, report = since, False, None, Report()
    while True:
        head = source.position(topic)
        step = next_step(last, head, source.cached_after(topic, last), core_head)
        if isinstance(step, GoLive):
            if not told:
                tell(True, head or last, None)
            go_live(step.floor)
            return report
        if isinstance(step, Replay):
            if not told:
                tell(True, head or last, None)
                told = True
            frames, bad = encodable(step.frames)
            report.unencodable += bad
            report.from_cache += len(frames)
            await send_many(frames)
            last = Position.of(step.frames[-1])
            continue
        page = await source.history_page(topic, last)
        state = page.state
        core_head = Position.of(state.position)
        if not state.recovered:
            # Told once, before anything that follows; the stream continues after the gap.
            resumed = after_gap(last, core_head)
            tell(False, resumed, gap_reason(last, core_head))
            told, last, report.recovered = True, resumed, False
        elif not told:
            tell(True, core_head, None)
            told = True
        if page.last is not None:
            frames = page.frames
            report.unencodable += page.unencodable
            report.from_core += len(frames)
            await send_many(frames)
            last = Position.of(page.last)
        elif last.epoch == core_head.epoch and last.offset < core_head.offset:
            last = core_head  # nothing retained up to the head: nothing more to read
