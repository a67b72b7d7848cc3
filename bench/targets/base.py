"""The target interface, and the server process it runs in.

A :class:`Target` says which command starts its server and how to read the
server's own log lines to learn where it listens (every target binds port 0).
:class:`ServerProcess` starts that command pinned to the server's cores, in its
own process group, waits for the endpoint, keeps draining its output, and kills
the whole group when done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import re
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from bench.loadgen.publisher import PublishSpec
from bench.sysinfo import child_env

__all__ = [
    "Endpoint",
    "GrpcStreamSpec",
    "ServerProcess",
    "Target",
    "TargetFailed",
    "TargetUnavailable",
    "WsSpec",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PIN = (
    "import os,sys;os.sched_setaffinity(0,{int(c) for c in sys.argv[1].split(',')});"
    "os.execvp(sys.argv[2],sys.argv[2:])"
)


class TargetUnavailable(Exception):
    """The target's command is missing or exited before it listened."""


class TargetFailed(Exception):
    """The target started but a workload could not run against it."""


@dataclass(frozen=True)
class WsSpec:
    """Where WebSocket subscribers connect; ``wait_first`` awaits a first (welcome) frame.

    ``proto="nats"``: the socket speaks the NATS protocol; subscribers subscribe to
    ``subject`` (a NATS subject) once connected.
    """

    host: str
    port: int
    path: str
    wait_first: bool = False
    proto: Literal["clearpath", "nats"] = "clearpath"
    subject: str = ""


@dataclass(frozen=True)
class GrpcStreamSpec:
    """A server-streaming method to subscribe with.

    ``kind="raw"`` streams by itself for the seconds given in the request;
    ``kind="clearpath"`` is ``RealtimeService.Subscribe`` to package updates,
    asking for batches of up to ``max_batch`` events per message when it is > 1.
    """

    host: str
    port: int
    method: str
    kind: Literal["raw", "clearpath"]
    max_batch: int = 0

    def request(self, seconds: float) -> bytes:
        if self.kind == "raw":
            return f"{seconds:.3f}".encode()
        from clearpath.realtime.v1 import events_pb2, service_pb2

        req = service_pb2.SubscribeRequest(
            topics=[events_pb2.TOPIC_PACKAGE_UPDATES], max_batch=self.max_batch
        )
        return bytes(req.SerializeToString())


@dataclass(frozen=True)
class Endpoint:
    """A running target: its process id and what it offers."""

    pid: int
    ws: WsSpec | None = None
    ws_publish: PublishSpec | None = None
    grpc_publish: PublishSpec | None = None
    grpc_stream: GrpcStreamSpec | None = None
    #: ``http://host:port/metrics`` when the target exposes Prometheus metrics
    #: (W1 then also runs with it scraped ``w1_scrape_hz`` times a second).
    metrics_url: str | None = None


class Target(ABC):
    """A system under test. Subclasses name it and say how to start and find it."""

    name: str
    description: str
    #: The workloads this target takes part in (keys of ``bench.workloads.WORKLOADS``).
    workloads: frozenset[str]
    #: Added to the server's environment on every start (settings the harness needs).
    env: Mapping[str, str] = MappingProxyType({})
    ready_timeout_s: float = 30.0

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the server, binding port 0."""

    @abstractmethod
    def on_line(self, line: str) -> Endpoint | None:
        """Read one line of the server's output; return the endpoint once known.

        The endpoint's ``pid`` is filled in by :class:`ServerProcess`.
        """

    def reset(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Forget what earlier lines said (called before each start)."""


class ServerProcess:
    """``async with ServerProcess(target, cpus) as endpoint:`` runs one server.

    ``env`` is added to the server's environment (e.g. ``CLEARPATH_CORE_*`` settings
    a workload needs).
    """

    def __init__(
        self, target: Target, cpus: frozenset[int], env: dict[str, str] | None = None
    ) -> None:
        self.target = target
        self.cpus = cpus
        self.env = dict(env or {})
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Endpoint:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> Endpoint:
        argv = self.target.command()
        if self.cpus:
            argv = [sys.executable, "-c", _PIN, ",".join(map(str, sorted(self.cpus))), *argv]
        env = {**child_env(), **self.target.env, **self.env}
        self.target.reset()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            raise TargetUnavailable(f"cannot start {argv[-1]!r}: {exc}") from exc
        try:
            endpoint = await asyncio.wait_for(self._await_endpoint(), self.target.ready_timeout_s)
        except TimeoutError:
            await self.stop()
            raise TargetFailed(
                f"no listening line within {self.target.ready_timeout_s}s; output: {self.output()}"
            ) from None
        except TargetUnavailable:
            await self.stop()
            raise
        self._drain = asyncio.create_task(self._drain_output())
        return endpoint

    async def _await_endpoint(self) -> Endpoint:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                code = await self.proc.wait()
                raise TargetUnavailable(
                    f"exited with code {code} before listening: {self.output()}"
                )
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
            self.tail.append(line)
            endpoint = self.target.on_line(line)
            if endpoint is not None:
                return dataclasses.replace(endpoint, pid=self.proc.pid)

    async def _drain_output(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.tail.append(raw.decode(errors="replace").rstrip())

    def output(self) -> str:
        """The last lines the server printed, joined for an error message."""
        return " | ".join(list(self.tail)[-8:])[-1500:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after 3 s."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 3.0)
        # whatever is left of the group, the leader included
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await asyncio.wait_for(proc.wait(), 5.0)
        if self._drain is not None:
            self._drain.cancel()
