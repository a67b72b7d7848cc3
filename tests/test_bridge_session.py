"""The bridge's pure parts with plain calls: a socket's session, the resume plan and
its runner over a fake source, the upstream's cache and confirmation handling."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import BridgeSettings
from bridge.frames import Frame, control, encodable, event_frame
from bridge.pages import Page
from bridge.resume import AskCore, GoLive, Replay, next_step, run_resume
from bridge.session import Session, State, is_stalled
from bridge.upstream import Upstream
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.positions import Gap, HasPosition, Position
from tests.events import package

PKG = pb.TOPIC_PACKAGE_UPDATES


def frame(offset: int, epoch: str = "e", topic: int = PKG) -> Frame:
    event = package(f"p{offset}")
    event.topic = topic  # type: ignore[assignment]
    event.position.CopyFrom(pb.StreamPosition(offset=offset, epoch=epoch))
    return event_frame(event)


def session(max_bytes: int = 1 << 20, batch: bool = False) -> tuple[Session, list[int]]:
    ready: list[int] = []
    return Session(
        "id", "/ws/connect", "", max_bytes=max_bytes, on_ready=lambda: ready.append(1), batch=batch
    ), ready


# --- the session ---------------------------------------------------------------------------


def test_take_writes_whole_frames_within_a_budget_and_counts() -> None:
    s, ready = session()
    s.sub.topics.add(PKG)
    frames = [frame(i) for i in range(1, 6)]
    for f in frames:
        assert s.send(f)
    assert ready == [1]  # once, when frames became pending
    size = len(frames[0].wire)
    first = s.take(2 * size + 1)
    assert first == frames[0].wire + frames[1].wire
    assert s.take(1 << 20) == b"".join(f.wire for f in frames[2:])
    assert s.take(1 << 20) == b""
    assert s.frames_sent == 5
    assert s.delivered(PKG)
    assert not s.delivered(pb.TOPIC_ANOMALIES)


def test_batch_mode_sends_one_array() -> None:
    s, _ = session(batch=True)
    for i in (1, 2):
        s.send(frame(i))
    data = s.take(1 << 20)
    assert data[0] == 0x81
    assert data.endswith(b"]")
    assert data.count(b'"package_update"') == 2


def test_the_byte_bound_overflows_the_queue() -> None:
    one = len(frame(1).wire)
    s, ready = session(max_bytes=3 * one)
    assert all(s.send(frame(i)) for i in (1, 2, 3))
    assert not s.send(frame(4))
    assert s.sub.overflowed
    assert ready == [1, 1]


def test_floors_hold_back_replayed_frames_then_lift() -> None:
    s, _ = session()
    s.hold_back(PKG, Position(3, "e"))
    assert [s.sub.offer(frame(i)) for i in (2, 3, 4, 5)] == [False, False, True, True]
    s.hold_back(PKG, Position(9, "e"))
    s.forget_topic(PKG)
    assert s.sub.offer(frame(6))  # the floor went with the topic


def test_closing_drops_and_counts_what_was_queued_once() -> None:
    s, _ = session()
    for i in (1, 2, 3):
        s.send(frame(i))
    assert s.begin_close(1013, "slow")
    assert not s.begin_close(1001, "again")
    assert (s.state, s.close_code, s.frames_dropped) == (State.CLOSING, 1013, 3)
    assert not s.send(control("pong"))
    assert s.take(1 << 20) == b""
    s.closed()
    assert s.state is State.CLOSED


def test_stalled_only_after_the_timeout() -> None:
    assert not is_stalled(None, 100.0, 1.0)
    assert not is_stalled(99.5, 100.0, 1.0)
    assert not is_stalled(99.0, 100.0, 1.0)  # exactly at the timeout
    assert is_stalled(98.9, 100.0, 1.0)


# --- the resume plan -------------------------------------------------------------------------


def test_plan_caught_up_goes_live_at_once() -> None:
    assert next_step(Position(5, "e"), Position(5, "e"), [], None) == GoLive(None)


def test_plan_replays_the_cache_then_asks_the_core_when_it_does_not_reach() -> None:
    cached = [frame(4), frame(5)]
    assert next_step(Position(3, "e"), Position(5, "e"), cached, None) == Replay(cached)
    assert next_step(Position(1, "e"), Position(5, "e"), None, None) == AskCore()


def test_plan_never_trusts_a_position_ahead_until_the_core_vouched_for_it() -> None:
    # Defect 6: ahead of the bridge's stream → ask the core, never "recovered".
    assert next_step(Position(6, "e"), Position(1, "e"), None, None) == AskCore()
    # The core said the topic is at 8: what was replayed up to 6 is real.
    assert next_step(Position(6, "e"), Position(1, "e"), None, Position(8, "e")) == AskCore()
    assert next_step(Position(8, "e"), Position(1, "e"), None, Position(8, "e")) == GoLive(
        Position(8, "e")
    )


def test_plan_with_another_epoch_or_no_stream_asks_the_core() -> None:
    assert next_step(Position(3, "old"), Position(5, "e"), None, None) == AskCore()
    assert next_step(Position(3, "e"), None, None, None) == AskCore()
    assert next_step(Position(0, "new"), Position(5, "e"), None, Position(0, "new")) == GoLive(
        Position(0, "new")
    )


class FakeSource:
    """The bridge's stream and the core as plain data."""

    def __init__(
        self, head: Position | None, cache: list[Frame], core: list[Frame], epoch: str
    ) -> None:
        self.head = head
        self.cache = cache
        self.core = core
        self.epoch = epoch
        self.asked: list[Position] = []

    def position(self, topic: int) -> Position | None:
        return self.head

    def cached_after(self, topic: int, after: HasPosition) -> list[Frame] | None:
        if not self.cache or self.cache[0].epoch != after.epoch:
            return None
        if not self.cache[0].offset <= after.offset + 1 <= self.cache[-1].offset + 1:
            return None
        return [f for f in self.cache if f.offset > after.offset]

    async def history_page(self, topic: int, since: HasPosition) -> Page:
        response = await self.history(topic, since)
        frames, bad = encodable(event_frame(e) for e in response.events)
        return Page(
            response.state, frames, bad, response.events[-1].position if response.events else None
        )

    async def history(self, topic: int, since: HasPosition) -> spb.HistoryResponse:
        self.asked.append(Position.of(since))
        latest = self.core[-1].offset if self.core else 0
        oldest = self.core[0].offset if self.core else 1
        if since.epoch != self.epoch:
            recovered, events = False, self.core[:2]
        elif since.offset > latest:
            recovered, events = False, []
        else:
            recovered = since.offset >= oldest - 1
            events = [f for f in self.core if f.offset > since.offset][:2]  # pages of two
        state = spb.TopicState(
            topic=PKG,
            position=pb.StreamPosition(offset=latest, epoch=self.epoch),
            recovered=recovered,
        )
        return spb.HistoryResponse(state=state, events=[_event(f) for f in events])


