"""``clearpath bridge --workers N``: N bridge processes that share one port.

Each worker is a whole bridge (its own upstream stream to the core, hub, cache and
sockets) listening with ``SO_REUSEPORT``, so the kernel spreads new connections
over the workers by a hash of their addresses, and one machine's cores all serve
WebSockets. The parent, :class:`WorkerPool`, does no HTTP: it reserves the port,
starts the workers, prints ``bridge listening on URL`` once every one listens,
restarts a worker that dies, and on SIGTERM/SIGINT asks each to stop (each
closes its sockets with 1001, as a single bridge does).

What parent and worker say to each other is private to this module:

- the worker's **stdin**: one line from the parent, the worker's
  :class:`BridgeSettings` as JSON; the pipe then stays open, and its end (the
  parent is gone, even by ``kill -9``) stops the worker as SIGTERM does;
- the worker's **stdout**: one line, ``ready PORT``, once it listens (``ready
  PORT metrics MPORT`` with its own metrics port);
- **stderr** is the parent's: a worker logs as any bridge does, with the
  parent's ``--log-level`` and ``--log-format`` (its arguments).

Which worker answered a request is in every response's ``X-ClearPath-Worker``
header (``INDEX/N pid=PID``, the WebSocket upgrade included), and ``GET
/ws/worker`` is ``/ws/status`` with a ``worker`` object added.

Metrics: each worker's series carry ``node="worker-INDEX"``. ``GET /metrics`` on the
shared port answers for whichever worker accepted the connection, so Prometheus
scrapes each worker on its own port instead: with ``metrics_port`` P the pool
gives worker INDEX a listener on P + INDEX - 1 serving only ``/metrics`` (0: a
free port each, read back in :attr:`WorkerPool.metrics_ports`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.app import ACCEPT_BACKLOG, bridge_of, create_app, metrics_page
from bridge.config import BridgeSettings
from bridge.http_guard import guarded_runner
from core import logs
from core.backoff import Backoff
from core.metrics import Metrics

__all__ = ["WORKER_HEADER", "WorkerIdentity", "WorkerNode", "WorkerPool", "run_pool"]

log = logging.getLogger("clearpath.bridge")

#: The response header naming the worker that answered.
WORKER_HEADER = "X-ClearPath-Worker"
#: Seconds a worker may take from start to listening.
READY_TIMEOUT = 30.0
#: Seconds a stopping worker gets beyond its settings' close timeout before SIGKILL.
STOP_MARGIN = 10.0
#: Restart delays of a worker that keeps dying (reset once a restart listens).
RESTART_BACKOFF = Backoff(initial=0.2, maximum=5.0)


@dataclass(frozen=True)
class WorkerIdentity:
    """Which worker this is: ``index`` (1-based) of ``workers``, and its pid."""

    index: int
    workers: int
    pid: int

    def header(self) -> str:
        """The ``X-ClearPath-Worker`` value: ``INDEX/N pid=PID``."""
        return f"{self.index}/{self.workers} pid={self.pid}"

    def as_dict(self) -> dict[str, int]:
        """The ``worker`` object of ``/ws/worker``."""
        return {"index": self.index, "workers": self.workers, "pid": self.pid}


# --- the worker ----------------------------------------------------------------------


class WorkerNode:
    """One worker's bridge: :func:`bridge.app.create_app` on a ``SO_REUSEPORT`` site,
    with its identity on every response and at ``/ws/worker``."""

    def __init__(
        self, settings: BridgeSettings, identity: WorkerIdentity, metrics_port: int | None = None
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.app = create_app(settings, Metrics("bridge", f"worker-{identity.index}"))
        self.bridge = bridge_of(self.app)
        _add_identity(self.app, identity)
        self._runner = guarded_runner(
            self.app,
            header_timeout=settings.header_timeout,
            handle_signals=False,
            access_log=None,
        )
        self.port = 0
        #: This worker's own ``/metrics`` port (None: only the shared port's).
        self.metrics_port = metrics_port
        self._metrics_runner: web.AppRunner | None = None
        if metrics_port is not None:
            app = web.Application()
            app.router.add_get("/metrics", metrics_page(self.bridge))
            self._metrics_runner = guarded_runner(
                app, header_timeout=settings.header_timeout, handle_signals=False, access_log=None
            )

    async def start(self) -> None:
        """Listen on ``settings.host:settings.port`` beside the other workers (and on
        its own metrics port)."""
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            backlog=ACCEPT_BACKLOG,
            reuse_port=True,
        )
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self._metrics_runner is not None:
            await self._metrics_runner.setup()
            metrics = web.TCPSite(self._metrics_runner, self.settings.host, self.metrics_port)
            await metrics.start()
            self.metrics_port = self._metrics_runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every socket with 1001, stop the upstream and the server."""
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self._runner.cleanup()


