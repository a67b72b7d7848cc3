"""Building and running a core node: ``create_server`` and :class:`CoreNode`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import signal
import socket
from typing import TYPE_CHECKING

import grpc
from aiohttp import hdrs, web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.broker import Broker, create_broker
from core.config import CoreSettings
from core.exposure import warn_if_open
from core.guard import Authenticator, AuthInterceptor
from core.hub import Hub
from core.limits import MAX_PING_STRIKES, MIN_CLIENT_PING_INTERVAL
from core.metrics import CONTENT_TYPE_LATEST, Family, Metrics, counter, gauge
from core.service import SERVICE_NAME, RealtimeService, add_to_server
from core.wire import Delivery

if TYPE_CHECKING:
    pass

__all__ = ["SERVICE_NAME", "CoreNode", "create_server", "serve"]

log = logging.getLogger("clearpath.core")

try:
    VERSION = importlib.metadata.version("clearpath-realtime")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    VERSION = "unknown"


def server_options(settings: CoreSettings) -> list[tuple[str, int]]:
    """Channel options: message size limits, keepalive that finds dead peers, and
    the limits a client must keep: a client pinging more often than
    MIN_CLIENT_PING_INTERVAL without data gets a GOAWAY ("too_many_pings") at its
    third such ping, and one connection carries at most
    ``max_streams_per_connection`` calls at once (HTTP/2 MAX_CONCURRENT_STREAMS:
    gRPC clients queue the further ones until a call ends)."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(MIN_CLIENT_PING_INTERVAL * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
    ]


