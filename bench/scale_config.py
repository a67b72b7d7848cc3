"""Sizes and time limits of W4 (idle sockets at scale) and W5 (reconnect storm).

Kept apart from :mod:`bench.config` so that the scale workloads' many knobs do not
crowd the other workloads'. ``python -m bench --scale KEY=VALUE,...`` overrides any
field of a run (:func:`override`), e.g. ``--scale w4_connections=5000,w5_clients=1000``
to try the workloads at a small size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["SOURCE_ADDRESSES", "ScaleParams", "full", "override", "quick"]

#: Loopback source addresses the load generators bind before connecting: one
#: address has only ~28k ephemeral ports (32768-60999) towards one destination.
SOURCE_ADDRESSES = tuple(f"127.0.0.{i}" for i in range(2, 10))


@dataclass(frozen=True)
class ScaleParams:
    """Every size and bound of W4 and W5; each wait in them is bounded by these."""

    # --- W4: idle sockets ---
    #: Connections opened over all load generators (0: W4 not run).
    w4_connections: int
    #: ``clearpath bridge --workers`` (each process is capped at 20,000 open files).
    w4_bridge_workers: int
    #: C load-generator processes (each under the same cap).
    w4_loadgens: int
    #: Connections opened per second, over all load generators.
    w4_rate: float
    #: Connections offered to one bridge process to find what it holds at its
    #: open-file cap (0: that variant is not run).
    w4_cap_connections: int
    #: ``max_connections`` of that one process (its own cap; 20,000 = the file limit).
    w4_cap_max_connections: int
    # --- W5: reconnect storm ---
    #: Connected clients (0: W5 not run).
    w5_clients: int
    #: C load-generator processes.
    w5_loadgens: int
    #: ``clearpath bridge --workers`` (1: one process, killed and restarted whole).
    w5_bridge_workers: int
    #: Events published per second through the core, all along.
    w5_rate: float
    #: Seconds of publishing before the bridge is killed.
    w5_before_s: float
    #: Seconds between the SIGKILL and the restart.
    w5_down_s: float
    #: Seconds of publishing after the restart.
    w5_after_s: float
    #: Jitter shares compared (the web client's default is 0.5; 0: none; 1: full).
    w5_jitters: tuple[float, ...]
    # --- both ---
    #: Connections opened per second in W5's initial opening.
    w5_open_rate: float = 2000.0
    #: The web client's backoff (clients/web/src/backoff.ts DEFAULT_BACKOFF and
    #: client.ts: no limit on attempts — here the most allowed, more than a run's
    #: time bound leaves room for — and 10 s to open a socket).
    initial_ms: float = 500.0
    max_ms: float = 15000.0
    factor: float = 2.0
    max_attempts: int = 250
    connect_timeout_ms: float = 10000.0
    #: Seconds every client gets to be back, resumed and live after the restart.
    w5_recover_limit_s: float = 60.0
    #: Seconds the clients get to reach the last published event at the end.
    drain_limit_s: float = 30.0
    #: Seconds the one marker event of W4 gets to reach every socket.
    marker_limit_s: float = 30.0


def full() -> ScaleParams:
    return ScaleParams(
        w4_connections=100_000,
        w4_bridge_workers=7,
        w4_loadgens=7,
        # What the bridge sustains here (~1.2 ms of CPU a handshake, 2 shared cores);
        # the target's pace (100,000 in 60 s) is --scale w4_rate=2000, which overloads it.
        w4_rate=1000.0,
        w4_cap_connections=20_500,
        w4_cap_max_connections=20_000,
        w5_clients=10_000,
        w5_loadgens=2,
        w5_bridge_workers=1,
        w5_rate=5.0,
        w5_before_s=3.0,
        w5_down_s=1.0,
        w5_after_s=12.0,
        w5_jitters=(0.5, 1.0, 0.0),
    )


def quick() -> ScaleParams:
    return ScaleParams(
        w4_connections=2_000,
        w4_bridge_workers=2,
        w4_loadgens=2,
        w4_rate=2000.0,
        w4_cap_connections=0,
        w4_cap_max_connections=20_000,
        w5_clients=200,
        w5_loadgens=1,
        w5_bridge_workers=1,
        w5_rate=20.0,
        w5_before_s=0.5,
        w5_down_s=1.0,
        w5_after_s=1.0,
        w5_jitters=(0.5,),
        w5_recover_limit_s=30.0,
        drain_limit_s=15.0,
    )


def override(params: ScaleParams, spec: str) -> ScaleParams:
    """``params`` with ``KEY=VALUE,...`` applied; ValueError naming a bad key or value.

    Tuples (``w5_jitters``) are given with ``/`` between items: ``w5_jitters=0.5/0``.
    """
    fields = {f.name: f for f in dataclasses.fields(ScaleParams)}
    changes: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"--scale {item!r}: expected KEY=VALUE, KEY one of {sorted(fields)}")
        current = getattr(params, key)
        try:
            if isinstance(current, tuple):
                changes[key] = tuple(float(x) for x in raw.split("/") if x.strip())
            elif isinstance(current, int):
                changes[key] = int(raw)
            else:
                changes[key] = float(raw)
        except ValueError:
            raise ValueError(f"--scale {key}: {raw!r} is not a {type(current).__name__}") from None
    out = dataclasses.replace(params, **changes)  # type: ignore[arg-type]
    _check(out)
    return out


def _check(p: ScaleParams) -> None:
    for name in ("w4_connections", "w4_cap_connections", "w5_clients"):
        if getattr(p, name) < 0:
            raise ValueError(f"--scale {name}: must be >= 0")
    for name in ("w4_bridge_workers", "w4_loadgens", "w5_loadgens", "w5_bridge_workers"):
        if not 1 <= getattr(p, name) <= 64:
            raise ValueError(f"--scale {name}: must be between 1 and 64")
    for name in ("w4_rate", "w5_rate", "w5_open_rate"):
        if getattr(p, name) <= 0:
            raise ValueError(f"--scale {name}: must be > 0")
    if any(not 0 <= j <= 1 for j in p.w5_jitters) or not p.w5_jitters:
        raise ValueError("--scale w5_jitters: one or more shares in [0, 1], e.g. 0.5/0")
    if not 1 <= p.max_attempts <= 250:
        raise ValueError("--scale max_attempts: must be between 1 and 250")
