"""Brokers: ordering, history and cross-node delivery of events.

Pick one by URL with :func:`create_broker`: ``memory://`` (the embedded
default, one node) or ``redis://host:port/db`` (several nodes share streams;
needs the ``redis`` extra). Backends are imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from core.broker.base import Broker, EventHandler, HistoryResult

__all__ = ["Broker", "EventHandler", "HistoryResult", "create_broker"]


def create_broker(
    url: str,
    *,
    history_size: int,
    retention: Mapping[int, tuple[int | None, float | None]] | None = None,
    min_replicas: int = 0,
    on_state: Callable[[bool], object] | None = None,
) -> Broker:
    """The broker for ``url``; ValueError for an unknown scheme.

    ``retention`` (topic → count, max age in seconds) and ``min_replicas`` apply to
    Redis; ``on_state`` is called with False when the backend becomes unreachable
    and True when it is back (the memory broker never is)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from core.broker.memory import MemoryBroker

        return MemoryBroker(history_size=history_size)
    if scheme in ("redis", "rediss"):
        from core.broker.redis import BrokerState, RedisBroker, Retention

        def state_changed(state: BrokerState) -> None:
            if on_state is not None and state in (BrokerState.UP, BrokerState.DOWN):
                on_state(state is BrokerState.UP)

        return RedisBroker(
            url,
            history_size=history_size,
            retention={t: Retention(c, a) for t, (c, a) in (retention or {}).items()},
            min_replicas=min_replicas,
            on_state=state_changed,
        )
    raise ValueError(f"unknown broker URL scheme {scheme!r}; use memory:// or redis://")
