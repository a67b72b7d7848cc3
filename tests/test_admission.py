"""The bridge's entrance policy with plain calls: origins, client addresses, caps."""

from __future__ import annotations

import pytest

from bridge.admission import Admission


def policy(**given: object) -> Admission:
    settings: dict[str, object] = {"per_address": 2, "per_subject": 1, **given}
    return Admission(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "bridge:8000", True),  # not a browser
        ("http://bridge:8000", "bridge:8000", True),  # same origin
        ("https://bridge:8000", "bridge:8000", True),  # same host and port behind TLS
        ("HTTP://Bridge:8000/", "bridge:8000", True),
        ("http://bridge:8001", "bridge:8000", False),  # another port is another origin
        ("http://bridge", "bridge:8000", False),
        ("https://evil.example", "bridge:8000", False),
        ("null", "bridge:8000", False),  # sandboxed frames, file:// pages
        ("", "bridge:8000", False),
    ],
)
def test_same_origin_by_default(origin: str | None, host: str, allowed: bool) -> None:
    assert policy().origin_allowed(origin, host) is allowed


def test_a_configured_list_replaces_same_origin() -> None:
    listed = policy(allowed_origins="https://app.example.com, https://ops.example.com/")
    assert listed.origin_allowed("https://app.example.com", "bridge:8000")
    assert listed.origin_allowed("https://ops.example.com", "bridge:8000")
    assert not listed.origin_allowed("http://app.example.com", "bridge:8000")
    assert not listed.origin_allowed("http://bridge:8000", "bridge:8000")
    assert listed.origin_allowed(None, "bridge:8000")
    assert policy(allowed_origins="*").origin_allowed("https://anything.example", "b:1")


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    plain = policy()
    assert plain.client_address("203.0.113.9", "10.9.9.9") == "203.0.113.9"  # spoofed: ignored
    proxied = policy(trusted_proxies="127.0.0.1, 10.0.0.0/8")
    assert proxied.client_address("127.0.0.1", "198.51.100.7") == "198.51.100.7"
    # The rightmost hop that is not a trusted proxy: earlier hops are the client's word.
    assert proxied.client_address("127.0.0.1", "1.1.1.1, 198.51.100.7, 10.1.2.3") == "198.51.100.7"
    assert proxied.client_address("127.0.0.1", "10.1.2.3") == "127.0.0.1"
    assert proxied.client_address("127.0.0.1", None) == "127.0.0.1"
    assert proxied.client_address("203.0.113.9", "198.51.100.7") == "203.0.113.9"
    assert len(proxied.client_address("127.0.0.1", "x" * 10_000)) == 64


def test_caps_count_and_forget() -> None:
    admission = policy()
    for _ in range(2):
        assert not admission.address_full("a")
        admission.opened("a")
    assert admission.address_full("a")
    assert not admission.address_full("b")
    assert not admission.subject_full("alice")
    admission.authenticated("alice")
    assert admission.subject_full("alice")
    admission.authenticated("")  # anonymous: never counted, never full
    assert not admission.subject_full("")
    admission.closed("a", "alice")
    admission.closed("a", None)
    assert not admission.by_address
    assert not admission.by_subject
