"""Core configuration: command-line flags and ``CLEARPATH_CORE_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.limits import (
    KEEPALIVE_TIME,
    KEEPALIVE_TIMEOUT,
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
)

__all__ = ["CoreSettings"]


class CoreSettings(BaseSettings):
    """Settings of one core node. Every field is also ``CLEARPATH_CORE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CLEARPATH_CORE_", extra="forbid")

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    broker_url: str = Field("memory://", description="memory:// or redis://host:port/db")
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

    @property
    def batch_bytes(self) -> int:
        """Bytes of events in one batch or History page: within ``max_batch_bytes``
        and half a message (a single larger event still goes, alone)."""
        return min(self.max_batch_bytes, self.max_message_bytes // 2)
