"""bridge.pages.HistoryPages with plain calls: one read per page however many
resumes ask, askers isolated from each other, bounded by count and age."""

from __future__ import annotations

import asyncio

import pytest

from bridge.pages import HistoryPages
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.errors import Unavailable
from core.positions import HasPosition, Position
from tests.events import package

PKG = pb.TOPIC_PACKAGE_UPDATES


class Core:
    """A core whose History pages are three events after the asked offset; each
    read waits until ``gate`` is set."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def fetch(self, topic: int, since: HasPosition) -> spb.HistoryResponse:
        self.reads.append((topic, since.offset))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        events = []
        for offset in range(since.offset + 1, since.offset + 4):
            event = package(f"p{offset}")
            event.topic = PKG
            event.position.CopyFrom(pb.StreamPosition(offset=offset, epoch="e"))
            events.append(event)
        state = spb.TopicState(
            topic=PKG, position=pb.StreamPosition(offset=100, epoch="e"), recovered=True
        )
        return spb.HistoryResponse(state=state, events=events)


async def test_concurrent_resumes_from_one_place_read_the_page_once_and_share_its_frames() -> None:
    core = Core()
    core.gate.clear()
    pages = HistoryPages(core.fetch)
    askers = [asyncio.create_task(pages.after(PKG, Position(10, "e"))) for _ in range(50)]
    await asyncio.sleep(0)
    core.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*askers), 5)
    assert core.reads == [(PKG, 10)]
    first = results[0]
    assert [f.offset for f in first.frames] == [11, 12, 13]
    assert first.last is not None
    assert first.last.offset == 13
    assert all(r.frames[0] is first.frames[0] for r in results)  # the same frames, encoded once
    again = await pages.after(PKG, Position(10, "e"))  # kept: no second read
    assert again is first
    assert core.reads == [(PKG, 10)]
    assert pages.reads == 1
    assert pages.shared == 50
    await pages.after(PKG, Position(10, "other"))  # another epoch: another page
    await pages.after(pb.TOPIC_ANOMALIES, Position(10, "e"))  # another topic too
    assert len(core.reads) == 3


async def test_an_asker_that_goes_away_does_not_cancel_the_read_the_others_wait_for() -> None:
    core = Core()
    core.gate.clear()
    pages = HistoryPages(core.fetch)
    leaving = asyncio.create_task(pages.after(PKG, Position(0, "e")))
    staying = asyncio.create_task(pages.after(PKG, Position(0, "e")))
    await asyncio.sleep(0)
    leaving.cancel()
    core.gate.set()
    page = await asyncio.wait_for(staying, 5)
    assert [f.offset for f in page.frames] == [1, 2, 3]
    assert leaving.cancelled()


async def test_a_failed_read_fails_every_asker_and_is_not_kept() -> None:
    core = Core()
    core.gate.clear()
    core.fail = Unavailable("core gone")
    pages = HistoryPages(core.fetch)
    askers = [asyncio.create_task(pages.after(PKG, Position(0, "e"))) for _ in range(3)]
    await asyncio.sleep(0)
    core.gate.set()
    results = await asyncio.gather(*askers, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    core.fail = None
    page = await pages.after(PKG, Position(0, "e"))  # read again, now it works
    assert len(page.frames) == 3
    assert len(core.reads) == 2


async def test_pages_are_bounded_by_count_and_by_age() -> None:
    core = Core()
    pages = HistoryPages(core.fetch, max_pages=2)
    for offset in (0, 3, 6):
        await pages.after(PKG, Position(offset, "e"))
    await pages.after(PKG, Position(6, "e"))  # kept
    await pages.after(PKG, Position(0, "e"))  # the oldest was dropped: read again
    assert core.reads == [(PKG, 0), (PKG, 3), (PKG, 6), (PKG, 0)]
    aged = HistoryPages(core.fetch, max_age=0.0)
    await aged.after(PKG, Position(0, "e"))
    await asyncio.sleep(0.01)
    await aged.after(PKG, Position(0, "e"))  # too old: read again
    assert core.reads[-2:] == [(PKG, 0), (PKG, 0)]
    with pytest.raises(ValueError, match="must not be negative"):
        HistoryPages(core.fetch, max_pages=-1)


async def test_close_cancels_reads_in_flight() -> None:
    core = Core()
    core.gate.clear()
    pages = HistoryPages(core.fetch)
    asker = asyncio.create_task(pages.after(PKG, Position(0, "e")))
    await asyncio.sleep(0)
    await asyncio.wait_for(pages.close(), 5)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asker, 5)
