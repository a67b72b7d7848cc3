"""The one exception tree of ClearPath Realtime, and its mapping to the edges.

::

    RealtimeError
    ├── InvalidArgument      bad input: INVALID_ARGUMENT / error frame ``invalid_message``
    │   ├── UnknownTopic     ``unknown_subscription_type``
    │   └── InvalidJson      (bridge) ``invalid_json``
    ├── Unauthenticated      no or bad credentials: UNAUTHENTICATED / ``unauthorized``, close 4001
    │   ├── TokenExpired     the token expired while connected: ``token_expired``, close 4003
    │   └── AuthTimeout      no ``auth`` message in time: ``auth_timeout``, close 4008
    ├── PermissionDenied     not allowed: PERMISSION_DENIED / ``forbidden``
    ├── ResourceExhausted    a limit was hit: RESOURCE_EXHAUSTED
    │   ├── SlowConsumer     a subscriber fell behind its queue: ``slow_consumer``, close 1013
    │   ├── RateLimited      too many messages: ``rate_limited``
    │   ├── PolicyViolation  rate limited again and again: ``policy_violation``, close 1008
    │   └── TooManyConnections  per identity: ``too_many_connections``, close 4029
    └── Unavailable          a dependency (broker, core) is gone: UNAVAILABLE, close 1013

Transports raise and catch these only; they turn them into a gRPC status with
:func:`grpc_status` or a WebSocket error frame / close code with the class
attributes, once, at the edge.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AuthTimeout",
    "InvalidArgument",
    "PermissionDenied",
    "PolicyViolation",
    "RateLimited",
    "RealtimeError",
    "ResourceExhausted",
    "SlowConsumer",
    "TokenExpired",
    "TooManyConnections",
    "Unauthenticated",
    "Unavailable",
    "UnknownTopic",
]


class RealtimeError(Exception):
    """Base of every error ClearPath Realtime reports to a client.

    ``str(error)`` is the human message sent to the client; it never holds a
    traceback or internal detail.
    """

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: The ``data.code`` of the WebSocket ``error`` frame.
    ws_error: str = "internal"
    #: The WebSocket close code when the error ends a connection, else None.
    ws_close: int | None = None


class InvalidArgument(RealtimeError):
    """The input is malformed or out of range; the message names the field."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    ws_error = "invalid_message"


class UnknownTopic(InvalidArgument):
    """A subscription type that does not exist."""

    ws_error = "unknown_subscription_type"


class Unauthenticated(RealtimeError):
    """Credentials are missing, malformed or expired."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    ws_error = "unauthorized"
    ws_close = 4001


class TokenExpired(Unauthenticated):
    """The token of an open connection expired and was not refreshed."""

    ws_error = "token_expired"
    ws_close = 4003


class AuthTimeout(Unauthenticated):
    """A socket did not authenticate within the bridge's ``auth_timeout``."""

    ws_error = "auth_timeout"
    ws_close = 4008


class PermissionDenied(RealtimeError):
    """The caller is known but not allowed to do this."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    ws_error = "forbidden"


class ResourceExhausted(RealtimeError):
    """A bounded resource is full."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    ws_error = "resource_exhausted"
    ws_close: int | None = 1013


class SlowConsumer(ResourceExhausted):
    """A subscriber's queue overflowed; it may resume from its last position."""

    ws_error = "slow_consumer"
    ws_close = 1013


class RateLimited(ResourceExhausted):
    """The client sends faster than it is allowed to."""

    ws_error = "rate_limited"
    ws_close = None


class PolicyViolation(ResourceExhausted):
    """A client went on sending after being rate limited again and again."""

    ws_error = "policy_violation"
    ws_close = 1008


class TooManyConnections(ResourceExhausted):
    """One identity holds as many connections as it may."""

    ws_error = "too_many_connections"
    ws_close = 4029


class Unavailable(RealtimeError):
    """A dependency is not reachable now; retry with backoff."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    ws_error = "unavailable"
    ws_close = 1013
