"""The ``clearpath-workers`` target of W4 and W5: a core, and bridges started beside it.

The target itself starts the core alone (``clearpath serve --no-bridge --grpc-port
0``); the workload then starts the bridge as its own process group with
:class:`BridgeTarget` (``clearpath bridge --workers N --core ADDR``), because W4
needs its processes' memory apart from the core's and W5 kills and restarts it
while the core keeps publishing.
"""

from __future__ import annotations

import re

from bench.targets.base import Endpoint, Target, WsSpec
from bench.targets.clearpath import ClearpathCoreTarget, clearpath_executable

__all__ = ["BridgeTarget", "ClearpathWorkersTarget"]

_BRIDGE = re.compile(r"bridge listening on (?:https?://)?(\S+?):(\d+)\b")


class ClearpathWorkersTarget(ClearpathCoreTarget):
    """A core (``clearpath serve --no-bridge``); W4/W5 add ``clearpath bridge --workers N``."""

    name = "clearpath-workers"
    description = (
        "core via `clearpath serve --no-bridge` + `clearpath bridge --workers N` "
        "(W4, W5: started by the workload)"
    )
    workloads = frozenset({"W4", "W5"})


class BridgeTarget(Target):
    """``clearpath bridge`` towards ``core`` (host:port) on ``port`` (0: a free one),
    with ``workers`` processes (1: the process itself serves) and ``env`` settings
    (``CLEARPATH_BRIDGE_*``) given on its command line through ``env``."""

    name = "clearpath-bridge"
    description = "clearpath bridge"
    workloads = frozenset()

    def __init__(self, core: str, *, workers: int, port: int, env: dict[str, str]) -> None:
        self.core = core
        self.workers = workers
        self.port = port
        self.env = env
        self.bound: tuple[str, int] | None = None

    def command(self) -> list[str]:
        settings = [f"{k}={v}" for k, v in sorted(self.env.items())]
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        return ["env", *settings, clearpath_executable(), "bridge", "--core", self.core,
                "--http-port", str(self.port), *workers]  # fmt: skip

    def reset(self) -> None:
        self.bound = None

    def on_line(self, line: str) -> Endpoint | None:
        if m := _BRIDGE.search(line):
            self.bound = (m.group(1), int(m.group(2)))
            return Endpoint(0, ws=WsSpec(m.group(1), int(m.group(2)), "/ws/packages", True))
        return None
