"""The bridge's metrics (README "Operations"), with :mod:`core.metrics`.

One hot path only: :meth:`Deliveries.taken`, called by
:meth:`bridge.session.Session.take` for every write to a socket, counts the
event frames delivered and observes their delivery latency (now minus when the
core published the event) into fixed buckets — one clock read per write, and
one histogram update per bucket the write's frames fall in (fan-out's repeated
writes of the same frames: a tally, see :class:`Deliveries`). The rest is read
at scrape time from what the bridge already counts (:meth:`bridge.app.Bridge.status`'s
counters, its sockets, its upstream) by the source :func:`register` adds to the
process's :class:`~core.metrics.Metrics`; a scrape walks every socket once
(queue depth and lag histograms).

Every WebSocket series has ``path="websocket"`` (the core's gRPC series have
``path="grpc"``). What is counted, and how:

- ``clearpath_events_delivered_total{topic}``: event frames written to a socket
  (replays included; control frames are not events);
- ``clearpath_events_filtered_total{topic}``: event frames a socket did not
  get because they were not for it: another user's notification, or a frame a
  resume had already replayed (a floor);
- ``clearpath_events_dropped_total{reason}``: frames queued for a socket that
  never left: ``slow_consumer`` (queued when a slow socket was closed),
  ``closed`` (queued when any other socket was closed), ``unencodable``
  (events this bridge could not encode, for no socket);
- ``clearpath_delivery_latency_seconds{topic}``: publish (the core's clock) to
  write (this bridge's clock) of live events, as the core's; frames written
  while their topic is being resumed or caught up (replays) are counted but not
  timed, and events without a publish time (a core older than
  ``Event.published_at``) are not timed;
- ``clearpath_subscriber_lag_events`` (a histogram over sockets at scrape
  time): how many events a socket is behind the heads of its topics (see
  :meth:`bridge.session.Session.lag`);
- ``clearpath_queue_depth_max`` and ``clearpath_queue_depth_bytes``: bytes
  queued per socket (a socket's queue is bounded in bytes; the core's are in
  events); ``clearpath_subscriptions{topic}``: live subscriptions (a resume in
  progress joins when it goes live);
- ``clearpath_auth_failures_total``: sockets closed for a bad token or for
  sending none in time (``clearpath_refusals_total`` has every reason).
"""

from __future__ import annotations

import importlib.metadata
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import (
    Callable,
    Collection,
    Container,
    Iterable,
    Iterator,
    Sequence,
)
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING

from core.errors import InvalidArgument
from core.metrics import Family, Latency, Metrics, Source, counter, gauge
from core.topics import ALL_TOPICS, TOPICS, topic_name

if TYPE_CHECKING:
    from bridge.app import Bridge
    from bridge.frames import Frame
    from bridge.session import Session

__all__ = [
    "LAG_BUCKETS",
    "PATH",
    "QUEUE_BUCKETS",
    "Deliveries",
    "families",
    "register",
]

#: The ``path`` label of every WebSocket series.
PATH = "websocket"
#: Events behind the head (``clearpath_subscriber_lag_events``): the core's buckets.
LAG_BUCKETS: tuple[float, ...] = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)
#: Bytes queued per socket (``clearpath_queue_depth_bytes``).
QUEUE_BUCKETS: tuple[float, ...] = (
    0.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
)  # fmt: skip
#: Refusal reasons that are failed authentications of a socket.
AUTH_FAILURES = ("unauthorized", "auth_timeout")

_SIZE = max(ALL_TOPICS) + 1  # topics are small ints: counters are lists indexed by topic
_TOPIC = attrgetter("topic")
_clock = time.time  # one read per write to a socket
_PUBLISHED = attrgetter("published")


def _name(topic: int) -> str:
    try:
        return topic_name(topic)
    except InvalidArgument:  # a number no topic has (yet): its counters stay at 0
        return str(topic)


