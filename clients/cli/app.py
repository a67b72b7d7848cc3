"""``clearpath``: one entry point, one module per subcommand.

Each command module has ``register(subparsers)`` which adds its parser and
sets ``handler`` (a function of the parsed arguments returning an exit code).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from clients.cli import cluster, publish, serve, simulate, status, subscribe, token

__all__ = ["build_parser", "main"]

COMMANDS = [publish, subscribe, status, simulate, serve, cluster, token]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="clearpath",
        description="ClearPath Realtime: publish, subscribe, simulate, status, serve, token.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
