"""Clients that fail over (issue 10, "Several processes"): the SDK, the CLI and the
bridge take several core addresses and move to the next core when one dies, resuming
from their positions. Real grpc.aio cores on port 0 sharing one history through a
private redis-server; one core is also run as a process and killed with SIGKILL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import pydantic
import pytest

from bridge.config import BridgeSettings
from bridge.upstream import Upstream
from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.sdk import Client, Gap, InvalidArgumentError, Subscription, UnavailableError
from core.errors import Unavailable
from core.positions import Position
from core.server import SERVICE_NAME, CoreNode
from tests.clients_helpers import FAST, run_cli
from tests.conftest import StartBridge, StartCore
from tests.events import package
from tests.grpc_helpers import publish, serving
from tests.processes import clearpath_process
from tests.test_bridge import get_json
from tests.ws_helpers import open_ws, recv

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture
    from websockets.asyncio.client import ClientConnection

    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_fixtures"]

PKG = pb.TOPIC_PACKAGE_UPDATES
TIMEOUT = 20.0
#: Events kept per topic: more than any test publishes, so every resume is recovered.
HISTORY = 20_000
#: The most events a Publisher sends, whatever happens (it is not paced: a core's
#: shutdown may take a second, and it goes on meanwhile).
MOST = 15_000

StopCore = Callable[[], Awaitable[None]]


def bridge_settings(**fields: Any) -> BridgeSettings:
    """BridgeSettings from fields (and CLEARPATH_BRIDGE_* variables)."""
    return BridgeSettings(**fields)


def dead_address() -> str:
    """A loopback address with nothing listening (a core that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def stub_of(address: str) -> AsyncIterator[sgrpc.RealtimeServiceAsyncStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield sgrpc.RealtimeServiceStub(channel)


@asynccontextmanager
async def two_cores(
    how: str, start_core: StartCore, redis: RedisServer
) -> AsyncIterator[tuple[str, CoreNode, StopCore]]:
    """Cores ``a`` and ``b`` sharing ``redis``: a's address, b, and how to stop a —
    ``graceful`` (an in-process core, ``stop(0)``) or ``sigkill`` (a ``clearpath serve``
    process, killed)."""
    b = await start_core(broker_url=redis.url, history_size=HISTORY)
    if how == "graceful":
        a = await start_core(broker_url=redis.url, history_size=HISTORY)

        async def stop_node() -> None:
            await a.stop(0)

        yield a.address, b, stop_node
        return
    serve = ("serve", "--no-bridge", "--grpc-port", "0", "--broker", redis.url)
    async with clearpath_process(
        *serve, "--history-size", str(HISTORY), listening="core"
    ) as process:

        async def kill() -> None:
            process.kill()
            await asyncio.wait_for(process.process.wait(), TIMEOUT)

        yield process.address, b, kill


class Publisher:
    """Publishes package updates one call at a time to one core, until stopped (or
    :data:`MOST` of them); keeps the position of each one acknowledged."""

    def __init__(self, stub: sgrpc.RealtimeServiceAsyncStub) -> None:
        self._stub = stub
        self.acked: list[pb.StreamPosition] = []
        self._grew = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while not self._stopping and len(self.acked) < MOST:
                response = await publish(self._stub, package(f"p{len(self.acked)}"))
                self.acked.append(response.results[0].position)
                self._grew.set()
        finally:
            self._grew.set()  # a waiter sees the end (and its error) at once

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` events were acknowledged; raise what ended the
        publisher if it ended before."""
        async with asyncio.timeout(TIMEOUT):
            while len(self.acked) < count:
                if self._task.done():
                    self._task.result()
                    raise AssertionError(f"the publisher stopped at {len(self.acked)}")
                self._grew.clear()
                await self._grew.wait()

    async def stop(self) -> int:
        """Stop publishing (after the call in flight, so that every event published is
        acknowledged); the offset of the last one."""
        self._stopping = True
        await asyncio.wait_for(self._task, TIMEOUT)
        return self.acked[-1].offset


async def sdk_until(sub: Subscription, offset: int) -> list[int]:
    """Offsets the subscription yields up to ``offset``; fails on a Gap."""

    async def read() -> list[int]:
        offsets: list[int] = []
        while not offsets or offsets[-1] < offset:
            item = await anext(sub)
            assert not isinstance(item, Gap), item
            offsets.append(item.position.offset)
        return offsets

    return await asyncio.wait_for(read(), TIMEOUT)


async def ws_until(ws: ClientConnection, offset: int) -> list[int]:
    """Offsets a socket receives up to ``offset``; fails on a frame telling of a loss."""

    async def read() -> list[int]:
        offsets: list[int] = []
        while not offsets or offsets[-1] < offset:
            frame = await recv(ws)
            assert frame["type"] != "error", frame
            assert frame["type"] != "subscribed" or frame["data"]["recovered"], frame
            if "position" in frame:
                offsets.append(frame["position"]["offset"])
        return offsets

    return await asyncio.wait_for(read(), TIMEOUT)


# --- the SDK's subscription ------------------------------------------------------------


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
async def test_an_sdk_subscription_moves_on_with_no_gap_and_no_duplicate(
    how: str, redis_server: RedisServer, start_core: StartCore
) -> None:
    async with (
        two_cores(how, start_core, redis_server) as (a, b, stop_a),
        Client([a, b.address], backoff=FAST) as client,
        stub_of(b.address) as to_b,
        client.subscribe("package_updates") as sub,
    ):
        assert sub.target == a
        publisher = Publisher(to_b)  # on b: it goes on while a goes away
        before = await sdk_until(sub, 50)
        await stop_a()
        stopped_at = len(publisher.acked)
        await publisher.wait_for(stopped_at + 100)
        last = await publisher.stop()
        after = await sdk_until(sub, last)
        assert before + after == list(range(1, last + 1))
        assert sub.target == b.address
        assert client.target == b.address
        assert sub.reconnects == 1


# --- the bridge's upstream -------------------------------------------------------------


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
async def test_the_bridge_moves_on_and_every_socket_gets_every_event_once(
    how: str, redis_server: RedisServer, start_core: StartCore, start_bridge: StartBridge
) -> None:
    async with (
        two_cores(how, start_core, redis_server) as (a, b, stop_a),
        stub_of(b.address) as to_b,
    ):
        bridge = await start_bridge(f"{a},{b.address}", reconnect_initial=0.05)
        status = await get_json(bridge.url + "/ws/status")
        assert status["upstream"]["core"] == a
        assert status["upstream"]["cores"] == [a, b.address]
        sockets = [(await open_ws(bridge, "/ws/packages"))[0] for _ in range(3)]
        publisher = Publisher(to_b)
        before = [await ws_until(ws, 50) for ws in sockets]
        await stop_a()
        await publisher.wait_for(len(publisher.acked) + 100)
        last = await publisher.stop()
        for ws, start in zip(sockets, before, strict=True):
            assert start + await ws_until(ws, last) == list(range(1, last + 1))
            await ws.close()
        status = await get_json(bridge.url + "/ws/status")
        upstream = status["upstream"]
        assert upstream["state"] == "connected"
        assert upstream["core"] == b.address
        assert upstream["failovers"] == 1
        assert upstream["history_gaps"] == 0
        assert upstream["positions"]["package_updates"]["offset"] == last


async def test_bridge_history_asks_the_next_core_when_one_is_unavailable(
    redis_server: RedisServer, start_core: StartCore
) -> None:
    b = await start_core(broker_url=redis_server.url, history_size=HISTORY)
    async with stub_of(b.address) as to_b:
        done = await publish(to_b, *(package(f"p{i}") for i in range(3)))
    epoch = done.results[0].position.epoch
    settings = bridge_settings(core=f"{dead_address()},{b.address}", static_dir=None)
    upstream = Upstream(settings, on_frame=lambda frame: None)
    try:
        assert upstream.target != b.address  # not started: on the first address
        page = await asyncio.wait_for(upstream.history(PKG, Position(0, epoch)), TIMEOUT)
        assert [e.position.offset for e in page.events] == [1, 2, 3]
        assert page.state.recovered
    finally:
        await upstream.stop()


async def test_bridge_history_is_unavailable_when_no_core_answers() -> None:
    settings = bridge_settings(core=f"{dead_address()},{dead_address()}", static_dir=None)
    upstream = Upstream(settings, on_frame=lambda frame: None)
    try:
        with pytest.raises(Unavailable, match=r"history \(UNAVAILABLE\)"):
            await asyncio.wait_for(upstream.history(PKG, Position(0, "")), TIMEOUT)
    finally:
        await upstream.stop()


# --- the SDK's publish -----------------------------------------------------------------


async def offset_on(core: CoreNode) -> int:
    """The latest offset of package_updates on ``core``."""
    async with stub_of(core.address) as stub:
        response = await stub.History(spb.HistoryRequest(topic=PKG), timeout=TIMEOUT)
    return response.state.position.offset


async def test_a_publish_goes_to_the_next_core_when_the_first_never_connected(
    start_core: StartCore,
) -> None:
    b = await start_core()
    async with Client([dead_address(), b.address], timeout=5) as client:
        (result,) = await client.publish(package("p1"))
        assert result.position.offset == 1
        assert client.target == b.address
        (second,) = await client.publish(package("p2"))  # straight to b now
    assert second.position.offset == 2
    assert await offset_on(b) == 2  # each once


async def test_a_publish_after_its_core_stopped_lands_once_on_the_next(
    redis_server: RedisServer, start_core: StartCore
) -> None:
    a, b = [await start_core(broker_url=redis_server.url) for _ in range(2)]
    async with Client([a.address, b.address], timeout=5) as client:
        await client.publish(package("on-a"))
        await a.stop(0)
        # A publish that gets UNAVAILABLE after it was sent is raised, not retried;
        # one that finds a's channel down goes to b. Either way, later ones go to b.
        failures = 0
        while True:
            try:
                (result,) = await client.publish(package("after"))
                break
            except UnavailableError:
                failures += 1
                assert failures == 1
        assert client.target == b.address
    # a had stopped before: an attempt raised there was not stored.
    assert result.position.offset == 2
    assert await offset_on(b) == 2


class RefusingCore:
    """A core whose Publish fails with UNAVAILABLE after receiving the request (as when
    its broker goes away mid-publish): the client cannot know whether it was stored."""

    def __init__(self) -> None:
        self.calls = 0
        self.server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            self._publish,
            request_deserializer=spb.PublishRequest.FromString,
            response_serializer=spb.PublishResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Publish": handler}),)
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"

    async def _publish(self, request: spb.PublishRequest, context: Any) -> spb.PublishResponse:
        self.calls += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker went away mid-publish")
        raise AssertionError("abort raises")


@pytest.fixture
async def refusing_core() -> AsyncIterator[RefusingCore]:
    core = RefusingCore()
    async with serving(core.server):
        yield core


async def test_a_publish_that_was_sent_is_never_sent_again(
    refusing_core: RefusingCore, start_core: StartCore
) -> None:
    b = await start_core()
    async with Client([refusing_core.address, b.address], timeout=5) as client:
        with pytest.raises(UnavailableError, match="mid-publish"):
            await client.publish(package("maybe"))
        assert refusing_core.calls == 1
        assert await offset_on(b) == 0  # not sent to b behind the caller's back
        assert client.target == b.address  # but later calls go there
        (result,) = await client.publish(package("next"))
    assert result.position.offset == 1
    assert refusing_core.calls == 1


async def test_health_asks_the_next_core(start_core: StartCore) -> None:
    b = await start_core()
    async with Client(f"{dead_address()},{b.address}", timeout=5) as client:
        assert await client.health() == "SERVING"
        assert client.target == b.address


async def test_when_no_core_answers_the_last_error_is_raised() -> None:
    first, second = dead_address(), dead_address()
    async with Client([first, second], timeout=5) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.publish(package("p"))
    assert caught.value.code == "UNAVAILABLE"
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


# --- the address list ------------------------------------------------------------------


def test_one_address_or_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Client("core.example:1234").targets == ("core.example:1234",)
    assert Client("a:1, b:2").targets == ("a:1", "b:2")
    listed = Client(["a:1", "[::1]:2"])
    assert listed.targets == ("a:1", "[::1]:2")
    assert listed.target == "a:1"
    monkeypatch.setenv("CLEARPATH_CORE", "a:1,b:2")
    assert Client().targets == ("a:1", "b:2")
    assert bridge_settings(core="a:1 ,b:2").cores == ("a:1", "b:2")
    assert bridge_settings().cores == ("localhost:50051",)


def test_a_bad_list_is_refused_naming_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^target: address 2 of 'a:1,b': 'b' has no"):
        Client("a:1,b")
    with pytest.raises(InvalidArgumentError, match=r"^target: .*'b:x' has a port 'x'"):
        Client(["a:1", "b:x"])
    with pytest.raises(InvalidArgumentError, match=r"^target: no address given"):
        Client([])
    monkeypatch.setenv("CLEARPATH_CORE", "a:1,,b:2")
    with pytest.raises(InvalidArgumentError, match=r"^\$CLEARPATH_CORE: address 2 .* is empty"):
        Client()
    with pytest.raises(pydantic.ValidationError, match=r"core: '::1:5' has an IPv6 address"):
        bridge_settings(core="::1:5")
    monkeypatch.setenv("CLEARPATH_BRIDGE_CORE", "a:1,b:99999")
    with pytest.raises(pydantic.ValidationError, match=r"'b:99999' has a port 99999 outside"):
        bridge_settings()


async def test_the_cli_refuses_a_bad_list_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: CaptureFixture[str]
) -> None:
    assert await run_cli("publish", "--core", "a:1,b", "--json", "{}") == 2
    assert "argument --core: address 2 of 'a:1,b': 'b' has no port" in capsys.readouterr().err
    monkeypatch.setenv("CLEARPATH_CORE", "localhost")
    assert await run_cli("subscribe", "anomalies") == 2
    assert "$CLEARPATH_CORE: 'localhost' has no port" in capsys.readouterr().err


async def test_the_cli_fails_over(start_core: StartCore, capsys: CaptureFixture[str]) -> None:
    b = await start_core()
    cores = f"{dead_address()},{b.address}"
    frame = '{"type": "package_update", "data": {"package_id": "p1", "status": "delivered"}}'
    assert await run_cli("publish", "--core", cores, "--json", frame) == 0
    assert await offset_on(b) == 1
    capsys.readouterr()
    async with stub_of(b.address) as stub:
        epoch = (await stub.History(spb.HistoryRequest(topic=PKG))).state.position.epoch
    since = f"package_updates:{epoch}:0"
    assert (
        await run_cli(
            "subscribe", "package_updates", "--core", cores, "--since", since, "--count", "1"
        )
        == 0
    )
    assert '"package_id":"p1"' in capsys.readouterr().out


async def test_the_cli_names_every_core_when_none_answers(capsys: CaptureFixture[str]) -> None:
    cores = f"{dead_address()},{dead_address()}"
    code = await run_cli(
        "publish", "--core", cores, "--json", '{"type": "notification", "data": {"title": "x"}}'
    )
    assert code == 1
    assert f"cannot reach a core of {cores}" in capsys.readouterr().err
