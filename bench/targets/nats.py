"""The ``nats-server`` target: NATS 2.9 (Go) over WebSocket, a baseline from outside Python.

Debian's ``nats-server`` is started with a generated configuration file that binds
its client port and its WebSocket port to free loopback ports of its own (``-1``:
the machine may already run a NATS server on 4222); its log lines ``Listening for
client connections on HOST:PORT`` and ``Listening for websocket clients on
ws://HOST:PORT`` give them. Subscribers open a WebSocket to ``/`` and speak the NATS
protocol in it (``CONNECT``, ``SUB bench 1``, answering ``PING``); the publisher
speaks it over TCP (``PUB bench N`` with the same ~300-byte JSON frame the clearpath
targets deliver, each call ended by ``PING``). Server settings are NATS's defaults:
a subscriber with more than 64 MiB pending, or whose socket takes nothing for the
write deadline, is disconnected as a slow consumer (counted as cut off).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from bench.loadgen.publisher import PublishSpec
from bench.targets.base import Endpoint, Target, TargetUnavailable, WsSpec

__all__ = ["NATS_SUBJECT", "NatsTarget", "nats_config"]

NATS_SUBJECT = "bench"
_CLIENT = re.compile(r"Listening for client connections on (\S+?):(\d+)\b")
_WS = re.compile(r"Listening for websocket clients on (?:wss?://)?(\S+?):(\d+)\b")


def nats_config(host: str = "127.0.0.1") -> str:
    """A nats-server configuration: client and WebSocket listeners on free ports of
    ``host``, plain WebSocket (no TLS, loopback only), everything else default."""
    return (
        f'listen: "{host}:-1"\n'
        f'websocket {{\n  listen: "{host}:-1"\n  no_tls: true\n}}\n'
        "# no monitoring port, no cluster, no JetStream: the core pub/sub only\n"
    )


def nats_executable() -> str | None:
    """``nats-server`` on PATH, else Debian's /usr/sbin/nats-server, else None."""
    found = shutil.which("nats-server")
    if found:
        return found
    sbin = Path("/usr/sbin/nats-server")
    return str(sbin) if sbin.exists() else None


class NatsTarget(Target):
    name = "nats-server"
    description = "nats-server 2.9 (Go), subscribers over WebSocket, publisher over NATS TCP"
    workloads = frozenset({"W1", "W1l", "W2", "W2w", "W3"})

    def __init__(self) -> None:
        self._client: tuple[str, int] | None = None
        self._ws: tuple[str, int] | None = None
        self._dir: str | None = None

    def command(self) -> list[str]:
        exe = nats_executable()
        if exe is None:
            raise TargetUnavailable("nats-server is not installed (Debian package nats-server)")
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="bench-nats-")
        conf = Path(self._dir) / "nats.conf"
        conf.write_text(nats_config())
        return [exe, "-c", str(conf)]

    def reset(self) -> None:
        self._client = self._ws = None

    def on_line(self, line: str) -> Endpoint | None:
        if m := _CLIENT.search(line):
            self._client = (m.group(1), int(m.group(2)))
        if m := _WS.search(line):
            self._ws = (m.group(1), int(m.group(2)))
        if self._client is None or self._ws is None:
            return None
        (chost, cport), (whost, wport) = self._client, self._ws
        publish = PublishSpec("nats", chost, cport, NATS_SUBJECT)
        return Endpoint(
            0,
            ws=WsSpec(whost, wport, "/", wait_first=True, proto="nats", subject=NATS_SUBJECT),
            ws_publish=publish,
        )
