"""The ``clearpath`` target: the real system, core (gRPC) and bridge (WebSocket).

Started as ``clearpath serve --grpc-port 0 --http-port 0`` from this venv; its log
lines ``core listening on 127.0.0.1:PORT`` and ``bridge listening on
http://127.0.0.1:PORT`` give the ports. Events are published with gRPC
``RealtimeService.Publish`` (the latency marker rides in
``package_update.location``); WebSocket subscribers connect to ``/ws/packages``
(auto-subscribed to package updates) and are ready once the ``welcome`` frame
arrives. ``clearpath-batch`` connects with ``?batch=1``, where one text message
may carry a JSON array of frames.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import MappingProxyType

from bench.loadgen.publisher import PublishSpec
from bench.targets.base import Endpoint, GrpcStreamSpec, Target, TargetUnavailable, WsSpec

__all__ = [
    "BASELINE_ENV",
    "ClearpathBaselineTarget",
    "ClearpathClusterTarget",
    "ClearpathCoreTarget",
    "ClearpathRedisTarget",
    "ClearpathTarget",
]

#: A checkout of another commit (``git worktree add DIR COMMIT``) to run as the
#: ``clearpath-baseline`` target: before/after figures of a change in one run.
BASELINE_ENV = "CLEARPATH_BENCH_BASELINE"

_CORE = re.compile(r"core listening on (\S+?):(\d+)\b")
_BRIDGE = re.compile(r"bridge listening on (?:https?://)?(\S+?):(\d+)\b")
_SERVICE = "/clearpath.realtime.v1.RealtimeService"


def _loopback(host: str) -> str:
    host = host.strip("[]")
    return "127.0.0.1" if host in {"0.0.0.0", "::", "localhost", ""} else host


def clearpath_executable() -> str:
    """``clearpath`` next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / "clearpath"
    if local.exists():
        return str(local)
    return shutil.which("clearpath") or "clearpath"


class ClearpathTarget(Target):
    description = "core (grpc.aio) + bridge (aiohttp) via `clearpath serve`"
    # Every subscriber of the harness comes from 127.0.0.1: the bridge's per-address
    # cap (1,000 by default, against one address opening thousands) is lifted.
    env = MappingProxyType({"CLEARPATH_BRIDGE_MAX_CONNECTIONS_PER_ADDRESS": "1000000"})

    def __init__(self, batch: bool) -> None:
        self.batch = batch
        self.name = "clearpath-batch" if batch else "clearpath"
        if batch:
            self.description = (
                "as clearpath; WebSocket subscribers connect with ?batch=1, "
                "gRPC subscribers ask for max_batch=100"
            )
            self.workloads = frozenset({"W1", "W2", "W2w", "W6", "G2"})
        else:
            self.workloads = frozenset({"W1", "W1l", "W2", "W2w", "W3", "W6", "L1", "G1", "G2"})
        self._core: tuple[str, int] | None = None
        self._bridge: tuple[str, int] | None = None
        #: Whether its bridge serves /metrics (a baseline checkout may predate it).
        self.metrics = True

    def command(self) -> list[str]:
        return [clearpath_executable(), "serve", "--grpc-port", "0", "--http-port", "0"]

    def reset(self) -> None:
        self._core = self._bridge = None

    def on_line(self, line: str) -> Endpoint | None:
        if m := _CORE.search(line):
            self._core = (_loopback(m.group(1)), int(m.group(2)))
        if m := _BRIDGE.search(line):
            self._bridge = (_loopback(m.group(1)), int(m.group(2)))
        if self._core is None or self._bridge is None:
            return None
        (chost, cport), (bhost, bport) = self._core, self._bridge
        publish = PublishSpec("grpc", chost, cport, f"{_SERVICE}/Publish")
        path = "/ws/packages?batch=1" if self.batch else "/ws/packages"
        return Endpoint(
            0,
            ws=WsSpec(bhost, bport, path, wait_first=True),
            metrics_url=f"http://{bhost}:{bport}/metrics" if self.metrics else None,
            ws_publish=publish,
            grpc_publish=publish,
            grpc_stream=GrpcStreamSpec(
                chost, cport, f"{_SERVICE}/Subscribe", "clearpath", 100 if self.batch else 0
            ),
        )


