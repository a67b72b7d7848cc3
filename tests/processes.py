"""Real ``clearpath`` processes for tests that pause, kill or restart them."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["Process", "clearpath_process"]

TIMEOUT = 15.0


class Process:
    """A running ``clearpath`` command and the address it printed."""

    def __init__(self, process: asyncio.subprocess.Process, address: str) -> None:
        self.process = process
        self.address = address
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        # Keep reading its log, so a chatty process never blocks on a full pipe.
        assert self.process.stderr is not None
        while await self.process.stderr.readline():
            pass

    def pause(self) -> None:
        """SIGSTOP: the process stops dead, its sockets stay open."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (also resumes a paused process, so it can die)."""
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        """Kill it and wait until it is gone."""
        self.kill()
        await asyncio.wait_for(self.process.wait(), TIMEOUT)
        self._drain.cancel()


@asynccontextmanager
async def clearpath_process(
    *args: str, listening: str, env: dict[str, str] | None = None, max_files: int | None = None
) -> AsyncIterator[Process]:
    """Run ``clearpath ARGS`` until the block ends; ``listening`` names the log line
    whose address is read back (``core`` or ``bridge``); ``max_files``: the
    process's open-file limit (RLIMIT_NOFILE), when lower than this one's."""

    def limit() -> None:
        if max_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli.app",
        *args,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        preexec_fn=limit if max_files is not None else None,
    )
    assert process.stderr is not None
    pattern = re.compile(rf"{listening} listening on (\S+)")

    async def address() -> str:
        while True:
            line = (await process.stderr.readline()).decode()  # type: ignore[union-attr]
            assert line, f"clearpath {' '.join(args)} exited before listening"
            if m := pattern.search(line):
                return m.group(1)

    try:
        running = Process(process, await asyncio.wait_for(address(), TIMEOUT))
    except BaseException:
        process.kill()
        await process.wait()
        raise
    try:
        yield running
    finally:
        await running.stop()
