"""Pre-serialized responses are exactly what protobuf would produce."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clearpath.realtime.v1 import service_pb2 as spb
from core.wire import Delivery, batch_response, varint
from tests.events import package


@given(st.integers(0, 2**64 - 1))
def test_varint_matches_protobuf(n: int) -> None:
    message = spb.PublishResult()
    message.position.offset = n
    # PublishResult.position (field 3) holds StreamPosition.offset (field 1, varint).
    inner = b"\x08" + varint(n) if n else b""
    assert message.SerializeToString() == b"\x1a" + varint(len(inner)) + inner


def test_single_and_batch_responses_parse_back() -> None:
    events = [package(f"p{i}", location="x" * (i * 70)) for i in range(5)]
    for i, event in enumerate(events):
        event.position.offset = i + 1
    single = spb.SubscribeResponse.FromString(Delivery(events[0]).response())
    assert single == spb.SubscribeResponse(event=events[0])
    batch = spb.SubscribeResponse.FromString(batch_response([Delivery(e) for e in events]))
    assert batch.WhichOneof("kind") == "batch"
    assert list(batch.batch.events) == events
    assert batch.SerializeToString() == batch_response([Delivery(e) for e in events])
