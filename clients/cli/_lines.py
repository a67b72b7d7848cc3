"""Reading JSON lines from a stream without blocking the event loop, in batches,
and a progress line for terminals."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import IO, TypeAlias

__all__ = ["Line", "LineReader", "Progress"]

#: A line of input and its number, counting from 1.
Line: TypeAlias = tuple[int, bytes]


class LineReader:
    """Reads ``stream`` line by line in a daemon thread (stdin reads block) and
    hands the lines to the event loop, at most ``buffer`` ahead of the consumer."""

    def __init__(self, stream: Iterable[bytes], buffer: int = 10_000) -> None:
        self._stream = stream
        self._slots = threading.Semaphore(buffer)
        self._queue: asyncio.Queue[Line | BaseException | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        #: Bytes read so far (for progress).
        self.bytes_read = 0

    def _put(self, item: Line | BaseException | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            return False
        return True

    def _run(self) -> None:
        try:
            for number, line in enumerate(self._stream, 1):
                self.bytes_read += len(line)
                self._slots.acquire()
                if not self._put((number, line)):
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)
        else:
            self._put(None)

    async def batches(self, size: int, flush_after: float) -> AsyncIterator[list[Line]]:
        """Lists of up to ``size`` lines; a shorter one when input pauses for
        ``flush_after`` seconds or ends."""
        threading.Thread(target=self._run, name="clearpath-lines", daemon=True).start()
        batch: list[Line] = []
        while True:
            try:
                if batch:
                    item = await asyncio.wait_for(self._queue.get(), flush_after)
                else:
                    item = await self._queue.get()
            except TimeoutError:
                yield batch
                batch = []
                continue
            if isinstance(item, BaseException):
                raise item
            if item is None:
                if batch:
                    yield batch
                return
            self._slots.release()
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []


class Progress:
    """A self-rewriting status line on a terminal; silent otherwise."""

    def __init__(self, out: IO[str], total_bytes: int | None, *, enabled: bool) -> None:
        self._out = out
        self._total = total_bytes
        self._enabled = enabled
        self._start = self._shown = time.monotonic()

    @staticmethod
    def size_of(stream: object) -> int | None:
        """The size of a regular file behind ``stream``, else None (pipes, terminals)."""
        try:
            info = os.fstat(stream.fileno())  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None

    def update(self, events: int, bytes_read: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._shown < 0.1 and not force):
            return
        self._shown = now
        rate = events / max(now - self._start, 1e-6)
        text = f"{events:>9,} events  {rate:>8,.0f}/s"
        if self._total:
            share = min(bytes_read / self._total, 1.0)
            filled = int(share * 30)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {share:>4.0%} {text}"
        self._out.write(f"\r{text}")
        self._out.flush()

    def close(self) -> None:
        if self._enabled:
            self._out.write("\r\033[K")
            self._out.flush()
