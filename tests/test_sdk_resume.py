"""Pure parts of the SDK, with plain calls: resume state, backoff, argument conversion."""

from __future__ import annotations

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clients.sdk import Backoff, Gap
from clients.sdk._convert import to_events, to_filter, to_since, to_topics
from clients.sdk._resume import ResumeState
from core.errors import InvalidArgument

PKG, ANOM = pb.TOPIC_PACKAGE_UPDATES, pb.TOPIC_ANOMALIES


def position(offset: int, epoch: str = "e1") -> pb.StreamPosition:
    return pb.StreamPosition(offset=offset, epoch=epoch)


def event(topic: int, offset: int, epoch: str = "e1") -> pb.Event:
    return pb.Event(topic=topic, position=position(offset, epoch))  # type: ignore[arg-type]


def confirmed(*states: tuple[int, pb.StreamPosition, bool]) -> spb.SubscriptionConfirmed:
    return spb.SubscriptionConfirmed(
        topics=[spb.TopicState(topic=t, position=p, recovered=r) for t, p, r in states]  # type: ignore[arg-type]
    )


def test_fresh_subscription_starts_from_the_confirmed_position() -> None:
    state = ResumeState([PKG, ANOM])
    assert state.request_since() == []
    assert state.confirm(confirmed((PKG, position(7), True), (ANOM, position(0, "e2"), True))) == []
    # A reconnect before any event resumes from there, so nothing published meanwhile is lost.
    since = {entry.topic: entry.position for entry in state.request_since()}
    assert since == {PKG: position(7), ANOM: position(0, "e2")}


def test_accept_skips_duplicates_by_offset_and_remembers_the_last() -> None:
    state = ResumeState([PKG], {PKG: position(3)})
    assert not state.accept(event(PKG, 2))
    assert not state.accept(event(PKG, 3))
    assert state.accept(event(PKG, 4))
    assert not state.accept(event(PKG, 4))
    assert state.positions == {PKG: position(4)}


def test_recovered_resume_reports_no_gap() -> None:
    state = ResumeState([PKG], {PKG: position(3)})
    assert state.confirm(confirmed((PKG, position(9), True))) == []
    assert state.positions == {PKG: position(3)}  # the backlog 4..9 follows
    assert state.accept(event(PKG, 4))


def test_new_epoch_is_a_gap_and_every_event_of_it_is_new() -> None:
    state = ResumeState([PKG], {PKG: position(3, "old")})
    gaps = state.confirm(confirmed((PKG, position(2, "new"), False)))
    assert gaps == [Gap("package_updates", position(3, "old"), position(2, "new"), "epoch_changed")]
    assert state.accept(event(PKG, 1, "new"))
    assert state.positions == {PKG: position(1, "new")}


def test_position_older_than_history_is_a_trimmed_gap() -> None:
    state = ResumeState([PKG], {PKG: position(3)})
    (gap,) = state.confirm(confirmed((PKG, position(50), False)))
    assert gap.reason == "history_trimmed"
    assert state.accept(event(PKG, 41))


def test_position_ahead_of_the_topic_restarts_from_its_end() -> None:
    state = ResumeState([PKG], {PKG: position(90)})
    (gap,) = state.confirm(confirmed((PKG, position(5), False)))
    assert gap.reason == "position_ahead"
    assert state.accept(event(PKG, 6))


def test_since_for_an_unsubscribed_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="not subscribed"):
        ResumeState([PKG], {ANOM: position(1)})


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, factor=2.0, jitter=0.5)
    assert backoff.delay(0) == 0.0
    assert [backoff.delay(n, lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff.delay(3, lambda: 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=2.0, maximum=1.0)


def test_conversions_accept_names_frames_and_dicts() -> None:
    assert to_topics("anomalies") == [ANOM]
    assert to_topics(["package_updates", PKG, "TOPIC_ANOMALIES"]) == [PKG, ANOM]
    events = to_events({"type": "package_update", "data": {"package_id": "p", "status": "lost"}})
    assert events[0].package_update.status == pb.PACKAGE_STATUS_LOST
    spec = to_filter({"package_ids": "p1", "tracking_numbers": ["a", "b"], "min_severity": "high"})
    assert list(spec.package_ids) == ["p1"]
    assert list(spec.tracking_numbers) == ["a", "b"]
    assert spec.min_severity == pb.SEVERITY_HIGH
    since = to_since({"anomalies": {"epoch": "e", "offset": 4}}, [ANOM])
    assert since == {ANOM: position(4, "e")}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: to_topics("parcels"), "unknown subscription type 'parcels'"),
        (lambda: to_topics([]), "at least one topic"),
        (lambda: to_events([]), "at least one event"),
        (lambda: to_events([42]), r"events\[0\]: expected an Event"),  # type: ignore[list-item]
        (lambda: to_filter({"colour": "red"}), "filter: unknown key 'colour'"),
        (lambda: to_filter({"min_severity": "huge"}), "filter.min_severity: 'huge' is not one of"),
        (lambda: to_since({"anomalies": {"offset": -1}}, [ANOM]), "since.anomalies"),
        (lambda: to_since({"anomalies": position(1)}, [PKG]), "not subscribed"),
    ],
)
def test_conversions_refuse_bad_input_naming_it(call: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        call()  # type: ignore[operator]
