"""Bridge configuration: command-line flags and ``CLEARPATH_BRIDGE_*`` environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.http_guard import HEADER_TIMEOUT
from core.auth import AuthFields
from core.credentials import read_pem
from core.delivery import DeliveryFields
from core.errors import InvalidArgument
from core.exposure import check_exposure
from core.targets import parse_targets

__all__ = ["BridgeSettings"]

#: Bytes queued for a socket from which it is behind and conflates (see
#: ``conflate_after_bytes``); chosen by measurement (bench/results/slow-reader.md).
CONFLATE_AFTER_BYTES = 256 * 1024

#: The dashboard's build output, served at ``/`` when it exists.
DEFAULT_STATIC = Path(__file__).resolve().parent.parent / "clients" / "web" / "dist"


class BridgeSettings(AuthFields, DeliveryFields, BaseSettings):
    """Settings of one bridge. Every field is also ``CLEARPATH_BRIDGE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CLEARPATH_BRIDGE_", extra="forbid")

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(8000, ge=0, le=65535, description="HTTP/WebSocket port; 0 picks a free one")
    core: str = Field(
        "localhost:50051",
        description="the core's gRPC address, host:port, or several cores sharing one broker, "
        "host:port,host:port,...: the upstream streams from one and moves to the next "
        "(round robin) when it fails",
    )
    # --- the upstream's credentials towards the core (same for every address) ---
    core_token: SecretStr | None = Field(
        None, description="bearer token the upstream sends to the core with every call"
    )
    core_tls_ca: Path | None = Field(
        None, description="PEM CA the core's certificate must chain to: dial the core over TLS"
    )
    core_tls_cert: Path | None = Field(
        None, description="PEM client certificate for a core requiring one (mutual TLS)"
    )
    core_tls_key: Path | None = Field(None, description="PEM private key of core_tls_cert")
    send_queue_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes of frames queued per socket; past it the socket catches up from "
        "history instead of queueing",
    )
    socket_send_buffer: int = Field(
        64 * 1024,
        ge=0,
        le=16 * 1024 * 1024,
        description="SO_SNDBUF of each socket, bytes (the kernel doubles it); what a slow "
        "reader has in flight beyond the bridge's queue, where no priority lane or conflation "
        "reaches (0: the kernel's autotuning, up to tcp_wmem's 4 MiB). With 32 KiB, fast "
        "readers over loopback (a local proxy, the bench) stalled at ~1.5 MB/s per socket "
        "with the CPU idle (W2 in bench/results/send-buffer-64k.md)",
    )
    slow_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a socket's transport may take nothing while bytes wait for it; "
        "longer closes it as too slow (1013)",
    )
    # --- slow screens (README "Delivery classes, priority lanes and conflation") ---
    conflate_after_bytes: int = Field(
        CONFLATE_AFTER_BYTES,
        ge=0,
        description="bytes queued for a socket from which it is behind: newer frames of a "
        "conflated topic supersede the queued ones of the same key (at most half of "
        "send_queue_bytes is used)",
    )

    @property
    def conflate_after(self) -> int:
        """Bytes from which a socket conflates: ``conflate_after_bytes``, at most half
        of ``send_queue_bytes`` (conflation comes before overflow)."""
        return min(self.conflate_after_bytes, self.send_queue_bytes // 2)

    flush_interval: float = Field(
        0.01,
        ge=0,
        le=1,
        description="at most one write per socket per this many seconds (0: every loop turn)",
    )
    cache_size: int = Field(
        1000, ge=0, description="recent frames kept per topic to resume browsers without the core"
    )
    ping_interval: float = Field(
        20.0,
        gt=0,
        description="seconds between pings; a socket silent until the next ping is dropped",
    )
    max_message_bytes: int = Field(
        64 * 1024, ge=256, description="largest client message; larger closes with 1009"
    )
    rate_limit: float = Field(20.0, gt=0, description="client messages per second, sustained")
    rate_burst: int = Field(50, ge=1, description="client messages allowed in a burst")
    max_connections: int = Field(10_000, ge=1, description="open sockets; more are refused")
    # --- security (README "Security") ---
    header_timeout: float = Field(
        HEADER_TIMEOUT,
        gt=0,
        description="seconds a connection has to send a complete request head, from "
        "connecting and after each response; also the keep-alive idle limit",
    )
    insecure: bool = Field(
        False, description="allow listening on a non-loopback address with auth off"
    )
    auth_timeout: float = Field(
        5.0, gt=0, le=60, description="seconds a socket has to authenticate; later: close 4008"
    )
    allowed_origins: str = Field(
        "",
        description="browser origins allowed to open sockets, comma-separated "
        "(https://app.example.com, or * for any); empty: same origin as the Host only. "
        "Requests without an Origin header (not browsers) are allowed",
    )
    max_connections_per_address: int = Field(
        1000, ge=1, description="open sockets per remote address; more are refused (429)"
    )
    max_connections_per_identity: int = Field(
        100, ge=1, description="open sockets per token subject; more are closed (4029)"
    )
    max_subscriptions: int = Field(7, ge=1, le=7, description="subscription types per socket")
    trusted_proxies: str = Field(
        "",
        description="addresses or networks of reverse proxies whose X-Forwarded-For names "
        "the client, comma-separated (e.g. 127.0.0.1 behind the local cluster's nginx)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an address or network"
                ) from None
        return value

    abuse_limit: int = Field(
        100,
        ge=1,
        description="client messages refused as rate_limited in a row before the socket "
        "is closed (1008)",
    )
    reconnect_initial: float = Field(0.1, gt=0, description="first upstream retry delay, seconds")
    reconnect_max: float = Field(5.0, gt=0, description="longest upstream retry delay, seconds")
    close_timeout: float = Field(2.0, gt=0, description="seconds to close a socket before abort")
    # --- readiness (/readyz, bridge.health) ---
    canary_interval: float = Field(
        5.0,
        gt=0,
        description="seconds between the canaries the bridge publishes to itself through "
        "the core (its readiness probe)",
    )
    canary_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a canary may take to come back on the bridge's own stream; "
        "later: /readyz answers 503",
    )
    static_dir: Path | None = Field(
        DEFAULT_STATIC, description="folder served at / (the dashboard); none to disable"
    )

    @field_validator("core")
    @classmethod
    def _core_addresses(cls, value: str) -> str:
        # Refuse a bad list at start-up, naming the entry; keep it normalized.
        try:
            return ",".join(parse_targets(value, "core"))
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None

    @field_validator("core_tls_ca", "core_tls_cert", "core_tls_key")
    @classmethod
    def _readable_pem(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Refuse an unreadable file at start-up, naming it, not at the first connection.
        if value is not None:
            read_pem(value, "private key" if info.field_name == "core_tls_key" else "certificate")
        return value

    @model_validator(mode="after")
    def _safe_exposure(self) -> BridgeSettings:
        # Auth misconfigured (an unreadable key file, a short secret): refused here,
        # naming it; auth off on a public address: refused unless --insecure.
        check_exposure(self.host, auth=self.verifier() is not None, insecure=self.insecure)
        return self

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> BridgeSettings:
        if (self.core_tls_cert is None) != (self.core_tls_key is None):
            raise ValueError("core_tls_cert and core_tls_key go together: give both or neither")
        return self

    @field_serializer("core_token", "auth_secret", when_used="json")
    def _token_in_json(self, token: SecretStr | None) -> str | None:
        # JSON is how the worker pool hands settings to its processes (over a
        # pipe): it must carry the token itself. repr() and str() still hide it.
        return None if token is None else token.get_secret_value()

    @property
    def cores(self) -> tuple[str, ...]:
        """The addresses of :attr:`core`, in order."""
        return tuple(self.core.split(","))
