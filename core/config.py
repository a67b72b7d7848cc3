"""Core configuration: command-line flags and ``CLEARPATH_CORE_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import UnknownTopic
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


class CoreSettings(BaseSettings):
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
    keepalive_time: float = Field(
        KEEPALIVE_TIME, gt=0, description="seconds between keepalive pings"
    )
    keepalive_timeout: float = Field(
        KEEPALIVE_TIMEOUT, gt=0, description="seconds to wait for a ping ack"
    )

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
