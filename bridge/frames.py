"""Frames the bridge sends: each encoded once, the same bytes for every socket."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from clearpath.realtime.v1 import events_pb2 as pb
from core.codec import encode_frame, event_to_frame

__all__ = ["Frame", "control", "encodable", "event_frame", "now", "text_frame"]

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


class Frame:
    """One frame: its JSON text, its bytes on the wire, the stream position of its
    event (control frames have topic 0 and offset 0) and when the core published
    it. Built once, sent to many.

    An event's frame is encoded on first use: events of topics no socket
    listens to cost no JSON.
    """

    __slots__ = (
        "_data",
        "_event",
        "_wire",
        "epoch",
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
        self.offset = offset
        self.epoch = epoch
        #: The user a notification is for ("" for everyone, and for other frames).
        self.user = ""
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


def control(kind: str, data: dict[str, Any] | None = None) -> Frame:
    """A control frame: ``{"type": kind, "data": data, "timestamp": now}``, encoded."""
    frame = Frame(encode_frame({"type": kind, "data": data or {}, "timestamp": now()}))
    frame.encodes()
    return frame


def event_frame(event: pb.Event) -> Frame:
    """The frame of a published event (see :func:`core.codec.event_to_frame`)."""
    position = event.position
    frame = Frame(None, event.topic, position.offset, position.epoch, event)
    published = event.published_at  # unset: 0 seconds, 0 nanos (no ToDatetime: once per event)
    frame.published = published.seconds + published.nanos / 1e9
    if event.topic == _NOTIFICATIONS:
        frame.user = event.notification.user_id
    return frame


_NOTIFICATIONS = pb.TOPIC_NOTIFICATIONS


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
