"""The core's entrance: who is calling (every RPC, by a server interceptor), and
how fast each identity may publish.

With a :class:`~core.auth.Verifier` configured, every call but the gRPC health
service must carry ``authorization: Bearer <JWT>``; missing or bad →
UNAUTHENTICATED before the handler runs. The service then asks
:meth:`Authenticator.identity` for the caller (a cache hit: tokens are verified
once while they are valid) and checks the claims itself (PERMISSION_DENIED).
Without a verifier every caller is :data:`~core.auth.ANONYMOUS`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from core.auth import ANONYMOUS, Identity, Verifier, parse_bearer
from core.errors import RateLimited, Unauthenticated
from core.rate import TokenBucket

__all__ = ["AuthInterceptor", "Authenticator", "PublishRates"]

#: Call metadata as grpc.aio gives it (``context.invocation_metadata()``).
Metadata = Iterable[tuple[str, str | bytes]] | None

#: Methods anyone may call: load balancers and orchestrators probe health unauthenticated.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class Authenticator:
    """Turns call metadata into an :class:`Identity`; remembers verified tokens
    (at most ``cache_size``, each until its ``exp``)."""

    def __init__(self, verifier: Verifier | None, *, cache_size: int = 10_000) -> None:
        self.verifier = verifier
        self._cache: dict[str, Identity] = {}
        self._cache_size = cache_size
        #: Calls refused as unauthenticated.
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    def identity(self, metadata: Metadata) -> Identity:
        """The caller of a call with ``metadata``; raises Unauthenticated."""
        verifier = self.verifier
        if verifier is None:
            return ANONYMOUS
        value: str | None = None
        for key, item in metadata or ():
            if key == "authorization":
                value = item.decode() if isinstance(item, bytes) else item
                break
        try:
            token = parse_bearer(value)
            cached = self._cache.get(token)
            if cached is not None and (
                cached.expires_at is None or cached.expires_at > time.time()
            ):
                return cached
            identity = verifier.verify(token)
        except Unauthenticated:
            self.failures += 1
            raise
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]  # the oldest
        self._cache[token] = identity
        return identity


class PublishRates:
    """A token bucket per identity (subject): ``rate`` events a second, ``burst``
    at once. Anonymous callers (auth off) are not limited."""

    def __init__(self, rate: float, burst: int, *, max_identities: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._max = max_identities
        #: Publish calls refused.
        self.refused = 0

    def take(self, identity: Identity, events: int, now: float | None = None) -> None:
        """Spend ``events`` tokens of ``identity``; RateLimited when it has not enough
        (the whole batch is refused, nothing stored)."""
        if identity is ANONYMOUS:
            return
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(identity.subject)
        if bucket is None:
            if len(self._buckets) >= self._max:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[identity.subject] = TokenBucket(self._rate, self._burst, now)
        if not bucket.take(now, events):
            self.refused += 1
            raise RateLimited(
                f"publishing faster than {self._rate:g} events/s (burst {self._burst}); retry later"
            )


if TYPE_CHECKING:
    Continuation = Callable[
        [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
    ]


#: Told of each refused call: its method and its (deserialized) request.
OnRefused = Callable[[str, Any], None]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without a valid bearer token (UNAUTHENTICATED), but
    the health service's; so every RPC added later is covered too. ``on_refused``
    (e.g. the service's counters) hears of each refusal with its request."""

    def __init__(self, authenticator: Authenticator, on_refused: OnRefused | None = None) -> None:
        self._auth = authenticator
        self._on_refused = on_refused

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        try:
            self._auth.identity(handler_call_details.invocation_metadata)
        except Unauthenticated as exc:
            return _refusing(handler, str(exc), method, self._on_refused)
        return handler


def _refusing(
    handler: grpc.RpcMethodHandler[Any, Any],
    message: str,
    method: str,
    on_refused: OnRefused | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that ends the call UNAUTHENTICATED."""
    code = grpc.StatusCode.UNAUTHENTICATED

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if on_refused is not None:
            on_refused(method, request)
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if on_refused is not None:
            on_refused(method, request)
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, des, ser)
    return grpc.unary_unary_rpc_method_handler(unary, des, ser)
