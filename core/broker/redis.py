"""The Redis broker: one Redis Stream per topic, shared by every node.

Keys, per topic, the internal ``canary`` included (``NAME`` is the topic's JSON
name, ``P`` the key prefix, in braces so that a Redis Cluster keeps every key of
a deployment in one slot)::

    {P}:meta:NAME    hash: epoch, offset (the latest), gen, tick and last (age trimming)
    {P}:stream:NAME  stream: one entry per Publish batch and topic, id
                     ``GEN-LAST`` (LAST: the offset of its last event), fields
                     ``n`` (how many events), ``p`` (the epoch) and ``b`` (the
                     events, protobuf bytes of an ``EventBatch``, positions left out)
    {P}:ages:NAME    sorted set: age checkpoints (score: ms, member: offset)

An entry holds the events ``LAST - n + 1`` … ``LAST``: a position maps to the
first entry whose id is at or above it, without a scan, and the reader gives
each event its position. One entry per batch rather than per event: a batch of
100 is one ``XADD`` for Redis and one parse for each reader (as 100 entries,
redis-server took about a quarter of the server's core under G1). Entries of
the earlier layout (field ``e``: one event, its position included) are still
read. ``gen`` is the Redis clock (ms) when the epoch began, and at least one
more than any earlier ``gen`` known, so a new epoch's ids are above the old
ones and a reader blocked after the old ids moves on to the new stream.

Three Lua scripts keep each step atomic: ``publish`` (one call per Publish
batch, every topic of the batch: all events are stored or none), ``history``
(the meta and the entries read together), and ``sync`` (the reader's check).
None of them looks inside an entry's events.
Each first applies the epoch rule (``ensure`` in :data:`_PRELUDE`): the meta
and the stream exist together (only the stream may be absent, while the
offset is 0); otherwise the history was lost (flushed, restarted without
persistence, evicted) and the topic starts a new epoch with an empty stream.

Each node reads every stream once, in one background task doing a blocking
XREAD over all topics on its own connection, and hands each event to the
handler; publishing nodes get their own events the same way. After a
connection error, and every ``poll_interval``, the reader runs ``sync``: it
reads a stream recreated with lower ids from its start, and when Redis holds
fewer events of an epoch than the node has read (a crash lost the end of an
AOF written with ``appendfsync everysec``), it starts a new epoch, since the
lost offsets would otherwise be given to other events. Events stored but lost
before any node read them go unnoticed: only ``appendfsync always`` keeps
every acknowledged event.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.broker.base import Broker, EventHandler, HistoryResult
from core.errors import Unavailable
from core.topics import ALL_TOPICS, CANARY, TOPICS, topic_name

__all__ = ["DEFAULT_MAX_AGE", "INTERNAL_RETENTION", "BrokerState", "RedisBroker", "Retention"]

log = logging.getLogger(__name__)

_MINUTE = 60.0
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

#: Default age bound per topic: alerts are kept far longer than map chatter.
DEFAULT_MAX_AGE: dict[int, float] = {
    pb.TOPIC_PACKAGE_UPDATES: _DAY,
    pb.TOPIC_ANOMALIES: 7 * _DAY,
    pb.TOPIC_DASHBOARD_METRICS: _HOUR,
    pb.TOPIC_NOTIFICATIONS: 7 * _DAY,
    pb.TOPIC_MAP_UPDATES: 10 * _MINUTE,
    pb.TOPIC_AGENT_ACTIVITY: _DAY,
    pb.TOPIC_SYSTEM_HEALTH: _HOUR,
}
#: Topics whose default count bound is this many times ``history_size``.
_LONG_KEPT: dict[int, int] = {pb.TOPIC_ANOMALIES: 10, pb.TOPIC_NOTIFICATIONS: 10}
#: Age trimming runs at checkpoints every ``max_age / _AGE_STEPS``: an event may
#: outlive its max age by that much, and a topic keeps about this many checkpoints.
_AGE_STEPS = 100


@dataclass(frozen=True)
class Retention:
    """How much history a topic keeps: at most ``count`` events (None: no count
    bound) and events younger than ``max_age`` seconds (None: no age bound).

    Redis trims whole entries (one Publish batch each): a count bound keeps
    the last ``count`` events and the rest of the batch the oldest of them came
    in (up to one stream node more with approximate trimming); with
    ``exact_trim`` history reads exactly the last ``count`` events, as the
    memory broker keeps them. Age trimming happens when the topic is published
    to. Both bounds are lower bounds of what is kept.
    """

    count: int | None
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.count is None and self.max_age is None:
            raise ValueError("retention needs a count or a max_age")
        if self.count is not None and self.count < 1:
            raise ValueError("retention count must be at least 1")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError("retention max_age must be positive")

    def script_args(self) -> tuple[int, int, int]:
        """(count or 0, max age in ms or 0, ms between age checkpoints)."""
        age_ms = 0 if self.max_age is None else max(1, round(self.max_age * 1000))
        return self.count or 0, age_ms, max(1, age_ms // _AGE_STEPS)


#: What internal topics keep: the bridges' canary needs only its latest events.
INTERNAL_RETENTION: dict[int, Retention] = {CANARY: Retention(100, 10 * _MINUTE)}


class BrokerState(enum.Enum):
    """Where the broker stands: not started, Redis answering, Redis not answering, closed."""

    NEW = "new"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


# Shared by every script. Lua numbers are doubles: exact up to 2^53 (offsets, ms).
_PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A new epoch: empty history, offset 0, a gen above every gen known.
local function renew(meta, stream, ages, old_gen, candidate, floor, now)
  redis.call('DEL', meta, stream, ages)
  local gen = math.max(now, (old_gen or 0) + 1, floor + 1)
  redis.call('HSET', meta, 'epoch', candidate, 'offset', 0, 'gen', gen)
  return {epoch = candidate, offset = 0, gen = gen, tick = 0, last = 0}
end

-- The epoch rule: the state (epoch, offset, gen, tick, last) of a topic whose history
-- is whole, after starting a new epoch if it was not.
local function ensure(meta, stream, ages, candidate, floor, now)
  local m = redis.call('HMGET', meta, 'epoch', 'offset', 'gen', 'tick', 'last')
  local offset, gen = tonumber(m[2]), tonumber(m[3])
  local kind = redis.call('TYPE', stream)['ok']
  if m[1] and offset and gen and (kind == 'stream' or kind == 'none')
      and (offset > 0) == (kind == 'stream') then
    return {epoch = m[1], offset = offset, gen = gen,
            tick = tonumber(m[4]) or 0, last = tonumber(m[5]) or 0}
  end
  return renew(meta, stream, ages, gen, candidate, floor, now)
end

local function entry_id(gen, offset)
  return string.format('%d-%d', gen, offset)
end

-- An entry's last offset, its event count, epoch ('' for the one-event layout) and
-- bytes ('' for an entry that is not ours).
local function entry(e)
  local last = tonumber(string.match(e[1], '-(%d+)$'))
  local f, named = e[2], {}
  for i = 1, #f, 2 do
    named[f[i]] = f[i + 1]
  end
  if named.b then
    if not named.p then
      return last, tonumber(named.n) or 1, '', ''
    end
    return last, tonumber(named.n) or 1, named.p, named.b
  end
  return last, 1, '', named.e or ''
end
"""

