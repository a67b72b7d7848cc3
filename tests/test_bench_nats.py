"""bench's nats-server baseline: the NATS protocol pieces with plain calls, then a real
nats-server on free ports with the lean WebSocket subscriber and the TCP publisher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest

from bench.events import MARKER, PLACEHOLDER, json_event, nats_publish, stamp
from bench.loadgen.nats import NatsError, NatsStream, subscribe_commands
from bench.loadgen.publisher import Publisher, PublishSpec
from bench.loadgen.tally import Tally
from bench.loadgen.ws_variants import NatsWsSubscriber
from bench.targets.base import Endpoint, ServerProcess
from bench.targets.nats import NATS_SUBJECT, NatsTarget, nats_config, nats_executable
from tests.waiting import eventually

TIMEOUT = 10.0


def _msg(payload: bytes, sid: int = 1) -> bytes:
    return b"MSG bench %d %d\r\n%s\r\n" % (sid, len(payload), payload)


def test_stream_cuts_at_the_last_line_end_so_a_marker_is_never_split() -> None:
    payload = stamp(json_event(1), 1_700_000_000_000_000_000)
    wire = _msg(payload) * 3
    at = wire.index(MARKER, len(_msg(payload))) + 4  # inside the second marker
    stream, tally = NatsStream(), Tally()
    counted = 0
    for part in (wire[:at], wire[at:]):
        end = stream.feed(part)
        counted += tally.feed(stream.buf, end, 0, False)
        stream.consume(end)
    assert counted == 3
    assert stream.buf == b""


def test_stream_keeps_an_incomplete_line_for_later() -> None:
    stream = NatsStream()
    assert stream.feed(b"MSG bench 1 5\r\nhel") == len(b"MSG bench 1 5\r\n")
    stream.consume(len(b"MSG bench 1 5\r\n"))
    assert stream.feed(b"lo") == 0
    assert stream.feed(b"\r\n") == len(b"hello\r\n")


def test_stream_counts_ping_pong_at_line_starts_and_keeps_the_first_error() -> None:
    stream = NatsStream()
    payload = b'{"note":"PING\\r\\n is not a ping inside JSON"}'
    end = stream.feed(b"PING\r\n" + _msg(payload) + b"PONG\r\nPING\r\n-ERR 'Slow Consumer'\r\n")
    assert (stream.pings, stream.pongs) == (2, 1)
    assert stream.error == "-ERR 'Slow Consumer'"
    stream.consume(end)
    stream.consume(stream.feed(b"-ERR 'Other'\r\n"))
    assert stream.error == "-ERR 'Slow Consumer'"


def test_stream_refuses_an_endless_line() -> None:
    stream = NatsStream()
    with pytest.raises(NatsError, match="no line end"):
        stream.feed(b"x" * (9 * 1024 * 1024))


def test_subscribe_commands_and_publish_template() -> None:
    assert subscribe_commands("bench") == (
        b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\nSUB bench 1\r\nPING\r\n'
    )
    body = nats_publish("bench", 3)
    assert body.count(b"PUB bench ") == 3
    assert body.endswith(b"\r\nPING\r\n")
    assert body.count(PLACEHOLDER) == 3
    # Stamping keeps every announced length true: the same payload size as clearpath's.
    stamped = stamp(body, 1_700_000_000_000_000_000)
    first = stamped.split(b"\r\n")
    assert int(first[0].split()[-1]) == len(first[1]) == len(json_event(0))


def test_config_and_listening_lines() -> None:
    conf = nats_config()
    assert 'listen: "127.0.0.1:-1"' in conf
    assert "no_tls: true" in conf
    target = NatsTarget()
    target.reset()
    assert (
        target.on_line("[1] [INF] Listening for websocket clients on ws://127.0.0.1:4101") is None
    )
    ep = target.on_line("[1] [INF] Listening for client connections on 127.0.0.1:4100")
    assert isinstance(ep, Endpoint)
    assert ep.ws is not None
    assert (ep.ws.port, ep.ws.path, ep.ws.proto, ep.ws.subject) == (4101, "/", "nats", "bench")
    assert ep.ws_publish == PublishSpec("nats", "127.0.0.1", 4100, NATS_SUBJECT)


@pytest.fixture
async def nats() -> AsyncIterator[Endpoint]:
    # `make test` installs Debian's nats-server (Makefile `system`): missing is a failure.
    assert nats_executable() is not None, "nats-server is not installed (run `make system`)"
    async with ServerProcess(NatsTarget(), frozenset()) as ep:
        yield ep


async def test_a_real_nats_server_delivers_every_published_event(nats: Endpoint) -> None:
    ws, publish = nats.ws, nats.ws_publish
    assert ws is not None
    assert publish is not None
    loop = asyncio.get_running_loop()
    tally = Tally()
    tally.set_window(0, 1 << 62)  # sample every latency from now on
    subs: list[NatsWsSubscriber] = []
    try:
        for _ in range(2):
            _, sub = await loop.create_connection(
                lambda: NatsWsSubscriber(
                    ws.host, ws.port, "/", tally, sample=True, subject=NATS_SUBJECT
                ),
                ws.host,
                ws.port,
            )
            subs.append(sub)
            await asyncio.wait_for(sub.ready, TIMEOUT)  # the PONG after SUB
        async with Publisher(publish, 50, 4) as pub:
            for _ in range(40):
                await pub.publish()

        async def all_arrived() -> bool:
            return all(s.events >= 2000 for s in subs)

        await eventually(all_arrived, TIMEOUT)
        assert [s.events for s in subs] == [2000, 2000]
        assert tally.latency_seen == 4000
        assert not any(s.cut_off() for s in subs)
    finally:
        for s in subs:
            s.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(s.closed for s in subs))


async def test_a_publisher_sees_the_server_go_away(nats: Endpoint) -> None:
    assert nats.ws_publish is not None
    pub = Publisher(nats.ws_publish, 1, 1)
    async with pub:
        await pub.publish()
        os.kill(nats.pid, signal.SIGKILL)
        with pytest.raises((NatsError, OSError)):
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await pub.publish()
