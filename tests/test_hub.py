"""The hub, with plain calls: fan-out, filters, bounded queues and overflow."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.hub import Hub, Subscription


class Item(NamedTuple):
    topic: int
    text: str


def make(topics: set[int], capacity: int = 3, accepts=None):  # type: ignore[no-untyped-def]
    calls: list[int] = []
    sub: Subscription[Item] = Subscription(topics, capacity, lambda: calls.append(1), accepts)
    return sub, calls


def test_dispatch_reaches_only_subscribers_of_the_topic() -> None:
    hub: Hub[Item] = Hub()
    a, _ = make({1})
    b, _ = make({1, 2})
    c, _ = make({3})
    for sub in (a, b, c):
        hub.add(sub)
    assert hub.dispatch(Item(1, "x")) == 2
    assert hub.dispatch(Item(2, "y")) == 1
    assert a.drain() == [(1, "x")]
    assert b.drain() == [(1, "x"), (2, "y")]
    assert c.drain() == []
    assert hub.delivered == 3


def test_ready_is_signalled_on_empty_to_non_empty_only() -> None:
    hub: Hub[Item] = Hub()
    sub, calls = make({1}, capacity=10)
    hub.add(sub)
    hub.dispatch(Item(1, "a"))
    hub.dispatch(Item(1, "b"))
    assert len(calls) == 1
    sub.drain()
    hub.dispatch(Item(1, "c"))
    assert len(calls) == 2


def test_filter_refuses_items() -> None:
    hub: Hub[Item] = Hub()
    sub, _ = make({1}, accepts=lambda item: item[1] != "skip")
    hub.add(sub)
    hub.dispatch(Item(1, "skip"))
    hub.dispatch(Item(1, "keep"))
    assert sub.drain() == [(1, "keep")]


def test_overflow_marks_the_subscription_and_keeps_what_it_had() -> None:
    hub: Hub[Item] = Hub()
    slow, calls = make({1}, capacity=2)
    fast, _ = make({1}, capacity=100)
    hub.add(slow)
    hub.add(fast)
    for i in range(5):
        hub.dispatch(Item(1, str(i)))
    assert slow.overflowed
    assert len(calls) == 2  # once when it got its first item, once on overflow
    assert slow.drain() == [(1, "0"), (1, "1")]
    assert len(fast.drain()) == 5
    assert hub.overflows == 1
    hub.dispatch(Item(1, "late"))
    assert slow.drain() == []  # an overflowed subscription takes nothing more


def test_close_wakes_and_refuses() -> None:
    sub, calls = make({1})
    sub.close()
    assert calls == [1]
    assert not sub.offer(Item(1, "x"))


def test_remove_is_idempotent_and_counts_follow() -> None:
    hub: Hub[Item] = Hub()
    sub, _ = make({1, 2})
    hub.add(sub)
    hub.add(sub)
    assert hub.count(1) == 1
    hub.remove(sub)
    hub.remove(sub)
    assert hub.count(1) == 0
    assert hub.dispatch(Item(1, "x")) == 0
    assert hub.subscriptions() == set()


def test_topics_can_be_added_and_removed_one_at_a_time() -> None:
    hub: Hub[Item] = Hub()
    sub, _ = make(set(), capacity=10)
    hub.add(sub)
    hub.subscribe(sub, 2)
    hub.subscribe(sub, 2)
    assert hub.dispatch(Item(2, "a")) == 1
    assert hub.unsubscribe(sub, 2) == 1  # its queued item of that topic is dropped
    assert hub.unsubscribe(sub, 2) == 0
    assert hub.dispatch(Item(2, "b")) == 0
    assert sub.drain() == []
    assert sub.topics == set()


def sized(max_bytes: int, capacity: int | None = None) -> tuple[Subscription[Item], list[int]]:
    calls: list[int] = []
    sub: Subscription[Item] = Subscription(
        {1, 2}, capacity, lambda: calls.append(1), size=lambda i: len(i.text), max_bytes=max_bytes
    )
    return sub, calls


def test_a_byte_bound_overflows_at_the_first_item_past_it() -> None:
    sub, calls = sized(10)
    assert sub.offer(Item(1, "x" * 6))
    assert sub.offer(Item(1, "x" * 4))  # exactly at the bound
    assert sub.bytes == 10
    assert not sub.offer(Item(1, "y"))  # just past it
    assert sub.overflowed
    assert calls == [1, 1]
    assert [len(i.text) for i in sub.drain()] == [6, 4]
    assert sub.bytes == 0


def test_drain_within_bytes_takes_a_prefix_and_at_least_one() -> None:
    sub, _ = sized(100)
    for n in (3, 3, 3, 50):
        sub.offer(Item(1, "x" * n))
    assert [len(i.text) for i in sub.drain(7)] == [3, 3]
    assert sub.bytes == 53
    assert [len(i.text) for i in sub.drain(7)] == [3]
    assert [len(i.text) for i in sub.drain(7)] == [50]  # larger than the budget: alone
    assert sub.drain(7) == []
    assert sub.bytes == 0


def test_discard_and_clear_count_what_they_drop() -> None:
    sub, _ = sized(100)
    for item in (Item(1, "a"), Item(2, "bb"), Item(1, "c")):
        sub.offer(item)
    assert sub.discard(1) == 2
    assert sub.bytes == 2
    assert len(sub) == 1
    assert sub.clear() == 1
    assert sub.bytes == 0
    assert len(sub) == 0


def test_set_filter_replaces_the_filter() -> None:
    sub, _ = make({1}, capacity=10)
    sub.set_filter(lambda item: item.text != "no")
    assert not sub.offer(Item(1, "no"))
    sub.set_filter(None)
    assert sub.offer(Item(1, "no"))


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Subscription[Item]({1}, 0, lambda: None)
    with pytest.raises(ValueError, match="together"):
        Subscription[Item]({1}, None, lambda: None, max_bytes=10)


def test_after_an_overflow_the_first_refused_item_of_each_topic_is_kept() -> None:
    sub, _ = sized(4)
    assert sub.offer(Item(1, "aaaa"))
    assert not sub.offer(Item(2, "b"))  # overflows
    assert not sub.offer(Item(2, "c"))
    assert not sub.offer(Item(1, "d"))
    assert sub.refused == {2: Item(2, "b"), 1: Item(1, "d")}
    sub.recover()
    assert [sub.overflowed, sub.refused] == [False, None]
    assert sub.drain() == [Item(1, "aaaa")]
    assert sub.offer(Item(1, "e"))


def test_detach_stops_delivery_but_keeps_what_is_queued() -> None:
    hub: Hub[Item] = Hub()
    sub, _ = make({1}, capacity=10)
    hub.add(sub)
    hub.dispatch(Item(1, "kept"))
    hub.detach(sub, 1)
    assert hub.dispatch(Item(1, "missed")) == 0
    assert sub.topics == set()
    assert sub.drain() == [Item(1, "kept")]
    hub.subscribe(sub, 1)
    assert hub.dispatch(Item(1, "again")) == 1


def test_a_closed_subscription_stays_refusing_after_recover() -> None:
    sub, _ = make({1})
    sub.close()
    sub.recover()
    assert not sub.offer(Item(1, "x"))


def test_what_the_filter_refuses_after_an_overflow_is_not_counted_as_missed() -> None:
    # A floor refuses replayed duplicates: one arriving after an overflow is not missed.
    sub, _ = make({1, 2}, capacity=1, accepts=lambda item: item.text != "dup")
    assert sub.offer(Item(2, "a"))
    assert not sub.offer(Item(2, "b"))  # overflows on topic 2
    assert not sub.offer(Item(1, "dup"))  # the filter refuses it: not missed
    assert not sub.offer(Item(1, "c"))  # missed
    assert sub.refused == {2: Item(2, "b"), 1: Item(1, "c")}


# --- priority lanes and conflation --------------------------------------------------

URGENT, MAP, PKG = 2, 5, 1  # topic numbers as in the protos: anomalies, map_updates, packages


class Ev(NamedTuple):
    topic: int
    key: str | None  # conflation key (None: never conflated)
    seq: int  # position within the topic
    size: int = 10


def lanes(
    *,
    after: int | None = None,
    max_bytes: int = 10_000,
    capacity: int | None = None,
    counted: bool = False,
    urgent_after: int = 0,
) -> tuple[Subscription[Ev], list[int]]:
    """A subscription with the urgent lane for URGENT, and conflation by ``Ev.key``
    once ``after`` bytes (or, ``counted``, items) are queued (None: no conflation)."""
    calls: list[int] = []
    sub: Subscription[Ev] = Subscription(
        {URGENT, MAP, PKG},
        capacity,
        lambda: calls.append(1),
        urgent=frozenset({URGENT}),
        urgent_after=urgent_after,
        conflate=None if after is None else (lambda e: e.key),
        conflate_after=after or 0,
        size=None if counted else (lambda e: e.size),
        max_bytes=None if counted else max_bytes,
    )
    return sub, calls


def live(sub: Subscription[Ev]) -> list[Ev]:
    """What is queued, in drain order, without draining (white box)."""
    return [*(sub._urgent or ()), *(e for e in sub._queue if e is not None)]


def test_urgent_items_are_drained_before_normal_ones_and_the_lane_is_lazy() -> None:
    sub, calls = lanes()
    for i in range(3):
        sub.offer(Ev(MAP, None, i))
    assert sub._urgent is None  # an idle subscription keeps no second list
    sub.offer(Ev(URGENT, None, 0))
    sub.offer(Ev(PKG, None, 0))
    sub.offer(Ev(URGENT, None, 1))
    assert len(sub) == 6
    assert sub.bytes == 60
    assert [(e.topic, e.seq) for e in sub.drain()] == [
        (URGENT, 0),
        (URGENT, 1),
        (MAP, 0),
        (MAP, 1),
        (MAP, 2),
        (PKG, 0),
    ]
    assert calls == [1]  # ready once: empty to non-empty
    assert sub._urgent is None
    sub.offer(Ev(URGENT, None, 2))  # an urgent item into an empty queue wakes the owner
    assert calls == [1, 1]


def test_below_urgent_after_items_keep_their_order_and_above_it_jump_ahead() -> None:
    sub, _ = lanes(urgent_after=30)  # bytes: three items
    sub.offer(Ev(MAP, None, 0))
    sub.offer(Ev(URGENT, None, 0))  # 10 bytes queued: goes out with them anyway
    sub.offer(Ev(MAP, None, 1))
    assert sub._urgent is None
    sub.offer(Ev(MAP, None, 2))
    sub.offer(Ev(URGENT, None, 1))  # 40 bytes queued: the lane, with urgent@0 before it
    sub.offer(Ev(MAP, None, 3))
    sub.offer(Ev(URGENT, None, 2))  # the lane is not empty: it goes there too
    assert (len(sub), sub.bytes) == (7, 70)
    assert [(e.topic, e.seq) for e in sub.drain(max_items=4)] == [
        (URGENT, 0),
        (URGENT, 1),
        (URGENT, 2),
        (MAP, 0),
    ]
    sub.offer(Ev(URGENT, None, 3))  # the lane is empty again, 30 bytes queued
    assert [(e.topic, e.seq) for e in sub.drain()] == [(URGENT, 3), (MAP, 1), (MAP, 2), (MAP, 3)]
    sub.offer(Ev(URGENT, None, 4))
    assert [(e.topic, e.seq) for e in sub.drain()] == [(URGENT, 4)]


def test_drain_within_bytes_and_items_spans_both_lanes() -> None:
    sub, _ = lanes()
    for i in range(3):
        sub.offer(Ev(MAP, None, i))
    for i in range(2):
        sub.offer(Ev(URGENT, None, i))
    assert [(e.topic, e.seq) for e in sub.drain(30)] == [(URGENT, 0), (URGENT, 1), (MAP, 0)]
    assert sub.bytes == 20
    assert [(e.topic, e.seq) for e in sub.drain(max_items=1)] == [(MAP, 1)]
    assert sub.bytes == 10
    sub.offer(Ev(URGENT, None, 2, size=50))
    assert [(e.topic, e.seq) for e in sub.drain(30)] == [(URGENT, 2)]  # alone: larger than 30
    assert [(e.topic, e.seq) for e in sub.drain(30)] == [(MAP, 2)]
    assert (sub.bytes, len(sub)) == (0, 0)


def test_a_subscription_that_keeps_up_gets_every_item() -> None:
    sub, _ = lanes(after=100)
    for i in range(9):  # 90 bytes: below conflate_after
        sub.offer(Ev(MAP, "p1", i))
    assert [e.seq for e in sub.drain()] == list(range(9))
    assert sub.take_conflated() is None


def test_behind_a_newer_item_supersedes_the_queued_one_of_its_key_at_the_end() -> None:
    sub, _ = lanes(after=20)
    sub.offer(Ev(MAP, "p1", 0))
    sub.offer(Ev(MAP, "p2", 1))  # 20 bytes queued: behind from here
    sub.offer(Ev(MAP, "p1", 2))  # p1@0 was queued before: not superseded
    sub.offer(Ev(MAP, "p2", 3))
    sub.offer(Ev(MAP, "p1", 4))  # supersedes p1@2
    sub.offer(Ev(MAP, None, 5))  # no key: never conflated
    sub.offer(Ev(MAP, "p2", 6))  # supersedes p2@3
    assert len(sub) == 5
    assert sub.bytes == 50
    assert sub.take_conflated() == {MAP: 2}
    assert sub.take_conflated() is None  # taken: reset
    assert [e.seq for e in sub.drain()] == [0, 1, 4, 5, 6]  # the newest at the end, in order


def test_conflation_by_count_and_the_count_bound_still_applies() -> None:
    sub, _ = lanes(after=2, capacity=4, counted=True)
    for i in range(4):
        assert sub.offer(Ev(MAP, f"p{i}", i))  # 2 queued, then behind; 4 distinct keys
    assert sub.offer(Ev(MAP, "p3", 4))  # supersedes p3@3: still 4 queued
    assert not sub.offer(Ev(MAP, "p9", 5))  # a new key: past the bound, the policy applies
    assert sub.overflowed
    assert sub.refused == {MAP: Ev(MAP, "p9", 5)}
    assert [e.seq for e in sub.drain()] == [0, 1, 2, 4]


def test_a_superseding_item_that_would_pass_the_byte_bound_overflows_and_changes_nothing() -> None:
    sub, _ = lanes(after=10, max_bytes=30)
    sub.offer(Ev(MAP, "p1", 0))
    sub.offer(Ev(MAP, "p1", 1))
    sub.offer(Ev(MAP, "p2", 2))
    assert not sub.offer(Ev(MAP, "p1", 3, size=40))  # 30 - 10 + 40 > 30
    assert sub.overflowed
    assert sub.take_conflated() is None
    assert [e.seq for e in sub.drain()] == [0, 1, 2]


def test_urgent_items_are_never_conflated() -> None:
    sub, _ = lanes(after=0)  # always behind
    for i in range(5):
        sub.offer(Ev(URGENT, "same", i))
    assert [e.seq for e in sub.drain()] == list(range(5))
    assert sub.take_conflated() is None


def test_tombstones_are_compacted_so_the_queue_stays_bounded() -> None:
    sub, _ = lanes(after=0)
    for i in range(10_000):
        sub.offer(Ev(MAP, f"p{i % 3}", i))
    assert len(sub) == 3
    assert len(sub._queue) <= 8  # tombstones never outnumber live items for long
    assert sub._backlog is not None
    assert len(sub._backlog.slots) <= 3 + 64
    assert sub.take_conflated() == {MAP: 9_997}
    assert [e.seq for e in sub.drain()] == [9_997, 9_998, 9_999]


def test_stale_slots_of_drained_items_are_pruned() -> None:
    # Always behind, partly drained, every key new: slots of drained items go.
    sub, _ = lanes(after=0, max_bytes=10**9)
    sub.offer(Ev(MAP, "first", 0))
    for i in range(1, 5_000):
        sub.offer(Ev(MAP, f"p{i}", i))
        assert [e.seq for e in sub.drain(max_items=1)] == [i - 1]  # one stays queued
        assert sub._backlog is not None
        assert len(sub._backlog.slots) <= 2 * 2 + 64


def test_discard_and_clear_cover_both_lanes() -> None:
    sub, _ = lanes(after=0)
    sub.offer(Ev(MAP, "p1", 0))
    sub.offer(Ev(MAP, "p1", 1))  # tombstone for p1@0
    sub.offer(Ev(URGENT, None, 0))
    sub.offer(Ev(PKG, None, 0))
    assert sub.discard(URGENT) == 1
    assert (len(sub), sub.bytes) == (2, 20)
    assert sub.discard(MAP) == 1
    assert (len(sub), sub.bytes) == (1, 10)
    sub.offer(Ev(URGENT, None, 1))
    assert sub.clear() == 2
    assert (len(sub), sub.bytes, sub._urgent) == (0, 0, None)


def test_conflation_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="conflate_after"):
        Subscription[Item]({1}, 1, lambda: None, conflate=lambda i: i.text, conflate_after=-1)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("offer"),
            st.sampled_from([URGENT, MAP, PKG]),
            st.sampled_from(["a", "b", "c", None]),
            st.integers(1, 30),
        ),
        st.tuples(st.just("drain"), st.integers(0, 120), st.integers(1, 8)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, after=st.integers(0, 80), urgent_after=st.sampled_from([0, 0, 25, 60]))
def test_lanes_and_conflation_keep_their_promises(
    ops: list[tuple[object, ...]], after: int, urgent_after: int
) -> None:
    sub, _ = lanes(after=after, max_bytes=10**9, urgent_after=urgent_after)
    seq = dict.fromkeys((URGENT, MAP, PKG), 0)
    offered: list[Ev] = []
    out: list[Ev] = []
    for op in ops:
        if op[0] == "offer":
            _, topic, key, size = op
            assert isinstance(topic, int)
            assert isinstance(size, int)
            seq[topic] += 1
            ev = Ev(topic, None if topic != MAP else key, seq[topic], size)  # type: ignore[arg-type]
            assert sub.offer(ev)
            offered.append(ev)
        else:
            _, budget, items = op
            got = sub.drain(budget, items)  # type: ignore[arg-type]
            if not urgent_after:  # urgent first: no urgent item after a normal one
                kinds = [e.topic == URGENT for e in got]
                assert kinds == sorted(kinds, reverse=True)
            out += got
        assert sub.bytes == sum(e.size for e in live(sub))
        assert len(sub) == len(live(sub))
    out += sub.drain()
    skipped = sub.take_conflated() or {}
    # Nothing lost but what was superseded, and that only on the conflated topic.
    assert len(out) + sum(skipped.values()) == len(offered)
    assert set(skipped) <= {MAP}
    for topic in (URGENT, MAP, PKG):
        seqs = [e.seq for e in out if e.topic == topic]
        assert seqs == sorted(set(seqs))  # positions within a topic strictly increase
        if topic != MAP:
            assert len(seqs) == seq[topic]  # never-conflated topics: every item
    for key in ("a", "b", "c"):
        mine = [e for e in offered if e.topic == MAP and e.key == key]
        if mine:
            assert mine[-1] in out  # every key's latest item is delivered


# --- lanes of items that are not events (the bridge's control frames) ---------------

CONTROL = -1  # a lane of no topic, urgent (bridge.frames.CONTROL_LANE)


class Lv(NamedTuple):
    topic: int  # 0: a control item, of no topic
    lane: int
    seq: int
    size: int = 10


def by_lane(urgent_after: int = 0) -> Subscription[Lv]:
    return Subscription(
        {URGENT, MAP, PKG},
        None,
        lambda: None,
        size=lambda e: e.size,
        max_bytes=10**9,
        urgent=frozenset({URGENT, CONTROL}),
        urgent_after=urgent_after,
        lane=lambda e: e.lane,
    )


def test_an_item_travels_in_the_lane_its_lane_function_gives() -> None:
    sub = by_lane(urgent_after=30)
    sub.offer(Lv(0, CONTROL, 0))  # a welcome: urgent, early (10 bytes queued at most)
    sub.offer(Lv(0, URGENT, 1))  # a `subscribed` about the urgent topic
    sub.offer(Lv(0, MAP, 2))  # a `viewport` ack about map updates: the normal lane
    sub.offer(Lv(MAP, MAP, 3))
    sub.offer(Lv(URGENT, URGENT, 4))  # 40 bytes queued: the lane, the early ones moved first
    sub.offer(Lv(0, CONTROL, 5))  # a pong: urgent, after the urgent items before it
    assert [e.seq for e in sub.drain()] == [0, 1, 4, 5, 2, 3]


def test_without_a_lane_function_an_items_lane_is_its_topic() -> None:
    sub: Subscription[Lv] = Subscription(
        {URGENT, MAP}, None, lambda: None, urgent=frozenset({URGENT})
    )
    sub.offer(Lv(MAP, URGENT, 0))  # lane ignored: a map item
    sub.offer(Lv(URGENT, MAP, 1))
    assert [e.seq for e in sub.drain()] == [1, 0]


def test_a_kept_item_is_never_superseded_nor_supersedes() -> None:
    sub, _ = lanes(after=0)  # always behind
    sub.offer(Ev(MAP, "p1", 0), kept=True)
    sub.offer(Ev(MAP, "p1", 1), kept=True)  # a replay: both stay
    sub.offer(Ev(MAP, "p1", 2))
    sub.offer(Ev(MAP, "p1", 3))  # supersedes the live p1@2 only
    assert sub.take_conflated() == {MAP: 1}
    assert [e.seq for e in sub.drain()] == [0, 1, 3]


def test_a_kept_item_into_a_queue_of_tombstones_wakes_the_owner() -> None:
    sub, calls = lanes(after=0)
    sub.offer(Ev(MAP, "p1", 0))
    sub.offer(Ev(MAP, "p1", 1))  # p1@0 is a tombstone now
    assert [e.seq for e in sub.drain(max_items=1)] == [1]
    assert len(sub) == 0
    calls.clear()
    sub.offer(Ev(MAP, "p1", 2), kept=True)
    assert calls == [1]


@settings(max_examples=200, deadline=None)
@given(
    lanes_=st.lists(st.sampled_from([URGENT, MAP, PKG, CONTROL]), max_size=120),
    drains=st.lists(st.integers(1, 6), max_size=40),
    urgent_after=st.sampled_from([0, 25, 60]),
)
def test_order_within_every_lane_is_kept(
    lanes_: list[int], drains: list[int], urgent_after: int
) -> None:
    sub = by_lane(urgent_after)
    out: list[Lv] = []
    for i, lane in enumerate(lanes_):
        topic = 0 if lane == CONTROL or i % 3 == 0 else lane  # every third a control item
        sub.offer(Lv(topic, lane, i))
        if drains and i % 7 == 0:
            out += sub.drain(max_items=drains.pop())
    out += sub.drain()
    assert sorted(e.seq for e in out) == list(range(len(lanes_)))
    for lane in (URGENT, MAP, PKG, CONTROL):
        seqs = [e.seq for e in out if e.lane == lane]
        assert seqs == sorted(seqs)