# KEYS: meta, stream, ages of each topic of the batch.
# ARGV: candidate epoch, gen floor, '~' or '=', then per topic: number of events,
#       count bound (0: none), max age ms (0: none), ms between age checkpoints, the
#       publishing node's last read gen and offset (0 0: none yet), and the events
#       (EventBatch bytes, positions left out).
# Returns per topic: epoch, first offset.
_PUBLISH = (
    _PRELUDE
    + r"""
local candidate, floor, trim = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local topics = #KEYS / 3
local now = now_ms()
-- Every topic is checked before the first write, so the batch is stored whole
-- (Redis runs a script alone but does not undo one that fails midway).
local states = {}
for t = 1, topics do
  local meta, stream, ages = KEYS[3 * t - 2], KEYS[3 * t - 1], KEYS[3 * t]
  local s = ensure(meta, stream, ages, candidate, floor, now)
  local read_gen, read_offset = tonumber(ARGV[7 * t + 1]), tonumber(ARGV[7 * t + 2])
  if s.gen == read_gen and s.offset < read_offset then
    -- As in the sync script: Redis lost events this node has read (the end of its
    -- AOF). Appending at s.offset + 1 would give these events the offsets of lost
    -- ones, which subscribers already have: a new epoch instead, before any write.
    s = renew(meta, stream, ages, s.gen, candidate, floor, now)
  end
  states[t] = s
end
local out = {}
for t = 1, topics do
  local meta, stream, ages = KEYS[3 * t - 2], KEYS[3 * t - 1], KEYS[3 * t]
  local base = 7 * t - 3
  local n, count = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local max_age, step = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local s = states[t]
  local gen, first = s.gen, s.offset + 1
  local offset = s.offset + n
  local id = entry_id(gen, offset)
  local low = offset - count + 1
  if count > 0 and low > 1 then
    -- Entries whose events are all older than the last count events go.
    redis.call('XADD', stream, 'MINID', trim, entry_id(gen, low), id,
               'n', n, 'p', s.epoch, 'b', ARGV[base + 6])
  else
    redis.call('XADD', stream, id, 'n', n, 'p', s.epoch, 'b', ARGV[base + 6])
  end
  redis.call('HSET', meta, 'offset', offset, 'last', now)
  if max_age > 0 and now - s.tick >= step then
    -- A checkpoint (score: ms, member: offset) says every event up to the offset
    -- was appended by then: the events before this batch, by the previous publish.
    redis.call('HSET', meta, 'tick', now)
    if first > 1 then
      redis.call('ZADD', ages, s.last, first - 1)
    end
    local old = redis.call('ZREVRANGEBYSCORE', ages, now - max_age, '-inf',
                           'WITHSCORES', 'LIMIT', 0, 1)
    if old[1] then
      redis.call('XTRIM', stream, 'MINID', trim, entry_id(gen, tonumber(old[1]) + 1))
      redis.call('ZREMRANGEBYSCORE', ages, '-inf', old[2])
    end
  end
  out[#out + 1] = s.epoch
  out[#out + 1] = first
end
return out
"""
)

