"""``clearpath status``: the core's gRPC health and the bridge's ``/ws/status``, as a table."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp

from clearpath.realtime.v1 import service_pb2 as spb
from clients.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    ClientOptions,
    add_core_option,
    client_options,
    core_target,
    run_async,
)
from clients.sdk import ClearPathError, Client
from core.credentials import TokenSource

#: The service's full name, read from the protos' descriptors.
SERVICE_NAME: str = spb.DESCRIPTOR.services_by_name["RealtimeService"].full_name

__all__ = ["DEFAULT_BRIDGE", "register", "render_table"]

DEFAULT_BRIDGE = "http://localhost:8000"


def register(sub: Any) -> None:
    """Add ``status`` to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "status", help="show the health of the core and the bridge"
    )
    add_core_option(parser)
    parser.add_argument(
        "--bridge",
        metavar="URL",
        help=f"the bridge's base URL (default: $CLEARPATH_BRIDGE or {DEFAULT_BRIDGE}); "
        "'' to skip it",
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for each (default 3)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the table; exit 1 when the core is not serving."""
    target, options = core_target(args), client_options(args)
    bridge = args.bridge if args.bridge is not None else os.environ.get("CLEARPATH_BRIDGE")
    bridge = DEFAULT_BRIDGE if bridge is None else bridge
    return run_async(_status(target, options, bridge.rstrip("/"), args.timeout), target)


async def _status(target: str, options: ClientOptions, bridge: str, wait: float) -> int:
    core_rows, bridge_rows = await asyncio.gather(
        _core_rows(target, options, wait), _bridge_rows(bridge, wait, options["token"])
    )
    print(render_table([("component", "item", "value"), *core_rows, *bridge_rows]))
    return EXIT_OK if core_rows[1][2] == "SERVING" else EXIT_ERROR


async def _core_rows(
    target: str, options: ClientOptions, wait: float
) -> list[tuple[str, str, str]]:
    rows = [("core", "address", target)]
    async with Client(target, timeout=wait, **options) as client:
        for label, service in (("health", ""), (SERVICE_NAME, SERVICE_NAME)):
            try:
                status = await client.health(service)
            except ClearPathError as exc:
                status = f"unreachable ({exc.code}: {exc})" if exc.code else str(exc)
            rows.append(("core", label, status))
    return rows


async def _bridge_rows(
    bridge: str, wait: float, token: TokenSource | None
) -> list[tuple[str, str, str]]:
    if not bridge:
        return []
    url = f"{bridge}/ws/status"
    rows = [("bridge", "url", url)]
    # An operator token sees the details; without one a bridge with auth on says
    # only whether events flow.
    value = token() if callable(token) else token
    headers = {"Authorization": f"Bearer {value}"} if value else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                return [*rows, ("bridge", "status", f"HTTP {response.status}")]
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
        return [*rows, ("bridge", "status", f"unreachable ({reason})")]
    if not isinstance(body, Mapping):
        return [*rows, ("bridge", "status", repr(body))]
    return [*rows, *(("bridge", key, value) for key, value in _flatten(body))]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, list):
            yield name, ", ".join(str(v) for v in value) or "-"
        else:
            yield name, str(value)


def render_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns; the first row is the header, underlined."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: tuple[str, ...]) -> str:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])
