"""One browser socket's protocol state: no I/O, no aiohttp, tested with plain calls.

A :class:`Session` holds what the bridge knows of a socket — its hub
subscription (a queue bounded by bytes), the floors that keep replayed events
from arriving twice, the rate bucket, the counters — and one
:class:`State`. The transport side (:mod:`bridge.writer`) asks it for the
bytes to write with :meth:`Session.take`.

Slow-consumer policy, judged by progress, not by the size of a burst: urgent
topics take the queue's priority lane; past ``conflate_after`` bytes waiting, a
socket receives only the newest frame per key of the ``latest`` topics it
conflates, preceded by one ``conflated`` control frame per topic saying how
many it skipped (:mod:`core.delivery`); past ``max_bytes`` waiting, its queue
overflows and the bridge has it catch up from history instead (see
``Bridge._catch_up``); a socket whose transport has taken nothing for
``slow_timeout`` while bytes waited is closed (see :func:`is_stalled`). A
socket that keeps reading is never cut off.

A socket whose filters (viewport, another user's notifications) leave frames
out is told how far each such topic went with a ``position`` control frame
(:meth:`Session.position_frames`), so its resume position stays within history.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable
from operator import attrgetter
from typing import Any

from bridge.frames import CONTROL_LANE, Frame, control, text_frame
from bridge.metrics import Deliveries
from clearpath.realtime.v1 import events_pb2 as pb
from core.auth import Identity
from core.delivery import CONFLATION_KEYS
from core.hub import Subscription
from core.positions import Floors, HasPosition
from core.rate import TokenBucket
from core.topics import TOPIC_NAMES
from core.viewport import BoundingBox

__all__ = ["Session", "State", "frame_size", "is_stalled"]


class State(enum.Enum):
    """Where a socket is in its life."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


#: What a frame costs in a socket's queue: its bytes on the wire (a frame is
#: encoded before it is queued: :meth:`Session.send`, and the bridge's dispatch).
frame_size = attrgetter("nbytes")
_TOPIC = attrgetter("topic")
_LANE = attrgetter("lane")
_WIRE = attrgetter("_wire")  # set once encoded, which every queued frame is
_DATA = attrgetter("_data")


def is_stalled(stalled_since: float | None, now: float, slow_timeout: float) -> bool:
    """Whether a transport that stopped taking bytes at ``stalled_since`` (None:
    it takes them) has made no progress for longer than ``slow_timeout``."""
    return stalled_since is not None and now - stalled_since > slow_timeout


_OPEN = State.OPEN
_MAP_UPDATES = pb.TOPIC_MAP_UPDATES

#: Frames a socket's filters may leave out before it is told where it is (at the
#: next write with nothing left queued), besides the bridge's keepalive round:
#: one ``position`` frame per this many frames left out at most.
POSITION_EVERY = 1000
_now = time.time  # the clock of bridge.metrics.Deliveries


