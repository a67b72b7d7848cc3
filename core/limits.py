"""Limits that two processes must agree on, defined once.

The core's settings take their defaults from here; the bridge's upstream and
the SDK build their gRPC channels with :func:`channel_options`, so a client
never accepts less than the core may send, and never pings the core more often
than the core permits.
"""

from __future__ import annotations

__all__ = [
    "KEEPALIVE_TIME",
    "KEEPALIVE_TIMEOUT",
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_PING_STRIKES",
    "MAX_STRING_CHARS",
    "MIN_CLIENT_PING_INTERVAL",
    "UPSTREAM_BATCH",
    "channel_options",
]

#: Bytes in one gRPC message, both ways (larger: RESOURCE_EXHAUSTED from gRPC itself).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Bytes in one serialized event; anything larger is refused at Publish.
MAX_EVENT_BYTES = 64 * 1024
#: Characters in one string field of an event.
MAX_STRING_CHARS = 4096
#: Bytes of events in one ``EventBatch`` or ``History`` page: an eighth of a message,
#: so a batch of events at their largest always fits, whatever ``max_batch`` asks.
MAX_BATCH_BYTES = 1024 * 1024
#: Events per message the bridge asks the core for (``SubscribeRequest.max_batch``).
UPSTREAM_BATCH = 500
#: Seconds between HTTP/2 keepalive pings, and to wait for their ack.
KEEPALIVE_TIME = 20.0
KEEPALIVE_TIMEOUT = 10.0
#: The shortest interval between a client's pings that the core tolerates without
#: data in flight; a client's ``KEEPALIVE_TIME`` must not be shorter.
MIN_CLIENT_PING_INTERVAL = 5.0
#: Pings sooner than that the core forgives (its strikes are reset when it sends
#: data); the next one gets a GOAWAY with "too_many_pings" (gRPC's default, pinned).
MAX_PING_STRIKES = 2

assert MAX_EVENT_BYTES < MAX_BATCH_BYTES < MAX_MESSAGE_BYTES
assert KEEPALIVE_TIME >= MIN_CLIENT_PING_INTERVAL


def channel_options(
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    keepalive_time: float = KEEPALIVE_TIME,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT,
) -> list[tuple[str, int]]:
    """gRPC options of a client channel to the core: receive what the core may
    send, and find a dead core within ``keepalive_time + keepalive_timeout``."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(max(keepalive_time, MIN_CLIENT_PING_INTERVAL) * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
