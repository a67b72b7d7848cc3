"""Core addresses: the ``host:port,host:port`` lists that clients fail over across.

The SDK (``Client("a:50051,b:50051")``, ``$CLEARPATH_CORE``), every CLI command
(``--core``) and the bridge (``CLEARPATH_BRIDGE_CORE``) take one address or a
comma-separated list of them, parsed here, and keep a :class:`TargetRing` of
them: calls go to the current address, and a client moves to the next one (round
robin) when the current one fails. Pure: plain calls, no I/O.

An address is ``HOST:PORT``: a host name (``localhost``, ``core-a.internal``),
an IPv4 address, or an IPv6 address in brackets (``[::1]:50051``); the port is
1-65535. The addresses of one list should be cores that share one broker
(``redis://``): only then does a position mean the same on each of them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from core.errors import InvalidArgument

__all__ = ["TargetRing", "parse_target", "parse_targets"]

#: A host name or IPv4 address: letters, digits, ``.``, ``-`` and ``_`` (container
#: names), starting with a letter or a digit.
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_IPV4ISH = re.compile(r"[0-9.]+")
_EXAMPLE = "expected HOST:PORT, e.g. localhost:50051 or [::1]:50051"


def parse_targets(value: str | Iterable[str], where: str = "core") -> tuple[str, ...]:
    """The addresses of ``value``, in order, without repeats.

    ``value`` is ``"host:port"``, ``"host:port,host:port,…"`` (spaces around an
    address are ignored) or an iterable of such strings. Raises
    :class:`~core.errors.InvalidArgument` naming ``where`` (a setting, a flag;
    "" for none) and the bad entry:
    an empty list or entry, a missing or out-of-range port, a host that is not a
    name or an address, an IPv6 address without brackets.
    """
    text = value if isinstance(value, str) else ",".join(value)
    entries = text.split(",")
    if not text.strip():
        raise InvalidArgument(_said(where, f"no address given; {_EXAMPLE}"))
    out: list[str] = []
    for number, entry in enumerate(entries, 1):
        label = _said(where, f"address {number} of {text!r}") if len(entries) > 1 else where
        address = parse_target(entry, label)
        if address not in out:
            out.append(address)
    return tuple(out)


def parse_target(entry: str, where: str = "core") -> str:
    """One ``HOST:PORT`` address, stripped of surrounding spaces; InvalidArgument
    naming ``where`` (when not empty) and ``entry`` when it is not one."""
    address = entry.strip()
    if not address:
        raise InvalidArgument(f"{where or 'the address'} is empty; {_EXAMPLE}")
    problem = _problem(address)
    if problem is not None:
        raise InvalidArgument(_said(where, f"{address!r} {problem}; {_EXAMPLE}"))
    return address


def _said(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _problem(address: str) -> str | None:
    """What is wrong with ``address`` as HOST:PORT, or None."""
    if "://" in address:
        return "is a URL (give HOST:PORT, without a scheme)"
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            return "has no port after the bracketed IPv6 address"
        if (error := _ipv6_problem(host)) is not None:
            return error
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            return "has no port"
        if ":" in host and _ipv6_problem(host) is None:
            return "has an IPv6 address without brackets"
        if (error := _host_problem(host)) is not None:
            return error
    if not port.isdigit() or not port.isascii():
        return f"has a port {port!r} that is not a number"
    if not 1 <= int(port) <= 65535:
        return f"has a port {port} outside 1-65535"
    return None


def _host_problem(host: str) -> str | None:
    if not host:
        return "has no host"
    if _IPV4ISH.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"has a host {host!r} that is not an IPv4 address"
        return None
    if not _HOST.fullmatch(host) or len(host) > 253:
        return f"has a host {host!r} that is not a host name"
    return None


def _ipv6_problem(host: str) -> str | None:
    bare = host.partition("%")[0]  # a zone (``fe80::1%eth0``) is the system's to check
    try:
        ipaddress.IPv6Address(bare)
    except ValueError:
        return f"has {host!r} in brackets, which is not an IPv6 address"
    return None


class TargetRing:
    """The addresses a client may use and the one it uses now, in round-robin order.

    Every caller that sees the current address fail calls :meth:`advance` with
    the address it used; only the first such call moves on, so several calls
    that fail together (a stream and a publish on the same dead core) skip one
    address, not one each.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ValueError("TargetRing needs at least one address")
        self.addresses: tuple[str, ...] = tuple(addresses)
        self._index = 0

    @property
    def current(self) -> str:
        """The address calls go to now."""
        return self.addresses[self._index]

    def advance(self, failed: str) -> str:
        """``failed`` did not answer: move past it, unless the ring already did.

        Returns the new current address (the same one with a single address).
        """
        if failed == self.current:
            self._index = (self._index + 1) % len(self.addresses)
        return self.current

    def from_current(self) -> list[str]:
        """Every address once, the current one first, then in ring order."""
        i = self._index
        return [*self.addresses[i:], *self.addresses[:i]]
