"""The Redis broker against a real redis-server on a free loopback port.

Positions, cross-node delivery and read-once, history with the memory broker's
exact semantics, retention, the epoch rule (flushed, lost keys, rolled back),
and Redis going away (stopped, killed) and coming back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.broker import Broker, HistoryResult, create_broker
from core.broker.memory import MemoryBroker
from core.broker.redis import DEFAULT_MAX_AGE, BrokerState, RedisBroker, Retention
from core.errors import Unavailable
from core.topics import TOPIC_NAMES, TOPIC_PAYLOAD, TOPICS
from tests.events import sample
from tests.redis_server import Collected, RedisServer
from tests.waiting import eventually

if TYPE_CHECKING:
    from tests.redis_fixtures import StartBroker, StartRedis

pytest_plugins = ["tests.redis_fixtures"]

MAP = pb.TOPIC_MAP_UPDATES
PACKAGES = pb.TOPIC_PACKAGE_UPDATES


def event(topic: int = PACKAGES, n: int = 0) -> pb.Event:
    """A sample event of ``topic``, with id ``e<n>``."""
    e = sample(TOPIC_PAYLOAD[topic])
    e.id = f"e{n}"
    return e


def events(count: int, topic: int = PACKAGES, start: int = 0) -> list[pb.Event]:
    return [event(topic, start + i) for i in range(count)]


def key(kind: str, topic: int) -> str:
    """The Redis key of the default prefix (see core.broker.redis)."""
    return f"{{clearpath}}:{kind}:{TOPIC_NAMES[topic]}"


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client of ``redis_server``, to look inside and to break things."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


# -- positions and delivery ----------------------------------------------------


async def test_offsets_grow_per_topic_in_one_epoch(start_broker: StartBroker) -> None:
    broker, seen = await start_broker()
    batch = [*events(3), event(pb.TOPIC_SYSTEM_HEALTH, 9)]
    positions = await broker.publish(batch)
    assert [p.offset for p in positions] == [1, 2, 3, 1]
    assert positions[0].epoch == positions[1].epoch == positions[2].epoch != ""
    assert [e.position for e in batch] == positions
    more = events(2, start=3)
    assert [p.offset for p in await broker.publish(more)] == [4, 5]
    assert more[0].position.epoch == positions[0].epoch
    got = await seen.wait_for(6)
    # In order per topic (the order across topics is not kept).
    for topic in (PACKAGES, pb.TOPIC_SYSTEM_HEALTH):
        assert [e for e in got if e.topic == topic] == [
            e for e in [*batch, *more] if e.topic == topic
        ]


async def test_a_publish_reaches_every_node_in_the_same_order(start_broker: StartBroker) -> None:
    (a, seen_a), (b, seen_b) = await start_broker(), await start_broker()
    batches = [[event(PACKAGES, i), event(MAP, i)] for i in range(40)]
    # Both nodes publish at once; Redis decides one order, which every node sees.
    await asyncio.gather(
        *(node.publish(batch) for node, batch in zip([a, b] * 20, batches, strict=True))
    )
    await seen_a.wait_for(80)
    await seen_b.wait_for(80)
    for topic in (PACKAGES, MAP):
        ids_a = [e.id for e in seen_a.events if e.topic == topic]
        assert ids_a == [e.id for e in seen_b.events if e.topic == topic]
        assert seen_a.offsets(topic) == seen_b.offsets(topic) == list(range(1, 41))


async def test_each_node_reads_once_per_wakeup(start_broker: StartBroker) -> None:
    # A long poll: the only XREAD replies are the ones with events.
    nodes = [await start_broker(poll_interval=30), await start_broker(poll_interval=30)]
    batch = [e for topic in TOPICS for e in events(10, topic)]
    for expected in (1, 2):
        before = [node.reads for node, _ in nodes]
        await nodes[0][0].publish(batch)
        for (node, seen), reads in zip(nodes, before, strict=True):
            await seen.wait_for(70 * expected)
            # Seven topics, seventy events: one XREAD on each node, or two when it was
            # blocked (Redis 7.0 answers a blocked XREAD with the first stream written).
            assert reads < node.reads <= reads + 2
            assert node.delivered == 70 * expected


async def test_a_batch_is_one_script_call(start_broker: StartBroker, admin: Redis) -> None:
    broker, seen = await start_broker(poll_interval=30)
    await admin.config_resetstat()
    await broker.publish([e for topic in TOPICS for e in events(5, topic)])
    await seen.wait_for(35)
    stats = await admin.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1
    assert "cmdstat_eval" not in stats
    assert "cmdstat_multi" not in stats


@pytest.mark.parametrize(
    "fields",
    [
        {"x": "y"},
        {"e": b"\xff\xff"},  # the one-event layout, not protobuf
        {"n": "1", "b": b"\n\x00"},  # a batch with no epoch
        {"n": "1", "p": "ep", "b": b"\xff\xff\xff"},  # not protobuf
        {"n": "1", "p": "ep", "b": b""},  # no events
    ],
    ids=["foreign", "bad-event", "no-epoch", "bad-batch", "empty-batch"],
)
async def test_an_entry_that_is_not_events_is_skipped(
    start_broker: StartBroker, admin: Redis, fields: dict[Any, Any]
) -> None:
    broker, seen = await start_broker()
    first = await broker.publish(events(1))
    gen = await admin.hget(key("meta", PACKAGES), "gen")
    assert isinstance(gen, bytes)
    # Someone else wrote into the stream (and kept the meta consistent).
    await admin.xadd(key("stream", PACKAGES), fields, id=gen + b"-2")
    await admin.hset(key("meta", PACKAGES), "offset", 2)
    last = await broker.publish(events(1, start=1))
    assert last == [pb.StreamPosition(offset=3, epoch=first[0].epoch)]
    assert [e.id for e in await seen.wait_for(2)] == ["e0", "e1"]
    found = await broker.history(PACKAGES, pb.StreamPosition(offset=0, epoch=first[0].epoch))
    assert [(e.id, e.position.offset) for e in found.events] == [("e0", 1), ("e1", 3)]
    assert broker.healthy


async def test_a_failing_handler_does_not_stop_delivery(start_broker: StartBroker) -> None:
    delivered = Collected()

    def handler(e: pb.Event) -> None:
        delivered(e)
        if e.id == "e0":
            raise RuntimeError("handler bug")

    broker, _ = await start_broker(handler=handler)
    await broker.publish(events(3))
    assert [e.id for e in await delivered.wait_for(3)] == ["e0", "e1", "e2"]


# -- history: the memory broker's semantics ------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, start_broker: StartBroker) -> Broker:
    """A started broker keeping exactly 3 events per topic."""
    if request.param == "memory":
        broker: Broker = MemoryBroker(history_size=3)
        await broker.start(lambda e: None)
        return broker
    broker, _ = await start_broker(history_size=3, exact_trim=True)
    return broker


#: since offset (None: no since), since epoch (the topic's or another), limit,
#: then the offsets returned and whether recovered, with offsets 3..5 kept of 1..5.
HISTORY_CASES = [
    (None, "same", None, [], True),
    (2, "same", None, [3, 4, 5], True),
    (2, "same", 2, [3, 4], True),
    (4, "same", 2, [5], True),
    (5, "same", None, [], True),
    (5, "same", 0, [], True),
    (1, "same", None, [3, 4, 5], False),
    (0, "same", 1, [3], False),
    (4, "other", None, [3, 4, 5], False),
    (4, "other", 2, [3, 4], False),
    (9, "same", None, [], False),
]


@pytest.mark.parametrize(("offset", "epoch", "limit", "offsets", "recovered"), HISTORY_CASES)
async def test_history_matches_the_memory_broker(
    backend: Broker,
    offset: int | None,
    epoch: str,
    limit: int | None,
    offsets: list[int],
    recovered: bool,
) -> None:
    positions = await backend.publish(events(5))
    current = positions[0].epoch
    since = None
    if offset is not None:
        since = pb.StreamPosition(offset=offset, epoch=current if epoch == "same" else "x")
    found = await backend.history(PACKAGES, since, limit)
    assert [e.position.offset for e in found.events] == offsets
    assert found.recovered is recovered
    assert found.position == pb.StreamPosition(offset=5, epoch=current)
    assert all(e.position.epoch == current for e in found.events)


async def test_history_pages_through_everything_kept(backend: Broker) -> None:
    await backend.publish(events(5))
    epoch = (await backend.history(PACKAGES, None)).position.epoch
    since = pb.StreamPosition(offset=2, epoch=epoch)
    pages = []
    while page := (await backend.history(PACKAGES, since, limit=2)).events:
        pages.append([e.position.offset for e in page])
        since = page[-1].position
    assert pages == [[3, 4], [5]]


async def test_a_new_topic_has_an_epoch_before_its_first_event(backend: Broker) -> None:
    empty = await backend.history(pb.TOPIC_ANOMALIES, None)
    assert empty.position.offset == 0
    assert empty.position.epoch
    resumed = await backend.history(pb.TOPIC_ANOMALIES, empty.position)
    assert resumed.recovered
    first = await backend.publish([event(pb.TOPIC_ANOMALIES)])
    assert first == [pb.StreamPosition(offset=1, epoch=empty.position.epoch)]
    assert [e.id for e in (await backend.history(pb.TOPIC_ANOMALIES, empty.position)).events] == [
        "e0"
    ]


async def test_history_events_are_the_published_ones(start_broker: StartBroker) -> None:
    broker, _ = await start_broker()
    published = events(3)
    await broker.publish(published)
    found = await broker.history(PACKAGES, pb.StreamPosition(epoch=published[0].position.epoch))
    assert found.events == published


# -- retention -----------------------------------------------------------------


async def test_approximate_retention_keeps_at_least_the_count(start_broker: StartBroker) -> None:
    broker, _ = await start_broker(history_size=5)
    for start in range(0, 300, 100):
        await broker.publish(events(100, start=start))
    kept = await broker.history(PACKAGES, pb.StreamPosition(epoch="other"))
    oldest = kept.events[0].position.offset
    assert 1 < oldest <= 296
    assert [e.position.offset for e in kept.events] == list(range(oldest, 301))
    epoch = kept.position.epoch
    edge = await broker.history(PACKAGES, pb.StreamPosition(offset=oldest - 1, epoch=epoch))
    assert edge.recovered
    assert len(edge.events) == 301 - oldest
    lost = await broker.history(PACKAGES, pb.StreamPosition(offset=oldest - 2, epoch=epoch))
    assert not lost.recovered
    assert lost.events[0].position.offset == oldest


async def test_events_older_than_max_age_are_trimmed(start_broker: StartBroker) -> None:
    retention = {MAP: Retention(count=None, max_age=0.2)}
    broker, _ = await start_broker(retention=retention, exact_trim=True)
    first = await broker.publish(events(2, MAP))
    # The age of an event is the time since it was published: it has to pass.
    await asyncio.sleep(0.3)
    await broker.publish(events(1, MAP, start=2))
    found = await broker.history(MAP, pb.StreamPosition(offset=0, epoch=first[0].epoch))
    assert not found.recovered
    assert [e.position.offset for e in found.events] == [3]


def test_default_retention_keeps_alerts_longer_than_map_chatter() -> None:
    for alerts in (pb.TOPIC_ANOMALIES, pb.TOPIC_NOTIFICATIONS):
        assert DEFAULT_MAX_AGE[alerts] >= 100 * DEFAULT_MAX_AGE[MAP]
    assert set(DEFAULT_MAX_AGE) == set(TOPICS)
    with pytest.raises(ValueError, match="count or a max_age"):
        Retention(count=None)
    assert Retention(count=10, max_age=100).script_args() == (10, 100_000, 1000)


async def test_a_batch_is_one_entry_and_each_event_gets_its_position(
    start_broker: StartBroker, admin: Redis
) -> None:
    broker, seen = await start_broker()
    await broker.publish(events(2))
    positions = await broker.publish([*events(3, start=2), event(MAP, 9)])
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await admin.xrange(key("stream", PACKAGES))  # type: ignore[assignment]
    gen = await admin.hget(key("meta", PACKAGES), "gen")
    assert isinstance(gen, bytes)
    assert [entry_id for entry_id, _ in entries] == [gen + b"-2", gen + b"-5"]
    fields = entries[1][1]
    assert fields[b"n"] == b"3"
    assert fields[b"p"] == positions[0].epoch.encode()
    stored = spb.EventBatch.FromString(fields[b"b"]).events
    assert [e.id for e in stored] == ["e2", "e3", "e4"]
    assert not any(e.HasField("position") for e in stored)  # the reader numbers them
    got = await seen.wait_for(6)
    assert [(e.id, e.position.offset) for e in got if e.topic == PACKAGES] == [
        (f"e{i}", i + 1) for i in range(5)
    ]
    assert [e.position for e in got if e.topic == MAP] == [positions[-1]]


@pytest.mark.parametrize(("since", "limit", "offsets"), [
    (0, None, [1, 2, 3, 4, 5, 6]), (1, None, [2, 3, 4, 5, 6]), (2, 1, [3]), (3, 2, [4, 5]),
    (4, None, [5, 6]), (5, 5, [6]), (2, 0, []),
])  # fmt: skip
async def test_history_reads_from_inside_a_batch(
    start_broker: StartBroker, since: int, limit: int | None, offsets: list[int]
) -> None:
    broker, _ = await start_broker()
    await broker.publish(events(1))
    positions = await broker.publish(events(4, start=1))  # one entry: offsets 2..5
    await broker.publish(events(1, start=5))
    at = pb.StreamPosition(offset=since, epoch=positions[0].epoch)
    found = await broker.history(PACKAGES, at, limit)
    assert found.recovered
    assert [e.position.offset for e in found.events] == offsets
    assert [e.id for e in found.events] == [f"e{o - 1}" for o in offsets]


async def test_count_retention_trims_whole_batches_and_keeps_at_least_the_count(
    start_broker: StartBroker,
) -> None:
    broker, _ = await start_broker(history_size=5, exact_trim=True)
    epoch = (await broker.publish(events(4)))[0].epoch  # offsets 1..4
    await broker.publish(events(3, start=4))  # 5..7: the last 5 are 3..7
    await broker.publish(events(1, start=7))  # 8: the last 5 are 4..8
    kept = await broker.history(PACKAGES, pb.StreamPosition(offset=0, epoch="other"))
    assert [e.position.offset for e in kept.events] == [4, 5, 6, 7, 8]  # exactly 5
    assert (await broker.history(PACKAGES, pb.StreamPosition(offset=3, epoch=epoch))).recovered
    lost = await broker.history(PACKAGES, pb.StreamPosition(offset=2, epoch=epoch))
    assert not lost.recovered
    assert [e.position.offset for e in lost.events] == [4, 5, 6, 7, 8]
    await broker.publish(events(5, start=8))  # 9..13: the batch of 1..4 is gone too
    kept = await broker.history(PACKAGES, pb.StreamPosition(offset=0, epoch="other"))
    assert [e.position.offset for e in kept.events] == [9, 10, 11, 12, 13]


async def test_entries_of_the_one_event_layout_are_still_read(
    start_broker: StartBroker, admin: Redis
) -> None:
    # A stream written before batches were one entry: field e, the event with its
    # position. A broker reads it, in history and live, and appends after it.
    broker, seen = await start_broker()
    first = await broker.publish(events(1))
    epoch = first[0].epoch
    gen = await admin.hget(key("meta", PACKAGES), "gen")
    assert isinstance(gen, bytes)
    old = event(PACKAGES, 1)
    old.position.offset, old.position.epoch = 2, epoch
    await admin.xadd(key("stream", PACKAGES), {"e": old.SerializeToString()}, id=gen + b"-2")
    await admin.hset(key("meta", PACKAGES), "offset", 2)
    after = await broker.publish(events(1, start=2))
    assert after == [pb.StreamPosition(offset=3, epoch=epoch)]
    got = await seen.wait_for(3)
    assert [(e.id, e.position.offset) for e in got] == [("e0", 1), ("e1", 2), ("e2", 3)]
    found = await broker.history(PACKAGES, pb.StreamPosition(offset=0, epoch=epoch))
    assert [(e.id, e.position.offset) for e in found.events] == [("e0", 1), ("e1", 2), ("e2", 3)]


# -- the epoch rule ------------------------------------------------------------


async def test_flushall_starts_a_new_epoch(start_broker: StartBroker, admin: Redis) -> None:
    broker, seen = await start_broker()
    old = await broker.publish(events(3))
    await seen.wait_for(3)
    await admin.flushall()
    found = await broker.history(PACKAGES, old[-1])
    assert not found.recovered
    assert found.position.offset == 0
    assert found.position.epoch != old[0].epoch
    new = await broker.publish(events(1, start=3))
    assert new == [pb.StreamPosition(offset=1, epoch=found.position.epoch)]
    # The running reader moves on to the new stream.
    assert (await seen.wait_for(4))[-1].position == new[0]


@pytest.mark.parametrize("lost", ["meta", "stream"])
async def test_a_lost_key_starts_a_new_epoch(
    start_broker: StartBroker, admin: Redis, lost: str
) -> None:
    broker, seen = await start_broker()
    old = await broker.publish(events(3))
    await seen.wait_for(3)
    await admin.delete(key(lost, PACKAGES))
    found = await broker.history(PACKAGES, old[-1])
    assert not found.recovered
    assert found.position.epoch != old[0].epoch
    assert found.events == []
    assert await admin.exists(key("stream", PACKAGES)) == 0
    new = await broker.publish(events(1, start=3))
    assert new[0].offset == 1
    assert (await seen.wait_for(4))[-1].position == new[0]


async def test_the_reader_follows_a_stream_recreated_with_lower_ids(
    start_broker: StartBroker, admin: Redis
) -> None:
    _, seen = await start_broker(poll_interval=0.1)
    publisher, _ = await start_broker()
    await publisher.publish(events(2))
    await seen.wait_for(2)
    # As if Redis was flushed and the new epoch began on a clock that went back.
    async with admin.pipeline(transaction=True) as tx:
        tx.flushall()
        tx.hset(key("meta", PACKAGES), mapping={"epoch": "backintime", "offset": 0, "gen": 1})
        await tx.execute()
    new = await publisher.publish(events(1, start=2))
    assert new == [pb.StreamPosition(offset=1, epoch="backintime")]
    assert (await seen.wait_for(3))[-1].position == new[0]


async def test_offsets_rolled_back_by_redis_start_a_new_epoch(
    start_broker: StartBroker, admin: Redis
) -> None:
    broker, seen = await start_broker(poll_interval=0.1)
    old = [(await broker.publish([e]))[0] for e in events(5)]  # one entry each
    await seen.wait_for(5)
    # As if Redis crashed and its AOF lacked the last two events this node read.
    stream = key("stream", PACKAGES)
    kept: list[tuple[bytes, dict[Any, Any]]] = await admin.xrange(stream, count=3)  # type: ignore[assignment]
    async with admin.pipeline(transaction=True) as tx:
        tx.delete(stream)
        for entry_id, fields in kept:
            tx.xadd(stream, fields, id=entry_id)
        tx.hset(key("meta", PACKAGES), "offset", 3)
        await tx.execute()

    async def epoch_changed() -> bool:
        return (await broker.history(PACKAGES, None)).position.epoch != old[0].epoch

    await eventually(epoch_changed, within=5)
    assert not (await broker.history(PACKAGES, old[-1])).recovered
    new = await broker.publish(events(1, start=5))
    assert new[0].offset == 1
    assert (await seen.wait_for(6))[-1].position == new[0]


@pytest.mark.parametrize("behind", [0, 2], ids=["first-topic", "third-topic"])
async def test_a_publish_right_after_a_rollback_never_reuses_offsets_read(
    start_broker: StartBroker, admin: Redis, behind: int
) -> None:
    # The reader checks Redis only every poll_interval (here: long after the test):
    # a Publish that comes first must not hand out offsets 4 and 5 again, which
    # subscribers already have for other events; whatever the topic's place in the
    # batch (behind: how many topics come before it).
    broker, seen = await start_broker(poll_interval=60)
    old = [(await broker.publish([e]))[0] for e in events(5)]  # one entry each
    await seen.wait_for(5)
    stream = key("stream", PACKAGES)
    kept: list[tuple[bytes, dict[Any, Any]]] = await admin.xrange(stream, count=3)  # type: ignore[assignment]
    async with admin.pipeline(transaction=True) as tx:
        tx.delete(stream)
        for entry_id, fields in kept:
            tx.xadd(stream, fields, id=entry_id)
        tx.hset(key("meta", PACKAGES), "offset", 3)
        await tx.execute()
    others = [event(topic, 50) for topic in (MAP, pb.TOPIC_ANOMALIES)[:behind]]
    new = (await broker.publish([*others, *events(1, start=5)]))[behind:]
    assert new[0].epoch != old[0].epoch, "offset reused in the old epoch"
    assert new[0].offset == 1
    assert [e.position for e in await seen.wait_for(6 + behind) if e.topic == PACKAGES][-1] == new[
        0
    ]
    assert not (await broker.history(PACKAGES, old[-1])).recovered


# -- Redis going away ----------------------------------------------------------


async def publish_when_back(broker: RedisBroker, batch: list[pb.Event]) -> list[pb.StreamPosition]:
    async def attempt() -> list[pb.StreamPosition] | None:
        try:
            return await broker.publish(batch)
        except Unavailable:
            return None

    return await eventually(attempt, within=10)


async def assert_unavailable_fast(broker: RedisBroker) -> None:
    began = time.monotonic()
    with pytest.raises(Unavailable, match="Redis"):
        await broker.publish(events(1, start=99))
    with pytest.raises(Unavailable, match="Redis"):
        await broker.history(PACKAGES, None)
    assert time.monotonic() - began < 3
    assert not broker.healthy


async def test_stopped_redis_is_unavailable_then_everything_resumes(
    start_redis: StartRedis, start_broker: StartBroker
) -> None:
    server = await start_redis(appendonly=True)
    states: list[BrokerState] = []
    reader, seen = await start_broker(url=server.url, on_state=states.append)
    publisher, _ = await start_broker(url=server.url)
    first = await publisher.publish(events(5))
    await seen.wait_for(5)
    await server.stop()
    await assert_unavailable_fast(publisher)
    await assert_unavailable_fast(reader)
    assert states[-1:] == [BrokerState.DOWN]
    await server.start()
    # Published before the reader is back: it resumes after its last id.
    after = await publish_when_back(publisher, events(5, start=5))
    assert [p.offset for p in after] == [6, 7, 8, 9, 10]
    assert after[0].epoch == first[0].epoch
    got = await seen.wait_for(10)
    assert [e.id for e in got] == [f"e{i}" for i in range(10)]
    assert [e.position.offset for e in got] == list(range(1, 11))
    assert reader.healthy
    assert states[-1:] == [BrokerState.UP]
    resumed = await reader.history(PACKAGES, first[-1])
    assert resumed.recovered
    assert [e.id for e in resumed.events] == [f"e{i}" for i in range(5, 10)]


async def test_kill_9_with_appendfsync_always_loses_nothing(
    start_redis: StartRedis, start_broker: StartBroker
) -> None:
    server = await start_redis(appendonly=True, appendfsync="always")
    broker, seen = await start_broker(url=server.url)
    first = await broker.publish(events(5))
    await server.kill()
    await assert_unavailable_fast(broker)
    await server.start()
    found = await eventually(lambda: history_when_back(broker, first[0].epoch), within=10)
    assert found.recovered
    assert [e.position for e in found.events] == first
    more = await broker.publish(events(1, start=5))
    assert more == [pb.StreamPosition(offset=6, epoch=first[0].epoch)]
    assert [e.id for e in await seen.wait_for(6)] == [f"e{i}" for i in range(6)]


async def history_when_back(broker: RedisBroker, epoch: str) -> HistoryResult | None:
    try:
        return await broker.history(PACKAGES, pb.StreamPosition(offset=0, epoch=epoch))
    except Unavailable:
        return None


async def test_kill_9_without_persistence_starts_a_new_epoch(
    redis_server: RedisServer, start_broker: StartBroker
) -> None:
    broker, seen = await start_broker()
    old = await broker.publish(events(3))
    await seen.wait_for(3)
    await redis_server.kill()
    await assert_unavailable_fast(broker)
    await redis_server.start()
    new = await publish_when_back(broker, events(2, start=3))
    assert [p.offset for p in new] == [1, 2]
    assert new[0].epoch != old[0].epoch
    assert not (await broker.history(PACKAGES, old[-1])).recovered
    assert [e.position for e in (await seen.wait_for(5))[3:]] == new


async def test_min_replicas_not_reached_is_unavailable(start_broker: StartBroker) -> None:
    broker, seen = await start_broker(min_replicas=1, replica_timeout=0.05)
    with pytest.raises(Unavailable, match="0 of 1 Redis replicas"):
        await broker.publish(events(1))
    # Stored on the primary (and delivered), but not known to survive a failover.
    assert (await seen.wait_for(1))[0].id == "e0"


async def test_start_without_redis_is_unavailable(redis_server: RedisServer) -> None:
    url = redis_server.url
    await redis_server.stop()
    broker = RedisBroker(url, history_size=10, connect_timeout=0.5)
    with pytest.raises(Unavailable, match="unreachable"):
        await asyncio.wait_for(broker.start(lambda e: None), 3)
    assert broker.state is BrokerState.CLOSED


async def test_close_is_idempotent_and_final(start_broker: StartBroker) -> None:
    broker, _ = await start_broker()
    await broker.close()
    await broker.close()
    assert broker.state is BrokerState.CLOSED
    with pytest.raises(Unavailable, match="not running"):
        await broker.publish(events(1))


def test_create_broker_picks_redis_by_scheme() -> None:
    broker = create_broker("redis://127.0.0.1:1/0", history_size=5)
    assert isinstance(broker, RedisBroker)
    assert isinstance(create_broker("rediss://127.0.0.1:1/0", history_size=5), RedisBroker)
