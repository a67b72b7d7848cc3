"""``clearpath publish``: one event from flags or ``--json``, or many from JSON lines.

The subcommands and their flags are built at run time from the proto
descriptors (``Event.payload``), so an event type or field added to
``protos/`` appears here with no code change. Every event is converted with
the core's codec and checked with the core's validation rules before anything
is sent; a bad value exits with status 2 and a message naming the field.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from clearpath.realtime.v1 import events_pb2 as pb
from clients.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    ClientOptions,
    add_core_option,
    client_options,
    core_target,
    fail,
    run_async,
)
from clients.cli._lines import Line, LineReader, Progress
from clients.cli._protos import comment, event_types
from clients.sdk import Client
from core.codec import enum_names, event_from_frame, parse_timestamp, scalar_value
from core.errors import InvalidArgument
from core.topics import TOPIC_NAMES
from core.validation import Limits, prepare_events

__all__ = ["flag_names", "register"]

#: Events per Publish call when reading JSON lines (the core accepts 1000 by default).
DEFAULT_BATCH = 500
# The core's rules, without the size limits, which are the core's to enforce.
_LOCAL_LIMITS = Limits(max_batch=sys.maxsize, max_event_bytes=sys.maxsize)
_STDIN_COMMAND = "-"
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
_METAVARS = {
    FieldDescriptor.CPPTYPE_STRING: "TEXT",
    FieldDescriptor.CPPTYPE_DOUBLE: "NUMBER",
    FieldDescriptor.CPPTYPE_FLOAT: "NUMBER",
    FieldDescriptor.CPPTYPE_BOOL: "BOOL",
}


def flag_names(field: Any) -> list[str]:
    """The flags of a payload field: ``--package-id`` (and ``--package_id``)."""
    kebab = "--" + field.name.replace("_", "-")
    return [kebab] if "_" not in field.name else [kebab, f"--{field.name}"]


def register(sub: Any) -> None:
    """Add ``publish`` and its event-type subcommands to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "publish",
        help="publish events: from flags, --json, or JSON lines on stdin",
        description=(
            "Publish one event: `clearpath publish EVENT_TYPE --FIELD VALUE ...` or "
            "`clearpath publish --json FRAME`; or many, one JSON frame per line on stdin: "
            "`clearpath publish --stdin` (or `clearpath publish -`)."
        ),
    )
    add_core_option(parser, suppress=True)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--json",
        metavar="FRAME",
        help='one event as a JSON frame: \'{"type": "package_update", "data": {...}}\'',
    )
    source.add_argument("--stdin", action="store_true", help="read JSON lines from stdin")
    _add_batch_option(parser)
    types = parser.add_subparsers(dest="event_type", metavar="EVENT_TYPE")
    for kind, message in event_types():
        _add_event_parser(types, kind, message)
    lines = types.add_parser(_STDIN_COMMAND, help="JSON lines from stdin (same as --stdin)")
    add_core_option(lines, suppress=True)
    _add_batch_option(lines)
    lines.set_defaults(stdin=True)
    parser.set_defaults(handler=run, publish_parser=parser)


def _add_batch_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=int,
        default=argparse.SUPPRESS,
        help=f"events per Publish call with JSON lines (default {DEFAULT_BATCH})",
    )


def _add_event_parser(types: Any, kind: str, message: Any) -> None:
    about = comment(message.full_name)
    parser: argparse.ArgumentParser = types.add_parser(
        kind, help=_escape(about), description=_escape(f"Publish one {kind} event. {about}")
    )
    add_core_option(parser, suppress=True)
    fields = parser.add_argument_group("payload fields (from the proto)")
    for field in message.fields:
        fields.add_argument(
            *flag_names(field),
            dest=f"field_{field.name}",
            default=None,
            **_flag_spec(field),
        )
    parser.set_defaults(payload=message, publish_parser=parser)


def _flag_spec(field: Any) -> dict[str, Any]:
    """argparse keywords for one payload field: type check, choices, metavar, help."""
    flag = flag_names(field)[0]
    about = comment(field.full_name)
    if field.enum_type is not None:
        names = [name for number, name in enum_names(field.enum_type).items() if number]
        return {
            "type": _enum_name(field),
            "choices": names,
            "metavar": "NAME",
            "help": _escape(f"{about} One of: {', '.join(names)}."),
        }
    if field.message_type is not None and field.message_type.full_name == _TIMESTAMP:
        return {
            "type": _checked(lambda text: parse_timestamp(text, flag), flag),
            "metavar": "TIME",
            "help": _escape(f"{about} RFC 3339 (2024-01-15T10:30:00Z) or 'now'."),
        }
    if field.message_type is not None or field.is_repeated:
        raise TypeError(f"{field.full_name}: no command-line form for this field type")
    metavar = _METAVARS.get(field.cpp_type, "INTEGER")
    return {
        "type": _checked(lambda text: scalar_value(field, text, flag), flag),
        "metavar": metavar,
        "help": _escape(about),
    }


