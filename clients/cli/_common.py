"""What the commands that talk to the core share: ``--core``, exit codes, errors.

``--core`` (and ``$CLEARPATH_CORE``) is one address ``HOST:PORT`` or several,
``HOST:PORT,HOST:PORT``: cores sharing one broker, which the SDK's client fails
over across (``subscribe`` resumes on the next core, ``publish`` moves on when
the core cannot be reached). A bad list is a usage error (exit 2) naming the
bad entry, before anything is sent.

Next to it, how to prove who we are and whom to trust: ``--token`` (default
``$CLEARPATH_TOKEN``; prefer the variable, a flag shows in ``ps``), sent as
``authorization: Bearer``; ``--tls-ca`` turns TLS on and names the CA the core's
certificate must chain to; ``--tls-cert`` and ``--tls-key`` are the client's
certificate for a core that requires one (mutual TLS). A file that cannot be
read is a usage error (exit 2) naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypedDict

from clients.sdk import DEFAULT_TARGET, ClearPathError, InvalidArgumentError, UnavailableError
from core.auth import self_signer
from core.credentials import TOKEN_ENV, PemKind, TokenSource, read_pem
from core.errors import InvalidArgument
from core.targets import parse_targets

#: A signing secret a development CLI signs its own token with when it has no token.
SECRET_ENV = "CLEARPATH_AUTH_SECRET"

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "ClientOptions",
    "add_core_option",
    "client_options",
    "core_target",
    "fail",
    "run_async",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def add_core_option(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """Add ``--core HOST:PORT[,HOST:PORT...]`` and the credentials to use with it,
    ``--token``, ``--tls-ca``, ``--tls-cert`` and ``--tls-key``. With ``suppress``
    an absent flag leaves the namespace alone, so a parent parser and its
    subparsers can both offer them."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--core",
        metavar="HOST:PORT[,HOST:PORT...]",
        type=_core_list,
        default=default,
        help="the core's gRPC address, or several cores sharing one broker to fail over "
        f"across (default: $CLEARPATH_CORE or {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--token",
        default=default,
        help=f"bearer token sent with every call (default: ${TOKEN_ENV}, which, unlike "
        "a flag, other users cannot see in the process list)",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="PEM",
        type=Path,
        default=default,
        help="use TLS, trusting this CA for the core's certificate",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        type=Path,
        default=default,
        help="client certificate for a core that requires one (mutual TLS; with --tls-key)",
    )
    parser.add_argument(
        "--tls-key", metavar="PEM", type=Path, default=default, help="the --tls-cert's private key"
    )


class ClientOptions(TypedDict):
    """The credentials keywords of :class:`clients.sdk.Client`, from the flags."""

    token: TokenSource | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None


def client_options(args: argparse.Namespace) -> ClientOptions:
    """``--token`` (else ``$CLEARPATH_TOKEN``) and the ``--tls-*`` files, checked
    now: a missing or unreadable file, or a certificate without its key, exits 2
    naming it, before anything is sent."""
    token: TokenSource | None = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
    if token is None and (secret := os.environ.get(SECRET_ENV)):
        # Development: whoever holds the signing secret may as well sign its own
        # short-lived token (what docker-compose.yml's simulator does).
        try:
            token = self_signer(secret, subject="clearpath-cli", publish=["*"], operator=True)
            token()  # a secret too short for HS256: refused now, exit 2
        except ValueError as exc:
            raise SystemExit(fail(f"${SECRET_ENV}: {exc}", EXIT_USAGE)) from None
    options = ClientOptions(
        token=token,
        tls_ca=getattr(args, "tls_ca", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
    )
    if (options["tls_cert"] is None) != (options["tls_key"] is None):
        raise SystemExit(fail("--tls-cert and --tls-key go together: give both", EXIT_USAGE))
    files: list[tuple[str, Path | None, PemKind]] = [
        ("--tls-ca", options["tls_ca"], "certificate"),
        ("--tls-cert", options["tls_cert"], "certificate"),
        ("--tls-key", options["tls_key"], "private key"),
    ]
    for flag, path, kind in files:
        if path is not None:
            try:
                read_pem(path, kind, flag)
            except ValueError as exc:
                raise SystemExit(fail(str(exc), EXIT_USAGE)) from None
    return options


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