class Session:
    """The protocol state of one socket.

    ``on_ready`` is called when frames become pending (or the queue overflows);
    it must not block. Every frame reaches the socket through :attr:`sub`:
    frames of ``urgent`` topics ahead of the others once ``urgent_after``
    bytes wait (what one :meth:`take` writes anyway), frames of ``conflate``
    topics superseded by newer ones of the same key once ``conflate_after``
    bytes wait (see :class:`core.hub.Subscription`). A frame travels in its
    :attr:`Frame.lane`: a control frame about a topic stays in order with that
    topic's frames; with ``urgent`` the other control frames (welcome, pong,
    error, refreshed) are urgent too, so no frame queued after them overtakes them.
    """

    __slots__ = (
        "_box",
        "_delivered",
        "_floors",
        "_only",
        "_replayed",
        "_resuming",
        "_room",
        "_skipped",
        "_skips",
        "batch",
        "bucket",
        "close_code",
        "close_reason",
        "connected_at",
        "endpoint",
        "frames_dropped",
        "frames_sent",
        "id",
        "identity",
        "limited",
        "remote",
        "state",
        "stats",
        "sub",
        "user",
    )

    def __init__(
        self,
        id: str,
        endpoint: str,
        remote: str,
        *,
        max_bytes: int,
        on_ready: Callable[[], None] | None = None,
        batch: bool = False,
        stats: Deliveries | None = None,
        urgent: frozenset[int] | None = None,
        urgent_after: int = 0,
        conflate: frozenset[int] | None = None,
        conflate_after: int = 0,
    ) -> None:
        self.id = id
        self.endpoint = endpoint
        self.remote = remote
        self.user: str | None = None
        #: Who the socket authenticated as (None: not yet).
        self.identity: Identity | None = None
        self._only: str | None = None  # notifications only for this user (and everyone)
        self._box: BoundingBox | None = None  # map_updates only inside it (None: all)
        self.batch = batch
        self.connected_at = time.time()
        self.state = State.OPEN
        self.bucket: TokenBucket | None = None
        #: Client messages refused as rate limited in a row (see abuse_limit).
        self.limited = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        #: The close code this bridge sent (None: the peer closed first, or not closed).
        self.close_code: int | None = None
        self.close_reason = ""
        # Bit sets by topic (an int costs nothing per socket; an empty set 216 bytes).
        self._resuming = 0  # a resume is in progress (not yet live)
        self._delivered = 0  # a frame was written
        self._floors: Floors | None = None  # made by the first resume that needs one
        # Topic → the last position queued by its resume in progress (None: no resume).
        self._replayed: dict[int, HasPosition] | None = None
        # Topic → the newest frame a filter left out since the socket last got a
        # frame of that topic at or after it, or was told it (see position_frames).
        self._skipped: dict[int, Frame] | None = None
        self._skips = 0  # frames left out since the last position frames
        #: The bridge's delivery counters (a socket's own when none is given).
        self.stats = stats if stats is not None else Deliveries()
        self.sub: Subscription[Frame] = Subscription(
            (),
            None,
            on_ready or _nothing,
            size=frame_size,
            max_bytes=max_bytes,
            urgent=urgent | {CONTROL_LANE} if urgent else None,
            urgent_after=urgent_after,
            conflate=_conflation_key(conflate),
            conflate_topics=conflate or None,
            conflate_after=conflate_after,
            lane=_LANE,
        )
        # Bytes a replay lets wait before queuing more (see replay_room).
        self._room = min(max(conflate_after - 1, 0) if conflate else max_bytes, max_bytes // 2)

    @property
    def on_ready(self) -> Callable[[], None]:
        """Called when frames become pending or the queue overflowed; must not block."""
        return self.sub.on_ready

    @on_ready.setter
    def on_ready(self, callback: Callable[[], None]) -> None:
        self.sub.on_ready = callback

    # --- what reaches the socket ---------------------------------------------------

    def send(self, frame: Frame, *, replay: bool = False) -> bool:
        """Queue one frame (control frames, replays); False if refused (closing,
        overflow, or an event that cannot be encoded). A map update outside the
        viewport is left out and counts as taken (True): a replay goes on past it
        even when the box moved while the replay waited for room. A ``replay``
        frame is never superseded by a newer one of its key (never conflated)."""
        if not self._in_box(frame):
            self.stats.filtered[frame.topic] += 1
            self._skip(frame)
            return True
        if self.state is State.OPEN and frame.encodes() and self.sub.offer(frame, kept=replay):
            replayed = self._replayed
            if replayed is not None and frame.topic in replayed:
                replayed[frame.topic] = frame  # how far the resume got (see lag)
            return True
        return False

    def hold_back(self, topic: int, floor: HasPosition) -> None:
        """Refuse live frames of ``topic`` up to ``floor``: a resume replayed them
        before the bridge's own stream brought them. Checked at dispatch, until the
        first newer frame lifts it."""
        if self._floors is None:
            self._floors = Floors()
        self._floors.raise_to(topic, floor)
        self.sub.set_filter(self._admits)

    def _admits(self, frame: Frame) -> bool:
        only = self._only
        if only is not None and frame.user and frame.user != only:
            self.stats.filtered[frame.topic] += 1
            self._skip(frame)
            return False
        box = self._box
        if (
            box is not None
            and frame.topic == _MAP_UPDATES
            and not box.contains(frame.latitude, frame.longitude)
        ):
            self.stats.filtered[frame.topic] += 1
            self._skip(frame)
            return False
        floors = self._floors
        if floors is None:
            return True
        if floors.admits(frame.topic, frame):
            if not floors:
                self._floors = None
                self._refilter()  # no floor left: no floor check per frame
            return True
        self.stats.filtered[frame.topic] += 1
        return False

    def _refilter(self) -> None:
        filtered = self._floors or self._only is not None or self._box is not None
        self.sub.set_filter(self._admits if filtered else None)

    def authenticated(self, identity: Identity) -> None:
        """The socket is ``identity`` from now on: unless it is an operator, it
        receives only notifications for its subject or for everyone."""
        self.identity = identity
        self.user = identity.subject or None
        self._only = None if identity.operator else identity.subject
        self._refilter()

    def for_me(self, frame: Frame) -> bool:
        """Whether ``frame`` is meant for this socket: not a notification for
        another user, not a map update outside its viewport. Replays skip the
        others (noted as left out: see :meth:`position_frames`)."""
        only = self._only
        if (only is not None and frame.user and frame.user != only) or not self._in_box(frame):
            self._skip(frame)
            return False
        return True

    def _skip(self, frame: Frame) -> None:
        """A filter left ``frame`` out: remember how far its topic went."""
        skipped = self._skipped
        if skipped is None:
            skipped = self._skipped = {}
        skipped[frame.topic] = frame
        self._skips += 1
        if self._skips == POSITION_EVERY:
            self.sub.on_ready()  # the next take() tells, once nothing is queued

    def position_frames(self) -> list[Frame]:
        """``position`` control frames for the topics whose frames a filter left
        out since the socket last got a frame of that topic at or after them:
        ``{"subscription_type", "position": {"offset", "epoch"}}``, the newest
        left out. Each is told once, then forgotten.

        Never ahead of a queued frame of its topic: nothing is told while
        anything is queued, nor for a topic being resumed (kept for later); a
        topic no longer subscribed is dropped. Empty when there is nothing to tell.
        """
        skipped = self._skipped
        if skipped is None or len(self.sub) or self.state is not _OPEN:
            return []
        told: list[Frame] = []
        for topic in list(skipped):
            if self.resuming(topic):
                continue
            frame = skipped.pop(topic)
            if topic in self.sub.topics:
                told.append(_position(topic, frame))
        if not skipped:
            self._skipped = None
        self._skips = 0
        return told

    def _covered(self, frames: list[Frame]) -> list[Frame]:
        """``frames``, just drained, and what they tell: a frame at or past a
        topic's skipped one covers it; after POSITION_EVERY frames left out, with
        nothing left queued, ``position`` frames follow them."""
        skipped = self._skipped
        assert skipped is not None
        for frame in frames:
            last = skipped.get(frame.topic)
            if last is not None and frame.epoch == last.epoch and frame.offset >= last.offset:
                del skipped[frame.topic]
        if not skipped:
            self._skipped = None
            self._skips = 0
        elif self._skips >= POSITION_EVERY:
            return frames + self.position_frames()
        return frames

    def _in_box(self, frame: Frame) -> bool:
        box = self._box
        return (
            box is None
            or frame.topic != _MAP_UPDATES
            or box.contains(frame.latitude, frame.longitude)
        )

    @property
    def viewport(self) -> BoundingBox | None:
        """The box map updates must fall in (None: the whole world)."""
        return self._box

    def set_viewport(self, box: BoundingBox | None) -> None:
        """Send only map updates inside ``box`` from now on (None: all of them).
        Frames already queued stay queued (they passed the box they were offered
        to); nothing is resubscribed, so no event inside both boxes is missed or
        sent twice. Replays and catch-ups in progress apply the new box to the
        frames they have not queued yet."""
        self._box = box
        self._refilter()

    def forget_topic(self, topic: int) -> None:
        """Drop the floor of ``topic`` (unsubscribed)."""
        if self._floors is not None:
            self._floors.discard(topic)
            if not self._floors:
                self._floors = None
                self._refilter()

    # --- resumes in progress ----------------------------------------------------------

    def resuming(self, topic: int) -> bool:
        """Whether a resume of ``topic`` is in progress."""
        return bool(self._resuming >> topic & 1)

    def resume_started(self, topic: int, since: HasPosition | None = None) -> None:
        """A resume of ``topic`` after ``since`` began (``since`` tells :meth:`lag`
        how far behind it starts; None: not counted)."""
        self._resuming |= 1 << topic
        if since is not None:
            if self._replayed is None:
                self._replayed = {}
            self._replayed[topic] = since

    def resume_ended(self, topic: int) -> None:
        """The resume of ``topic`` went live, failed or was cancelled."""
        self._resuming &= ~(1 << topic)
        replayed = self._replayed
        if replayed is not None:
            replayed.pop(topic, None)
            if not replayed:
                self._replayed = None

    def resuming_topics(self) -> list[int]:
        """Every topic being resumed."""
        return [t for t in range(self._resuming.bit_length()) if self._resuming >> t & 1]

    def take(self, max_bytes: int) -> bytes:
        """The bytes to write next: pending frames within ``max_bytes`` (at least one),
        as whole WebSocket frames, or one JSON array frame in batch mode. Empty when
        nothing is pending or the socket is not open."""
        if self.state is not _OPEN:
            return b""
        sub = self.sub
        frames = sub.drain(max_bytes)
        if self._skipped is not None:  # a filter left frames out: tell where they went
            frames = self._covered(frames)
        if not frames:
            return b""
        skipped = sub.take_conflated()
        delivered = self._delivered
        topics = set(map(_TOPIC, frames))  # a few topics, however many frames
        for topic in topics:
            delivered |= 1 << topic
        self._delivered = delivered
        self.frames_sent += len(frames)
        stats = self.stats
        # Deliveries.taken's fast path, inlined (one write of a fan-out is ~1 µs in
        # all; a call costs a fifth of it): the same frames as the tally's, timed at
        # the start of the flusher's round (stats.now).
        if (
            frames[0] is stats._first
            and frames[-1] is stats._last
            and len(frames) == stats._n
            and self._replayed is None
            and (now := stats.now or _now()) <= stats._until
        ):
            stats._takes += 1
            stats._waited += now
        else:
            stats.taken(frames, topics, self._replayed)
        if skipped:  # told before the frames that follow the skipped ones
            notices = [_conflated(topic, n) for topic, n in skipped.items()]
            self.frames_sent += len(notices)
            frames = notices + frames
        return self.encode(frames)

    def encode(self, frames: list[Frame]) -> bytes:
        """``frames`` (at least one) as the bytes of this socket's transport: whole
        WebSocket frames, or one JSON array frame in batch mode. A transport with
        other framing (:class:`bridge.sse.SSESession`) overrides this only."""
        if self.batch and len(frames) > 1:
            return text_frame(b"[" + b",".join(map(_DATA, frames)) + b"]")
        # Every queued frame is encoded (send() and the bridge's dispatch see to it).
        return b"".join(map(_WIRE, frames))

    def delivered(self, topic: int) -> bool:
        """Whether a frame of ``topic`` has been written to this socket."""
        return bool(self._delivered >> topic & 1)

    @property
    def pending(self) -> int:
        """Bytes of frames waiting."""
        return self.sub.bytes

    @property
    def replay_room(self) -> int:
        """Bytes that may wait for the socket when a replay queues its next frame
        (see :meth:`bridge.connection.Connection.send_many`): below the conflation
        threshold, so a socket that reads is never *behind* because of its own
        replay; at most half the byte bound, so a replay never overflows the queue."""
        return self._room

    def lag(self, head: Callable[[int], HasPosition | None]) -> int:
        """How many events this socket is behind the heads of its topics (``head``:
        the bridge's last position of a topic): the frames queued for it, plus for
        each topic being resumed (or caught up) the events from the last one its
        resume queued up to the head. A resume from another epoch than the head's
        adds nothing (the distance is unknown)."""
        behind = len(self.sub)
        replayed = self._replayed
        if replayed:
            for topic, at in replayed.items():
                top = head(topic)
                if top is not None and top.epoch == at.epoch and top.offset > at.offset:
                    behind += top.offset - at.offset
        return behind

    # --- closing ------------------------------------------------------------------------

    def begin_close(self, code: int | None, reason: str) -> bool:
        """Move to CLOSING (once): take no more frames, drop what is queued (counted).
        False if it was already closing or closed."""
        if self.state is not State.OPEN:
            return False
        self.state = State.CLOSING
        self.close_code = code
        self.close_reason = reason
        self.sub.close()
        self.frames_dropped += self.sub.clear()
        return True

    def closed(self) -> None:
        """The socket is gone."""
        if self.state is State.OPEN:
            self.sub.close()
            self.frames_dropped += self.sub.clear()
        self.state = State.CLOSED

    def info(self, head: Callable[[int], HasPosition | None] | None = None) -> dict[str, Any]:
        """This socket in ``/ws/connections`` (``lag``: see :meth:`lag`; without
        ``head``, the frames queued)."""
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "user": self.user,
            "subscriptions": sorted(TOPIC_NAMES[t] for t in self.sub.topics),
            "connected_at": self.connected_at,
            "frames_sent": self.frames_sent,
            "send_queue_depth": len(self.sub),
            "send_queue_bytes": self.sub.bytes,
            "lag": self.lag(head or _no_head),
            "remote_address": self.remote,
        }


