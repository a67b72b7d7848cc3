"""``clearpath simulate``: publish a simulated logistics network's traffic to a core."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from clients.cli._common import (
    EXIT_OK,
    ClientOptions,
    add_core_option,
    client_options,
    core_target,
    run_async,
)
from clients.sdk import Client
from clients.simulator import run_simulator

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``simulate`` to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="publish believable logistics traffic (packages, anomalies, agents, metrics)",
        description="Publish a simulated logistics network's events until interrupted, "
        "--duration seconds or --count events.",
    )
    add_core_option(parser)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second (default 50)")
    parser.add_argument(
        "--packages", type=int, default=200, help="packages in flight at once (default 200)"
    )
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    parser.add_argument("--seed", type=int, help="make the traffic reproducible")
    parser.set_defaults(handler=run, simulate_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Run the simulator; print how many events were published."""
    parser: argparse.ArgumentParser = args.simulate_parser
    if args.rate <= 0 or args.packages < 1:
        parser.error("--rate must be positive and --packages at least 1")
    if (args.duration is not None and args.duration <= 0) or (
        args.count is not None and args.count < 1
    ):
        parser.error("--duration and --count must be positive")
    target, options = core_target(args), client_options(args)
    return run_async(_simulate(args, target, options), target)


async def _simulate(args: argparse.Namespace, target: str, options: ClientOptions) -> int:
    tty = sys.stderr.isatty()
    started = time.monotonic()
    total = 0

    def progress(sent: int) -> None:
        nonlocal total
        total = sent
        if tty:
            rate = sent / max(time.monotonic() - started, 1e-6)
            sys.stderr.write(f"\r{sent:>9,} events  {rate:>7,.0f}/s")
            sys.stderr.flush()

    print(f"simulating {args.packages} packages at {args.rate:g} events/s", file=sys.stderr)
    try:
        async with Client(target, **options) as client:
            await run_simulator(
                client,
                rate=args.rate,
                packages=args.packages,
                seed=args.seed,
                stop=args.duration,
                count=args.count,
                on_progress=progress,
            )
    finally:
        if tty:
            sys.stderr.write("\r\033[K")
        print(f"published {total} events in {time.monotonic() - started:.1f} s")
    return EXIT_OK
