"""Small helpers for tests that talk to a real bridge over WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import BridgeNode

TIMEOUT = 10.0


def ws_url(bridge: BridgeNode, path: str) -> str:
    """The ws:// URL of ``path`` on ``bridge``."""
    return bridge.url.replace("http://", "ws://") + path


async def open_ws(bridge: BridgeNode, path: str) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect to ``path`` and read the welcome frame."""
    ws = await asyncio.wait_for(connect(ws_url(bridge, path)), TIMEOUT)
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def recv(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    """The next frame, decoded."""
    frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), within))
    return frame


async def send(ws: ClientConnection, kind: str, **data: Any) -> None:
    """Send ``{"type": kind, "data": data}``."""
    await ws.send(orjson.dumps({"type": kind, "data": data}).decode())


async def recv_type(ws: ClientConnection, kind: str, within: float = TIMEOUT) -> dict[str, Any]:
    """The next frame of type ``kind``, skipping others."""

    async def wait() -> dict[str, Any]:
        while True:
            frame = await recv(ws, within)
            if frame["type"] == kind:
                return frame

    return await asyncio.wait_for(wait(), within)


async def recv_events(
    ws: ClientConnection, count: int, within: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The next ``count`` event frames (frames with a position), skipping control frames."""

    async def wait() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while len(events) < count:
            frame = await recv(ws, within)
            if "position" in frame:
                events.append(frame)
        return events

    return await asyncio.wait_for(wait(), within)


async def subscribe(ws: ClientConnection, topic: str, **extra: Any) -> dict[str, Any]:
    """Subscribe and return the ``subscribed`` frame."""
    await send(ws, "subscribe", subscription_type=topic, **extra)
    return await recv_type(ws, "subscribed")
