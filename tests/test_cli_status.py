"""``clearpath status``: the core's health and the bridge's /ws/status, as a table."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from clients.cli.status import render_table
from core.server import CoreNode
from tests.clients_helpers import run_cli
from tests.http_helpers import serving

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

pytest_plugins = ["tests.clients_fixtures"]


@pytest.fixture
async def fake_bridge() -> AsyncIterator[str]:
    """An HTTP server answering /ws/status like the bridge does."""

    async def status(request: web.Request) -> web.Response:
        return web.json_response(
            {"connections": {"total": 3}, "upstream": {"state": "connected"}, "topics": ["a", "b"]}
        )

    app = web.Application()
    app.router.add_get("/ws/status", status)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_core_and_bridge_in_one_table(
    sdk_core: CoreNode, fake_bridge: str, capsys: CaptureFixture[str]
) -> None:
    code = await run_cli("status", "--core", sdk_core.address, "--bridge", fake_bridge)
    assert code == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["core", "health", "SERVING"] in rows
    assert ["core", "clearpath.realtime.v1.RealtimeService", "SERVING"] in rows
    assert ["bridge", "connections.total", "3"] in rows
    assert ["bridge", "upstream.state", "connected"] in rows
    assert ["bridge", "topics", "a,", "b"] in rows


async def test_an_unreachable_bridge_is_shown_not_fatal(
    sdk_core: CoreNode, capsys: CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARPATH_BRIDGE", f"http://127.0.0.1:{free_port()}")
    code = await run_cli("status", "--core", sdk_core.address, "--timeout", "2")
    assert code == 0
    out = capsys.readouterr().out
    assert "SERVING" in out
    assert "unreachable" in out.split("bridge", 1)[1]


async def test_an_unreachable_core_exits_1(capsys: CaptureFixture[str]) -> None:
    code = await run_cli(
        "status", "--core", f"127.0.0.1:{free_port()}", "--bridge", "", "--timeout", "2"
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "unreachable (UNAVAILABLE" in out
    assert "bridge" not in out


def test_render_table_aligns_columns() -> None:
    table = render_table([("a", "bb"), ("ccc", "d")])
    assert table.splitlines() == ["a    bb", "---  --", "ccc  d"]