class Deliveries:
    """The bridge's per-topic delivery counters and latency histogram: plain lists,
    shared by every socket, and a :class:`~core.metrics.Latency` they go into at
    :meth:`settle` (every scrape).

    Latencies are kept as a count and a sum per bucket and topic; a write's frames
    that fall in one bucket are one update, a backlog's spread over several one
    update per bucket. Fan-out writes the same frames to socket after socket
    within one flush: a write of one topic whose first and last frames and count
    are those of the previous write, and that still falls in its bucket, is only
    tallied (a clock read, four comparisons, two additions), and the tally added
    up at the next other write.
    """

    __slots__ = (
        "_bucket",
        "_buckets",
        "_first",
        "_keys",
        "_last",
        "_mean",
        "_n",
        "_observed",
        "_rows",
        "_takes",
        "_topic",
        "_until",
        "_waited",
        "delivered",
        "filtered",
        "latency",
        "now",
    )

    def __init__(self) -> None:
        #: Event frames written to sockets, by topic (see :meth:`settle`).
        self.delivered = [0] * _SIZE
        #: Event frames a socket's filter refused (not for it), by topic.
        self.filtered = [0] * _SIZE
        #: Publish-to-write seconds, by (path, topic name), as of the last :meth:`settle`.
        self.latency = Latency()
        self._buckets = buckets = self.latency.buckets
        self._keys = [(PATH, _name(t)) for t in range(_SIZE)]
        # Not yet settled, by topic: a count per bucket (+Inf last), then a sum per bucket.
        self._rows = [[0.0] * (2 * len(buckets) + 2) for _ in range(_SIZE)]
        # The tally of writes of the same frames: the first and last frame, their
        # count and topic, how many carry a publish time, their mean publish time and
        # bucket, the clock until which they stay in it; the writes, and their clocks.
        self._first: Frame | None = None
        self._last: Frame | None = None
        self._n = self._observed = self._takes = self._topic = self._bucket = 0
        self._mean = self._until = self._waited = 0.0
        #: The clock of the flusher's round of writes in progress (0.0: none): every
        #: write of a round is timed at its start, so a fan-out's writes of the same
        #: frames stay one tally (a round writes each ready socket once, about a
        #: millisecond per thousand sockets).
        self.now = 0.0

    def round(self, starting: bool) -> None:
        """The flusher's round of writes starts (True) or ends (False)."""
        self.now = _clock() if starting else 0.0

    def taken(
        self,
        frames: Sequence[Frame],
        topics: Collection[int],
        replaying: Container[int] | None = None,
    ) -> None:
        """``frames`` (whose topics are ``topics``) are being written to a socket now;
        those of ``replaying`` topics (resumed, or catching up) are counted, not timed."""
        now = self.now or _clock()
        if (
            frames[0] is self._first
            and now <= self._until
            and frames[-1] is self._last
            and len(frames) == self._n
            and replaying is None
            and len(topics) == 1
        ):
            self._takes += 1
            self._waited += now
            return
        self._other(frames, topics, replaying, now)

    def settle(self) -> None:
        """Bring :attr:`delivered` and :attr:`latency` up to date."""
        self._add_tally()
        latency, width = self.latency, len(self._buckets) + 1
        for topic, row in enumerate(self._rows):
            for bucket in range(width):
                count = row[bucket]
                if count:
                    # The mean of a bucket's latencies is in that bucket: exact count and sum.
                    latency.observe(self._keys[topic], row[width + bucket] / count, int(count))
                    row[bucket] = row[width + bucket] = 0.0

    def _add_tally(self) -> None:
        takes = self._takes
        if takes:
            self.delivered[self._topic] += self._n * takes
            observed = self._observed
            if observed:
                bucket, row = self._bucket, self._rows[self._topic]
                row[bucket] += observed * takes
                # Each write adds observed * (now - mean), never below 0 (clocks apart).
                row[len(self._buckets) + 1 + bucket] += max(
                    0.0, observed * (self._waited - takes * self._mean)
                )
            self._takes = 0
            self._waited = 0.0

    def _other(
        self,
        frames: Sequence[Frame],
        topics: Collection[int],
        replaying: Container[int] | None,
        now: float,
    ) -> None:
        """:meth:`taken` for other frames than the tally's: add up the tally, then
        start a new one (one topic, one bucket) or count these frames now."""
        if self._takes:
            self._add_tally()
        self._first = None
        if replaying is not None or len(topics) != 1:
            self._mixed(frames, replaying, now)
            return
        topic = frames[0].topic
        if not 0 < topic < _SIZE:
            return  # control frames only
        n = len(frames)
        times = list(map(_PUBLISHED, frames))
        if n > 1:
            times.sort()  # in publish order already, nearly always: linear
        if times[0] <= 0.0:  # 0.0: no publish time (rare: an older core)
            del times[: bisect_right(times, 0.0)]
        until, bucket, observed, mean = _NEVER, 0, len(times), 0.0
        if observed:
            buckets = self._buckets
            oldest = times[0]
            bucket = bisect_left(buckets, now - oldest)
            if n > 1 and bucket != bisect_left(buckets, now - times[-1]):
                self.delivered[topic] += n
                self._spread(topic, times, now)
                return
            if bucket < len(buckets):
                until = oldest + buckets[bucket]  # later, the oldest moves to the next bucket
            mean = oldest if n == 1 else sum(times) / observed
        self._first, self._last, self._n, self._topic = frames[0], frames[-1], n, topic
        self._observed, self._mean, self._bucket, self._until = observed, mean, bucket, until
        self._takes = 1
        self._waited = now

    def _mixed(self, frames: Sequence[Frame], replaying: Container[int] | None, now: float) -> None:
        """Count frames of several topics (control frames among them), or of a
        socket replaying some."""
        for topic, run in groupby(frames, _TOPIC):
            if 0 < topic < _SIZE:
                if replaying is not None and topic in replaying:
                    self.delivered[topic] += sum(1 for _ in run)
                else:
                    group = list(run)
                    self.delivered[topic] += len(group)
                    self._spread(topic, _published(group), now)

    def _spread(self, topic: int, times: list[float], now: float) -> None:
        """Count the latencies at ``now`` of events of ``topic`` published at ``times``
        (sorted): one update per bucket they fall in, not one per frame."""
        if not times:
            return
        row, width = self._rows[topic], len(self._buckets) + 1
        end = len(times)
        for bucket, edge in enumerate(self._buckets):  # newest first: smallest latency up
            start = bisect_left(times, now - edge, 0, end)  # times[start:end]: within edge
            if start < end:
                row[bucket] += end - start
                row[width + bucket] += max(0.0, (end - start) * now - sum(times[start:end]))
                end = start
            if not end:
                return
        row[width - 1] += end  # beyond the last edge
        row[2 * width - 1] += end * now - sum(times[:end])


