"""``clearpath subscribe``: print events as JSON lines, in the WebSocket bridge's frame shape.

One frame per line on stdout (``core.codec.event_to_frame``), flushed as it
arrives, until interrupted or ``--count`` events. Notices (subscribed, gaps,
reconnects, events skipped by conflation) go to stderr, so stdout stays pure
JSON lines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clients.cli._common import (
    EXIT_OK,
    ClientOptions,
    add_core_option,
    client_options,
    core_target,
    run_async,
)
from clients.sdk import Client, Gap, StreamPosition, SubscriptionFilter
from core.codec import encode_frame, event_to_frame
from core.errors import InvalidArgument
from core.topics import TOPIC_NAMES
from core.viewport import BoundingBox, parse_bbox_query

__all__ = ["parse_filters", "parse_since", "register"]


def register(sub: Any) -> None:
    """Add ``subscribe`` to the subparsers."""
    names = list(TOPIC_NAMES.values())
    parser: argparse.ArgumentParser = sub.add_parser(
        "subscribe",
        help="print events of some subscription types as JSON lines",
        description="Print the events of SUBSCRIPTION_TYPEs as JSON lines until interrupted. "
        "Reconnects and resumes by itself; a gap it could not fill is reported on stderr.",
    )
    parser.add_argument(
        "topics", nargs="+", metavar="SUBSCRIPTION_TYPE", choices=names, help=", ".join(names)
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="package_ids=ID[,ID], tracking_numbers=N[,N], min_severity=high, user_id=U; "
        "repeatable",
    )
    parser.add_argument(
        "--since",
        action="append",
        default=[],
        metavar="TYPE:EPOCH:OFFSET",
        help="resume a subscription type after this position (a frame's position); repeatable",
    )
    parser.add_argument(
        "--bbox",
        metavar="W,S,E,N",
        help="map_updates only inside this box (degrees west,south,east,north; "
        "west > east crosses the antimeridian), e.g. --bbox=-125,24,-66,50",
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    add_core_option(parser)
    parser.set_defaults(handler=run, subscribe_parser=parser)


def parse_filters(pairs: list[str]) -> dict[str, list[str] | str]:
    """``key=value`` pairs. For list fields of SubscriptionFilter, repeated keys
    and comma-separated values add up. ValueError for a pair without ``=``;
    unknown keys are left for the SDK to refuse, naming the valid ones."""
    fields = SubscriptionFilter.DESCRIPTOR.fields_by_name
    out: dict[str, list[str] | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--filter {pair!r}: expected KEY=VALUE")
        if key in fields and fields[key].is_repeated:
            values = out.setdefault(key, [])
            assert isinstance(values, list)
            values.extend(v.strip() for v in value.split(",") if v.strip())
        else:
            out[key] = value.strip()
    return out


def parse_since(values: list[str]) -> dict[str, StreamPosition]:
    """``TYPE:EPOCH:OFFSET`` values by subscription type; ValueError when malformed."""
    out: dict[str, StreamPosition] = {}
    for value in values:
        topic, _, rest = value.partition(":")
        epoch, _, offset = rest.rpartition(":")
        if not topic or not epoch or not offset.isdigit():
            raise ValueError(f"--since {value!r}: expected TYPE:EPOCH:OFFSET")
        out[topic] = StreamPosition(epoch=epoch, offset=int(offset))
    return out


def _tell_conflated(conflated: dict[str, int], told: dict[str, int]) -> None:
    """On stderr, how many events of each topic the core skipped as superseded
    since the last notice (the stream was behind; the newest per key still comes)."""
    for topic, total in conflated.items():
        skipped = total - told.get(topic, 0)
        if skipped:
            told[topic] = total
            print(
                f"clearpath: conflated {topic}: {skipped} superseded events skipped "
                "(the stream was behind; the newest of each key follows)",
                file=sys.stderr,
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    """Stream until interrupted (or --count events)."""
    parser: argparse.ArgumentParser = args.subscribe_parser
    try:
        filters, since = parse_filters(args.filter), parse_since(args.since)
    except ValueError as exc:
        parser.error(str(exc))
    box: BoundingBox | None = None
    if args.bbox is not None:
        if "map_updates" not in args.topics:
            parser.error("--bbox applies to map_updates only: subscribe to map_updates")
        try:
            box = parse_bbox_query(args.bbox, where="--bbox")
        except InvalidArgument as exc:
            parser.error(str(exc))
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    target, options = core_target(args), client_options(args)
    stream = _stream(target, options, args.topics, filters, since, args.count, box)
    return run_async(stream, target)


async def _stream(
    target: str,
    options: ClientOptions,
    topics: list[str],
    filters: dict[str, list[str] | str],
    since: dict[str, StreamPosition],
    count: int | None,
    box: BoundingBox | None = None,
) -> int:
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    received = 0
    client = Client(target, **options)
    bbox = None if box is None else (box.west, box.south, box.east, box.north)
    async with client, client.subscribe(topics, filters=filters, since=since, bbox=bbox) as sub:
        print(f"subscribed to {', '.join(topics)}", file=sys.stderr, flush=True)
        told: dict[str, int] = {}
        async for item in sub:
            _tell_conflated(sub.conflated, told)
            if isinstance(item, Gap):
                print(
                    f"clearpath: gap in {item.topic}: events after "
                    f"{item.since.epoch}:{item.since.offset} are lost ({item.reason})",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            line = encode_frame(event_to_frame(item)) + b"\n"
            try:
                if out is not None:
                    out.write(line)
                    out.flush()
                else:
                    sys.stdout.write(line.decode())
                    sys.stdout.flush()
            except BrokenPipeError:  # e.g. `| head`: the reader is gone
                return EXIT_OK
            received += 1
            if count is not None and received >= count:
                break
    return EXIT_OK
