"""Brokers: ordering, history and cross-node delivery of events.

Pick one by URL with :func:`create_broker`: ``memory://`` (the embedded
default, one node) or ``redis://host:port/db`` (several nodes share streams;
needs the ``redis`` extra). Backends are imported lazily.
"""

from __future__ import annotations

from core.broker.base import Broker, EventHandler, HistoryResult

__all__ = ["Broker", "EventHandler", "HistoryResult", "create_broker"]


def create_broker(url: str, *, history_size: int) -> Broker:
    """The broker for ``url``; ValueError for an unknown scheme."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from core.broker.memory import MemoryBroker

        return MemoryBroker(history_size=history_size)
    if scheme in ("redis", "rediss"):
        from core.broker.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

        return RedisBroker(url, history_size=history_size)  # type: ignore[no-any-return,unused-ignore]
    raise ValueError(f"unknown broker URL scheme {scheme!r}; use memory:// or redis://")
