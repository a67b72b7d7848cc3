"""Slow HTTP clients (slowloris): a bound on how long a connection may go without
sending a complete request head.

The guarantee: a connection to a runner from :func:`guarded_runner` is closed
unless, within ``header_timeout`` seconds of connecting, and again within
``header_timeout`` seconds of the end of each response it is kept alive after,
the server has received a complete request head (request line and headers).
Idle keep-alive connections get no more time than that either, so
``header_timeout`` bounds both. A WebSocket is not affected once it is upgraded.

aiohttp does this itself; this module only picks the value. Its
``RequestHandler`` arms its keep-alive timer when a connection is made (aiohttp
PR #13681; in the 3.14.5 we run), re-arms it after every response, and when it fires closes
the connection if the handler is still waiting for a request head; bytes that
arrive do not postpone it, so a head trickled byte by byte is cut off too. The
timer is cancelled when the connection closes and when a WebSocket upgrade turns
keep-alive off. So there is no timer, wrapper or middleware of ours, and no cost
per request or per frame. ``tests/test_aiohttp_internals.py`` pins the behaviour.

Why one value and not a short head timeout beside a long keep-alive: a client
that completes one quick request and then sits idle holds its connection for the
whole keep-alive time, so an idle bound longer than the head bound would defend
nothing.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

__all__ = ["HEADER_TIMEOUT", "guarded_runner"]

#: Seconds a connection gets to send a complete request head, from connecting and
#: from the end of each response before the next request. Also the keep-alive idle
#: limit.
HEADER_TIMEOUT: Final = 5.0


def guarded_runner(
    app: web.Application, *, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any
) -> web.AppRunner:
    """A ``web.AppRunner`` for ``app`` whose connections have ``header_timeout``
    seconds to send each complete request head, as this module's docstring says.

    ``kwargs`` go to ``web.AppRunner`` as they are. Raises ValueError if
    ``header_timeout`` is not positive: aiohttp reads 0 as "no timer at all".
    Raises TypeError if ``keepalive_timeout`` is passed: here it is
    ``header_timeout``.
    """
    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be positive, got {header_timeout!r}")
    if "keepalive_timeout" in kwargs:
        raise TypeError("guarded_runner() sets keepalive_timeout to header_timeout")
    return web.AppRunner(app, keepalive_timeout=header_timeout, **kwargs)