# KEYS: meta, stream, ages of one topic.
# ARGV: candidate epoch, gen floor, '1' when a since position is given, since epoch,
#       since offset, limit (-1: none), events to read back at most (0: all kept).
# Returns: epoch, latest offset, recovered (1/0), the first offset wanted, then per
#          entry holding events from it on: its last offset, epoch and bytes (see
#          entry()), until limit events.
_HISTORY = (
    _PRELUDE
    + r"""
local meta, stream, ages = KEYS[1], KEYS[2], KEYS[3]
local s = ensure(meta, stream, ages, ARGV[1], tonumber(ARGV[2]), now_ms())
local epoch, offset, gen = s.epoch, s.offset, s.gen
if ARGV[3] ~= '1' then
  return {epoch, offset, 1, offset + 1}
end
local since_epoch, since, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local keep = tonumber(ARGV[7])
local oldest = offset + 1
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if head[1] then
  local last, n = entry(head[1])
  oldest = last - n + 1
end
if keep > 0 then
  oldest = math.max(oldest, offset - keep + 1)
end
local start, recovered
if since_epoch ~= epoch then
  start, recovered = oldest, 0
elseif since > offset then
  return {epoch, offset, 0, offset + 1}
else
  start = math.max(since + 1, oldest)
  recovered = (since >= oldest - 1) and 1 or 0
end
local out = {epoch, offset, recovered, start}
local need = limit
if need == 0 then
  return out
end
-- The entry holding start is the first whose last offset is at or above it.
local from = entry_id(gen, start)
while true do
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', 128)
  for i = 1, #entries do
    local last, n, entry_epoch, data = entry(entries[i])
    out[#out + 1] = last
    out[#out + 1] = entry_epoch
    out[#out + 1] = data
    if need > 0 then
      need = need - (last - math.max(last - n + 1, start) + 1)
      if need <= 0 then
        return out
      end
    end
  end
  if #entries < 128 then
    return out
  end
  from = '(' .. entries[#entries][1]
end
"""
)