class ClearpathBaselineTarget(ClearpathTarget):
    """``clearpath serve`` from another checkout (``$CLEARPATH_BENCH_BASELINE``), with
    this venv: the code before a change, measured beside it in the same run."""

    description = "clearpath serve from the checkout in $CLEARPATH_BENCH_BASELINE"

    def __init__(self) -> None:
        super().__init__(batch=False)
        self.name = "clearpath-baseline"
        self.workloads = frozenset({"W1", "W1l", "W2", "W2w", "W3", "W6", "L1", "G1", "G2"})
        self.metrics = False

    def command(self) -> list[str]:
        tree = os.environ.get(BASELINE_ENV)
        if not tree or not Path(tree, "clients", "cli", "app.py").is_file():
            raise TargetUnavailable(f"set {BASELINE_ENV} to a checkout of the baseline commit")
        # That tree's packages first on the path, whatever PYTHONPATH says.
        run = (
            f"import sys; sys.path.insert(0, {tree!r}); "
            "from clients.cli.app import main; sys.exit(main())"
        )
        return [sys.executable, "-c", run, "serve", "--grpc-port", "0", "--http-port", "0"]


class ClearpathRedisTarget(ClearpathTarget):
    """``clearpath serve --broker redis://…`` with a private redis-server
    (``bench/servers/clearpath_redis.py``): what Redis adds to the same paths."""

    description = "clearpath serve on the Redis broker (a private redis-server, AOF everysec)"

    def __init__(self) -> None:
        super().__init__(batch=False)
        self.name = "clearpath-redis"
        self.workloads = frozenset({"W1", "W1l", "W2", "G1", "G2"})

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.servers.clearpath_redis", "serve",
                "--grpc-port", "0", "--http-port", "0"]  # fmt: skip


_CLUSTER_CORE = re.compile(r"cluster: core1 pid \d+ on (\S+?):(\d+)\b")
_CLUSTER_FRONT = re.compile(r"cluster listening on (?:https?://)?(\S+?):(\d+)\b")


class ClearpathClusterTarget(Target):
    """``clearpath cluster --no-simulate`` on free ports: Redis, two cores, two bridges
    and nginx, all on the server's cpu; WebSocket subscribers connect through nginx,
    the publisher to core1. What the scale-out topology costs on the same cpu budget."""

    name = "clearpath-cluster"
    description = "clearpath cluster: redis + 2 cores + 2 bridges behind nginx (W1)"
    workloads = frozenset({"W1", "W1l"})
    ready_timeout_s = 60.0

    def __init__(self) -> None:
        self._core: tuple[str, int] | None = None
        self._front: tuple[str, int] | None = None

    def command(self) -> list[str]:
        state = tempfile.mkdtemp(prefix="bench-cluster-")
        ports = ["--front-port", "0", "--bridge-ports", "0,0", "--core-ports", "0,0"]
        return [clearpath_executable(), "cluster", "--no-simulate", "--no-restart",
                "--dir", state, "--redis-port", "0", *ports]  # fmt: skip

    def reset(self) -> None:
        self._core = self._front = None

    def on_line(self, line: str) -> Endpoint | None:
        if m := _CLUSTER_CORE.search(line):
            self._core = (_loopback(m.group(1)), int(m.group(2)))
        if m := _CLUSTER_FRONT.search(line):
            self._front = (_loopback(m.group(1)), int(m.group(2)))
        if self._core is None or self._front is None:
            return None
        (chost, cport), (fhost, fport) = self._core, self._front
        publish = PublishSpec("grpc", chost, cport, f"{_SERVICE}/Publish")
        return Endpoint(
            0, ws=WsSpec(fhost, fport, "/ws/packages", wait_first=True), ws_publish=publish
        )


class ClearpathCoreTarget(Target):
    """The core alone (``clearpath serve --no-bridge``): the gRPC path without a bridge
    subscribed to every event in the same process."""

    name = "clearpath-core"
    description = "the core alone via `clearpath serve --no-bridge` (gRPC workloads)"
    workloads = frozenset({"G1", "G2"})

    def __init__(self) -> None:
        self._core: tuple[str, int] | None = None

    def command(self) -> list[str]:
        return [clearpath_executable(), "serve", "--no-bridge", "--grpc-port", "0"]

    def reset(self) -> None:
        self._core = None

    def on_line(self, line: str) -> Endpoint | None:
        if m := _CORE.search(line):
            self._core = (_loopback(m.group(1)), int(m.group(2)))
        if self._core is None:
            return None
        host, port = self._core
        publish = PublishSpec("grpc", host, port, f"{_SERVICE}/Publish")
        return Endpoint(
            0,
            grpc_publish=publish,
            grpc_stream=GrpcStreamSpec(host, port, f"{_SERVICE}/Subscribe", "clearpath"),
        )