def _checked(check: Callable[[str], object], flag: str) -> Callable[[str], str]:
    """An argparse type that refuses text ``check`` rejects and keeps the text
    (converted later by the codec, the one JSON/text → proto mapping)."""

    def parse(text: str) -> str:
        try:
            check(text)
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None
        return text

    return parse


def _enum_name(field: Any) -> Callable[[str], str]:
    names = enum_names(field.enum_type)

    def parse(text: str) -> str:
        try:
            number = scalar_value(field, text, field.name)
        except InvalidArgument:
            return text  # argparse's choices check reports it, listing the names
        return names[number]

    return parse


def _escape(text: str) -> str:
    return text.replace("%", "%%")


# --- running -------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Publish what the arguments describe; exit 2 for bad input, 1 for failures."""
    parser: argparse.ArgumentParser = args.publish_parser
    target, options = core_target(args), client_options(args)
    if args.stdin or args.event_type == _STDIN_COMMAND:
        if args.json is not None:
            parser.error("--json and --stdin exclude each other")
        batch = getattr(args, "batch_size", DEFAULT_BATCH)
        if batch < 1:
            parser.error("--batch-size must be at least 1")
        return run_async(_publish_lines(target, options, batch), target)
    try:
        event = _single_event(args, parser)
    except InvalidArgument as exc:
        parser.error(str(exc))
    return run_async(_publish_one(target, options, event), target)


def _single_event(args: argparse.Namespace, parser: argparse.ArgumentParser) -> pb.Event:
    if args.json is not None:
        if args.event_type is not None:
            parser.error("give either EVENT_TYPE with flags or --json, not both")
        try:
            frame = orjson.loads(args.json)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"--json: not valid JSON: {exc}") from None
        return _validated(event_from_frame(frame, "event"))
    if args.event_type is None:
        parser.error("give an EVENT_TYPE with its flags, --json FRAME or --stdin")
    data = {
        field.name: getattr(args, f"field_{field.name}")
        for field in args.payload.fields
        if getattr(args, f"field_{field.name}") is not None
    }
    return _validated(event_from_frame({"type": args.event_type, "data": data}, "event"))


def _validated(event: pb.Event, where: str = "") -> pb.Event:
    """``event``, after the core's own checks (ranges, required fields) pass."""
    try:
        prepare_events([event], _LOCAL_LIMITS)
    except InvalidArgument as exc:
        # "events[0].package_update.status: ..." → "<where>: package_update.status: ..."
        detail = str(exc).removeprefix("events[0]").lstrip(".").removeprefix(": ")
        raise InvalidArgument(f"{where}: {detail}" if where else detail) from None
    return event


async def _publish_one(target: str, options: ClientOptions, event: pb.Event) -> int:
    async with Client(target, **options) as client:
        (result,) = await client.publish(event)
    out = {
        "id": result.id,
        "subscription_type": TOPIC_NAMES[result.topic],
        "position": {"offset": result.position.offset, "epoch": result.position.epoch},
    }
    print(orjson.dumps(out).decode())
    return EXIT_OK


def event_from_line(number: int, line: bytes) -> pb.Event:
    """The event on JSON line ``number``, validated; InvalidArgument says ``line N: ...``."""
    where = f"line {number}"
    try:
        frame = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"{where}: not valid JSON ({exc})") from None
    return _validated(event_from_frame(frame, f"{where}: event"), where)


async def _publish_lines(target: str, options: ClientOptions, batch_size: int) -> int:
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else _encoded(sys.stdin)
    progress = Progress(sys.stderr, Progress.size_of(stream), enabled=sys.stderr.isatty())
    reader = LineReader(stream)
    sent = calls = 0
    try:
        async with Client(target, **options) as client:
            async for batch in reader.batches(batch_size, flush_after=0.5):
                events, errors = _parse_batch(batch)
                if errors:
                    progress.close()
                    for error in errors:
                        print(f"clearpath: error: {error}", file=sys.stderr)
                    return fail(
                        f"nothing of lines {batch[0][0]}-{batch[-1][0]} was sent; "
                        f"{sent} events published before them",
                        EXIT_USAGE,
                    )
                if events:
                    await client.publish(events)
                    sent, calls = sent + len(events), calls + 1
                    progress.update(sent, reader.bytes_read)
    finally:
        progress.close()
    print(f"published {sent} events in {calls} call{'' if calls == 1 else 's'}")
    return EXIT_OK


def _parse_batch(batch: list[Line]) -> tuple[list[pb.Event], list[str]]:
    events: list[pb.Event] = []
    errors: list[str] = []
    for number, line in batch:
        if not line.strip():
            continue
        try:
            events.append(event_from_line(number, line))
        except InvalidArgument as exc:
            errors.append(str(exc))
    return events, errors


def _encoded(stream: Any) -> Any:
    return (line.encode() for line in stream)
