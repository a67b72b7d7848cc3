"""``clearpath serve``: the whole system in one process (core, bridge, simulator)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from core.config import CoreSettings
from core.server import CoreNode, wait_for_signal

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``serve`` to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run core (and bridge) on the embedded default"
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, help="core gRPC port (default 50051; 0: free)")
    parser.add_argument("--broker", dest="broker_url", help="memory:// (default) or redis://…")
    parser.add_argument("--history-size", type=int, help="events kept per topic")
    parser.add_argument("--queue-size", type=int, help="events queued per subscriber")
    parser.add_argument("--heartbeat-interval", type=float, help="seconds")
    parser.set_defaults(handler=run)


def core_settings(args: argparse.Namespace) -> CoreSettings:
    """CoreSettings from flags given, then CLEARPATH_CORE_* variables, then defaults."""
    given: dict[str, Any] = {
        "host": args.host,
        "port": args.grpc_port,
        "broker_url": args.broker_url,
        "history_size": args.history_size,
        "queue_size": args.queue_size,
        "heartbeat_interval": args.heartbeat_interval,
    }
    return CoreSettings(**{k: v for k, v in given.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM."""
    settings = core_settings(args)
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: CoreSettings) -> None:
    core = CoreNode(settings)
    await core.start()
    try:
        await wait_for_signal()
    finally:
        await core.stop()
