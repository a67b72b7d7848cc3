"""The memory broker's positions and history, with plain calls."""

from __future__ import annotations

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from core.broker import create_broker
from core.broker.memory import MemoryBroker
from core.errors import Unavailable
from tests.events import package, sample


async def started(history_size: int = 3) -> tuple[MemoryBroker, list[pb.Event]]:
    broker = MemoryBroker(history_size=history_size)
    seen: list[pb.Event] = []
    await broker.start(seen.append)
    return broker, seen


async def test_offsets_grow_per_topic_and_events_are_delivered_in_order() -> None:
    broker, seen = await started()
    events = [package(f"p{i}") for i in range(3)] + [sample("system_health")]
    for e in events:
        e.topic = (
            pb.TOPIC_SYSTEM_HEALTH if e.HasField("system_health") else pb.TOPIC_PACKAGE_UPDATES
        )
    positions = await broker.publish(events)
    assert [p.offset for p in positions] == [1, 2, 3, 1]
    assert seen == events
    assert positions[0].epoch == positions[1].epoch != ""


async def test_history_resume_recovered_and_too_old() -> None:
    broker, _ = await started(history_size=3)
    events = [package(f"p{i}") for i in range(5)]
    for e in events:
        e.topic = pb.TOPIC_PACKAGE_UPDATES
    await broker.publish(events)
    epoch = events[0].position.epoch
    found = await broker.history(pb.TOPIC_PACKAGE_UPDATES, pb.StreamPosition(offset=2, epoch=epoch))
    assert found.recovered
    assert [e.position.offset for e in found.events] == [3, 4, 5]
    assert found.position.offset == 5
    too_old = await broker.history(
        pb.TOPIC_PACKAGE_UPDATES, pb.StreamPosition(offset=1, epoch=epoch)
    )
    assert not too_old.recovered
    assert [e.position.offset for e in too_old.events] == [3, 4, 5]
    other = await broker.history(pb.TOPIC_PACKAGE_UPDATES, pb.StreamPosition(offset=4, epoch="x"))
    assert not other.recovered
    assert len(other.events) == 3
    ahead = await broker.history(pb.TOPIC_PACKAGE_UPDATES, pb.StreamPosition(offset=9, epoch=epoch))
    assert not ahead.recovered
    assert ahead.events == []
    latest = await broker.history(pb.TOPIC_PACKAGE_UPDATES, None)
    assert latest.recovered
    assert latest.events == []


async def test_publish_before_start_is_unavailable() -> None:
    broker = MemoryBroker(history_size=1)
    with pytest.raises(Unavailable):
        await broker.publish([package()])


def test_create_broker_by_scheme() -> None:
    assert isinstance(create_broker("memory://", history_size=5), MemoryBroker)
    with pytest.raises(ValueError, match="unknown broker URL scheme"):
        create_broker("kafka://x", history_size=5)
