"""``GET /ws/schema``: the catalog of subscription types and event types, for tools.

Public (no token: it describes the protocol, not any data), and cacheable: the
body is made once when the app is built and never changes while it runs, so it
carries a strong ``ETag`` (a ``If-None-Match`` that matches is answered 304 with
no body) and ``Cache-Control: public, max-age=300``. The body is
:func:`core.catalog.catalog` with the conflation keys this bridge is configured
with (setting ``conflate``), the same JSON as ``CATALOG`` in the browser's
generated ``catalog.ts`` when the keys are the defaults.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.config import BridgeSettings
from core.catalog import catalog

__all__ = ["CACHE_CONTROL", "schema_body", "schema_page"]

#: How long a cache may reuse the body without asking again (it changes only when
#: the bridge is upgraded or reconfigured; the ETag tells a revalidating client).
CACHE_CONTROL = "public, max-age=300"


def schema_body(settings: BridgeSettings) -> bytes:
    """The JSON body of ``GET /ws/schema`` for a bridge with ``settings``: the
    conflation keys are the bridge's configured ones (``settings.conflate``, a
    :func:`core.delivery.parse_conflation` spec, validated with the settings)."""
    return json.dumps(catalog(settings.conflate), ensure_ascii=False).encode()


def schema_page(settings: BridgeSettings) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /ws/schema`` handler (module doc); the body is built here, once."""
    body = schema_body(settings)
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {"ETag": f'"{etag}"', "Cache-Control": CACHE_CONTROL}

    async def page(request: web.Request) -> web.Response:
        if any(e.value in (etag, "*") for e in request.if_none_match or ()):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    return page
