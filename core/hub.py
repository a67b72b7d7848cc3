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

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, Protocol, TypeVar

__all__ = ["HasTopic", "Hub", "Subscription"]


class HasTopic(Protocol):
    """What the hub carries: anything with a topic."""

    @property
    def topic(self) -> int: ...


T = TypeVar("T", bound=HasTopic)


class _Backlog:
    """Where the keyed items of a subscription that is behind sit in its normal
    lane, so a newer item of the same key can supersede them (see
    :class:`Subscription`). Made by the first keyed item offered while behind,
    dropped when the lane is emptied."""

    __slots__ = ("base", "slots")

    def __init__(self) -> None:
        #: Key → the absolute index of its queued item (stale when below ``base``).
        self.slots: dict[Hashable, int] = {}
        #: The absolute index of the lane's first element.
        self.base = 0


class Subscription(Generic[T]):
    """One subscriber's topics, optional filter and bounded queue.

    ``capacity`` bounds the number of queued items (None: no count bound);
    ``max_bytes`` bounds their total ``size`` (both must be given together).
    ``on_ready`` is called (from :meth:`offer`, so it must not block) when the
    queue goes from empty to non-empty, and when the subscription overflows; its
    owner may replace it.

    Priority lanes: each item belongs to a *lane*, ``lane(item)`` (default: its
    topic; the bridge gives a control frame the lane of the topic it concerns).
    An item of an ``urgent`` lane offered while at least ``urgent_after`` bytes
    (with ``size``; else items) are queued goes to a queue of its own that
    :meth:`drain` empties before the normal one, together with the items of
    urgent lanes still in the normal queue (moved, in order), so order within a
    lane — hence within a topic — is kept. Below ``urgent_after`` — what its
    owner takes in one go anyway — items stay in arrival order. Both queues count
    towards the bounds.

    Conflation: with ``conflate`` (an item's key, None for "never conflated"), a
    subscription that is *behind* — queued bytes (with ``size``; else queued
    items) at least ``conflate_after`` — supersedes: an offered item whose key is
    not None replaces the queued item of the same key that was offered while
    behind. The old one leaves the queue (its bytes released, counted by topic
    for :meth:`take_conflated`); the new one is queued at the end, never in the
    old one's place, so positions within a topic keep increasing. Items of
    urgent topics are never conflated, nor items queued before the subscription
    fell behind, nor items offered ``kept`` (a replay). A subscription that keeps
    up (below ``conflate_after``) gets every item. The bounds still apply after
    conflation: a subscription that still cannot keep up overflows as above.
    """

    __slots__ = (
        "_accepts",
        "_after",
        "_backlog",
        "_conflating",
        "_dead",
        "_early",
        "_key",
        "_lane",
        "_queue",
        "_refusing",
        "_size",
        "_skipped",
        "_urgent",
        "_urgent_after",
        "_urgent_topics",
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
        urgent: frozenset[int] | None = None,
        urgent_after: int = 0,
        conflate: Callable[[T], Hashable | None] | None = None,
        conflate_after: int = 0,
        lane: Callable[[T], int] | None = None,
        conflate_topics: frozenset[int] | None = None,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1")
        if (size is None) != (max_bytes is None) or (max_bytes is not None and max_bytes < 1):
            raise ValueError("size and max_bytes go together, and max_bytes must be positive")
        if conflate_after < 0 or urgent_after < 0:
            raise ValueError("conflate_after and urgent_after must not be negative")
        self.topics = set(topics)
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._size = size
        self._accepts = accepts
        # A list, not a deque: items are only appended and taken from the front in
        # runs, and an empty list is a tenth of an empty deque's size (many sockets).
        # Superseded and moved items leave a None behind until drained or compacted.
        self._queue: list[T | None] = []
        self._dead = 0  # the Nones in _queue
        # The priority lane, made by its first item (most sockets never get one).
        self._urgent: list[T] | None = None
        self._urgent_topics = urgent or None  # the urgent lanes
        self._urgent_after = urgent_after
        self._lane = lane  # None: an item's lane is its topic
        self._early = 0  # items of urgent topics put in the normal lane (at most)
        self._key = conflate
        # Topics whose items may have a key (None: any): the others skip the
        # conflation bookkeeping altogether (the hot path of a never-drop topic).
        self._conflating = conflate_topics
        self._after = conflate_after
        self._backlog: _Backlog | None = None
        self._skipped: dict[int, int] | None = None  # topic → items superseded, not yet taken
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
        """Items queued (in both lanes; superseded ones not counted)."""
        n = len(self._queue) - self._dead
        if self._urgent:
            n += len(self._urgent)
        return n

    def set_filter(self, accepts: Callable[[T], bool] | None) -> None:
        """Replace the filter items must pass (None: every item of its topics)."""
        self._accepts = accepts

    def offer(self, item: T, *, kept: bool = False) -> bool:
        """Queue ``item`` if the filter accepts it; False if it was refused or overflowed.
        ``kept``: never superseded by a newer item of its key (see conflation above)."""
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
        urgent = self._urgent_topics
        if urgent is not None:
            lane = self._lane
            if (item.topic if lane is None else lane(item)) in urgent:
                return self._offer_urgent(item)
        if self._key is not None and not kept:
            conflating = self._conflating
            if conflating is None or item.topic in conflating:
                return self._offer_conflating(item)
        queue = self._queue
        capacity = self.capacity
        if capacity is not None and len(self) >= capacity:
            return self._overflow(item)
        size = self._size
        if size is not None:
            total = self.bytes + size(item)
            if total > self.max_bytes:  # type: ignore[operator]  # set with size
                return self._overflow(item)
            self.bytes = total
        queue.append(item)
        if len(queue) == 1 + self._dead and not self._urgent:
            self.on_ready()
        return True

    def _fits(self, item: T, count: int, freed: int = 0) -> bool:
        """Whether ``item`` fits with ``count`` items queued and ``freed`` bytes
        released; if so its bytes are added."""
        capacity = self.capacity
        if capacity is not None and count >= capacity:
            return False
        size = self._size
        if size is not None:
            total = self.bytes - freed + size(item)
            if total > self.max_bytes:  # type: ignore[operator]  # set with size
                return False
            self.bytes = total
        return True

    def _queued(self) -> int:
        """What is queued: bytes with ``size``, else items."""
        return self.bytes if self._size is not None else len(self)

    def _offer_urgent(self, item: T) -> bool:
        queued = self._queued()
        count = len(self)
        if not self._fits(item, count):
            return self._overflow(item)
        lane = self._urgent
        if lane:
            lane.append(item)
        elif queued < self._urgent_after:  # goes out with what is queued anyway
            self._queue.append(item)
            self._early += 1
        else:
            self._urgent = lane = self._promote()
            lane.append(item)
        if not count:
            self.on_ready()
        return True

    def _promote(self) -> list[T]:
        """Move the items of urgent lanes out of the normal queue, in order: the
        start of the urgent queue (order within a lane is kept)."""
        lane: list[T] = []
        if self._early:
            urgent = self._urgent_topics
            assert urgent is not None  # only urgent items are early
            lane_of = self._lane
            queue = self._queue
            for i, queued in enumerate(queue):
                if queued is None:
                    continue
                if (queued.topic if lane_of is None else lane_of(queued)) in urgent:
                    lane.append(queued)
                    queue[i] = None
            self._dead += len(lane)
            self._early = 0
        return lane

    def _offer_conflating(self, item: T) -> bool:
        queue = self._queue
        key_of = self._key
        assert key_of is not None  # offer() checked
        key = key_of(item) if self._queued() >= self._after else None
        if key is None:
            if not self._fits(item, len(self)):
                return self._overflow(item)
            queue.append(item)
        else:
            backlog = self._backlog
            if backlog is None:  # queue[i] is at absolute index base + i
                backlog = self._backlog = _Backlog()
            slot = backlog.slots.get(key, -1) - backlog.base
            old = queue[slot] if 0 <= slot < len(queue) else None
            size = self._size
            freed = size(old) if old is not None and size is not None else 0
            if not self._fits(item, len(self) - (old is not None), freed):
                return self._overflow(item)
            if old is not None:
                queue[slot] = None
                self._dead += 1
                skipped = self._skipped
                if skipped is None:
                    skipped = self._skipped = {}
                skipped[old.topic] = skipped.get(old.topic, 0) + 1
            backlog.slots[key] = backlog.base + len(queue)
            queue.append(item)
            if self._dead > len(queue) - self._dead or len(backlog.slots) > 2 * len(queue) + 64:
                self._compact()
        if len(self) == 1:
            self.on_ready()
        return True

    def _compact(self) -> None:
        """Drop the tombstones (and the stale slots); the queue's order is kept."""
        queue = self._queue
        backlog = self._backlog
        at: dict[int, Hashable] = {}
        if backlog is not None:
            base = backlog.base
            at = {index - base: key for key, index in backlog.slots.items() if index >= base}
        kept: list[T | None] = []
        slots: dict[Hashable, int] = {}
        for i, item in enumerate(queue):
            if item is not None:
                key = at.get(i)
                if key is not None:
                    slots[key] = len(kept)
                kept.append(item)
        self._queue = kept
        self._dead = 0
        if backlog is not None:
            backlog.slots, backlog.base = slots, 0

    def take_conflated(self) -> dict[int, int] | None:
        """Items superseded since the last call, by topic (None: none)."""
        skipped, self._skipped = self._skipped, None
        return skipped

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

    def drain(self, max_bytes: int | None = None, max_items: int | None = None) -> list[T]:
        """Take queued items, the urgent lane's first, then the normal lane's, each
        oldest first: all of them, or those within ``max_bytes`` (with ``size``)
        and ``max_items`` — at least one, so an item larger than that moves too."""
        urgent = self._urgent
        queue = self._queue
        size = self._size
        if (max_bytes is None or size is None or self.bytes <= max_bytes) and (
            max_items is None or len(self) <= max_items
        ):
            self._queue, self.bytes, self._backlog, self._early = [], 0, None, 0
            if self._dead:
                self._dead = 0
                queue = [item for item in queue if item is not None]
            if urgent:
                self._urgent = None
                urgent.extend(queue)  # type: ignore[arg-type]  # no tombstone left
                return urgent
            return queue  # type: ignore[return-value]  # no tombstone left
        budget = max_bytes if max_bytes is not None and size is not None else None
        room = max_items if max_items is not None else len(self)
        taken = 0
        items: list[T] = []
        if urgent:
            cut = 0
            for item in urgent:
                if cut >= room:
                    break
                n = size(item) if size is not None else 0
                if cut and budget is not None and taken + n > budget:
                    break
                taken += n
                cut += 1
            items = urgent[:cut]
            del urgent[:cut]
            if not urgent:
                self._urgent = None
        cut = dead = 0
        for queued in queue:
            if queued is None:  # a tombstone: costs nothing
                cut += 1
                dead += 1
                continue
            if len(items) >= room:
                break
            n = size(queued) if size is not None else 0
            if items and budget is not None and taken + n > budget:
                break
            taken += n
            items.append(queued)
            cut += 1
        if cut:
            del queue[:cut]
            self._dead -= dead
            if self._backlog is not None:
                self._backlog.base += cut
        self.bytes -= taken
        return items

    def discard(self, topic: int) -> int:
        """Drop the queued items of ``topic``; how many were dropped."""
        before = len(self)
        self._backlog = None  # its slots would point past the items dropped
        self._dead = 0
        self._queue = [item for item in self._queue if item is not None and item.topic != topic]
        if self._urgent:
            self._urgent = [item for item in self._urgent if item.topic != topic] or None
        if self._size is not None:
            size = self._size
            self.bytes = sum(size(item) for item in self._queue if item is not None)
            self.bytes += sum(size(item) for item in self._urgent or ())
        return before - len(self)

    def clear(self) -> int:
        """Drop every queued item; how many were dropped."""
        dropped = len(self)
        self._queue, self._urgent, self._backlog, self.bytes = [], None, None, 0
        self._dead = self._early = 0
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
