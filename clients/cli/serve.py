"""``clearpath serve`` (core + bridge [+ simulator] in one process) and ``clearpath bridge``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from core.config import CoreSettings
from core.server import CoreNode, wait_for_signal

__all__ = ["register"]

log = logging.getLogger("clearpath")


def register(sub: Any) -> None:
    """Add ``serve`` and ``bridge`` to the subparsers."""
    serve: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run core and bridge (and the simulator) on the embedded default"
    )
    _core_flags(serve)
    _bridge_flags(serve)
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
    alone.add_argument("--core", help="the core's address HOST:PORT (default localhost:50051)")
    alone.set_defaults(handler=run_bridge)


def _core_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, help="core gRPC port (default 50051; 0: free)")
    parser.add_argument("--broker", dest="broker_url", help="memory:// (default) or redis://…")
    parser.add_argument("--history-size", type=int, help="events kept per topic")
    parser.add_argument("--queue-size", type=int, help="events queued per gRPC subscriber")
    parser.add_argument("--heartbeat-interval", type=float, help="seconds")


def _bridge_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-host", help="bridge address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="bridge port (default 8000; 0: free)")
    parser.add_argument("--send-queue-bytes", type=int, help="bytes queued per socket at most")
    parser.add_argument(
        "--slow-timeout", type=float, help="seconds a socket may take nothing before it is closed"
    )
    parser.add_argument("--ping-interval", type=float, help="seconds between WebSocket pings")


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def core_settings(args: argparse.Namespace) -> CoreSettings:
    """CoreSettings from flags given, then CLEARPATH_CORE_* variables, then defaults."""
    return CoreSettings(
        **_given(
            {
                "host": args.host,
                "port": args.grpc_port,
                "broker_url": args.broker_url,
                "history_size": args.history_size,
                "queue_size": args.queue_size,
                "heartbeat_interval": args.heartbeat_interval,
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
                "core": core,
                "send_queue_bytes": args.send_queue_bytes,
                "slow_timeout": args.slow_timeout,
                "ping_interval": args.ping_interval,
            }
        )
    )


def run_serve(args: argparse.Namespace) -> int:
    """Run core, bridge and simulator until SIGINT/SIGTERM."""
    _run(_serve(args))
    return 0


def run_bridge(args: argparse.Namespace) -> int:
    """Run a bridge alone until SIGINT/SIGTERM."""
    _run(_bridge(bridge_settings(args, args.core)))
    return 0


def _run(main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve(args: argparse.Namespace) -> None:
    core = CoreNode(core_settings(args))
    await core.start()
    bridge: BridgeNode | None = None
    simulator: asyncio.Task[Any] | None = None
    try:
        if not args.no_bridge:
            bridge = BridgeNode(bridge_settings(args, core.address))
            await bridge.start()
        if args.simulate:
            simulator = asyncio.create_task(_simulate(core.address, args.rate, args.seed))
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


async def _simulate(target: str, rate: float, seed: int | None) -> None:
    try:
        from clients.simulator import run_simulator  # type: ignore[import-not-found,attr-defined,unused-ignore]
    except ImportError:
        log.warning("the simulator is not available in this build")
        return
    await run_simulator(target, rate=rate, seed=seed)
