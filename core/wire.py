"""Published events as the core sends them: serialized once, sent to many.

A :class:`Delivery` wraps one published event and builds its bytes on the
wire once, lazily, for every subscriber: a ``SubscribeResponse`` holding the
event, or one element of an ``EventBatch``. Batches are the concatenation of
their elements (protobuf's wire format for a repeated message field), so a
batch costs no per-subscriber serialization either.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from clearpath.realtime.v1 import events_pb2 as pb
from core.delivery import KeyOf

__all__ = ["UNKEYED", "Delivery", "batch_response", "varint"]

#: :attr:`Delivery.key` before it is computed.
UNKEYED: Hashable = object()

# Field tags (field number << 3 | wire type 2, length-delimited) of service.proto.
_EVENT_IN_RESPONSE = b"\x12"  # SubscribeResponse.event = 2
_EVENT_IN_BATCH = b"\x0a"  # EventBatch.events = 1
_BATCH_IN_RESPONSE = b"\x22"  # SubscribeResponse.batch = 4


def varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class Delivery:
    """One published event on its way to subscribers.

    ``topic`` and ``published`` (``event.published_at`` in seconds since the
    epoch, 0.0 when unset) are read once here, not once per subscriber."""

    __slots__ = ("_body", "event", "key", "published", "topic")

    def __init__(self, event: pb.Event) -> None:
        self.event = event
        self.topic: int = event.topic
        stamp = event.published_at
        self.published: float = stamp.seconds + stamp.nanos * 1e-9
        self._body: bytes | None = None
        #: The event's conflation key, computed once by :meth:`key_by` (UNKEYED before).
        self.key: Hashable | None = UNKEYED

    def key_by(self, key_of: KeyOf) -> Hashable | None:
        """The event's conflation key under ``key_of``, computed on first use and
        kept (every stream of a core conflates with the same keys)."""
        key = self.key
        if key is UNKEYED:
            key = self.key = key_of(self.event)
        return key

    def _length_and_event(self) -> bytes:
        if self._body is None:
            data = self.event.SerializeToString()
            self._body = varint(len(data)) + data
        return self._body

    def size(self) -> int:
        """Bytes this event adds to a batch."""
        body = self._body if self._body is not None else self._length_and_event()
        return 1 + len(body)

    def response(self) -> bytes:
        """The serialized ``SubscribeResponse(event=...)``."""
        return _EVENT_IN_RESPONSE + self._length_and_event()

    def element(self) -> bytes:
        """The event as one element of a serialized ``EventBatch``."""
        return _EVENT_IN_BATCH + self._length_and_event()


def batch_response(deliveries: Sequence[Delivery]) -> bytes:
    """The serialized ``SubscribeResponse(batch=EventBatch(events=...))``."""
    body = b"".join(d.element() for d in deliveries)
    return _BATCH_IN_RESPONSE + varint(len(body)) + body
