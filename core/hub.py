"""The hub: who is subscribed here, and their bounded queues. No I/O.

The hub hands each published item to every local subscription of its topic
whose filter accepts it. A subscription is a bounded FIFO — bounded by a number
of items, by their bytes, or both; the transport that owns it drains it when
told it is ready. Overflow policy: when an item arrives that would pass a bound
the subscription is marked *overflowed*, stops taking items (noting the first
one refused of each topic), and is reported ready so its owner acts on it: the
core ends the stream (RESOURCE_EXHAUSTED; the client resumes from its last
position), the bridge replays what the socket missed from history and
:meth:`Subscription.recover` s it. Nothing is dropped silently and a queue never
grows past its bounds. Publishers never wait on subscribers.

Both the core (items are protobuf events) and the bridge (items are encoded
frames) use this hub. Only the hub and the subscription change a queue or a
filter; transports use the operations below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

__all__ = ["HasTopic", "Hub", "Subscription"]


class HasTopic(Protocol):
    """What the hub carries: anything with a topic."""

    @property
    def topic(self) -> int: ...


T = TypeVar("T", bound=HasTopic)


class Subscription(Generic[T]):
    """One subscriber's topics, optional filter and bounded queue.

    ``capacity`` bounds the number of queued items (None: no count bound);
    ``max_bytes`` bounds their total ``size`` (both must be given together).
    ``on_ready`` is called (from :meth:`offer`, so it must not block) when the
    queue goes from empty to non-empty, and when the subscription overflows; its
    owner may replace it.
    """

    __slots__ = (
        "_accepts",
        "_queue",
        "_refusing",
        "_size",
        "bytes",
        "capacity",
        "closed",
        "max_bytes",
        "missed",
        "on_ready",
        "overflowed",
        "refused",
        "topics",
    )

    def __init__(
        self,
        topics: Iterable[int],
        capacity: int | None,
        on_ready: Callable[[], None],
        accepts: Callable[[T], bool] | None = None,
        *,
        size: Callable[[T], int] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        if (size is None) != (max_bytes is None) or (max_bytes is not None and max_bytes < 1):
            raise ValueError("size and max_bytes go together, and max_bytes must be positive")
        self.topics = set(topics)
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._size = size
        self._accepts = accepts
        # A list, not a deque: items are only appended and taken from the front in
        # runs, and an empty list is a tenth of an empty deque's size (many sockets).
        self._queue: list[T] = []
        #: Total size of the queued items (0 without ``size``).
        self.bytes = 0
        self.overflowed = False
        self.closed = False
        self._refusing = False  # overflowed or closed: one check per offer
        #: After an overflow: the first item refused of each topic (None before).
        self.refused: dict[int, T] | None = None
        #: Items refused because the subscription had overflowed (that its filter
        #: accepts), the one that overflowed it included; never reset.
        self.missed = 0
        self.on_ready = on_ready

    def __len__(self) -> int:
        """Items queued."""
        return len(self._queue)

    def set_filter(self, accepts: Callable[[T], bool] | None) -> None:
        """Replace the filter items must pass (None: every item of its topics)."""
        self._accepts = accepts

    def offer(self, item: T) -> bool:
        """Queue ``item`` if the filter accepts it; False if it was refused or overflowed."""
        if self._refusing:
            refused = self.refused
            if refused is not None:
                accepts = self._accepts
                if accepts is None or accepts(item):  # what the filter refuses is not missed
                    self.missed += 1
                    if item.topic not in refused:
                        refused[item.topic] = item
            return False
        accepts = self._accepts
        if accepts is not None and not accepts(item):
            return False
        queue = self._queue
        capacity = self.capacity
        if capacity is not None and len(queue) >= capacity:
            return self._overflow(item)
        size = self._size
        if size is not None:
            total = self.bytes + size(item)
            if total > self.max_bytes:  # type: ignore[operator]  # set with size
                return self._overflow(item)
            self.bytes = total
        queue.append(item)
        if len(queue) == 1:
            self.on_ready()
        return True

    def _overflow(self, item: T) -> bool:
        self.overflowed = self._refusing = True
        self.refused = {item.topic: item}
        self.missed += 1
        self.on_ready()
        return False

    def recover(self) -> None:
        """Take items again after an overflow: its owner caught up another way
        (e.g. by replaying from history what ``refused`` and later items missed)."""
        self.overflowed = False
        self._refusing = self.closed
        self.refused = None

    def close(self) -> None:
        """Take no more items and report ready, so the transport ends the stream."""
        self.closed = self._refusing = True
        self.on_ready()

    def drain(self, max_bytes: int | None = None) -> list[T]:
        """Take queued items, oldest first: all of them, or (with ``size``) those
        within ``max_bytes`` — at least one, so an item larger than that moves too."""
        queue = self._queue
        size = self._size
        if max_bytes is None or self.bytes <= max_bytes or size is None:
            self._queue, self.bytes = [], 0
            return queue
        taken = cut = 0
        for item in queue:
            n = size(item)
            if cut and taken + n > max_bytes:
                break
            taken += n
            cut += 1
        items = queue[:cut]
        del queue[:cut]
        self.bytes -= taken
        return items

    def discard(self, topic: int) -> int:
        """Drop the queued items of ``topic``; how many were dropped."""
        kept = [item for item in self._queue if item.topic != topic]
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        if self._size is not None:
            self.bytes = sum(self._size(item) for item in kept)
        return dropped

    def clear(self) -> int:
        """Drop every queued item; how many were dropped."""
        dropped = len(self._queue)
        self._queue, self.bytes = [], 0
        return dropped


class Hub(Generic[T]):
    """Local subscriptions by topic, and the fan-out of items to them."""

    def __init__(self) -> None:
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

    def unsubscribe(self, sub: Subscription[T], topic: int) -> int:
        """Remove one topic from a subscription and drop its queued items of that
        topic; harmless if it lacks it. Returns how many items were dropped."""
        sub.topics.discard(topic)
        self._unindex(sub, topic)
        return sub.discard(topic)

    def detach(self, sub: Subscription[T], topic: int) -> None:
        """Stop delivering ``topic`` to ``sub`` but keep its queued items (they are
        still to be sent); :meth:`subscribe` attaches it again."""
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
        for sub in self._by_topic.get(item.topic, ()):
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