def _event(f: Frame) -> pb.Event:
    event = package(f"p{f.offset}")
    event.topic = PKG
    event.position.CopyFrom(pb.StreamPosition(offset=f.offset, epoch=f.epoch))
    return event


async def resume(
    source: FakeSource, since: Position
) -> tuple[list[tuple[bool, Position, str | None]], list[int], list[Position | None]]:
    told: list[tuple[bool, Position, str | None]] = []
    sent: list[int] = []
    live: list[Position | None] = []

    async def send_many(frames: Sequence[Frame]) -> None:
        sent.extend(f.offset for f in frames)

    await asyncio.wait_for(
        run_resume(
            PKG,
            since,
            source,
            send_many=send_many,
            tell=lambda r, p, why: told.append((r, p, why)),
            go_live=live.append,
        ),
        5,
    )
    return told, sent, live


async def test_runner_reads_the_core_then_the_cache_then_goes_live() -> None:
    core = [frame(i) for i in range(1, 11)]
    source = FakeSource(Position(10, "e"), core[6:], core, "e")  # cache: 7..10
    told, sent, live = await resume(source, Position(2, "e"))
    assert sent == list(range(3, 11))
    assert told == [(True, Position(10, "e"), None)]
    assert live == [None]
    assert source.asked == [Position(2, "e"), Position(4, "e")]  # two pages, then the cache


async def test_runner_tells_a_trimmed_history_and_sends_what_is_left() -> None:
    core = [frame(i) for i in range(5, 9)]
    told, sent, live = await resume(FakeSource(Position(8, "e"), [], core, "e"), Position(1, "e"))
    assert told == [(False, Position(1, "e"), "history_trimmed")]
    assert sent == [5, 6, 7, 8]
    assert live == [None]


async def test_runner_tells_a_position_ahead_and_loses_no_live_event() -> None:
    core = [frame(1)]
    told, sent, live = await resume(FakeSource(Position(1, "e"), core, core, "e"), Position(6, "e"))
    assert told == [(False, Position(1, "e"), "position_ahead")]
    assert sent == []
    assert live == [None]  # no floor: the next live frame (2) goes through


async def test_runner_tells_another_epoch_and_replays_the_new_one() -> None:
    core = [frame(i, "new") for i in (1, 2, 3)]
    told, sent, live = await resume(
        FakeSource(Position(3, "new"), [], core, "new"), Position(9, "old")
    )
    assert told == [(False, Position(0, "new"), "epoch_changed")]
    assert sent == [1, 2, 3]
    assert live == [None]


async def test_runner_ahead_of_a_lagging_bridge_holds_live_frames_back() -> None:
    core = [frame(i) for i in range(1, 7)]
    told, sent, live = await resume(FakeSource(Position(3, "e"), [], core, "e"), Position(3, "e"))
    # The bridge is at 3 and so is the socket: live at once, nothing asked.
    assert (told, sent, live) == ([(True, Position(3, "e"), None)], [], [None])
    # The bridge's stream is at 1; pages of two overshoot it, so the replay goes on to
    # the core's head and live frames up to it (2..6, still to come) are refused.
    told, sent, live = await resume(FakeSource(Position(1, "e"), [], core, "e"), Position(0, "e"))
    assert sent == [1, 2, 3, 4, 5, 6]
    assert live == [Position(6, "e")]