# KEYS: meta, stream, ages of every topic.
# ARGV: candidate epoch, gen floor, then per topic the reader's last gen and offset
#       (0 0: none yet).
# Returns per topic: gen, offset.
_SYNC = (
    _PRELUDE
    + r"""
local candidate, floor = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {}
for t = 1, #KEYS / 3 do
  local meta, stream, ages = KEYS[3 * t - 2], KEYS[3 * t - 1], KEYS[3 * t]
  local read_gen, read_offset = tonumber(ARGV[1 + 2 * t]), tonumber(ARGV[2 + 2 * t])
  local s = ensure(meta, stream, ages, candidate, floor, now)
  if s.gen == read_gen and s.offset < read_offset then
    -- Redis lost events this node has read (a crash lost the end of its AOF): the
    -- offsets after s.offset would name other events. A new epoch says so.
    s = renew(meta, stream, ages, s.gen, candidate, floor, now)
  end
  out[#out + 1] = s.gen
  out[#out + 1] = s.offset
end
return out
"""
)


class _Script:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_PUBLISH_SCRIPT = _Script(_PUBLISH)
_HISTORY_SCRIPT = _Script(_HISTORY)
_SYNC_SCRIPT = _Script(_SYNC)


def _new_epoch() -> str:
    return secrets.token_hex(6)


