"""What the commands that talk to the core share: ``--core``, exit codes, errors.

``--core`` (and ``$CLEARPATH_CORE``) is one address ``HOST:PORT`` or several,
``HOST:PORT,HOST:PORT``: cores sharing one broker, which the SDK's client fails
over across (``subscribe`` resumes on the next core, ``publish`` moves on when
the core cannot be reached). A bad list is a usage error (exit 2) naming the
bad entry, before anything is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any

from clients.sdk import DEFAULT_TARGET, ClearPathError, InvalidArgumentError, UnavailableError
from core.errors import InvalidArgument
from core.targets import parse_targets

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_core_option",
    "core_target",
    "fail",
    "run_async",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def add_core_option(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """Add ``--core HOST:PORT[,HOST:PORT...]``. With ``suppress`` an absent flag
    leaves the namespace alone, so a parent parser and its subparsers can both offer it."""
    parser.add_argument(
        "--core",
        metavar="HOST:PORT[,HOST:PORT...]",
        type=_core_list,
        default=argparse.SUPPRESS if suppress else None,
        help="the core's gRPC address, or several cores sharing one broker to fail over "
        f"across (default: $CLEARPATH_CORE or {DEFAULT_TARGET})",
    )


def _core_list(value: str) -> str:
    """``--core``, checked and normalized (argparse reports the error, exit 2)."""
    try:
        return ",".join(parse_targets(value, ""))
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def core_target(args: argparse.Namespace) -> str:
    """The ``--core`` given, else ``$CLEARPATH_CORE``, else the default: one
    address or a comma-separated list. A bad ``$CLEARPATH_CORE`` exits 2 naming
    the bad entry."""
    given: str | None = getattr(args, "core", None)
    if given:
        return given
    env = os.environ.get("CLEARPATH_CORE")
    if not env:
        return DEFAULT_TARGET
    try:
        return ",".join(parse_targets(env, "$CLEARPATH_CORE"))
    except InvalidArgument as exc:
        raise SystemExit(fail(str(exc), EXIT_USAGE)) from None


def fail(message: str, code: int = EXIT_ERROR) -> int:
    """Print ``clearpath: error: message`` to stderr and return ``code``."""
    print(f"clearpath: error: {message}", file=sys.stderr)
    return code


def run_async(main: Coroutine[Any, Any, int], target: str) -> int:
    """Run a command's coroutine; SDK errors become messages and exit codes, and
    SIGINT/SIGTERM end it quietly with EXIT_OK."""
    try:
        return asyncio.run(_cancel_on_signals(main))
    except KeyboardInterrupt:
        return EXIT_OK
    except InvalidArgumentError as exc:
        return fail(str(exc), EXIT_USAGE)
    except UnavailableError as exc:
        where = f"a core of {target}" if "," in target else f"the core at {target}"
        return fail(f"cannot reach {where}: {exc}")
    except ClearPathError as exc:
        return fail(f"{exc} ({exc.code})" if exc.code else str(exc))


async def _cancel_on_signals(main: Coroutine[Any, Any, int]) -> int:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    # Signal handlers can only be set from the main thread (tests run main() in others).
    handled = threading.current_thread() is threading.main_thread()
    if handled:
        for sig in signals:
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and not _current_cancelling():
            return EXIT_OK
        raise
    finally:
        if handled:
            for sig in signals:
                loop.remove_signal_handler(sig)


def _current_cancelling() -> int:
    current = asyncio.current_task()
    return current.cancelling() if current is not None else 0