def _nothing() -> None:
    pass


_KEY = attrgetter("key")


def _conflation_key(topics: frozenset[int] | None) -> Callable[[Frame], Hashable] | None:
    """The conflation key of a socket's frames when it conflates ``topics`` (None or
    empty: nothing conflated): the frame's own key (:attr:`Frame.key`), for those topics."""
    if not topics:
        return None
    if topics >= CONFLATION_KEYS.keys():
        return _KEY  # frames of other topics have no key

    def key(frame: Frame) -> Hashable:
        return frame.key if frame.topic in topics else None

    return key


def _conflated(topic: int, skipped: int) -> Frame:
    """The control frame telling a socket that ``skipped`` frames of ``topic`` were
    superseded by newer ones of the same key while it was behind."""
    data = {"subscription_type": TOPIC_NAMES[topic], "skipped": skipped}
    return control("conflated", data, about=topic)


def _position(topic: int, frame: Frame) -> Frame:
    """The control frame telling a socket that ``topic`` went as far as ``frame``
    (left out by its filters): it may resume after it."""
    at = {"offset": frame.offset, "epoch": frame.epoch}
    data = {"subscription_type": TOPIC_NAMES[topic], "position": at}
    return control("position", data, about=topic)


def _no_head(topic: int) -> None:
    return None