def create_server(
    settings: CoreSettings, service: RealtimeService
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A gRPC server with the service, health checking and reflection, bound to
    ``settings.host:settings.port`` but not started; returns it, the bound port
    (useful with port 0) and its health servicer.

    With ``tls_cert`` and ``tls_key`` the port serves TLS only; with
    ``tls_client_ca`` too, a client must present a certificate signed by that CA
    (mutual TLS), or its handshake fails. ValueError naming a file that cannot
    be read."""
    # Every call but health checks needs a valid token when auth is on (core.guard).
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if service.auth.enabled:
        interceptors = [AuthInterceptor(service.auth, on_refused=service.refused)]
    server = grpc.aio.server(options=server_options(settings), interceptors=interceptors)
    add_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    tls = settings.tls_files()
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        key, cert, client_ca = tls
        credentials = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
        port = server.add_secure_port(address, credentials)
    return server, port, health_servicer


class CoreNode:
    """One running core: broker, hub, service and gRPC server, started and stopped together.

    Its figures go to ``metrics`` (a new ``Metrics("core", address)`` by default; in
    ``clearpath serve`` one shared with the bridge). With ``settings.metrics_port``
    set, an HTTP endpoint serves ``GET /metrics`` (Prometheus text), ``/healthz``
    (200 while the process runs) and ``/readyz`` (200 once started while the broker
    is up, else 503 and a JSON reason); ``metrics_port`` is its bound port then."""

    def __init__(
        self, settings: CoreSettings, broker: Broker | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker or create_broker(
            settings.broker_url,
            history_size=settings.history_size,
            retention=settings.retention_by_topic,
            min_replicas=settings.min_replicas,
            on_state=self._broker_state,
        )
        self.hub: Hub[Delivery] = Hub()
        self.service = RealtimeService(
            settings, self.broker, self.hub, Authenticator(settings.verifier())
        )
        self.server, self.port, self._health = create_server(settings, self.service)
        self._tasks: set[asyncio.Task[None]] = set()
        #: False while the broker cannot be reached (health NOT_SERVING meanwhile).
        self.broker_up = True
        #: Times the broker came back after being unreachable.
        self.broker_reconnects = 0
        #: True from the end of start() to the beginning of stop().
        self.serving = False
        self.metrics = metrics or Metrics("core", self.node_name)
        #: The bound port of the metrics endpoint once started (None: it is off).
        self.metrics_port: int | None = None
        self._ops: web.AppRunner | None = None

    def _broker_state(self, up: bool) -> None:
        """The broker went away or came back: health and every open stream follow."""
        if up == self.broker_up:
            return
        self.broker_up = up
        self.broker_reconnects += up
        log.warning(
            "broker %s",
            "reachable again" if up else "unreachable: NOT_SERVING",
            extra={"event": "broker_state", "state": "up" if up else "down"},
        )
        self.service.broker_available(up)
        task = asyncio.get_running_loop().create_task(self._set_health(up))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set_health(self, up: bool) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        status = serving if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    @property
    def node_name(self) -> str:
        """``host:port`` naming this node in metrics: the machine's name for a
        wildcard address (where :attr:`address` says 127.0.0.1 on every machine)."""
        wildcard = self.settings.host in ("0.0.0.0", "::", "")
        return f"{socket.gethostname() if wildcard else self.settings.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine can dial."""
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "") else self.settings.host
        return f"{host}:{self.port}"

    def families(self) -> list[Family]:
        """The node's own metrics (a :class:`core.metrics.Metrics` source)."""
        return [
            gauge(
                "clearpath_broker_up", "1 while the broker is reachable", [], {(): self.broker_up}
            ),
            counter(
                "clearpath_broker_reconnects",
                "Times the broker came back after being unreachable",
                [],
                {(): self.broker_reconnects},
            ),
            gauge("clearpath_info", "The running version", ["version"], {(VERSION,): 1}),
        ]

    def readiness(self) -> str | None:
        """Why this node should not take traffic now, or None when it is ready."""
        if not self.serving:
            return "not serving (starting or stopping)"
        if not self.broker_up:
            return "broker unavailable"
        return None

    async def start(self) -> None:
        """Start the metrics endpoint (if configured), connect the broker and start serving."""
        self.metrics.add(self.service.families)
        self.metrics.add(self.families)
        if self.settings.metrics_port is not None:
            await self._start_ops(self.settings.metrics_port)
        hub = self.hub
        try:
            await self.broker.start(lambda event: hub.dispatch(Delivery(event)))
            await self.server.start()
        except BaseException:
            await self._stop_ops()
            raise
        self.serving = True
        await self._set_health(self.broker_up)
        warn_if_open(log, "the core", self.settings.host, auth=self.service.auth.enabled)
        log.info(
            "core listening on %s (broker %s)",
            self.address,
            self.settings.broker_url,
            extra={"event": "listening", "address": self.address},
        )

    async def stop(self, grace: float | None = None) -> None:
        """Shut down within ``grace`` seconds (the settings' shutdown_grace by default).

        Health turns NOT_SERVING; every Subscribe stream ends with UNAVAILABLE and the
        documented message, and the server stops only once each has sent it (or the
        grace is over); calls still running then are cancelled. Then the broker closes.
        """
        grace = self.settings.shutdown_grace if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self.serving = False  # /readyz: 503 from now on
        await self._health.enter_graceful_shutdown()
        self.service.close_streams()
        # Streams before the server: server.stop() sends GOAWAY at once, and at the
        # end of its grace cancels what is left with the transport's own text. A
        # stream counts as ended once its status is handed to gRPC.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.service.streams_ended()
        await self.server.stop(max(0.0, deadline - loop.time()))
        await self.broker.close()
        await self._stop_ops()
        self.metrics.remove(self.service.families)
        self.metrics.remove(self.families)
        log.info("core stopped", extra={"event": "stopped", "address": self.address})

    async def _start_ops(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", _get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host = self.settings.metrics_host or self.settings.host
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._ops = runner
        self.metrics_port = runner.addresses[0][1]
        log.info(
            "core metrics listening on http://%s:%d (/metrics, /healthz, /readyz)",
            host,
            self.metrics_port,
            extra={"event": "metrics_listening", "port": self.metrics_port},
        )

    async def _stop_ops(self) -> None:
        if self._ops is not None:
            await self._ops.cleanup()
            self._ops = None

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.expose(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST}
        )

    async def _get_readyz(self, request: web.Request) -> web.Response:
        reason = self.readiness()
        if reason is None:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reason": reason}, status=503)


async def _get_healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


async def serve(settings: CoreSettings) -> None:
    """Run a core until SIGINT or SIGTERM, then shut down gracefully."""
    node = CoreNode(settings)
    await node.start()
    await wait_for_signal()
    await node.stop()


async def wait_for_signal() -> None:
    """Return when the process gets SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
