"""What a storm of (re)connecting clients meets at the bridge's door: a deep accept
queue, clients that leave mid-handshake (no error logged, nothing counted open),
and a connection cap the process can actually honour."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import struct
from pathlib import Path

import aiohttp
import pytest

from bridge.app import ACCEPT_BACKLOG, RESERVED_FILES, connection_cap
from core.server import CoreNode
from tests.conftest import StartBridge
from tests.processes import clearpath_process
from tests.waiting import eventually

_UPGRADE = (
    b"GET /ws/packages HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


async def test_the_bridge_listens_with_a_deep_accept_queue(
    core: object, start_bridge: StartBridge
) -> None:
    bridge = await start_bridge(core.address)  # type: ignore[attr-defined]
    ss = await asyncio.create_subprocess_exec(
        "ss", "-ltnH", f"sport = :{bridge.port}", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(ss.communicate(), 10)
    out = stdout.decode().split()
    # ss shows a listening socket's backlog as its Send-Q (the kernel caps it at somaxconn).
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())  # noqa: ASYNC240
    assert int(out[2]) == min(ACCEPT_BACKLOG, somaxconn)
    assert int(out[2]) > 128  # aiohttp's default


async def test_clients_that_leave_mid_handshake_are_counted_not_logged_as_errors(
    core: object, start_bridge: StartBridge, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = await start_bridge(core.address)  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.INFO):
        for _ in range(100):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", bridge.port))
            await loop.sock_sendall(sock, _UPGRADE)
            # RST instead of FIN: the client is gone before the bridge answers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        async def counted() -> int | None:
            return bridge.bridge.handshakes_abandoned or None

        await eventually(counted)
        await asyncio.sleep(0.2)  # let the rest of the handshakes fail
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert bridge.bridge.connections == {}
    assert bridge.bridge.status()["handshakes_abandoned"] == bridge.bridge.handshakes_abandoned


def test_the_connection_cap_stays_within_the_files_a_process_may_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1000, 4096))
    assert connection_cap(500) == 500
    assert connection_cap(1000 - RESERVED_FILES) == 1000 - RESERVED_FILES
    with caplog.at_level(logging.WARNING):
        assert connection_cap(10_000) == 1000 - RESERVED_FILES
    assert "MAX_CONNECTIONS 10000 is more than this process may open" in caplog.text
    monkeypatch.setattr(
        resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    assert connection_cap(10_000_000) == 10_000_000


async def test_a_bridge_at_its_file_limit_answers_503_and_stays_up(core: CoreNode) -> None:
    """README: MAX_CONNECTIONS never exceeds what the process may open, so a full
    bridge refuses with HTTP 503 instead of failing to accept (EMFILE resets)."""
    files = 200
    cap = files - RESERVED_FILES
    async with clearpath_process(
        "bridge", "--core", core.address, "--http-port", "0",
        listening="bridge",
        env={"CLEARPATH_BRIDGE_MAX_CONNECTIONS_PER_ADDRESS": "1000000"},
        max_files=files,
    ) as bridge:  # fmt: skip
        port = int(bridge.address.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        answers: list[bytes] = []
        socks: list[socket.socket] = []
        try:
            for _ in range(cap + 40):
                sock = socket.socket()
                sock.setblocking(False)
                socks.append(sock)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, _UPGRADE)
                head = await asyncio.wait_for(loop.sock_recv(sock, 64), 10)
                answers.append(head.split(b"\r\n", 1)[0])
            upgraded = sum(a.startswith(b"HTTP/1.1 101") for a in answers)
            refused = sum(a.startswith(b"HTTP/1.1 503") for a in answers)
            assert upgraded == cap  # every socket it may hold, then 503 for the rest
            assert refused == len(answers) - cap
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{bridge.address}/healthz", timeout=aiohttp.ClientTimeout(10)) as r,
            ):
                # A refused socket was answered and closed, not leaked: the bridge serves on.
                assert r.status == 200
        finally:
            for sock in socks:
                sock.close()
