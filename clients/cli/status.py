"""``clearpath status``: the core's gRPC health and the bridge's figures, as a table.

The bridge's rows: ``ready`` (``/readyz``), then the figures of ``/metrics``
(connections, events delivered by path, dropped, slow consumers closed, p50/p99
delivery latency: totals since the bridge started), then ``/ws/status`` flattened
(``upstream.state`` among them). ``/metrics`` needs an operator token when the
bridge has auth on (``--token``); whatever the bridge does not answer (an older
bridge, no token) is one row saying why, never an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

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

__all__ = [
    "DEFAULT_BRIDGE",
    "Fetched",
    "Figures",
    "figure_rows",
    "histogram_quantile",
    "register",
    "render_table",
]

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
    rows = [("bridge", "url", bridge)]
    # An operator token sees the details; without one a bridge with auth on says
    # only whether events flow, and keeps /metrics to itself.
    value = token() if callable(token) else token
    headers = {"Authorization": f"Bearer {value}"} if value else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session:
        status, ready, metrics = await asyncio.gather(
            *(_get(session, f"{bridge}{path}", headers) for path in PATHS)
        )
    if status.code is None:
        return [*rows, ("bridge", "status", f"unreachable ({status.text})")]
    rows.append(("bridge", "ready", _readiness(ready)))
    rows.extend(("bridge", item, text) for item, text in figure_rows(metrics))
    if status.code != 200:
        return [*rows, ("bridge", "status", f"HTTP {status.code}")]
    try:
        body = json.loads(status.text)
    except ValueError:
        return [*rows, ("bridge", "status", "not JSON")]
    if not isinstance(body, Mapping):
        return [*rows, ("bridge", "status", repr(body))]
    return [*rows, *(("bridge", key, value) for key, value in _flatten(body))]


#: What the bridge is asked: its status, its readiness, its metrics.
PATHS = ("/ws/status", "/readyz", "/metrics")


@dataclass(frozen=True)
class Fetched:
    """One GET's answer: its HTTP status and body, or ``code`` None and why not."""

    code: int | None
    text: str


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Fetched:
    try:
        async with session.get(url, headers=headers) as response:
            return Fetched(response.status, await response.text(errors="replace"))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Fetched(None, type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc))


def _readiness(answer: Fetched) -> str:
    """``/readyz``: 200 ready, 503 not ready with its reason; anything else unknown."""
    if answer.code is None:
        return f"unknown (unreachable: {answer.text})"
    if answer.code not in (200, 503):
        return f"unknown (HTTP {answer.code}{': not served' if answer.code == 404 else ''})"
    try:
        body = json.loads(answer.text)
    except ValueError:
        body = None
    if not isinstance(body, Mapping) or not isinstance(body.get("ready"), bool):
        return f"unknown (HTTP {answer.code}, not the expected JSON)"
    if body["ready"]:
        return "yes"
    return f"no ({body.get('reason') or 'no reason given'})"


def figure_rows(answer: Fetched) -> list[tuple[str, str]]:
    """The operator's figures from a ``/metrics`` answer: connections, events
    delivered by path, dropped (by reason), slow consumers closed, p50/p99 delivery
    latency; or one ``metrics`` row saying why there are none. Totals since the
    bridge started (a rate needs two scrapes); with ``--workers``, of the worker
    that answered."""
    if answer.code is None:
        return [("metrics", f"unreachable ({answer.text})")]
    if answer.code != 200:
        why = {
            401: ": an operator token is needed (--token)",
            403: ": the token is not an operator's",
            404: ": not served by this bridge",
        }.get(answer.code, "")
        return [("metrics", f"HTTP {answer.code}{why}")]
    try:
        figures = Figures.parse(answer.text)
    except ValueError as exc:
        return [("metrics", f"unreadable ({exc})")]
    return figures.rows()


#: Topics of the system's own probes (the bridge's readiness canary), not shown.
INTERNAL_TOPICS = frozenset({"canary"})


@dataclass
class Figures:
    """The figures ``status`` shows, summed over the labels it does not show."""

    connections: float = 0.0
    delivered: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, float] = field(default_factory=dict)
    slow_closes: float = 0.0
    #: Latency histogram buckets over every path and topic: upper bound → cumulative count.
    latency: dict[float, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Figures:
        """From Prometheus text; ValueError when it is not that."""
        figures = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                figures._add(sample.name, sample.labels, sample.value)
        return figures

    def _add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if labels.get("topic") in INTERNAL_TOPICS:
            return
        if name == "clearpath_connections":
            self.connections += value
        elif name == "clearpath_events_delivered_total":
            path = labels.get("path", "")
            self.delivered[path] = self.delivered.get(path, 0.0) + value
        elif name == "clearpath_events_dropped_total":
            reason = labels.get("reason", "")
            self.dropped[reason] = self.dropped.get(reason, 0.0) + value
        elif name == "clearpath_slow_consumer_closes_total":
            self.slow_closes += value
        elif name == "clearpath_delivery_latency_seconds_bucket":
            edge = float(labels["le"])
            self.latency[edge] = self.latency.get(edge, 0.0) + value

    def rows(self) -> list[tuple[str, str]]:
        rows = [("connections", _count(self.connections))]
        rows += [
            (f"delivered.{path or '-'}", _count(n)) for path, n in sorted(self.delivered.items())
        ]
        rows.append(("delivered.total", _count(sum(self.delivered.values()))))
        rows.append(("dropped.total", _count(sum(self.dropped.values()))))
        rows += [
            (f"dropped.{why or '-'}", _count(n)) for why, n in sorted(self.dropped.items()) if n
        ]
        rows.append(("slow_consumer_closes", _count(self.slow_closes)))
        for q in (0.5, 0.99):
            rows.append((f"latency.p{round(q * 100)}", _latency(self.latency, q)))
        return rows


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a histogram given as upper bound → cumulative count
    (``+Inf`` included), as Prometheus' ``histogram_quantile`` estimates it: linear
    within the bucket it falls in. ``inf`` when it falls in the ``+Inf`` bucket;
    None without observations."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for edge in sorted(buckets):
        count = buckets[edge]
        if count >= rank:
            if math.isinf(edge):
                return math.inf
            if count == below:
                return edge
            return lower + (edge - lower) * (rank - below) / (count - below)
        lower, below = edge, count
    return math.inf


def _latency(buckets: Mapping[float, float], q: float) -> str:
    value = histogram_quantile(q, buckets)
    if value is None:
        return "- (no events delivered)"
    if math.isinf(value):
        finite = [edge for edge in buckets if not math.isinf(edge)]
        return f"> {_seconds(max(finite))}" if finite else "-"
    return _seconds(value)


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def _count(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


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
