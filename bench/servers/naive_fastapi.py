"""The ``naive`` baseline: ClearPathAI's first design, FastAPI + uvicorn.

A WebSocket endpoint keeps a set of subscribers; ``POST /publish`` takes one
event and loops over the subscribers doing ``await ws.send_json(event)`` in turn,
so the event is JSON-encoded once per subscriber and a slow subscriber holds up
the ones after it. Run: ``python -m bench.servers.naive_fastapi [--port 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

__all__ = ["app", "main"]

app = FastAPI()
subscribers: set[WebSocket] = set()


@app.websocket("/ws/packages")
async def packages(ws: WebSocket) -> None:
    await ws.accept()
    subscribers.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        subscribers.discard(ws)


@app.post("/publish")
async def publish(event: dict[str, Any]) -> dict[str, int]:
    delivered = 0
    for ws in list(subscribers):
        try:
            await ws.send_json(event)
            delivered += 1
        except Exception:
            subscribers.discard(ws)
    return {"delivered": delivered}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    sock.bind((args.host, args.port))
    sock.listen(4096)
    print(f"listening on {args.host}:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, backlog=4096)
    server = uvicorn.Server(config)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
