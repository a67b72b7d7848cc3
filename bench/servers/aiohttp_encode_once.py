"""The ``aiohttp-encode-once`` baseline: aiohttp, the event encoded once per publish.

``POST /publish`` parses the event, encodes it once to bytes, then awaits
``send_frame`` of the same bytes to each subscriber in turn (awaiting keeps
aiohttp's backpressure). Run: ``python -m bench.servers.aiohttp_encode_once``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import orjson
from aiohttp import WSMsgType, web

__all__ = ["main", "make_app"]

SUBSCRIBERS = web.AppKey("subscribers", set[web.WebSocketResponse])


async def packages(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    subs = request.app[SUBSCRIBERS]
    subs.add(ws)
    try:
        async for _msg in ws:
            pass
    finally:
        subs.discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    event = orjson.loads(await request.read())
    payload = orjson.dumps(event)
    delivered = 0
    subs = request.app[SUBSCRIBERS]
    for ws in list(subs):
        try:
            await ws.send_frame(payload, WSMsgType.TEXT)
            delivered += 1
        except (ConnectionError, RuntimeError):
            subs.discard(ws)
    return web.json_response({"delivered": delivered})


def make_app() -> web.Application:
    app = web.Application()
    app[SUBSCRIBERS] = set()
    app.router.add_get("/ws/packages", packages)
    app.router.add_post("/publish", publish)
    return app


async def _serve(host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    print(f"listening on {host}:{sock.getsockname()[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(args.host, args.port))
    except ImportError:
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
