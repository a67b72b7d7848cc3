"""``clearpath serve`` (core + bridge [+ simulator] in one process) and ``clearpath bridge``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from bridge.upstream import core_credentials
from bridge.workers import run_pool
from clients.sdk import Client
from core.config import CoreSettings
from core.credentials import ClientCredentials
from core.metrics import Metrics
from core.server import CoreNode, wait_for_signal

__all__ = ["register"]

log = logging.getLogger("clearpath")

T = TypeVar("T")


def register(sub: Any) -> None:
    """Add ``serve`` and ``bridge`` to the subparsers."""
    serve: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run core and bridge (and the simulator) on the embedded default"
    )
    _core_flags(serve)
    _bridge_flags(serve)
    _upstream_flags(serve, "the embedded bridge and simulator")
    serve.add_argument("--no-bridge", action="store_true", help="run the core alone")
    serve.add_argument(
        "--simulate", action="store_true", help="also publish simulated logistics traffic"
    )
    serve.add_argument("--rate", type=float, default=50.0, help="simulated events per second")
    serve.add_argument("--seed", type=int, help="simulator seed (reproducible traffic)")
    serve.set_defaults(handler=run_serve)

    alone: argparse.ArgumentParser = sub.add_parser(
        "bridge", help="run a WebSocket bridge against a core elsewhere"
    )
    _bridge_flags(alone)
    _upstream_flags(alone, "the bridge")
    alone.add_argument(
        "--core",
        help="the core's address HOST:PORT, or several sharing one broker, a:50051,b:50051 "
        "(default localhost:50051)",
    )
    alone.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="bridge processes sharing the port (SO_REUSEPORT), each with its own upstream; "
        "'auto': one per CPU (default 1: this process serves)",
    )
    alone.add_argument(
        "--worker-metrics-port",
        type=int,
        metavar="P",
        help="with --workers: worker i also serves /metrics alone on port P+i-1 (0: free "
        "ports), so Prometheus scrapes every worker (the shared port answers for one)",
    )
    alone.set_defaults(handler=run_bridge)


def _workers(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of workers >= 1 or 'auto', not {text!r}"
        )
    return count


def _core_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, help="core gRPC port (default 50051; 0: free)")
    parser.add_argument("--broker", dest="broker_url", help="memory:// (default) or redis://…")
    parser.add_argument("--history-size", type=int, help="events kept per topic")
    parser.add_argument("--queue-size", type=int, help="events queued per gRPC subscriber")
    parser.add_argument("--heartbeat-interval", type=float, help="seconds")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the core's /metrics, /healthz and /readyz over HTTP on this port "
        "(default: off; 0: a free one)",
    )
    parser.add_argument(
        "--retention", help="Redis: per-topic history, TOPIC=COUNT[/AGE],… (e.g. map_updates=/10m)"
    )
    parser.add_argument(
        "--min-replicas", type=int, help="Redis: replicas that must acknowledge a Publish (WAIT)"
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve gRPC over TLS with this certificate"
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the --tls-cert's private key")
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS; needs --tls-cert)",
    )


def _bridge_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow listening on a non-loopback address with authentication off "
        "(auth is configured with CLEARPATH_CORE_AUTH_* / CLEARPATH_BRIDGE_AUTH_*)",
    )
    parser.add_argument("--http-host", help="bridge address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="bridge port (default 8000; 0: free)")
    parser.add_argument("--send-queue-bytes", type=int, help="bytes queued per socket at most")
    parser.add_argument(
        "--slow-timeout", type=float, help="seconds a socket may take nothing before it is closed"
    )
    parser.add_argument("--ping-interval", type=float, help="seconds between WebSocket pings")
    parser.add_argument(
        "--priority-lanes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="anomalies and notifications jump ahead of other frames in a socket's queue "
        "(default: on)",
    )
    parser.add_argument(
        "--conflate",
        metavar="SPEC",
        help="latest-state topics a socket that is behind gets only the newest frame per key "
        "of: TOPIC[:FIELD[+FIELD]];... , 'default' or 'none'",
    )
    parser.add_argument(
        "--conflate-after-bytes",
        type=int,
        metavar="N",
        help="bytes queued for a socket from which it conflates",
    )


def _upstream_flags(parser: argparse.ArgumentParser, who: str) -> None:
    """How the bridge's upstream (and, with ``serve``, the simulator) dials the core."""
    parser.add_argument(
        "--core-token",
        help=f"bearer token for the core, sent by {who} (prefer $CLEARPATH_BRIDGE_CORE_TOKEN: "
        "a flag shows in the process list)",
    )
    parser.add_argument(
        "--core-tls-ca",
        type=Path,
        metavar="PEM",
        help="dial the core over TLS, trusting this CA for its certificate",
    )
    parser.add_argument(
        "--core-tls-cert",
        type=Path,
        metavar="PEM",
        help="client certificate for a core requiring one (mutual TLS; with --core-tls-key)",
    )
    parser.add_argument(
        "--core-tls-key", type=Path, metavar="PEM", help="the --core-tls-cert's private key"
    )


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def core_settings(args: argparse.Namespace) -> CoreSettings:
    """CoreSettings from flags given, then CLEARPATH_CORE_* variables, then defaults."""
    return CoreSettings(
        **_given(
            {
                "host": args.host,
                "port": args.grpc_port,
                "insecure": args.insecure,
                "broker_url": args.broker_url,
                "history_size": args.history_size,
                "queue_size": args.queue_size,
                "heartbeat_interval": args.heartbeat_interval,
                "metrics_port": args.metrics_port,
                "retention": args.retention,
                "min_replicas": args.min_replicas,
                "tls_cert": args.tls_cert,
                "tls_key": args.tls_key,
                "tls_client_ca": args.tls_client_ca,
            }
        )
    )


