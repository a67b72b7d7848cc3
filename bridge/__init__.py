"""The WebSocket bridge: the core's gRPC streams as JSON WebSocket frames for browsers.

The bridge is a gRPC client of the core (:mod:`bridge.upstream`), a hub of
local sockets (:class:`core.hub.Hub` of encoded frames) and an aiohttp
transport (:mod:`bridge.app`, :mod:`bridge.connection`).
"""
