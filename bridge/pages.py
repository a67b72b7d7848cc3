"""Pages of the core's history, read once and shared by every resume that needs them.

When many sockets resume from the same place — a hundred screens coming back
after a deploy, or every browser of a bridge that restarted — each would read
the same pages of the core's history and encode the same events, once per
socket. :class:`HistoryPages` reads a page once (concurrent askers wait for the
one read in flight), turns its events into frames once (encoded on first use,
then the same bytes for every socket), and keeps it a short while.

A page is what the core has after a position; within an epoch those events
never change, so a kept page stays true. Only its ``state`` ages: the core's
head position it carries is the head when the page was read (a resume treats it
as a lower bound, which :func:`bridge.resume.next_step` allows). Bounded by
page count and age.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge.frames import Frame, encodable, event_frame
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.positions import HasPosition

__all__ = ["HistoryPages", "Page"]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of history as frames: the core's answer (``state``), the frames
    of the events that can be encoded, how many could not (skipped, logged), and
    the position of the page's last event (None: the page is empty)."""

    state: spb.TopicState
    frames: list[Frame]
    unencodable: int
    last: pb.StreamPosition | None


Fetch = Callable[[int, HasPosition], Awaitable[spb.HistoryResponse]]
_Key = tuple[int, str, int]


class HistoryPages:
    """A shared cache of history pages, keyed by (topic, epoch, offset after which).

    ``fetch`` reads one page from the core. At most ``max_pages`` pages are kept
    (least recently used go first), each for at most ``max_age`` seconds.
    """

    def __init__(self, fetch: Fetch, *, max_pages: int = 64, max_age: float = 10.0) -> None:
        if max_pages < 0 or max_age < 0:
            raise ValueError("max_pages and max_age must not be negative")
        self._fetch = fetch
        self._max_pages = max_pages
        self._max_age = max_age
        self._kept: OrderedDict[_Key, tuple[float, Page]] = OrderedDict()
        self._reading: dict[_Key, asyncio.Future[Page]] = {}
        #: Pages read from the core, and pages served without reading.
        self.reads = 0
        self.shared = 0

    async def after(self, topic: int, since: HasPosition) -> Page:
        """The page of ``topic`` after ``since``: kept, being read, or read now.
        Raises what ``fetch`` raises (to every asker of that read)."""
        key = (topic, since.epoch, since.offset)
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None:
            if now - kept[0] <= self._max_age:
                self._kept.move_to_end(key)
                self.shared += 1
                return kept[1]
            del self._kept[key]
        reading = self._reading.get(key)
        if reading is None:
            # A task of its own: an asker that goes away (its socket closed) does not
            # cancel the read the others wait for.
            reading = asyncio.ensure_future(self._read(key, topic, since))
            reading.add_done_callback(_retrieve)  # a failed read nobody waits for any more
            self._reading[key] = reading
        else:
            self.shared += 1
        return await asyncio.shield(reading)

    async def _read(self, key: _Key, topic: int, since: HasPosition) -> Page:
        try:
            response = await self._fetch(topic, since)
        finally:
            del self._reading[key]
        self.reads += 1
        frames, bad = encodable(event_frame(e) for e in response.events)
        last = response.events[-1].position if response.events else None
        page = Page(response.state, frames, bad, last)
        if self._max_pages:
            self._kept[key] = (time.monotonic(), page)
            while len(self._kept) > self._max_pages:
                self._kept.popitem(last=False)
        return page

    def clear(self) -> None:
        """Forget every kept page (e.g. when the core's history is known to have changed)."""
        self._kept.clear()

    async def close(self) -> None:
        """Cancel the reads in flight and forget every page."""
        reads = list(self._reading.values())
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        self._kept.clear()


def _retrieve(read: asyncio.Future[Page]) -> None:
    if not read.cancelled():
        read.exception()
