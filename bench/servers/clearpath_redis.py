"""``clearpath serve`` on the Redis broker, with a private redis-server beside it.

Starts ``redis-server`` on a free loopback port in a temporary folder (append-only
file, fsync every second: what ``make cluster`` runs), waits until it answers, then
runs ``clearpath serve --broker redis://…`` with the arguments given, passing its
output through (the bench reads the ``listening`` lines). Both live in this
process group: the bench's SIGTERM/SIGKILL of the group ends them together; a
SIGTERM here stops clearpath, then Redis.

Run: ``python -m bench.servers.clearpath_redis serve --grpc-port 0 --http-port 0``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server did not answer on port {port}")


def main() -> int:
    """Run Redis and ``clearpath ARGS --broker redis://…`` until stopped."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not on PATH (make system installs it)")
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = _free_port()
    redis = subprocess.Popen(
        [redis_server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_ready(port, time.monotonic() + 10)
        clearpath = Path(sys.executable).parent / "clearpath"
        argv = [str(clearpath), *sys.argv[1:], "--broker", f"redis://127.0.0.1:{port}/0"]
        core = subprocess.Popen(argv)
        signal.signal(signal.SIGTERM, lambda *_: core.terminate())
        return core.wait()
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
