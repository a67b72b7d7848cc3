"""``clearpath``: one entry point, one module per subcommand.

Each command module has ``register(subparsers)`` which adds its parser and
sets ``handler`` (a function of the parsed arguments returning an exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clients.cli import cluster, publish, schema, serve, simulate, status, subscribe, token
from core import logs

__all__ = ["build_parser", "main"]

COMMANDS = [publish, subscribe, status, simulate, serve, cluster, token, schema]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="clearpath",
        description="ClearPath Realtime: publish, subscribe, simulate, status, serve, token, "
        "schema.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text (default), or json: one JSON object a line, with an 'event' field to "
        f"filter on (default: ${logs.FORMAT_ENV} or text)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs.resolve_level(args.log_level)
    except ValueError as exc:
        parser.error(f"argument --log-level: {exc}")  # exit 2
    try:
        # Resolved once here: commands that start processes pass the format on.
        args.log_format = logs.resolve_format(args.log_format)
    except ValueError as exc:
        parser.error(str(exc))
    logs.configure(args.log_level, args.log_format)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
