"""The hub: who is subscribed here, and their bounded queues. No I/O.

The hub hands each published item to every local subscription of its topic
whose filter accepts it. A subscription is a bounded FIFO; the transport that
owns it drains it when told it is ready. Overflow policy: when an item arrives
at a full queue the subscription is marked *overflowed*, stops taking items,
and is reported ready so its transport can send what it holds and then end
the stream (gRPC RESOURCE_EXHAUSTED, WebSocket close 1013); the client resumes
from the last position it received. Nothing is dropped silently and a queue
never grows past its capacity. Publishers never wait on subscribers.

Both the core (items are protobuf events) and the bridge (items are encoded
frames) use this hub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["Hub", "Subscription"]

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's topics, optional filter and bounded queue.

    ``on_ready`` is called (from :meth:`offer`, so it must not block) when the
    queue goes from empty to non-empty, and when the subscription overflows.
    """

    __slots__ = ("_on_ready", "accepts", "capacity", "closed", "overflowed", "queue", "topics")

    def __init__(
        self,
        topics: Iterable[int],
        capacity: int,
        on_ready: Callable[[], None],
        accepts: Callable[[T], bool] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.topics = set(topics)
        self.capacity = capacity
        self.accepts = accepts
        # A list, not a deque: items are only appended and taken all at once,
        # and an empty list is a tenth of an empty deque's size (many sockets).
        self.queue: list[T] = []
        self.overflowed = False
        self.closed = False
        self._on_ready = on_ready

    def offer(self, item: T) -> bool:
        """Queue ``item`` if the filter accepts it; False if it was refused or overflowed."""
        if self.overflowed or self.closed or (self.accepts is not None and not self.accepts(item)):
            return False
        if len(self.queue) >= self.capacity:
            self.overflowed = True
            self._on_ready()
            return False
        self.queue.append(item)
        if len(self.queue) == 1:
            self._on_ready()
        return True

    def close(self) -> None:
        """Take no more items and report ready, so the transport ends the stream."""
        self.closed = True
        self._on_ready()

    def drain(self) -> list[T]:
        """Take everything queued, oldest first."""
        items, self.queue = self.queue, []
        return items


class Hub(Generic[T]):
    """Local subscriptions by topic, and the fan-out of items to them."""

    def __init__(self, topic_of: Callable[[T], int]) -> None:
        self._topic_of = topic_of
        self._by_topic: dict[int, list[Subscription[T]]] = {}
        self.delivered = 0
        self.overflows = 0

    def add(self, sub: Subscription[T]) -> None:
        """Start delivering the topics of ``sub`` to it."""
        for topic in list(sub.topics):
            self.subscribe(sub, topic)

    def remove(self, sub: Subscription[T]) -> None:
        """Stop delivering to ``sub``; harmless if it was never added."""
        for topic in sub.topics:
            self._unindex(sub, topic)

    def subscribe(self, sub: Subscription[T], topic: int) -> None:
        """Add one topic to an added subscription; harmless if it has it."""
        sub.topics.add(topic)
        subs = self._by_topic.setdefault(topic, [])
        if sub not in subs:
            subs.append(sub)

    def unsubscribe(self, sub: Subscription[T], topic: int) -> None:
        """Remove one topic from a subscription; harmless if it lacks it."""
        sub.topics.discard(topic)
        self._unindex(sub, topic)

    def _unindex(self, sub: Subscription[T], topic: int) -> None:
        subs = self._by_topic.get(topic)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._by_topic[topic]

    def dispatch(self, item: T) -> int:
        """Offer ``item`` to every subscription of its topic; the number that took it."""
        took = 0
        for sub in self._by_topic.get(self._topic_of(item), ()):
            was_overflowed = sub.overflowed
            if sub.offer(item):
                took += 1
            elif sub.overflowed and not was_overflowed:
                self.overflows += 1
        self.delivered += took
        return took

    def count(self, topic: int) -> int:
        """How many subscriptions the topic has here."""
        return len(self._by_topic.get(topic, ()))

    def subscriptions(self) -> set[Subscription[T]]:
        """Every subscription, once."""
        return {sub for subs in self._by_topic.values() for sub in subs}
