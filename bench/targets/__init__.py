"""Targets: a server the benchmark starts, and how to subscribe to and publish on it.

A target is one module here; :data:`TARGETS` lists them in the order they run.
"""

from bench.targets.base import Endpoint, GrpcStreamSpec, Target, WsSpec
from bench.targets.baselines import AiohttpEncodeOnceTarget, GrpcRawTarget, NaiveTarget
from bench.targets.clearpath import (
    ClearpathBaselineTarget,
    ClearpathClusterTarget,
    ClearpathCoreTarget,
    ClearpathRedisTarget,
    ClearpathTarget,
)
from bench.targets.nats import NatsTarget
from bench.targets.scale import ClearpathWorkersTarget

__all__ = ["TARGETS", "Endpoint", "GrpcStreamSpec", "Target", "WsSpec", "get_targets"]

TARGETS: tuple[Target, ...] = (
    NaiveTarget(),
    AiohttpEncodeOnceTarget(),
    GrpcRawTarget(),
    NatsTarget(),
    ClearpathTarget(batch=False),
    ClearpathTarget(batch=True),
    ClearpathCoreTarget(),
    ClearpathRedisTarget(),
    ClearpathClusterTarget(),
    ClearpathBaselineTarget(),
    ClearpathWorkersTarget(),
)


def get_targets(names: list[str] | None) -> list[Target]:
    """The targets named (all when ``names`` is empty), in :data:`TARGETS` order."""
    if not names:
        return list(TARGETS)
    known = {t.name: t for t in TARGETS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; known: {sorted(known)}")
    return [t for t in TARGETS if t.name in names]
