"""core.targets: address lists and the round-robin ring, with plain calls."""

from __future__ import annotations

import pytest

from core.errors import InvalidArgument
from core.targets import TargetRing, parse_target, parse_targets


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost:50051", ("localhost:50051",)),
        ("a:1,b:2", ("a:1", "b:2")),
        (" a:1 , b:2 ", ("a:1", "b:2")),
        ("a:1,b:2,a:1", ("a:1", "b:2")),
        (["a:1", "b:2"], ("a:1", "b:2")),
        (["a:1,b:2", "c:3"], ("a:1", "b:2", "c:3")),
        ("127.0.0.1:50051", ("127.0.0.1:50051",)),
        ("[::1]:50051", ("[::1]:50051",)),
        ("[fe80::1%eth0]:1,core_b.internal:65535", ("[fe80::1%eth0]:1", "core_b.internal:65535")),
    ],
)
def test_good_lists_parse_in_order_without_repeats(
    value: str | list[str], expected: tuple[str, ...]
) -> None:
    assert parse_targets(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "core: no address given"),
        ("  ", "core: no address given"),
        ("localhost", "core: 'localhost' has no port"),
        ("a:1,b", "core: address 2 of 'a:1,b': 'b' has no port"),
        ("a:1,,b:2", "core: address 2 of 'a:1,,b:2' is empty"),
        ("a:1,", "core: address 2 of 'a:1,' is empty"),
        ("a:x", "core: 'a:x' has a port 'x' that is not a number"),
        ("a:0", "core: 'a:0' has a port 0 outside 1-65535"),
        ("a:65536", "core: 'a:65536' has a port 65536 outside 1-65535"),
        (":50051", "core: ':50051' has no host"),
        ("::1:50051", "core: '::1:50051' has an IPv6 address without brackets"),
        ("a:b:1", "core: 'a:b:1' has a host 'a:b' that is not a host name"),
        ("[::1]", "core: '[::1]' has no port after the bracketed IPv6 address"),
        ("[nope]:1", "core: '[nope]:1' has 'nope' in brackets, which is not an IPv6 address"),
        ("300.1.1.1:1", "core: '300.1.1.1:1' has a host '300.1.1.1' that is not an IPv4 address"),
        ("http://a:1", "core: 'http://a:1' is a URL (give HOST:PORT, without a scheme)"),
        ("unix:/tmp/s", "core: 'unix:/tmp/s' has a port '/tmp/s' that is not a number"),
        ("a b:1", "core: 'a b:1' has a host 'a b' that is not a host name"),
    ],
)
def test_bad_lists_name_the_bad_entry(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_targets(value)
    assert str(caught.value).startswith(message)
    assert "expected HOST:PORT" in str(caught.value)


def test_the_error_names_where_the_list_came_from() -> None:
    with pytest.raises(InvalidArgument, match=r"^CLEARPATH_CORE: 'x' has no port"):
        parse_targets("x", "CLEARPATH_CORE")
    with pytest.raises(InvalidArgument, match=r"^--core is empty"):
        parse_target(" ", "--core")
    with pytest.raises(InvalidArgument, match=r"^address 2 of 'a:1,b': 'b' has no port"):
        parse_targets("a:1,b", "")
    with pytest.raises(InvalidArgument, match=r"^'b' has no port"):
        parse_targets("b", "")
    with pytest.raises(InvalidArgument, match=r"^no address given"):
        parse_targets("", "")


def test_the_ring_moves_round_robin() -> None:
    ring = TargetRing(("a:1", "b:2", "c:3"))
    assert ring.current == "a:1"
    assert ring.from_current() == ["a:1", "b:2", "c:3"]
    assert ring.advance("a:1") == "b:2"
    assert ring.from_current() == ["b:2", "c:3", "a:1"]
    assert ring.advance("b:2") == "c:3"
    assert ring.advance("c:3") == "a:1"


def test_failures_seen_together_move_the_ring_once() -> None:
    ring = TargetRing(("a:1", "b:2"))
    assert ring.advance("a:1") == "b:2"
    # A second caller that also used a:1 reports it: b:2 stays current.
    assert ring.advance("a:1") == "b:2"


def test_a_single_address_stays() -> None:
    ring = TargetRing(("a:1",))
    assert ring.advance("a:1") == "a:1"
    with pytest.raises(ValueError, match="at least one"):
        TargetRing(())
