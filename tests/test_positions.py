"""The rules of positions and recovery, with plain calls and hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clearpath.realtime.v1 import events_pb2 as pb
from core.positions import (
    Cursors,
    Floors,
    Position,
    after_gap,
    gap_reason,
    is_new,
    resume_outcome,
)

epochs = st.sampled_from(["e1", "e2"])
offsets = st.integers(min_value=0, max_value=2**64 - 1)
positions = st.builds(Position, offsets, epochs)


def test_is_new_by_offset_within_an_epoch_and_always_across_epochs() -> None:
    assert is_new(Position(1, "a"), None)
    assert is_new(Position(2, "a"), Position(1, "a"))
    assert not is_new(Position(1, "a"), Position(1, "a"))
    assert not is_new(Position(0, "a"), Position(1, "a"))
    assert is_new(Position(1, "b"), Position(5, "a"))
    # Any object with offset and epoch: a protobuf position, say.
    assert is_new(pb.StreamPosition(offset=3, epoch="a"), Position(2, "a"))


@given(positions, positions)
def test_is_new_is_strict_and_total(p: Position, last: Position) -> None:
    if p.epoch == last.epoch:
        assert is_new(p, last) != (p.offset <= last.offset)
        assert not (is_new(p, last) and is_new(last, p))
    else:
        assert is_new(p, last)
        assert is_new(last, p)


def test_resume_outcome() -> None:
    latest = Position(10, "e")
    assert resume_outcome(Position(10, "e"), latest, oldest=5) is None  # caught up
    assert resume_outcome(Position(4, "e"), latest, oldest=5) is None  # 5.. all kept
    assert resume_outcome(Position(3, "e"), latest, oldest=5) == "history_trimmed"
    assert resume_outcome(Position(11, "e"), latest, oldest=5) == "position_ahead"
    assert resume_outcome(Position(2, "x"), latest, oldest=5) == "epoch_changed"
    # Nothing retained yet (oldest = latest + 1): only the head itself resumes.
    assert resume_outcome(Position(0, "e"), Position(0, "e"), oldest=1) is None
    assert resume_outcome(Position(1, "e"), Position(0, "e"), oldest=1) == "position_ahead"


@given(positions, st.integers(min_value=0, max_value=100), st.integers(min_value=1, max_value=50))
def test_recovered_exactly_when_every_later_event_is_retained(
    since: Position, head: int, kept: int
) -> None:
    latest = Position(head, "e1")
    oldest = max(1, head - kept + 1)
    retained = set(range(oldest, head + 1))
    outcome = resume_outcome(since, latest, oldest)
    wanted = set(range(since.offset + 1, head + 1)) if since.epoch == "e1" else None
    complete = wanted is not None and wanted <= retained and since.offset <= head
    assert (outcome is None) == complete


def test_after_gap_continues_where_every_following_event_is_new() -> None:
    assert after_gap(Position(7, "old"), Position(3, "new")) == Position(0, "new")
    assert after_gap(Position(9, "e"), Position(3, "e")) == Position(3, "e")
    assert after_gap(Position(1, "e"), Position(30, "e")) == Position(1, "e")
    assert gap_reason(Position(7, "old"), Position(3, "new")) == "epoch_changed"


@given(positions, positions)
def test_after_gap_admits_the_oldest_retained_event_and_the_next_live_one(
    since: Position, latest: Position
) -> None:
    resume = after_gap(since, latest)
    assert resume.epoch == latest.epoch
    assert resume.offset <= latest.offset or gap_reason(since, latest) == "history_trimmed"
    # The next live event after `latest` is always new after the resume point.
    if latest.offset < 2**64 - 1:
        assert is_new(Position(latest.offset + 1, latest.epoch), resume)


def test_cursors_start_from_the_confirmed_position_and_drop_duplicates() -> None:
    cursors = Cursors()
    assert cursors.confirm(1, Position(5, "e"), recovered=True) is None
    assert cursors.get(1) == Position(5, "e")
    assert not cursors.accept(1, Position(5, "e"))
    assert cursors.accept(1, Position(6, "e"))
    assert not cursors.accept(1, Position(6, "e"))
    assert cursors.get(1) == Position(6, "e")


def test_cursors_report_a_gap_and_move_past_it() -> None:
    cursors = Cursors({1: pb.StreamPosition(offset=8, epoch="old")})
    gap = cursors.confirm(1, Position(3, "new"), recovered=False)
    assert gap is not None
    assert (gap.reason, gap.since, gap.resume) == (
        "epoch_changed",
        Position(8, "old"),
        Position(0, "new"),
    )
    assert cursors.accept(1, Position(1, "new"))  # the new epoch's events are all new
    assert cursors.confirm(1, Position(3, "new"), recovered=True) is None


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=60))
def test_cursor_delivers_each_offset_once_in_any_replay_order(arrivals: list[int]) -> None:
    cursors = Cursors()
    delivered = [o for o in arrivals if cursors.accept(1, Position(o, "e"))]
    assert delivered == sorted(set(delivered))  # strictly increasing: no duplicate, no reorder
    assert len(delivered) == len(set(delivered))


def test_floors_refuse_replayed_events_then_lift() -> None:
    floors = Floors()
    assert not floors
    floors.raise_to(1, Position(5, "e"))
    assert floors
    assert not floors.admits(1, Position(4, "e"))
    assert not floors.admits(1, Position(5, "e"))
    assert floors.admits(2, Position(1, "e"))  # other topics are not held
    assert floors.admits(1, Position(6, "e"))
    assert not floors  # lifted by the first new event
    assert floors.admits(1, Position(1, "e"))  # and no longer checked
    floors.raise_to(1, Position(5, "e"))
    assert floors.admits(1, Position(1, "other"))  # another epoch is new
    floors.raise_to(3, Position(1, "e"))
    floors.discard(3)
    assert not floors