def _add_identity(app: web.Application, identity: WorkerIdentity) -> None:
    bridge = bridge_of(app)
    value = identity.header()

    # A response hook, not a middleware: a middleware would stay on every open
    # socket's stack for its whole life.
    async def stamp(_: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = value

    async def worker_status(request: web.Request) -> web.Response:
        bridge.operator(request)  # operators only when auth is on, like /ws/status
        return web.json_response({**bridge.status(), "worker": identity.as_dict()})

    app.on_response_prepare.append(stamp)
    app.router.add_get("/ws/worker", worker_status)


async def _serve_worker(
    settings: BridgeSettings, identity: WorkerIdentity, metrics_port: int | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def parent_gone() -> None:
        with contextlib.suppress(OSError):
            if os.read(sys.stdin.fileno(), 4096):
                return  # the parent says nothing more; only the end matters
        log.warning("bridge worker %d: the parent is gone; stopping", identity.index)
        loop.remove_reader(sys.stdin.fileno())
        stop.set()

    loop.add_reader(sys.stdin.fileno(), parent_gone)
    node = WorkerNode(settings, identity, metrics_port)
    try:
        await node.start()
        url = _url(settings.host, node.port)
        log.info(
            "bridge worker %d/%d (pid %d) listening on %s (core %s)",
            identity.index,
            identity.workers,
            identity.pid,
            url,
            settings.core,
            extra={"event": "worker_listening", "worker": identity.index, "url": url},
        )
        own = f" metrics {node.metrics_port}" if node.metrics_port is not None else ""
        print(f"ready {node.port}{own}", flush=True)
        await stop.wait()
    finally:
        await node.stop()
    log.info("bridge worker %d stopped", identity.index)


def worker_main(argv: list[str] | None = None) -> int:
    """A worker's process (``python -m bridge.workers``), started by :class:`WorkerPool`."""
    parser = argparse.ArgumentParser(prog="python -m bridge.workers")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=logs.FORMATS)
    parser.add_argument("--metrics-port", type=int)
    args = parser.parse_args(argv)
    # Logged as ``clearpath`` itself does (core/logs.py): the parent's level and format.
    try:
        logs.configure(args.log_level, logs.resolve_format(args.log_format))
    except ValueError as exc:
        parser.error(str(exc))
    line = sys.stdin.readline()
    if not line:
        return 1  # the parent died before it said anything
    settings = BridgeSettings(**json.loads(line))
    identity = WorkerIdentity(args.index, args.workers, os.getpid())
    _run(_serve_worker(settings, identity, args.metrics_port))
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


# --- the parent ----------------------------------------------------------------------


class WorkerFailed(Exception):
    """A worker exited, or took too long, before it listened."""


class _Worker:
    """One worker slot of the pool: its index and current process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


class WorkerPool:
    """Runs ``workers`` bridge processes on one port until :meth:`stop`.

    The port is reserved first by a socket of the parent's own that binds it with
    ``SO_REUSEPORT`` and never listens (so it gets no connection): with port 0 that
    is how one free port is picked for every worker, and it keeps the port for a
    restarted worker while the pool runs.
    """

    def __init__(
        self,
        settings: BridgeSettings,
        workers: int,
        log_level: str = "INFO",
        log_format: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.settings = settings
        self.workers = [_Worker(i + 1) for i in range(workers)]
        self.log_level = log_level
        #: None: each worker's own $CLEARPATH_LOG_FORMAT (it inherits the environment).
        self.log_format = log_format
        self.port = 0
        #: Worker INDEX's own /metrics on metrics_port + INDEX - 1 (0: a free port each).
        self.metrics_port = metrics_port
        #: The metrics port of each worker by index, once it listens.
        self.metrics_ports: dict[int, int] = {}
        self._reserved: socket.socket | None = None
        self._stopping = False
        self.stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """``http://host:port`` a client on this machine can reach."""
        return _url(self.settings.host, self.port)

    async def start(self) -> None:
        """Reserve the port and start every worker; return once each listens.

        Raises :class:`WorkerFailed` (after stopping the others) if one does not."""
        self._reserved = reserve_port(self.settings.host, self.settings.port)
        self.port = self._reserved.getsockname()[1]
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
        except BaseException:
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
        log.info(
            "bridge listening on %s (core %s)",
            self.url,
            self.settings.core,
            extra={"event": "listening", "url": self.url, "core": self.settings.core},
        )
        log.info("bridge workers: %s", ", ".join(f"{w.index} pid {w.pid}" for w in self.workers))

    def request_stop(self) -> None:
        """From now on a worker that exits is not restarted; sets :attr:`stopping`.

        Called from the signal handler itself: on Ctrl-C the workers get SIGINT too,
        and their exits must not look unexpected."""
        self._stopping = True
        self.stopping.set()

    async def stop(self) -> int:
        """SIGTERM every worker and wait for all (SIGKILL after the deadline).

        Returns 0 when every worker stopped cleanly, else 1."""
        self._stopping = True  # not `stopping`: that one says a signal came
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        codes = await asyncio.gather(*(self._stop_one(w) for w in self.workers))
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        return 0 if all(codes) else 1

    async def _stop_one(self, worker: _Worker) -> bool:
        process = worker.process
        if process is None:
            return True
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        try:
            code = await asyncio.wait_for(process.wait(), self.settings.close_timeout + STOP_MARGIN)
        except TimeoutError:
            log.error(
                "bridge worker %d (pid %d) did not stop; killing it", worker.index, process.pid
            )
            process.kill()
            await process.wait()
            return False
        # Stopped by the signal we sent (it came before its handler was set): also clean.
        return code in (0, -signal.SIGTERM, -signal.SIGINT)

    async def _spawn(self, worker: _Worker) -> None:
        settings = self.settings.model_copy(update={"port": self.port})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.workers",
            "--index",
            str(worker.index),
            "--workers",
            str(len(self.workers)),
            "--log-level",
            self.log_level,
            *(("--log-format", self.log_format) if self.log_format else ()),
            *(
                ("--metrics-port", str(self._metrics_port(worker)))
                if self.metrics_port is not None
                else ()
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker.process = process
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(settings.model_dump_json().encode() + b"\n")
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
        except ConnectionError:  # it died before reading its settings
            line = b""
        except TimeoutError:
            process.kill()
            await process.wait()
            raise WorkerFailed(
                f"bridge worker {worker.index} did not listen within {READY_TIMEOUT:g}s"
            ) from None
        if not line.startswith(b"ready "):
            await process.wait()
            raise WorkerFailed(
                f"bridge worker {worker.index} exited with {process.returncode} before listening"
            )
        words = line.split()
        if len(words) == 4 and words[2] == b"metrics":
            self.metrics_ports[worker.index] = int(words[3])

    def _metrics_port(self, worker: _Worker) -> int:
        """The metrics port ``worker`` listens on (0: a free one; a restart keeps it)."""
        assert self.metrics_port is not None
        if self.metrics_port == 0:
            return self.metrics_ports.get(worker.index, 0)
        return self.metrics_port + worker.index - 1

    async def _watch(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it exits while the pool is not stopping."""
        attempt = 0
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self._stopping:
                return
            attempt += 1
            delay = RESTART_BACKOFF.delay(attempt)
            log.warning(
                "bridge worker %d (pid %d) exited unexpectedly (code %s); restarting it in %.1fs",
                worker.index,
                worker.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            try:
                await self._spawn(worker)
            except WorkerFailed as exc:
                log.error("%s", exc)
                continue
            attempt = 0
            log.info("bridge worker %d restarted (pid %d)", worker.index, worker.pid)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` that never listens
    (port 0: a free one); OSError if the port is taken by a socket without it."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    # As BridgeNode.url: a wildcard address is reached on loopback.
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reach}:{port}"


async def run_pool(
    settings: BridgeSettings,
    workers: int,
    log_level: str = "INFO",
    log_format: str | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run a :class:`WorkerPool` until SIGINT/SIGTERM; the exit code. ``metrics_port``:
    see :class:`WorkerPool` (None: ``/metrics`` only on the shared port)."""
    loop = asyncio.get_running_loop()
    pool = WorkerPool(settings, workers, log_level, log_format, metrics_port)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pool.request_stop)
    try:
        await pool.start()
    except (WorkerFailed, OSError) as exc:
        if pool.stopping.is_set():
            return 0  # interrupted while starting
        log.error("bridge: %s", exc)
        return 1
    await pool.stopping.wait()
    log.info("bridge: stopping %d workers", workers)
    return await pool.stop()


if __name__ == "__main__":
    sys.exit(worker_main())