@given(
    st.integers(min_value=0, max_value=15),  # the socket's position (past 12: ahead)
    st.integers(min_value=1, max_value=12),  # the oldest event the core keeps
    st.integers(min_value=0, max_value=12),  # how far the bridge's stream got
    st.integers(min_value=0, max_value=6),  # cache size
)
def test_runner_never_sends_a_duplicate_or_skips_silently(
    since: int, oldest: int, head: int, cached: int
) -> None:
    latest = 12
    core = [frame(i) for i in range(min(oldest, latest + 1), latest + 1)]
    head = min(head, latest)
    cache = [frame(i) for i in range(max(1, head - cached + 1), head + 1)] if head else []
    source = FakeSource(Position(head, "e") if head else None, cache, core, "e")
    told, sent, live = asyncio.run(resume(source, Position(since, "e")))
    assert len(told) == 1
    recovered, position, _ = told[0]
    floor = live[0]
    # Live frames are the bridge's stream after its head, less those held back by the floor.
    live_from = (floor.offset if floor else head) + 1
    live_range = set(range(live_from, latest + 1))
    assert sent == sorted(set(sent))  # in order, no duplicate within the replay
    assert not set(sent) & live_range  # and none again live
    assert all(o < live_from for o in sent)  # the replay ends where live begins
    delivered = set(sent) | live_range
    start = since if recovered else max(position.offset, core[0].offset - 1)
    assert delivered == set(range(start + 1, latest + 1))  # no gap but the one told


# --- the upstream's cache and confirmations ----------------------------------------------


def upstream(cache_size: int = 3) -> tuple[Upstream, list[Frame], list[Gap]]:
    frames: list[Frame] = []
    gaps: list[Gap] = []
    overrides: dict[str, Any] = {"core": "127.0.0.1:1", "cache_size": cache_size}
    settings = BridgeSettings(**overrides)
    return Upstream(settings, frames.append, gaps.append), frames, gaps


def confirmed(offset: int, epoch: str, recovered: bool = True) -> spb.SubscriptionConfirmed:
    return spb.SubscriptionConfirmed(
        topics=[
            spb.TopicState(
                topic=PKG,
                position=pb.StreamPosition(offset=offset, epoch=epoch),
                recovered=recovered,
            )
        ]
    )


async def test_upstream_takes_the_confirmed_position_then_each_new_event_once() -> None:
    up, frames, gaps = upstream()
    up._confirmed(confirmed(2, "e"))
    assert up.position(PKG) == Position(2, "e")
    for offset in (2, 3, 3, 4):
        up._deliver(_event(frame(offset)))
    assert [f.offset for f in frames] == [3, 4]
    assert up.cached_after(PKG, Position(2, "e")) == frames
    assert up.cached_after(PKG, Position(3, "e")) == frames[1:]
    assert up.cached_after(PKG, Position(4, "e")) == []
    assert up.cached_after(PKG, Position(1, "e")) is None  # the cache does not reach back
    assert up.cached_after(PKG, Position(5, "e")) is None  # ahead
    assert up.cached_after(PKG, Position(3, "x")) is None  # another epoch
    assert gaps == []


async def test_upstream_cache_keeps_its_size_and_consecutive_offsets() -> None:
    up, _, _ = upstream(cache_size=3)
    up._confirmed(confirmed(0, "e"))
    for offset in range(1, 7):
        up._deliver(_event(frame(offset)))
    assert [f.offset for f in up.cache[PKG]] == [4, 5, 6]
    assert up.cached_after(PKG, Position(3, "e")) is not None
    assert up.cached_after(PKG, Position(2, "e")) is None


async def test_upstream_reports_a_lost_history_and_starts_the_new_epoch() -> None:
    up, frames, gaps = upstream()
    up._confirmed(confirmed(0, "old"))
    up._deliver(_event(frame(1, "old")))
    up._confirmed(confirmed(2, "new", recovered=False))  # the core restarted in memory
    assert [(g.reason, g.resume) for g in gaps] == [("epoch_changed", Position(0, "new"))]
    assert up.gaps == 1
    assert list(up.cache[PKG]) == []
    up._deliver(_event(frame(1, "new")))
    up._deliver(_event(frame(2, "new")))
    assert [(f.epoch, f.offset) for f in frames] == [("old", 1), ("new", 1), ("new", 2)]


async def test_upstream_ignores_a_topic_it_does_not_know() -> None:
    up, frames, _ = upstream()
    event = _event(frame(1))
    event.topic = 42  # type: ignore[assignment]
    up._deliver(event)
    assert frames == []


@pytest.mark.parametrize("recovered", [True, False])
async def test_upstream_confirmation_is_idempotent_when_nothing_was_lost(recovered: bool) -> None:
    up, _, gaps = upstream()
    up._confirmed(confirmed(5, "e"))
    up._confirmed(confirmed(5, "e", recovered=True))
    assert gaps == []
    assert up.state == "connected"
