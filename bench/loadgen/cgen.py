"""The C load generator (``bench/loadgen/c/wsgen.c``): building it, and running several.

:func:`build_wsgen` compiles the source with the machine's ``gcc`` into
``bench/.build/`` (git-ignored), once per source version: the binary's name
carries a hash of the source and flags, and a finished build is renamed into
place, so concurrent runs never see half a binary (builds of earlier versions are
removed). :class:`GenGroup` runs
several ``wsgen`` processes (each under the machine's open-file cap), sums
their progress lines, and collects their final reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BUILD_DIR", "SOURCE", "BuildFailed", "GenGroup", "Progress", "build_wsgen"]

SOURCE = Path(__file__).resolve().parent / "c" / "wsgen.c"
BUILD_DIR = Path(__file__).resolve().parent.parent / ".build"
_FLAGS = ("-O2", "-Wall", "-Wextra", "-std=gnu11")

#: Progress fields that are counts (summed over processes).
_COUNTS = (
    "n",
    "started",
    "open",
    "welcomed",
    "connecting",
    "waiting",
    "failed",
    "ended",
    "positioned",
    "back",
    "resumed",
    "live",
    "markers",
    "lost",
)

Progress = dict[str, int]


class BuildFailed(RuntimeError):
    """``gcc`` is missing or could not compile the load generator."""


def build_wsgen(build_dir: Path = BUILD_DIR) -> Path:
    """The path of a ``wsgen`` binary built from the current source (built if needed)."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(_FLAGS).encode()).hexdigest()[:12]
    binary = build_dir / f"wsgen-{digest}"
    if binary.exists():
        return binary
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BuildFailed(
            "no C compiler (gcc) on PATH: W4/W5 need one to build their load generator"
        )
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = build_dir / f".wsgen-{digest}.{os.getpid()}"
    try:
        done = subprocess.run(
            [cc, *_FLAGS, "-o", str(tmp), str(SOURCE), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildFailed(f"building {SOURCE.name}: {exc}") from exc
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildFailed(f"building {SOURCE.name} failed: {done.stderr[-1500:]}")
    os.replace(tmp, binary)
    for stale in build_dir.glob("wsgen-*"):  # builds of earlier source versions
        if stale != binary:
            stale.unlink(missing_ok=True)
    return binary


class _Gen:
    """One ``wsgen run`` process: its latest progress line and its final report."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.progress: Progress = {}
        self.report: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.stderr: list[str] = []
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg: dict[str, Any] = json.loads(line)
            except ValueError:
                if not self.report.done():
                    self.report.set_exception(RuntimeError(f"wsgen wrote {line[:200]!r}"))
                continue
            if msg.get("event") == "progress":
                self.progress = msg
            elif msg.get("event") == "report" and not self.report.done():
                self.report.set_result(msg)
        if not self.report.done():
            code = await self.proc.wait()
            self.report.set_exception(
                RuntimeError(f"wsgen exited ({code}) without a report: {' | '.join(self.stderr)}")
            )

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            if len(self.stderr) < 20:
                self.stderr.append(line.decode(errors="replace").rstrip())

    def send(self, line: str) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(line.encode() + b"\n")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.report.done():
            self.report.cancel()


class GenGroup:
    """``async with GenGroup(binary, [args, ...]) as g``: one ``wsgen run`` per args
    list (``key=value`` strings), killed at the end whatever happened."""

    def __init__(self, binary: Path, shares: Sequence[Sequence[str]]) -> None:
        self.binary = binary
        self.shares = [list(s) for s in shares]
        self.gens: list[_Gen] = []

    async def __aenter__(self) -> GenGroup:
        try:
            for args in self.shares:
                proc = await asyncio.create_subprocess_exec(
                    str(self.binary),
                    "run",
                    *args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    limit=16 * 1024 * 1024,
                )
                self.gens.append(_Gen(proc))
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(g.kill() for g in self.gens))

    def pids(self) -> list[int]:
        return [g.proc.pid for g in self.gens]

    def progress(self) -> Progress:
        """The latest progress of every process, summed (offsets: min and max)."""
        out: Progress = {k: 0 for k in _COUNTS}
        lows = [g.progress["min_offset"] for g in self.gens if g.progress.get("positioned")]
        highs = [g.progress["max_offset"] for g in self.gens if g.progress.get("positioned")]
        for g in self.gens:
            for k in _COUNTS:
                out[k] += int(g.progress.get(k, 0))
        out["min_offset"] = min(lows) if lows else -1
        out["max_offset"] = max(highs) if highs else -1
        out["reporting"] = sum(1 for g in self.gens if g.progress)
        return out

    def broadcast(self, line: str) -> None:
        for g in self.gens:
            g.send(line)

    def check_alive(self) -> None:
        """RuntimeError if a process ended before it was told to stop."""
        for g in self.gens:
            if g.proc.returncode is not None:
                raise RuntimeError(
                    f"wsgen exited early ({g.proc.returncode}): {' | '.join(g.stderr)}"
                )

    async def wait_for(
        self, done: Callable[[Progress], bool], limit_s: float, poll_s: float = 0.05
    ) -> tuple[bool, Progress]:
        """Wait until ``done(progress)`` or ``limit_s``; (whether it came, the progress)."""
        deadline = time.monotonic() + limit_s
        while True:
            self.check_alive()
            p = self.progress()
            if p["reporting"] == len(self.gens) and done(p):
                return True, p
            if time.monotonic() >= deadline:
                return False, p
            await asyncio.sleep(poll_s)

    async def stop(self, limit_s: float = 30.0) -> list[dict[str, Any]]:
        """Tell every process to stop; their final reports."""
        self.broadcast("stop")
        return list(await asyncio.wait_for(asyncio.gather(*(g.report for g in self.gens)), limit_s))
