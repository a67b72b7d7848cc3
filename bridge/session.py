"""One browser socket's protocol state: no I/O, no aiohttp, tested with plain calls.

A :class:`Session` holds what the bridge knows of a socket — its hub
subscription (a queue bounded by bytes), the floors that keep replayed events
from arriving twice, the rate bucket, the counters — and one
:class:`State`. The transport side (:mod:`bridge.writer`) asks it for the
bytes to write with :meth:`Session.take`.

Slow-consumer policy, judged by progress, not by the size of a burst: past
``max_bytes`` waiting, a socket's queue overflows and the bridge has it catch
up from history instead (see ``Bridge._catch_up``); a socket whose transport
has taken nothing for ``slow_timeout`` while bytes waited is closed (see
:func:`is_stalled`). A socket that keeps reading is never cut off.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from bridge.frames import Frame, text_frame
from bridge.metrics import Deliveries
from core.auth import Identity
from core.hub import Subscription
from core.positions import Floors, HasPosition
from core.rate import TokenBucket
from core.topics import TOPIC_NAMES

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
_WIRE = attrgetter("_wire")  # set once encoded, which every queued frame is
_DATA = attrgetter("_data")


def is_stalled(stalled_since: float | None, now: float, slow_timeout: float) -> bool:
    """Whether a transport that stopped taking bytes at ``stalled_since`` (None:
    it takes them) has made no progress for longer than ``slow_timeout``."""
    return stalled_since is not None and now - stalled_since > slow_timeout


_OPEN = State.OPEN
_now = time.time  # the clock of bridge.metrics.Deliveries


class Session:
    """The protocol state of one socket.

    ``on_ready`` is called when frames become pending (or the queue overflows);
    it must not block. Every frame reaches the socket through :attr:`sub`.
    """

    __slots__ = (
        "_delivered",
        "_floors",
        "_only",
        "_replayed",
        "_resuming",
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
    ) -> None:
        self.id = id
        self.endpoint = endpoint
        self.remote = remote
        self.user: str | None = None
        #: Who the socket authenticated as (None: not yet).
        self.identity: Identity | None = None
        self._only: str | None = None  # notifications only for this user (and everyone)
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
        #: The bridge's delivery counters (a socket's own when none is given).
        self.stats = stats if stats is not None else Deliveries()
        self.sub: Subscription[Frame] = Subscription(
            (), None, on_ready or _nothing, size=frame_size, max_bytes=max_bytes
        )

    @property
    def on_ready(self) -> Callable[[], None]:
        """Called when frames become pending or the queue overflowed; must not block."""
        return self.sub.on_ready

    @on_ready.setter
    def on_ready(self, callback: Callable[[], None]) -> None:
        self.sub.on_ready = callback

    # --- what reaches the socket ---------------------------------------------------

    def send(self, frame: Frame) -> bool:
        """Queue one frame (control frames, replays); False if refused (closing,
        overflow, or an event that cannot be encoded)."""
        if self.state is State.OPEN and frame.encodes() and self.sub.offer(frame):
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
        self.sub.set_filter(self._admits if self._floors or self._only is not None else None)

    def authenticated(self, identity: Identity) -> None:
        """The socket is ``identity`` from now on: unless it is an operator, it
        receives only notifications for its subject or for everyone."""
        self.identity = identity
        self.user = identity.subject or None
        self._only = None if identity.operator else identity.subject
        self._refilter()

    def for_me(self, frame: Frame) -> bool:
        """Whether ``frame`` is meant for this socket's user (a notification for
        another user is not): replays skip the others."""
        only = self._only
        return only is None or not frame.user or frame.user == only

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
        frames = self.sub.drain(max_bytes)
        if not frames:
            return b""
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


def _no_head(topic: int) -> None:
    return None
