"""Frames the bridge sends: each encoded once, the same bytes for every socket."""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime
from typing import Any

from clearpath.realtime.v1 import events_pb2 as pb
from core.codec import encode_frame, event_to_frame
from core.delivery import CONFLATION_KEYS, KeyOf, key_function

__all__ = [
    "CONTROL_LANE",
    "Frame",
    "control",
    "encodable",
    "event_frame",
    "now",
    "text_frame",
    "use_conflation_keys",
]

log = logging.getLogger("clearpath.bridge")


def text_frame(payload: bytes) -> bytes:
    """A whole WebSocket text frame (RFC 6455 §5.2) as a server sends it: FIN, opcode 1,
    no mask, no compression — the same bytes for every socket."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


#: The queue lane of the control frames that concern no topic (welcome, pong,
#: error, refreshed): a session makes it urgent, so they never wait behind
#: events queued after them (see :attr:`Frame.lane`).
CONTROL_LANE = -1


class Frame:
    """One frame: its JSON text, its bytes on the wire, the stream position of its
    event (control frames have topic 0 and offset 0), its queue lane and when the
    core published it. Built once, sent to many.

    An event's frame is encoded on first use: events of topics no socket
    listens to cost no JSON.
    """

    __slots__ = (
        "_data",
        "_event",
        "_wire",
        "epoch",
        "key",
        "lane",
        "latitude",
        "longitude",
        "nbytes",
        "offset",
        "published",
        "topic",
        "user",
    )

    def __init__(
        self,
        data: bytes | None = None,
        topic: int = 0,
        offset: int = 0,
        epoch: str = "",
        event: pb.Event | None = None,
    ) -> None:
        self._data = data
        self._wire: bytes | None = None
        #: Bytes on the wire once encoded (0 before): what the frame costs in a queue.
        self.nbytes = 0
        self._event = event
        self.topic = topic
        #: Which lane of a socket's queue it travels in (:class:`core.hub.Subscription`):
        #: an event's topic; a control frame's, the topic it concerns (its
        #: ``subscribed``, gap notice, ``viewport``, ``position`` ... stays in order
        #: with that topic's events), or :data:`CONTROL_LANE`.
        self.lane = topic
        self.offset = offset
        self.epoch = epoch
        #: The user a notification is for ("" for everyone, and for other frames).
        self.user = ""
        #: The event's conflation key (:mod:`core.delivery`; None: never conflated,
        #: e.g. a control frame or an event of a topic that is not ``latest``).
        self.key: Hashable | None = None
        #: Where a map update is (NaN for other frames): what viewport filters read.
        self.latitude = _NAN
        self.longitude = _NAN
        #: When the core published the event, Unix seconds (0.0: unknown, e.g. a
        #: control frame, or an event from a core that does not set it).
        self.published = 0.0

    @property
    def data(self) -> bytes:
        """The frame's JSON text."""
        if self._data is None:
            assert self._event is not None
            self._data = encode_frame(event_to_frame(self._event))
            self._event = None
        return self._data

    def encodes(self) -> bool:
        """Encode now if not yet; False (logged) when the event cannot be encoded,
        e.g. a payload this bridge does not know (a core built from newer protos)."""
        if self._wire is not None:
            return True
        try:
            self._encode()
        except Exception as exc:
            log.warning("event %s:%s cannot be encoded (%s); skipped", self.epoch, self.offset, exc)
            return False
        return True

    def _encode(self) -> bytes:
        wire = self._wire = text_frame(self.data)
        self.nbytes = len(wire)
        return wire

    @property
    def wire(self) -> bytes:
        """The whole WebSocket text frame carrying :attr:`data`."""
        return self._wire if self._wire is not None else self._encode()


def now() -> str:
    """The current time, RFC 3339 UTC with milliseconds, ending in Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def control(kind: str, data: dict[str, Any] | None = None, *, about: int | None = None) -> Frame:
    """A control frame: ``{"type": kind, "data": data, "timestamp": now}``, encoded.

    ``about``: the topic it concerns; it travels in that topic's lane, so it is never
    overtaken by, nor overtakes, that topic's events. Without it the frame is in
    :data:`CONTROL_LANE` (urgent: never behind events queued after it)."""
    frame = Frame(encode_frame({"type": kind, "data": data or {}, "timestamp": now()}))
    frame.lane = CONTROL_LANE if about is None else about
    frame.encodes()
    return frame


def event_frame(event: pb.Event) -> Frame:
    """The frame of a published event (see :func:`core.codec.event_to_frame`)."""
    position = event.position
    frame = Frame(None, event.topic, position.offset, position.epoch, event)
    published = event.published_at  # unset: 0 seconds, 0 nanos (no ToDatetime: once per event)
    frame.published = published.seconds + published.nanos / 1e9
    frame.key = _key_of(event)
    if event.topic == _NOTIFICATIONS:
        frame.user = event.notification.user_id
    elif event.topic == _MAP_UPDATES:
        where = event.map_update
        frame.latitude = where.latitude
        frame.longitude = where.longitude
    return frame


_NOTIFICATIONS = pb.TOPIC_NOTIFICATIONS
_key_of: KeyOf = key_function(CONFLATION_KEYS)


def use_conflation_keys(keys: dict[int, tuple[str, ...]]) -> None:
    """Compute :attr:`Frame.key` with the key fields of ``keys`` (see
    :func:`core.delivery.parse_conflation`) from now on, in this process: frames
    are built once for every socket, and a bridge process runs one bridge. Topics
    left out keep their default keys; which topics a socket conflates is the
    session's choice (``Session(conflate=...)``)."""
    global _key_of
    _key_of = key_function({**CONFLATION_KEYS, **keys})


_MAP_UPDATES = pb.TOPIC_MAP_UPDATES
_NAN = math.nan


def encodable(frames: Iterable[Frame]) -> tuple[list[Frame], int]:
    """The frames that can be encoded, and how many could not (skipped, logged)."""
    good: list[Frame] = []
    bad = 0
    for frame in frames:
        if frame.encodes():
            good.append(frame)
        else:
            bad += 1
    return good, bad