_NEVER = float("inf")


def _published(frames: Sequence[Frame]) -> list[float]:
    """The publish times of ``frames`` that have one, oldest first."""
    times = list(map(_PUBLISHED, frames))
    times.sort()  # in publish order already, nearly always: linear, and cheaper than min/max
    if times[0] <= 0.0:  # 0.0: no publish time (rare: an older core)
        del times[: bisect_right(times, 0.0)]
    return times


def register(metrics: Metrics, bridge: Bridge, endpoints: Iterable[str]) -> Source:
    """Add the bridge's source to ``metrics``; the source (for ``metrics.remove``)."""
    paths = tuple(endpoints)

    def source() -> Iterator[Family]:
        return families(bridge, paths)

    metrics.add(source)
    return source


def families(bridge: Bridge, endpoints: Sequence[str]) -> Iterator[Family]:
    """The bridge's metric families, from its current counters and sockets."""
    sessions = [conn.session for conn in bridge.connections.values()]
    by_endpoint = Counter(s.endpoint for s in sessions)
    yield gauge(
        "clearpath_connections",
        "Open WebSocket connections, by endpoint.",
        ["endpoint"],
        {(e,): by_endpoint.get(e, 0) for e in (*endpoints, *by_endpoint)},
    )
    hub = bridge.hub
    yield gauge(
        "clearpath_subscriptions",
        "Live topic subscriptions of sockets (resumes in progress not included).",
        ["path", "topic"],
        {(PATH, _name(t)): hub.count(t) for t in _topics(hub.count)},
    )
    deliveries = bridge.deliveries
    deliveries.settle()
    yield counter(
        "clearpath_events_delivered",
        "Event frames written to sockets (replays included).",
        ["path", "topic"],
        _by_topic(deliveries.delivered),
    )
    yield counter(
        "clearpath_events_filtered",
        "Event frames a socket did not get as not meant for it "
        "(another user's notification, or already replayed by a resume).",
        ["path", "topic"],
        _by_topic(deliveries.filtered),
    )
    slow, closed = bridge.slow_dropped, bridge.closed_dropped - bridge.slow_dropped
    for conn in bridge.connections.values():
        if bridge.closing_slow(conn.id):
            slow += conn.session.frames_dropped
        else:
            closed += conn.session.frames_dropped
    yield counter(
        "clearpath_events_dropped",
        "Frames that never reached a socket, by reason.",
        ["path", "reason"],
        {
            (PATH, "slow_consumer"): slow,
            (PATH, "closed"): closed,
            (PATH, "unencodable"): bridge.unencodable,
        },
    )
    yield deliveries.latency.family(
        "clearpath_delivery_latency_seconds",
        "Seconds from the core's publish to the write to a socket.",
        ["path", "topic"],
    )
    yield from _socket_families(bridge, sessions)
    yield from _counter_families(bridge)
    yield from _upstream_families(bridge)
    yield gauge("clearpath_info", "This process's ClearPath version.", ["version"], {(VERSION,): 1})


