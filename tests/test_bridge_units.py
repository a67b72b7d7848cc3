"""Pure parts of the bridge, with plain calls: rate limiting, frames, client messages."""

from __future__ import annotations

import pytest

from bridge.frames import text_frame
from bridge.messages import InvalidJson, Ping, Subscribe, parse
from core.backoff import Backoff
from core.errors import InvalidArgument
from core.rate import TokenBucket


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after half a second at 2/s
    assert not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frame_headers(size: int) -> None:
    frame = text_frame(b"x" * size)
    assert frame[0] == 0x81
    if size < 126:
        assert frame[1] == size
        assert len(frame) == size + 2
    elif size < 65536:
        assert frame[1] == 126
        assert int.from_bytes(frame[2:4], "big") == size
    else:
        assert frame[1] == 127
        assert int.from_bytes(frame[2:10], "big") == size


def test_the_bridge_backoff_doubles_with_jitter_and_a_cap() -> None:
    import random

    backoff = Backoff(initial=0.1, maximum=5.0)
    rand = random.Random(7).random
    for attempt, base in [(1, 0.1), (2, 0.2), (4, 0.8), (11, 5.0), (61, 5.0)]:
        assert base / 2 <= backoff.delay(attempt, rand) <= base


def test_client_messages() -> None:
    assert isinstance(parse('{"type": "ping", "data": {}}'), Ping)
    message = parse(
        '{"type":"subscribe","data":{"subscription_type":"x","since":{"offset":3,"epoch":"e"}}}'
    )
    assert isinstance(message, Subscribe)
    assert message.data.since is not None
    assert message.data.since.offset == 3
    with pytest.raises(InvalidJson, match="not valid JSON"):
        parse("{")
    with pytest.raises(
        InvalidArgument, match="type: must be one of subscribe, unsubscribe, ping, auth, refresh"
    ):
        parse('{"type": "dance", "data": {}}')
    with pytest.raises(InvalidArgument, match=r"data\.subscription_type"):
        parse('{"type": "subscribe", "data": {}}')
