"""The SDK's exceptions, and the one place gRPC errors are translated into them.

::

    ClearPathError              base; ``code`` is the gRPC status name, or None
    ├── InvalidArgumentError    an event, filter or position is malformed (locally or per the core)
    ├── AuthenticationError     no or bad token (UNAUTHENTICATED)
    ├── PermissionDeniedError   the token may not do this (PERMISSION_DENIED)
    ├── ResourceExhaustedError  a limit of the core was hit (RESOURCE_EXHAUSTED)
    ├── UnavailableError        the core cannot be reached now (UNAVAILABLE); retry later
    ├── DeadlineExceededError   the call took longer than its timeout (DEADLINE_EXCEEDED)
    └── RpcError                any other gRPC failure
"""

from __future__ import annotations

import grpc

from core.errors import InvalidArgument

__all__ = [
    "AuthenticationError",
    "ClearPathError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RpcError",
    "UnavailableError",
    "from_grpc",
    "from_invalid",
]


class ClearPathError(Exception):
    """Base of every error the SDK raises.

    ``code`` is the name of the gRPC status the core answered with (e.g.
    ``"INVALID_ARGUMENT"``), or None when the error was found before sending.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidArgumentError(ClearPathError):
    """An event, filter, topic or position is malformed; the message names the field."""


class AuthenticationError(ClearPathError):
    """The core refused the credentials (missing, malformed or expired token)."""


class PermissionDeniedError(ClearPathError):
    """The credentials are valid but not allowed to do this."""


class ResourceExhaustedError(ClearPathError):
    """A bounded resource of the core is full (batch too large, too many subscribers…)."""


class UnavailableError(ClearPathError):
    """The core cannot be reached now; retrying later may succeed."""


class DeadlineExceededError(ClearPathError):
    """The call did not complete within its timeout."""


class RpcError(ClearPathError):
    """Any other failure of a call; ``code`` says which."""


_BY_CODE: dict[grpc.StatusCode, type[ClearPathError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_grpc(exc: grpc.aio.AioRpcError) -> ClearPathError:
    """The SDK error for a failed call (to be raised ``from exc``)."""
    code = exc.code()
    details = exc.details() or code.name.lower().replace("_", " ")
    return _BY_CODE.get(code, RpcError)(details, code=code.name)


def from_invalid(exc: InvalidArgument) -> InvalidArgumentError:
    """The SDK error for input refused before sending (to be raised ``from exc``)."""
    return InvalidArgumentError(str(exc))