def bridge_settings(args: argparse.Namespace, core: str | None) -> BridgeSettings:
    """BridgeSettings from flags given, then CLEARPATH_BRIDGE_* variables, then defaults."""
    return BridgeSettings(
        **_given(
            {
                "host": args.http_host,
                "port": args.http_port,
                "insecure": args.insecure,
                "core": core,
                "send_queue_bytes": args.send_queue_bytes,
                "slow_timeout": args.slow_timeout,
                "ping_interval": args.ping_interval,
                "priority_lanes": args.priority_lanes,
                "conflate": args.conflate,
                "conflate_after_bytes": args.conflate_after_bytes,
                "core_token": args.core_token,
                "core_tls_ca": args.core_tls_ca,
                "core_tls_cert": args.core_tls_cert,
                "core_tls_key": args.core_tls_key,
            }
        )
    )


def run_serve(args: argparse.Namespace) -> int:
    """Run core, bridge and simulator until SIGINT/SIGTERM."""
    try:
        core_settings(args)
        bridge_settings(args, None)
    except ValidationError as exc:
        return _bad_settings(exc)
    _run(_serve(args))
    return 0


def run_bridge(args: argparse.Namespace) -> int:
    """Run a bridge alone (``--workers N``: N processes on one port) until SIGINT/SIGTERM."""
    try:
        settings = bridge_settings(args, args.core)
    except ValidationError as exc:
        return _bad_settings(exc)
    if args.workers > 1:
        return _run(
            run_pool(
                settings,
                args.workers,
                args.log_level,
                args.log_format,
                metrics_port=args.worker_metrics_port,
            )
        )
    _run(_bridge(settings))
    return 0


def _bad_settings(exc: ValidationError) -> int:
    """A setting out of range: one line per problem naming it, exit 2 (no traceback)."""
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        # A validator's own message, without pydantic's "Value error, " in front.
        message = str(error["msg"]).removeprefix("Value error, ")
        print(f"clearpath: {where}: {message}", file=sys.stderr)
    return 2


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    else:
        return uvloop.run(main)


async def _serve(args: argparse.Namespace) -> None:
    # One process, one set of metrics: the core's and the bridge's figures side by side.
    metrics = Metrics("serve", "")
    core = CoreNode(core_settings(args), metrics=metrics)
    metrics.node = core.node_name
    await core.start()
    bridge: BridgeNode | None = None
    simulator: asyncio.Task[Any] | None = None
    try:
        if not args.no_bridge:
            bridge = BridgeNode(bridge_settings(args, core.address), metrics=metrics)
            await bridge.start()
        if args.simulate:
            upstream = core_credentials(bridge_settings(args, core.address))
            simulator = asyncio.create_task(_simulate(core.address, upstream, args.rate, args.seed))
        await wait_for_signal()
    finally:
        if simulator is not None:
            simulator.cancel()
            await asyncio.gather(simulator, return_exceptions=True)
        if bridge is not None:
            await bridge.stop()
        await core.stop()


async def _bridge(settings: BridgeSettings) -> None:
    bridge = BridgeNode(settings)
    await bridge.start()
    try:
        await wait_for_signal()
    finally:
        await bridge.stop()


async def _simulate(
    target: str, credentials: ClientCredentials, rate: float, seed: int | None
) -> None:
    try:
        from clients.simulator import run_simulator  # type: ignore[import-not-found,attr-defined,unused-ignore]
    except ImportError:
        log.warning("the simulator is not available in this build")
        return
    # The simulator dials the core as the embedded bridge does (--core-token, --core-tls-*).
    client = Client(
        target,
        token=credentials.token,
        tls_ca=credentials.ca,
        tls_cert=credentials.cert,
        tls_key=credentials.key,
    )
    async with client:
        await run_simulator(client, rate=rate, seed=seed)