class RedisBroker(Broker):
    """A broker on Redis Streams: several nodes share one ordered log per topic.

    ``url``: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS).

    Options:

    - ``history_size``: the default count bound of each topic; anomalies and
      notifications keep ten times as many. Default age bounds are in
      :data:`DEFAULT_MAX_AGE` (10 minutes for map updates, 7 days for alerts).
    - ``retention``: :class:`Retention` per topic, replacing the default.
      Internal topics (the bridges' canary) keep :data:`INTERNAL_RETENTION`.
    - ``exact_trim``: trim streams to exactly the count bound (``MAXLEN =``)
      instead of Redis' cheaper approximate trimming (``MAXLEN ~``, which
      keeps up to one stream node more: 100 entries or 4 kB by default).
    - ``prefix``: the key prefix; deployments sharing one Redis need different ones.
    - ``min_replicas``: when above 0, Publish also waits (``WAIT``) up to
      ``replica_timeout`` seconds for this many replicas to acknowledge the
      batch, and raises Unavailable when fewer did (the batch is then stored
      on the primary and delivered, but may be lost on failover).
    - ``connect_timeout``, ``timeout``: seconds to connect to Redis and to
      wait for a reply; past them Publish and history raise Unavailable.
    - ``poll_interval``: the longest a reader's XREAD blocks, and how often the
      reader checks each topic's epoch (to follow a stream that was recreated).
    - ``read_count``: at most this many entries (Publish batches) per topic per XREAD.
    - ``on_state``: called with the new :class:`BrokerState` on each change
      (``UP`` ⇄ ``DOWN`` as Redis answers or not), from the event loop.

    Publish returns once Redis has run the batch's script (and has written
    it to its AOF per ``appendfsync``). A reply lost to a timeout raises
    Unavailable although the whole batch may have been stored: all or none.
    ``start`` raises Unavailable when Redis cannot be reached then; afterwards
    the reader reconnects with backoff and resumes after the last id it read.
    """

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        retention: Mapping[int, Retention] | None = None,
        exact_trim: bool = False,
        prefix: str = "clearpath",
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
        connect_timeout: float = 1.0,
        timeout: float = 2.0,
        poll_interval: float = 1.0,
        read_count: int = 100,
        on_state: Callable[[BrokerState], object] | None = None,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        if min_replicas < 0:
            raise ValueError("min_replicas must not be negative")
        if poll_interval <= 0 or timeout <= 0 or connect_timeout <= 0:
            raise ValueError("poll_interval and timeouts must be positive")
        self._url = url
        self._retention = {
            topic: Retention(history_size * _LONG_KEPT.get(topic, 1), DEFAULT_MAX_AGE[topic])
            for topic in TOPICS
        }
        self._retention.update(INTERNAL_RETENTION)
        self._retention.update(retention or {})
        self._trim = "=" if exact_trim else "~"
        # Every topic the broker carries has its keys, internal ones included.
        self._keys = {
            t: tuple(f"{{{prefix}}}:{kind}:{topic_name(t)}" for kind in ("meta", "stream", "ages"))
            for t in ALL_TOPICS
        }
        self._topic_of_stream = {self._keys[t][1].encode(): t for t in ALL_TOPICS}
        self._min_replicas = min_replicas
        self._replica_timeout_ms = max(1, round(replica_timeout * 1000))
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._read_count = read_count
        self._on_state = on_state
        self._state = BrokerState.NEW
        self._redis: Redis | None = None
        self._reader: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._handler: EventHandler | None = None
        #: The last entry read per topic, (gen, offset).
        self._read: dict[int, tuple[int, int]] = {}
        #: The highest gen this node has seen; new epochs get a higher one.
        self._floor = 0
        self._next_sync = 0.0
        #: XREAD calls that returned (with events or after ``poll_interval``).
        self.reads = 0
        #: Events handed to the handler.
        self.delivered = 0

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> BrokerState:
        return self._state

    @property
    def healthy(self) -> bool:
        """True while the broker is started and Redis answers."""
        return self._state is BrokerState.UP

    def _closed(self) -> bool:
        return self._state is BrokerState.CLOSED

    def _set_state(self, state: BrokerState) -> None:
        if state is self._state or self._state is BrokerState.CLOSED:
            return
        self._state = state
        log.info(
            "redis broker %s",
            state.value,
            extra={"event": "broker_state", "state": state.value, "broker": "redis"},
        )
        if self._on_state is not None:
            self._on_state(state)

    def _unavailable(self, exc: RedisError, doing: str) -> Unavailable:
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
            self._set_state(BrokerState.DOWN)
            log.warning(
                "redis broker: %s failed: %s",
                doing,
                exc,
                extra={"event": "broker_error", "doing": doing, "error": str(exc)},
            )
            return Unavailable(f"the event broker (Redis) is unreachable; {doing} failed")
        log.warning(
            "redis broker: %s refused: %s",
            doing,
            exc,
            extra={"event": "broker_error", "doing": doing, "error": str(exc)},
        )
        return Unavailable(f"the event broker (Redis) refused the request; {doing} failed")

    def _client(self, read_timeout: float) -> Redis:
        # No retries: a command whose reply was lost may have run; running a
        # publish twice would store its batch twice.
        return Redis.from_url(
            self._url,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=read_timeout,
            retry=Retry(NoBackoff(), 0),
            client_name="clearpath-broker",
        )

    # -- Broker -------------------------------------------------------------

    async def start(self, handler: EventHandler) -> None:
        if self._state is not BrokerState.NEW:
            raise RuntimeError(f"broker is {self._state.value}; start it once")
        self._redis = self._client(self._timeout)
        # Blocking reads get their own connection, and time out after the block.
        self._reader = self._client(self._poll_interval + self._timeout)
        try:
            # Loaded now, so that Publish is one EVALSHA (and fails fast on a bad script).
            for script in (_PUBLISH_SCRIPT, _HISTORY_SCRIPT, _SYNC_SCRIPT):
                await self._redis.script_load(script.source)
            await self._sync()
        except RedisError as exc:
            await self._close_clients()
            self._state = BrokerState.CLOSED
            raise self._unavailable(exc, "connecting") from exc
        self._handler = handler
        self._set_state(BrokerState.UP)
        self._task = asyncio.create_task(self._read_forever(), name="redis-broker-reader")

    async def publish(self, events: Sequence[pb.Event]) -> list[pb.StreamPosition]:
        redis = self._running()
        if not events:
            return []
        groups: dict[int, list[pb.Event]] = {}
        for event in events:
            topic_name(event.topic)  # InvalidArgument for a topic that does not exist
            groups.setdefault(event.topic, []).append(event)
        keys: list[str] = []
        args: list[str | int | bytes] = [_new_epoch(), self._floor, self._trim]
        for topic, group in groups.items():
            keys.extend(self._keys[topic])
            args.append(len(group))
            args.extend(self._retention[topic].script_args())
            # What this node has read: the script refuses to reuse offsets it has seen.
            args.extend(self._read.get(topic, (0, 0)))
            for event in group:
                event.ClearField("position")  # readers give each its position
            args.append(spb.EventBatch(events=group).SerializeToString())
        try:
            reply = await self._publish(redis, keys, args)
        except RedisError as exc:
            raise self._unavailable(exc, "publish") from exc
        self._set_state(BrokerState.UP)
        for index, group in enumerate(groups.values()):
            epoch = reply[2 * index].decode()
            first = int(reply[2 * index + 1])
            for n, event in enumerate(group):
                event.position.offset = first + n
                event.position.epoch = epoch
        return [event.position for event in events]

    async def _publish(self, redis: Redis, keys: list[str], args: list[str | int | bytes]) -> Any:
        script = _PUBLISH_SCRIPT
        if not self._min_replicas:
            return await self._eval(redis, script, keys, args)
        for attempt in range(2):
            async with redis.pipeline(transaction=False) as pipe:
                # WAIT counts the acks of this connection's writes: same pipeline.
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.wait(self._min_replicas, self._replica_timeout_ms)
                try:
                    reply, acked = await pipe.execute()
                except NoScriptError:
                    if attempt:
                        raise
                    await redis.script_load(script.source)
                    continue
            if acked < self._min_replicas:
                raise Unavailable(
                    f"the batch was stored but only {acked} of {self._min_replicas} "
                    "Redis replicas acknowledged it in time"
                )
            return reply
        raise AssertionError("unreachable")

    async def history(
        self, topic: int, since: pb.StreamPosition | None, limit: int | None = None
    ) -> HistoryResult:
        redis = self._running()
        topic_name(topic)
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        args: list[str | int] = [_new_epoch(), self._floor]
        if since is None:
            args.append("0")
        else:
            keep = (self._retention[topic].count or 0) if self._trim == "=" else 0
            args.extend(("1", since.epoch, since.offset, -1 if limit is None else limit, keep))
        try:
            reply = await self._eval(redis, _HISTORY_SCRIPT, list(self._keys[topic]), args)
        except RedisError as exc:
            raise self._unavailable(exc, "history") from exc
        self._set_state(BrokerState.UP)
        position = pb.StreamPosition(offset=int(reply[1]), epoch=reply[0].decode())
        start = int(reply[3])
        events: list[pb.Event] = []
        for index in range(4, len(reply), 3):
            epoch = reply[index + 1] or None  # '': the one-event layout
            unpacked = _unpack(int(reply[index]), epoch, reply[index + 2])
            if unpacked is None:
                log.error("redis broker: skipped an entry of %s: not events", topic_name(topic))
                continue
            # The first entry may begin before start (its batch straddles it).
            events.extend(e for e in unpacked if e.position.offset >= start)
        if limit is not None:
            del events[limit:]
        return HistoryResult(position=position, recovered=bool(reply[2]), events=events)

    async def close(self) -> None:
        if self._state is BrokerState.CLOSED:
            return
        self._set_state(BrokerState.CLOSED)
        self._handler = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        # redis-py can lose the cancellation of a blocked read (redis/redis-py#2028):
        # closing the connections ends the read, and the reader stops on CLOSED.
        await self._close_clients()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- internals ----------------------------------------------------------

    def _running(self) -> Redis:
        if self._redis is None or self._state in (BrokerState.NEW, BrokerState.CLOSED):
            raise Unavailable("broker is not running")
        return self._redis

    async def _close_clients(self) -> None:
        for client in (self._reader, self._redis):
            if client is not None:
                await client.aclose()
        self._reader = self._redis = None

    @staticmethod
    async def _eval(redis: Redis, script: _Script, keys: list[str], args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or its script cache was flushed: load and run once more
            # (NOSCRIPT means the script did not run).
            await redis.script_load(script.source)
            return await redis.evalsha(script.sha, len(keys), *keys, *args)

    async def _sync(self) -> None:
        """Apply the epoch rule to every topic and place the reader: a topic not
        read yet starts at its tail; a stream older than the one read (its gen is
        lower: the clock went back, or Redis was restored) is read from its start."""
        redis = _open(self._redis)
        keys = [key for topic in ALL_TOPICS for key in self._keys[topic]]
        args: list[str | int] = [_new_epoch(), self._floor]
        for topic in ALL_TOPICS:
            args.extend(self._read.get(topic, (0, 0)))
        reply = await self._eval(redis, _SYNC_SCRIPT, keys, args)
        for index, topic in enumerate(ALL_TOPICS):
            gen, offset = int(reply[2 * index]), int(reply[2 * index + 1])
            read = self._read.get(topic)
            if read is None:
                self._read[topic] = (gen, offset)
            elif gen < read[0]:
                self._read[topic] = (gen, 0)
            self._floor = max(self._floor, gen)
        self._next_sync = time.monotonic() + self._poll_interval

    async def _read_forever(self) -> None:
        delay = _RETRY_MIN
        resync = False
        # The state is checked after every await: a cancellation may be lost (see close).
        while not self._closed():
            try:
                if resync or time.monotonic() >= self._next_sync:
                    await self._sync()
                    resync = False
                reply = await self._xread()
                if self._closed():
                    return
                self.reads += 1
                self._set_state(BrokerState.UP)
                self._deliver(reply)
            except Exception as exc:
                if self._closed():
                    return
                if isinstance(exc, RedisError):
                    if self._state is BrokerState.UP:
                        log.warning(
                            "redis broker: reading failed: %s; retrying",
                            exc,
                            extra={"event": "broker_error", "doing": "read", "error": str(exc)},
                        )
                else:
                    log.exception(
                        "redis broker: reader failed; retrying",
                        extra={"event": "broker_error", "doing": "read"},
                    )
                self._set_state(BrokerState.DOWN)
                # Redis may have restarted, flushed or lost data: check before reading on.
                resync = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            delay = _RETRY_MIN

    async def _xread(self) -> Any:
        reader = _open(self._reader)
        streams = {}
        for topic in ALL_TOPICS:
            gen, offset = self._read[topic]
            streams[self._keys[topic][1]] = f"{gen}-{offset}"
        return await reader.xread(
            streams,  # type: ignore[arg-type]
            count=self._read_count,
            block=max(1, round(self._poll_interval * 1000)),
        )

    def _deliver(self, reply: Any) -> None:
        """Hand each event of an XREAD reply to the handler, and move the reader on.

        redis-py answers ``[[stream, entries]]``, or ``{stream: entries}`` with
        ``legacy_responses=False`` (its announced future default); both are read.
        """
        handler = self._handler
        for stream, entries in reply.items() if isinstance(reply, dict) else reply:
            topic = self._topic_of_stream[stream]
            for entry_id, fields in entries:
                gen, _, last = entry_id.partition(b"-")
                self._read[topic] = (int(gen), int(last))
                self._floor = max(self._floor, int(gen))
                if b"b" in fields:
                    events = _unpack(int(last), fields.get(b"p", b""), fields[b"b"])
                else:
                    events = _unpack(int(last), None, fields.get(b"e", b""))
                if events is None:
                    log.error("redis broker: skipped entry %s of %s: not events", entry_id, stream)
                    continue
                self.delivered += len(events)
                if handler is not None:
                    for event in events:
                        try:
                            handler(event)
                        except Exception:
                            # One failing handler call must not stop delivery to the node.
                            log.exception("redis broker: event handler failed")


def _unpack(last: int, epoch: bytes | None, data: bytes) -> list[pb.Event] | None:
    """The events of an entry whose last offset is ``last``, each with its position:
    an ``EventBatch`` of ``epoch`` (the events numbered up to ``last``), or, with
    ``epoch`` None, one event that carries its position (the earlier layout). None
    when the entry holds no events (not written by a broker)."""
    if not data or epoch == b"":
        return None
    try:
        if epoch is None:
            return [pb.Event.FromString(data)]
        events = list(spb.EventBatch.FromString(data).events)
    except DecodeError:
        return None
    if not events:
        return None
    text = epoch.decode()
    offset = last - len(events)
    for event in events:
        offset += 1
        position = event.position
        position.offset = offset
        position.epoch = text
    return events


def _open(client: Redis | None) -> Redis:
    if client is None:
        raise RedisConnectionError("the broker is closed")
    return client


#: Seconds between the reader's reconnection attempts: doubling from min to max.
_RETRY_MIN = 0.05
_RETRY_MAX = 1.0
