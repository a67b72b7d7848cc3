"""What the core enforces on a client's connection, against real cores on loopback ports:
keepalive pings no more often than MIN_CLIENT_PING_INTERVAL, and at most
``max_streams_per_connection`` calls at once on one connection."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.config import CoreSettings
from core.limits import MAX_PING_STRIKES, MIN_CLIENT_PING_INTERVAL, channel_options
from core.server import server_options
from tests.conftest import StartCore
from tests.events import package
from tests.grpc_helpers import open_stream, publish, read_events

#: Pings once a second, with or without calls and data: far more often than the
#: core allows (MIN_CLIENT_PING_INTERVAL); gRPC clients send at most two pings
#: without data unless told otherwise, hence ``max_pings_without_data``.
IMPATIENT = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def test_server_options_enforce_the_client_limits() -> None:
    settings: dict[str, Any] = {"max_streams_per_connection": 42}
    options = dict(server_options(CoreSettings(**settings)))
    assert (
        options["grpc.http2.min_ping_interval_without_data_ms"] == MIN_CLIENT_PING_INTERVAL * 1000
    )
    assert options["grpc.http2.max_ping_strikes"] == MAX_PING_STRIKES
    assert options["grpc.max_concurrent_streams"] == 42
    # Our own clients keep the rule: their pings are further apart than the minimum.
    client = dict(channel_options(keepalive_time=1.0))
    assert client["grpc.keepalive_time_ms"] >= MIN_CLIENT_PING_INTERVAL * 1000


async def test_a_client_pinging_too_often_gets_goaway_and_a_good_one_keeps_its_stream(
    start_core: StartCore,
) -> None:
    # No heartbeat during the test: the streams are idle, so only pings flow.
    core = await start_core(heartbeat_interval=60)
    async with (
        grpc.aio.insecure_channel(core.address, options=IMPATIENT) as bad_channel,
        grpc.aio.insecure_channel(
            core.address, options=[*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
        ) as good_channel,
    ):
        good = sgrpc.RealtimeServiceStub(good_channel)
        bad_call, _ = await open_stream(
            sgrpc.RealtimeServiceStub(bad_channel), [pb.TOPIC_ANOMALIES]
        )
        good_call, _ = await open_stream(good, [pb.TOPIC_PACKAGE_UPDATES])
        # The first ping is fine, the next MAX_PING_STRIKES come too soon and are
        # forgiven, the one after gets GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"),
        # which ends the idle stream: about 4 s at one ping a second.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(15):
                await bad_call.read()
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        said = f"{caught.value.details()} {caught.value.debug_error_string()}".lower()
        assert "too_many_pings" in said or "too many pings" in said, said
        # The well-behaved client's connection and stream were not touched.
        assert good_channel.get_state() is grpc.ChannelConnectivity.READY
        await publish(good, package("still-here"))
        (event,) = await read_events(good_call, 1)
        assert event.package_update.package_id == "still-here"
        good_call.cancel()


async def test_streams_beyond_the_cap_wait_for_one_to_end(start_core: StartCore) -> None:
    """gRPC clients honour the server's MAX_CONCURRENT_STREAMS by queueing: a call
    beyond it is neither refused nor failed, it is not sent until a stream of the
    connection ends (gRPC's experimental reject-on-client option is off). A new
    connection gets its own allowance."""
    core = await start_core(max_streams_per_connection=2, heartbeat_interval=60)
    async with grpc.aio.insecure_channel(core.address, options=channel_options()) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        first, _ = await open_stream(stub, [pb.TOPIC_ANOMALIES])
        second, _ = await open_stream(stub, [pb.TOPIC_ANOMALIES])
        third = stub.Subscribe(spb.SubscribeRequest(topics=[pb.TOPIC_ANOMALIES]))
        confirmation = asyncio.ensure_future(third.read())
        done, _ = await asyncio.wait({confirmation}, timeout=1.0)
        assert not done, "a third stream was served beyond the cap of 2"
        # Another connection is not held back by this one's streams.
        async with grpc.aio.insecure_channel(
            core.address, options=[*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
        ) as other:
            elsewhere, _ = await open_stream(sgrpc.RealtimeServiceStub(other), [pb.TOPIC_ANOMALIES])
            elsewhere.cancel()
        # One stream ends: the waiting one goes out and is confirmed.
        first.cancel()
        async with asyncio.timeout(10):
            message = await confirmation
        assert isinstance(message, spb.SubscribeResponse)
        assert message.WhichOneof("kind") == "confirmed"
        second.cancel()
        third.cancel()
