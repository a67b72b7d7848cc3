"""Who may open a socket, and how many: origins, client addresses, per-address and
per-identity caps. Pure: no aiohttp, tested with plain calls.

- **Origin** (cross-site WebSocket hijacking): a browser always sends ``Origin``;
  it must be one of ``allowed_origins`` (``*``: any), or, with none configured, the
  same host and port as the request's ``Host``. A request without ``Origin`` is
  not from a browser page and is allowed (it could not ride on a user's cookies).
- **Client address**: the TCP peer, unless the peer is a trusted proxy (an
  address or a network, ``10.0.0.0/8``): then the rightmost address of
  ``X-Forwarded-For`` that is not itself a trusted proxy.
- **Caps**: sockets per client address (checked before the upgrade) and per
  token subject (checked when it authenticates).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from urllib.parse import urlsplit

__all__ = ["Admission", "parse_list"]


def parse_list(text: str) -> frozenset[str]:
    """``"a, b,,c"`` → ``{"a", "b", "c"}``."""
    return frozenset(part.strip() for part in text.split(",") if part.strip())


class Admission:
    """The entrance policy of one bridge, and its counts of open sockets."""

    __slots__ = ("_origins", "_trusted", "by_address", "by_subject", "per_address", "per_subject")

    def __init__(
        self,
        *,
        allowed_origins: str = "",
        trusted_proxies: str = "",
        per_address: int,
        per_subject: int,
    ) -> None:
        self._origins = frozenset(o.lower().rstrip("/") for o in parse_list(allowed_origins))
        self._trusted = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in parse_list(trusted_proxies)
        )
        self.per_address = per_address
        self.per_subject = per_subject
        self.by_address: Counter[str] = Counter()
        self.by_subject: Counter[str] = Counter()

    def origin_allowed(self, origin: str | None, host: str) -> bool:
        """Whether a socket may be opened from a page of ``origin`` (the ``Origin``
        header; None: absent) on a request for ``host`` (the ``Host`` header)."""
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        if "*" in self._origins or origin in self._origins:
            return True
        if self._origins:
            return False
        netloc = urlsplit(origin).netloc
        return bool(netloc) and netloc == host.strip().lower()

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: ``peer``, or what a trusted proxy says it forwarded."""
        if not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop[:64]  # a forged hop is at most a long string, never a huge one
        return peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def address_full(self, address: str) -> bool:
        """Whether ``address`` already holds as many sockets as it may."""
        return self.by_address[address] >= self.per_address

    def subject_full(self, subject: str) -> bool:
        """Whether token subject ``subject`` already holds as many sockets as it may
        (an anonymous socket, subject "", is not counted)."""
        return bool(subject) and self.by_subject[subject] >= self.per_subject

    def opened(self, address: str) -> None:
        self.by_address[address] += 1

    def authenticated(self, subject: str) -> None:
        if subject:
            self.by_subject[subject] += 1

    def closed(self, address: str, subject: str | None) -> None:
        """A socket of ``address`` (authenticated as ``subject``, or None) is gone."""
        _decrement(self.by_address, address)
        if subject:
            _decrement(self.by_subject, subject)


def _decrement(counter: Counter[str], key: str) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]  # an address that has left costs nothing