def _socket_families(bridge: Bridge, sessions: Sequence[Session]) -> Iterator[Family]:
    depth = Latency(QUEUE_BUCKETS)
    lag = Latency(LAG_BUCKETS)
    head = bridge.upstream.position
    deepest = 0
    for session in sessions:
        queued = session.pending
        deepest = max(deepest, queued)
        depth.observe((PATH,), queued)
        lag.observe((PATH,), session.lag(head))
    yield gauge(
        "clearpath_queue_depth_max",
        "Bytes queued for the socket with the most waiting.",
        ["path"],
        {(PATH,): deepest},
    )
    yield depth.family(
        "clearpath_queue_depth_bytes", "Bytes queued per socket (at scrape time).", ["path"]
    )
    yield lag.family(
        "clearpath_subscriber_lag_events",
        "Events a socket is behind the heads of its topics (at scrape time).",
        ["path"],
    )


def _counter_families(bridge: Bridge) -> Iterator[Family]:
    refusals = bridge.refusals
    simple = (
        ("clearpath_slow_consumer_closes", "Sockets closed as slow consumers.", bridge.slow_closed),
        (
            "clearpath_auth_failures",
            "Sockets closed for a bad token or no token in time.",
            sum(refusals[r] for r in AUTH_FAILURES),
        ),
    )
    for name, doc, value in simple:
        yield counter(name, doc, ["path"], {(PATH,): value})
    yield counter(
        "clearpath_catch_ups",
        "Sockets whose queue overflowed and that caught up from history.",
        [],
        {(): bridge.catch_ups},
    )
    yield counter(
        "clearpath_rate_limited",
        "Client messages refused as over the rate limit.",
        ["path", "kind"],
        {(PATH, "message"): bridge.rate_limited},
    )
    yield counter(
        "clearpath_refusals",
        "Sockets and operator requests refused or closed by policy, by reason.",
        ["reason"],
        {(reason,): n for reason, n in refusals.items()},
    )
    resumes = bridge.resumes
    yield counter(
        "clearpath_resumes",
        "Resumes of a topic by a socket, by outcome.",
        ["outcome"],
        {(o,): resumes[o] for o in ("recovered", "not_recovered")},
    )
    yield counter(
        "clearpath_resume_frames",
        "Frames replayed by resumes, by where they came from.",
        ["source"],
        {("cache",): resumes["frames_from_cache"], ("core",): resumes["frames_from_core"]},
    )


def _upstream_families(bridge: Bridge) -> Iterator[Family]:
    upstream = bridge.upstream
    yield gauge(
        "clearpath_upstream_up",
        "1 while the bridge's stream from the core is open.",
        [],
        {(): 1 if upstream.state == "connected" else 0},
    )
    for name, doc, value in (
        (
            "clearpath_upstream_reconnects",
            "Times the stream from the core reopened.",
            upstream.reconnects,
        ),
        (
            "clearpath_upstream_failovers",
            "Times the stream moved to another core.",
            upstream.failovers,
        ),
        (
            "clearpath_upstream_history_gaps",
            "Resumes of the stream the core could not recover (events missed).",
            upstream.gaps,
        ),
    ):
        yield counter(name, doc, [], {(): value})


def _by_topic(values: Sequence[int]) -> dict[tuple[str, ...], float]:
    return {(PATH, _name(t)): values[t] for t in _topics(values.__getitem__)}


def _topics(value: Callable[[int], int]) -> list[int]:
    """The subscription types, and any other topic with a value (e.g. the canary)."""
    return [*TOPICS, *(t for t in range(1, _SIZE) if t not in TOPICS and value(t))]


def _version() -> str:
    try:
        return importlib.metadata.version("clearpath-realtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()
