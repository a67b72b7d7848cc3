"""How a gRPC client proves itself to the core and checks the core: TLS and a bearer token.

Every gRPC client of the core (the SDK, and so the CLI and the simulator; the
bridge's upstream) opens its channels with :func:`open_channel`, so TLS and
tokens work the same everywhere:

* TLS when :attr:`ClientCredentials.tls` (a CA or a client certificate is
  given): the core's certificate must chain to ``ca`` (the system's roots when
  no ``ca`` is given) and name the host dialled; ``cert`` + ``key`` are
  presented to a core that requires client certificates (mutual TLS).
* A ``token`` is sent as ``authorization: Bearer <token>`` metadata with every
  call, by a client interceptor rather than gRPC call credentials, which gRPC
  refuses on an insecure channel (a core on loopback without TLS).

The PEM files are read when a channel is opened (so a renewed certificate is
used by the next channel); :func:`read_pem` is also what the core's settings
use to refuse an unreadable file at start-up, naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

__all__ = [
    "TOKEN_ENV",
    "ClientCredentials",
    "PemKind",
    "TokenSource",
    "open_channel",
    "read_pem",
]

#: The environment variable a client's token is read from when none is given.
TOKEN_ENV = "CLEARPATH_TOKEN"

#: A bearer token, or a function returning the current one (None or "": send none).
TokenSource = str | Callable[[], str | None]

PemKind = Literal["certificate", "private key"]
_MARKERS: dict[PemKind, bytes] = {
    "certificate": b"-----BEGIN CERTIFICATE-----",
    "private key": b"PRIVATE KEY-----",
}


def read_pem(path: str | os.PathLike[str], kind: PemKind, what: str = "") -> bytes:
    """The bytes of the PEM file ``path``; ValueError naming ``what`` (a setting
    or a flag; "" when the caller names it) and the file when it cannot be read
    or holds no ``kind``."""
    where = f"{what}: " if what else ""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{where}cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if _MARKERS[kind] not in data:
        raise ValueError(f"{where}{str(path)!r} holds no PEM {kind}")
    return data


@dataclass(frozen=True)
class ClientCredentials:
    """What a client presents to the core, and whom it trusts.

    ``token`` is a bearer token, or a zero-argument function returning the
    current one, called again for every call (a Subscribe stream reads it when
    it is opened, so a reconnect uses the newest token); surrounding
    whitespace is dropped and None or "" sends no token. ``ca`` is the PEM of
    the certificate authority the core's certificate must chain to; ``cert``
    and ``key`` are the client's PEM certificate chain and private key for
    mutual TLS, both or neither (ValueError otherwise). Paths may be ``str``.
    """

    token: TokenSource | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate and its key go together: give both or neither")

    @classmethod
    def from_env(cls) -> ClientCredentials:
        """Credentials with the token of ``$CLEARPATH_TOKEN`` (none when unset or empty)."""
        return cls(token=os.environ.get(TOKEN_ENV) or None)

    @property
    def tls(self) -> bool:
        """True when the channel is to use TLS: a CA or a client certificate is given."""
        return self.ca is not None or self.cert is not None

    def current_token(self) -> str | None:
        """The token to send now (the function's answer when ``token`` is one), or None."""
        token = self.token() if callable(self.token) else self.token
        return (token.strip() or None) if token else None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata a call carries now: ``authorization: Bearer <token>``, or nothing."""
        token = self.current_token()
        return (("authorization", f"Bearer {token}"),) if token else ()

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The TLS credentials of a channel, the PEM files read now; ValueError
        naming a file that cannot be read."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "certificate", "CA certificate"),
            private_key=_read(self.key, "private key", "client key"),
            certificate_chain=_read(self.cert, "certificate", "client certificate"),
        )


def _read(path: Path | None, kind: PemKind, what: str) -> bytes | None:
    return None if path is None else read_pem(path, kind, what)


def open_channel(
    address: str,
    credentials: ClientCredentials | None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to ``address`` with ``options``: TLS when ``credentials.tls``,
    else plaintext; with a token, every call carries it (see the module's
    docstring). ValueError naming a PEM file that cannot be read."""
    interceptors: list[grpc.aio.ClientInterceptor] | None = None
    if credentials is not None and credentials.token:
        interceptors = [
            _UnaryUnaryToken(credentials),
            _UnaryStreamToken(credentials),
            _StreamUnaryToken(credentials),
            _StreamStreamToken(credentials),
        ]
    if credentials is not None and credentials.tls:
        return grpc.aio.secure_channel(
            address,
            credentials.channel_credentials(),
            options=list(options),
            interceptors=interceptors,
        )
    return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)


# gRPC files an interceptor under the first of the four kinds it is an instance
# of, so each kind of call needs its own class.


class _Token:
    def __init__(self, credentials: ClientCredentials) -> None:
        self._credentials = credentials

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """``details`` with the current token in place of any ``authorization`` given."""
        added = self._credentials.metadata()
        if not added:
            return details
        kept = [(k, v) for k, v in details.metadata or () if k != "authorization"]
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*kept, *added),
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryUnaryToken(_Token, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


class _UnaryStreamToken(_Token, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


class _StreamUnaryToken(_Token, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_token(details), requests)


class _StreamStreamToken(_Token, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_token(details), requests)
