"""The hub, with plain calls: fan-out, filters, bounded queues and overflow."""

from __future__ import annotations

from core.hub import Hub, Subscription


def by_first(item: tuple[int, str]) -> int:
    return item[0]


def make(topics: set[int], capacity: int = 3, accepts=None):  # type: ignore[no-untyped-def]
    calls: list[int] = []
    sub: Subscription[tuple[int, str]] = Subscription(
        topics, capacity, lambda: calls.append(1), accepts
    )
    return sub, calls


def test_dispatch_reaches_only_subscribers_of_the_topic() -> None:
    hub: Hub[tuple[int, str]] = Hub(by_first)
    a, _ = make({1})
    b, _ = make({1, 2})
    c, _ = make({3})
    for sub in (a, b, c):
        hub.add(sub)
    assert hub.dispatch((1, "x")) == 2
    assert hub.dispatch((2, "y")) == 1
    assert a.drain() == [(1, "x")]
    assert b.drain() == [(1, "x"), (2, "y")]
    assert c.drain() == []
    assert hub.delivered == 3


def test_ready_is_signalled_on_empty_to_non_empty_only() -> None:
    hub: Hub[tuple[int, str]] = Hub(by_first)
    sub, calls = make({1}, capacity=10)
    hub.add(sub)
    hub.dispatch((1, "a"))
    hub.dispatch((1, "b"))
    assert len(calls) == 1
    sub.drain()
    hub.dispatch((1, "c"))
    assert len(calls) == 2


def test_filter_refuses_items() -> None:
    hub: Hub[tuple[int, str]] = Hub(by_first)
    sub, _ = make({1}, accepts=lambda item: item[1] != "skip")
    hub.add(sub)
    hub.dispatch((1, "skip"))
    hub.dispatch((1, "keep"))
    assert sub.drain() == [(1, "keep")]


def test_overflow_marks_the_subscription_and_keeps_what_it_had() -> None:
    hub: Hub[tuple[int, str]] = Hub(by_first)
    slow, calls = make({1}, capacity=2)
    fast, _ = make({1}, capacity=100)
    hub.add(slow)
    hub.add(fast)
    for i in range(5):
        hub.dispatch((1, str(i)))
    assert slow.overflowed
    assert len(calls) == 2  # once when it got its first item, once on overflow
    assert slow.drain() == [(1, "0"), (1, "1")]
    assert len(fast.drain()) == 5
    assert hub.overflows == 1
    hub.dispatch((1, "late"))
    assert slow.drain() == []  # an overflowed subscription takes nothing more


def test_close_wakes_and_refuses() -> None:
    sub, calls = make({1})
    sub.close()
    assert calls == [1]
    assert not sub.offer((1, "x"))


def test_remove_is_idempotent_and_counts_follow() -> None:
    hub: Hub[tuple[int, str]] = Hub(by_first)
    sub, _ = make({1, 2})
    hub.add(sub)
    hub.add(sub)
    assert hub.count(1) == 1
    hub.remove(sub)
    hub.remove(sub)
    assert hub.count(1) == 0
    assert hub.dispatch((1, "x")) == 0
    assert hub.subscriptions() == set()


def test_topics_can_be_added_and_removed_one_at_a_time() -> None:
    hub: Hub[tuple[int, str]] = Hub(by_first)
    sub, _ = make(set(), capacity=10)
    hub.add(sub)
    hub.subscribe(sub, 2)
    hub.subscribe(sub, 2)
    assert hub.dispatch((2, "a")) == 1
    hub.unsubscribe(sub, 2)
    hub.unsubscribe(sub, 2)
    assert hub.dispatch((2, "b")) == 0
    assert sub.drain() == [(2, "a")]
    assert sub.topics == set()
