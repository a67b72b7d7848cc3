"""Core configuration: command-line flags and ``CLEARPATH_CORE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.auth import AuthFields
from core.credentials import read_pem
from core.delivery import DeliveryFields
from core.errors import UnknownTopic
from core.exposure import check_exposure
from core.limits import (
    KEEPALIVE_TIME,
    KEEPALIVE_TIMEOUT,
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
)
from core.topics import topic_from_name

__all__ = ["CoreSettings", "parse_retention"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_retention(text: str) -> dict[int, tuple[int | None, float | None]]:
    """``map_updates=5000/10m,anomalies=/7d`` → topic → (count, max age in seconds).

    Either part may be empty (no bound of that kind), not both. Raises ValueError
    naming the bad entry."""
    found: dict[int, tuple[int | None, float | None]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, bounds = entry.partition("=")
        count_text, _, age_text = bounds.partition("/")
        try:
            topic = topic_from_name(name)
            count = int(count_text) if count_text.strip() else None
            age = _seconds(age_text.strip()) if age_text.strip() else None
        except (ValueError, UnknownTopic) as exc:
            raise ValueError(f"retention entry {entry!r}: {exc}") from None
        if (count is None and age is None) or (count is not None and count < 1):
            raise ValueError(f"retention entry {entry!r}: give COUNT >= 1 and/or /AGE")
        found[topic] = (count, age)
    return found


def _seconds(text: str) -> float:
    unit = _UNITS.get(text[-1:])
    value = float(text[:-1] if unit else text) * (unit or 1.0)
    if not value > 0:
        raise ValueError(f"age {text!r} must be positive")
    return value


class CoreSettings(AuthFields, DeliveryFields, BaseSettings):
    """Settings of one core node. Every field is also ``CLEARPATH_CORE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CLEARPATH_CORE_", extra="forbid")

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    broker_url: str = Field("memory://", description="memory:// or redis://host:port/db")
    retention: str = Field(
        "",
        description="Redis broker: per-topic history, TOPIC=COUNT[/AGE] comma-separated "
        "(AGE like 90s, 10m, 24h, 7d); unset topics keep the defaults",
    )
    min_replicas: int = Field(
        0, ge=0, description="Redis broker: replicas that must acknowledge a Publish (WAIT)"
    )
    history_size: int = Field(10_000, ge=1, description="events kept per topic for resume")
    queue_size: int = Field(4096, ge=1, description="events queued per subscriber before overflow")
    heartbeat_interval: float = Field(15.0, gt=0, description="seconds of idle before a heartbeat")
    # --- slow subscribers (README "Delivery classes, priority lanes and conflation") ---
    conflate_after: int | None = Field(
        None,
        ge=0,
        description="events queued for a stream from which it is behind and conflates "
        "(below queue_size); unset: a quarter of queue_size",
    )
    max_batch: int = Field(1000, ge=1, description="events per Publish call")
    max_event_bytes: int = Field(MAX_EVENT_BYTES, ge=256, description="bytes per event")
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=1024,
        description="bytes per gRPC message (larger: RESOURCE_EXHAUSTED)",
    )
    max_batch_bytes: int = Field(
        MAX_BATCH_BYTES,
        ge=1024,
        description="bytes of events per EventBatch or History page (at most half a message)",
    )
    max_subscribers: int = Field(10_000, ge=1, description="concurrent Subscribe streams")
    shutdown_grace: float = Field(5.0, ge=0, description="seconds streams get to end on stop")
    insecure: bool = Field(
        False, description="allow listening on a non-loopback address with auth off"
    )
    publish_rate: float = Field(
        20_000.0, gt=0, description="auth on: events per second one identity may publish"
    )
    publish_burst: int = Field(
        40_000, ge=1, description="auth on: events one identity may publish in a burst"
    )
    keepalive_time: float = Field(
        KEEPALIVE_TIME, gt=0, description="seconds between keepalive pings"
    )
    keepalive_timeout: float = Field(
        KEEPALIVE_TIMEOUT, gt=0, description="seconds to wait for a ping ack"
    )
    max_streams_per_connection: int = Field(
        1000,
        ge=1,
        description="concurrent calls on one client connection (HTTP/2 MAX_CONCURRENT_STREAMS); "
        "a client's further calls wait for one to end. gRPC channels of one process to one "
        "address with the same options share a connection, so this caps their sum",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="HTTP port of /metrics, /healthz and /readyz; unset: no such endpoint "
        "(0 picks a free one)",
    )
    metrics_host: str | None = Field(
        None, description="address the metrics endpoint binds; unset: the same as host"
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain of the core: serve TLS (with tls_key)"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA certificate(s): require every client to present a certificate "
        "signed by it (mutual TLS; needs tls_cert)",
    )

    @model_validator(mode="after")
    def _safe_exposure(self) -> CoreSettings:
        # Auth misconfigured (an unreadable key file, a short secret): refused here,
        # naming it; auth off on a public address: refused unless --insecure.
        check_exposure(self.host, auth=self.verifier() is not None, insecure=self.insecure)
        return self

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> CoreSettings:
        # One Publish fans a whole batch out at once: a smaller queue would
        # overflow every subscriber on a full batch.
        if self.queue_size < self.max_batch:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be at least max_batch ({self.max_batch})"
            )
        # An event at its largest, with its envelope, must fit in one message.
        if self.max_event_bytes + 1024 > self.max_message_bytes:
            raise ValueError(
                f"max_message_bytes ({self.max_message_bytes}) must exceed max_event_bytes "
                f"({self.max_event_bytes}) by at least 1024"
            )
        return self

    @model_validator(mode="after")
    def _conflation_before_overflow(self) -> CoreSettings:
        if self.conflate_after is not None and self.conflate_after >= self.queue_size:
            raise ValueError(
                f"conflate_after ({self.conflate_after}) must be below queue_size "
                f"({self.queue_size}): conflation comes before overflow"
            )
        return self

    @property
    def conflate_after_events(self) -> int:
        """Events queued from which a stream conflates (``conflate_after`` or a
        quarter of ``queue_size``)."""
        if self.conflate_after is not None:
            return self.conflate_after
        return self.queue_size // 4

    @model_validator(mode="after")
    def _tls_files(self) -> CoreSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        return self

    @field_validator("tls_cert", "tls_key", "tls_client_ca")
    @classmethod
    def _readable_pem(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Refuse an unreadable file at start-up, naming it, not at the first handshake.
        if value is not None:
            read_pem(value, "private key" if info.field_name == "tls_key" else "certificate")
        return value

    def tls_files(self) -> tuple[bytes, bytes, bytes | None] | None:
        """``(key, certificate chain, client CA or None)`` read now, or None
        without TLS. ValueError naming a file that cannot be read."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        ca = self.tls_client_ca
        return (
            read_pem(self.tls_key, "private key", "tls_key"),
            read_pem(self.tls_cert, "certificate", "tls_cert"),
            None if ca is None else read_pem(ca, "certificate", "tls_client_ca"),
        )

    @field_validator("retention")
    @classmethod
    def _retention_parses(cls, value: str) -> str:
        parse_retention(value)
        return value

    @property
    def retention_by_topic(self) -> dict[int, tuple[int | None, float | None]]:
        """``retention`` parsed: topic → (count or None, max age in seconds or None)."""
        return parse_retention(self.retention)

    @property
    def batch_bytes(self) -> int:
        """Bytes of events in one batch or History page: within ``max_batch_bytes``
        and half a message (a single larger event still goes, alone)."""
        return min(self.max_batch_bytes, self.max_message_bytes // 2)
