"""1,000 sockets opening and closing at once against a real ``clearpath bridge``
process (auth on): the bridge forgets every one of them and its memory does not grow.

The bridge and the core run as processes (``clearpath serve --no-bridge`` and
``clearpath bridge``, with ``CLEARPATH_*_AUTH_SECRET``); this process only runs the
clients. A round opens :data:`SOCKETS` WebSockets concurrently — half on
``/ws/packages?token=`` (subscribed at connect), half on ``/ws/connect`` with an
``auth`` message and a ``subscribe`` — publishes three events that every socket
must receive, then closes all of them at once: half with a close handshake, half
by aborting the TCP connection. Then ``/ws/status`` (operator token) must show no
connection and no subscriber within :data:`GONE_WITHIN` seconds.

Admission counters (per address, per identity) are not visible over HTTP, so the
caps are set to exactly what a round uses: 1,000 sockets per address, 100 per
identity with 10 identities of 100 sockets each. A count left behind by one round
refuses a socket of the next one (HTTP 429 or close 4029), which fails the round.

Memory, as the bridge process's ``VmRSS``. What was measured here (2 CPUs, uvloop,
pymalloc; MiB; 12 runs of this test and longer runs of up to 30 rounds):

- after a warm-up of 200 sockets: 81; with 1,000 sockets open: 95-97, about
  15 KiB per socket (:data:`PER_SOCKET` bounds it at 48 KiB). When they are all
  gone RSS stays there: the allocator keeps its high-water mark (pymalloc arenas
  and the C heap are not given back to the OS). A baseline taken after only 200
  sockets would read those 15 MiB as a leak, so the baseline is taken after a
  warm-up round of the full 1,000.
- then round 1: +2.0 to +3.4 MiB over the baseline; round 2: +0.0 to +0.5 over
  round 1. Over 30 rounds RSS settles on a plateau (about 108 MiB), reached by a
  few one-off steps of 4-8 MiB (fragmentation; they came after 1,700 to 10,000
  sockets in all, this test makes 3,200), and shows no trend. In-process,
  ``tracemalloc`` and ``gc`` object counts show no growth from round to round.

So the margins: RSS after round 1 at most baseline + :data:`ROUND_1_MARGIN`
(8 MiB), after round 2 at most round 1 + :data:`ROUND_2_MARGIN` (6 MiB). A leak of
10 KiB per socket (10 MiB a round) exceeds either; the noise measured stays 4.6 and
5.5 MiB under them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from tests.auth_helpers import SECRET, bearer, token
from tests.events import package
from tests.processes import Process, clearpath_process
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(120)

#: Sockets per round: all open at once (the process's open-files cap is 20,000).
SOCKETS = 1000
#: Token subjects per round; SOCKETS / SUBJECTS sockets each, the per-identity cap.
SUBJECTS = 10
#: Events published per round; every socket must receive each of them.
EVENTS = 3
#: Seconds for every socket to be forgotten after the clients closed them.
GONE_WITHIN = 30.0
#: Seconds a round may take to open its sockets, or to read its events.
ROUND_TIMEOUT = 40.0
#: RSS is read this long after the last socket is gone: past the bridge's
#: close_timeout (2 s), whose timers still hold each closed socket's transport.
SETTLE = 2.5
MiB = 1024 * 1024
#: What an open socket may cost the bridge, at most (measured: about 15 KiB).
PER_SOCKET = 48 * 1024
#: RSS after round 1 may exceed the baseline (after a full warm-up round) by this much.
ROUND_1_MARGIN = 8 * MiB
#: RSS after round 2 may exceed RSS after round 1 by this much.
ROUND_2_MARGIN = 6 * MiB

CORE_ENV = {"CLEARPATH_CORE_AUTH_SECRET": SECRET}
BRIDGE_ENV = {
    # The bridge signs its own operator tokens to the core with the shared secret.
    "CLEARPATH_BRIDGE_AUTH_SECRET": SECRET,
    "CLEARPATH_BRIDGE_STATIC_DIR": "",
    "CLEARPATH_BRIDGE_RECONNECT_MAX": "0.5",
    # Exactly one round's worth: a count a round leaves behind fails the next round.
    "CLEARPATH_BRIDGE_MAX_CONNECTIONS_PER_ADDRESS": str(SOCKETS),
    "CLEARPATH_BRIDGE_MAX_CONNECTIONS_PER_IDENTITY": str(SOCKETS // SUBJECTS),
}
SUBSCRIBE = orjson.dumps(
    {"type": "subscribe", "data": {"subscription_type": "package_updates"}}
).decode()


def rss(pid: int) -> int:
    """The resident set size of process ``pid``, in bytes (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"


@dataclass
class Round:
    """What one round measured."""

    sockets: int
    opened_in: float = 0.0
    rss_open: int = 0
    gone_in: float = 0.0
    rss_after: int = 0
    offsets: list[int] = field(default_factory=list)


@dataclass
class Flood:
    """A bridge process and the clients that flood it."""

    bridge: Process
    stub: sgrpc.RealtimeServiceAsyncStub
    http: aiohttp.ClientSession
    tokens: list[str]

    @property
    def pid(self) -> int:
        return self.bridge.process.pid

    async def status(self) -> dict[str, Any]:
        """The operator's ``/ws/status``."""
        async with self.http.get(
            self.bridge.address + "/ws/status",
            headers={"Authorization": f"Bearer {token('ops', operator=True)}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

    async def open(self, i: int) -> ClientConnection:
        """Socket ``i``: subscribed to package_updates and welcomed."""
        base = self.bridge.address.replace("http://", "ws://")
        value = self.tokens[i % len(self.tokens)]
        if i % 2 == 0:
            ws = await connect(f"{base}/ws/packages?token={value}", open_timeout=ROUND_TIMEOUT)
            welcome = orjson.loads(await ws.recv())
            assert welcome["type"] == "welcome", welcome
            assert welcome["data"]["subscriptions"] == ["package_updates"], welcome
            return ws
        ws = await connect(f"{base}/ws/connect", open_timeout=ROUND_TIMEOUT)
        await ws.send(orjson.dumps({"type": "auth", "data": {"token": value}}).decode())
        welcome = orjson.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        await ws.send(SUBSCRIBE)
        subscribed = orjson.loads(await ws.recv())
        assert subscribed["type"] == "subscribed", subscribed
        return ws

    async def round(self, sockets: int) -> Round:
        """Open ``sockets`` at once, deliver EVENTS to each, close them all at once,
        wait until the bridge forgets them; what it measured."""
        measured = Round(sockets)
        started = time.monotonic()
        async with asyncio.timeout(ROUND_TIMEOUT):
            opened = await asyncio.gather(
                *(self.open(i) for i in range(sockets)), return_exceptions=True
            )
        socks = [ws for ws in opened if isinstance(ws, ClientConnection)]
        failures = [exc for exc in opened if isinstance(exc, BaseException)]
        try:
            assert not failures, f"{len(failures)} of {sockets} sockets failed: {failures[0]!r}"
            measured.opened_in = time.monotonic() - started
            status = await self.status()
            assert status["connections"] == {
                "total": sockets,
                "by_endpoint": {"/ws/packages": sockets // 2, "/ws/connect": sockets // 2},
            }
            assert status["subscribers"]["package_updates"] == sockets
            measured.rss_open = rss(self.pid)

            published = await self.stub.Publish(
                spb.PublishRequest(events=[package(f"flood-{i}") for i in range(EVENTS)]),
                metadata=bearer(token("publisher", publish=["package_updates"])),
                timeout=10,
            )
            measured.offsets = [r.position.offset for r in published.results]
            async with asyncio.timeout(ROUND_TIMEOUT):
                received = await asyncio.gather(*(read_offsets(ws) for ws in socks))
            assert all(got == measured.offsets for got in received), (
                f"expected {measured.offsets}; "
                f"{sum(got != measured.offsets for got in received)} sockets got others"
            )
        finally:
            # All at once: half with a close handshake, half by a TCP abort.
            closing = time.monotonic()
            await asyncio.gather(*(close(i, ws) for i, ws in enumerate(socks)))

        async def gone() -> dict[str, Any] | None:
            status = await self.status()
            empty = status["connections"] == {"total": 0, "by_endpoint": {}}
            return status if empty and not any(status["subscribers"].values()) else None

        await eventually(gone, GONE_WITHIN)
        measured.gone_in = time.monotonic() - closing
        await asyncio.sleep(SETTLE)
        measured.rss_after = rss(self.pid)
        return measured


async def read_offsets(ws: ClientConnection) -> list[int]:
    """The offsets of the next EVENTS event frames on ``ws``."""
    offsets: list[int] = []
    while len(offsets) < EVENTS:
        frame = orjson.loads(await ws.recv())
        if "position" in frame:
            offsets.append(frame["position"]["offset"])
    return offsets


async def close(i: int, ws: ClientConnection) -> None:
    """Socket ``i``: half of each endpoint's sockets close cleanly, half abort."""
    if i // 2 % 2:
        ws.transport.abort()
    else:
        await ws.close()


@pytest.fixture
async def flood() -> AsyncIterator[Flood]:
    serve = ("serve", "--no-bridge", "--grpc-port", "0")
    async with (
        clearpath_process(*serve, listening="core", env=CORE_ENV) as core,
        clearpath_process(
            "bridge", "--core", core.address, "--http-port", "0", listening="bridge", env=BRIDGE_ENV
        ) as bridge,
        grpc.aio.insecure_channel(core.address) as channel,
        aiohttp.ClientSession() as http,
    ):
        tokens = [token(f"flood-{i}", lifetime=600) for i in range(SUBJECTS)]
        node = Flood(bridge, sgrpc.RealtimeServiceStub(channel), http, tokens)

        async def upstream_connected() -> dict[str, Any] | None:
            status = await node.status()
            return status if status["upstream"]["state"] == "connected" else None

        status = await eventually(upstream_connected, 15)
        assert status["pid"] == node.pid  # the process whose memory is measured serves
        yield node


async def test_a_thousand_sockets_at_once_leave_nothing_behind(flood: Flood) -> None:
    small = await flood.round(200)  # allocator pools, code paths warmed
    warm_up = await flood.round(SOCKETS)  # the allocator's high-water mark of a full round
    baseline = warm_up.rss_after
    footprint = (warm_up.rss_open - small.rss_after) / SOCKETS
    first = await flood.round(SOCKETS)
    second = await flood.round(SOCKETS)
    figures = (
        f"after 200: {mib(small.rss_after)}; {footprint / 1024:.1f} KiB per open socket; "
        f"baseline {mib(baseline)} (open: {mib(warm_up.rss_open)}); "
        f"round 1: open {mib(first.rss_open)}, after {mib(first.rss_after)}; "
        f"round 2: open {mib(second.rss_open)}, after {mib(second.rss_after)}; "
        f"opened in {first.opened_in:.1f}/{second.opened_in:.1f} s, "
        f"gone in {first.gone_in:.1f}/{second.gone_in:.1f} s"
    )
    print(figures)
    assert footprint <= PER_SOCKET, figures
    assert first.rss_after <= baseline + ROUND_1_MARGIN, figures
    assert second.rss_after <= first.rss_after + ROUND_2_MARGIN, figures
    # Every round saw the events of its own publish, in order.
    assert second.offsets == [first.offsets[-1] + 1 + i for i in range(EVENTS)]
