"""The hub, with plain calls: fan-out, filters, bounded queues and overflow."""

from __future__ import annotations

from typing import NamedTuple

import pytest

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
