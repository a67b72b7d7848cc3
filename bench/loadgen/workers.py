"""The harness side of subscriber worker processes (see :mod:`bench.loadgen.worker`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
from typing import Any

from bench.sysinfo import child_env

__all__ = ["WorkerGroup", "WorkerProc"]


class WorkerProc:
    """One ``bench.loadgen.worker`` process, spoken to in JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.progress_min = 0
        self.progress_caught_up = 0
        self._replies: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._err_task = asyncio.create_task(self._drain_stderr())
        self._out_task = asyncio.create_task(self._read_stdout())

    @classmethod
    async def spawn(cls, cfg: dict[str, Any]) -> WorkerProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen.worker",
            json.dumps(cfg),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=64 * 1024 * 1024,
            env=child_env(),
        )
        return cls(proc)

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.stderr.append(raw.decode(errors="replace").rstrip())

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply: dict[str, Any] = json.loads(line)
            if reply.get("event") == "progress":
                self.progress_min = int(reply["min"])
                self.progress_caught_up = int(reply.get("caught_up", 0))
            else:
                self._replies.put_nowait(reply)
        self._replies.put_nowait(None)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def recv(self, limit_s: float) -> dict[str, Any]:
        reply = await asyncio.wait_for(self._replies.get(), limit_s)
        if reply is None:
            await asyncio.sleep(0.1)
            raise RuntimeError(f"worker exited: {' | '.join(self.stderr)[-1500:]}")
        if reply.get("event") == "error":
            raise RuntimeError(f"worker error: {reply.get('error')}")
        return reply

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        self._err_task.cancel()
        self._out_task.cancel()


class WorkerGroup:
    """Several workers sharing N connections; ``async with`` kills them at the end."""

    def __init__(self, cfg: dict[str, Any], n: int, workers: int) -> None:
        self.cfg = cfg
        self.n = n
        self.count = max(1, min(workers, n))
        self.workers: list[WorkerProc] = []
        self.shares: list[int] = []

    async def __aenter__(self) -> WorkerGroup:
        base, extra = divmod(self.n, self.count)
        offset = 0
        for i in range(self.count):
            share = base + (1 if i < extra else 0)
            cfg = dict(self.cfg, index_offset=offset)
            self.workers.append(await WorkerProc.spawn(cfg))
            self.shares.append(share)
            offset += share
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(w.kill() for w in self.workers))

    async def connect(self, n: int, limit_s: float, path: str | None = None) -> dict[str, Any]:
        """Open ``n`` more connections, split over the workers; sum their replies.

        ``path``: the WebSocket path to open them on, instead of the configured one
        (a resume position known only once the workers run).
        """
        base, extra = divmod(n, self.count)
        for i, w in enumerate(self.workers):
            cmd: dict[str, Any] = {"cmd": "connect", "n": base + (1 if i < extra else 0)}
            if path is not None:
                cmd["path"] = path
            w.send(cmd)
        replies = await asyncio.gather(*(w.recv(limit_s) for w in self.workers))
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r.get("errors", {}).items():
                errors[k] = errors.get(k, 0) + int(v)
        return {
            "ok": sum(int(r["ok"]) for r in replies),
            "failed": sum(int(r["failed"]) for r in replies),
            "errors": errors,
            "seconds": max(float(r["seconds"]) for r in replies),
        }

    def slowest(self) -> int:
        """The fewest events any connection of the group has received (as last reported)."""
        return min(w.progress_min for w in self.workers)

    def caught_up(self) -> int:
        """How many resuming connections of the group have caught up (as last reported)."""
        return sum(w.progress_caught_up for w in self.workers)

    def broadcast(self, obj: dict[str, Any]) -> None:
        for w in self.workers:
            w.send(obj)

    async def results(self, limit_s: float) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.recv(limit_s) for w in self.workers)))
