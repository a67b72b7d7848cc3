"""Bridge configuration: command-line flags and ``CLEARPATH_BRIDGE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import InvalidArgument
from core.targets import parse_targets

__all__ = ["BridgeSettings"]

#: The dashboard's build output, served at ``/`` when it exists.
DEFAULT_STATIC = Path(__file__).resolve().parent.parent / "clients" / "web" / "dist"


class BridgeSettings(BaseSettings):
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
    send_queue_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes of frames queued per socket; past it the socket catches up from "
        "history instead of queueing",
    )
    slow_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a socket's transport may take nothing while bytes wait for it; "
        "longer closes it as too slow (1013)",
    )
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
    reconnect_initial: float = Field(0.1, gt=0, description="first upstream retry delay, seconds")
    reconnect_max: float = Field(5.0, gt=0, description="longest upstream retry delay, seconds")
    close_timeout: float = Field(2.0, gt=0, description="seconds to close a socket before abort")
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

    @property
    def cores(self) -> tuple[str, ...]:
        """The addresses of :attr:`core`, in order."""
        return tuple(self.core.split(","))
