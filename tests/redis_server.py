"""Helpers of the Redis tests: a private ``redis-server`` (a free loopback port, a
temporary directory), and a handler that collects what a broker delivers.

Never the machine's shared 6379. The server can be stopped (SIGTERM: Redis
saves its AOF and exits), killed (SIGKILL) and started again on the same port
and directory, so a test can restart Redis with or without its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from clearpath.realtime.v1 import events_pb2 as pb

__all__ = ["Collected", "RedisServer"]

#: Seconds a server gets to answer PING after it was started, and to exit after a signal.
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, in its own temporary directory.

    ``appendonly``: keep an AOF (``appendfsync`` sets how often it is flushed),
    so a restart keeps the data; without it a restart starts empty.
    """

    def __init__(self, *, appendonly: bool = False, appendfsync: str = "everysec") -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH (make system installs it)")
        self._executable = executable
        self._dir = Path(tempfile.mkdtemp(prefix="clearpath-redis-"))
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the server (on a new free port the first time, the same one after)
        and wait until it answers PING (not LOADING)."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        # A restart keeps its port: clients know the URL.
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            if not self.port:
                self.port = _free_port()
            self._process = await asyncio.create_subprocess_exec(
                *self._command(),
                cwd=self._dir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.wait_for(self._wait_ready(), _START_TIMEOUT)
                return
            except _Exited:
                # Another process took the port between picking and binding it.
                if attempts > 1:
                    self.port = 0
        raise RuntimeError(f"redis-server did not start (log: {self._dir / 'redis.log'})")

    def _command(self) -> list[str]:
        return [
            self._executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self._dir),
            "--logfile", "redis.log",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", self._appendfsync,
            "--daemonize", "no",
        ]  # fmt: skip

    async def _wait_ready(self) -> None:
        # Readiness is only observable by asking; the server answers within milliseconds.
        while not await self._answers_ping():
            if not self.running:
                raise _Exited
            await asyncio.sleep(0.02)

    async def _answers_ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        """SIGTERM: Redis flushes its AOF and exits. No-op when not running."""
        await self._signal(signal.SIGTERM)

    async def kill(self) -> None:
        """SIGKILL: Redis dies at once, with whatever its AOF holds."""
        await self._signal(signal.SIGKILL)

    async def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port and directory."""
        await self.stop()
        await self.start()

    async def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)

    async def close(self) -> None:
        """Kill the server and remove its directory."""
        await self.kill()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)


class _Exited(Exception):
    """redis-server exited before answering PING."""


class Collected:
    """The events a broker handed to its handler, in order, and a way to wait for them."""

    def __init__(self) -> None:
        self.events: list[pb.Event] = []
        self._grew = asyncio.Event()

    def __call__(self, event: pb.Event) -> None:
        self.events.append(event)
        self._grew.set()

    async def wait_for(self, count: int, within: float = 5.0) -> list[pb.Event]:
        """The events once at least ``count`` arrived; TimeoutError after ``within`` s."""
        async with asyncio.timeout(within):
            while len(self.events) < count:
                self._grew.clear()
                await self._grew.wait()
        return self.events

    def offsets(self, topic: int) -> list[int]:
        return [e.position.offset for e in self.events if e.topic == topic]
