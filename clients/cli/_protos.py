"""What the CLI learns from the proto descriptors at run time: event types, their
fields, and the comments written above each in ``protos/``.

The generated ``_pb2`` modules carry no comments, so ``scripts/gen_protos.py``
also writes ``source_info.binpb`` (a FileDescriptorSet with source info) beside
them; it is read here once. Without it the help text is just shorter.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2

from clearpath.realtime.v1 import events_pb2 as pb
from core.topics import INTERNAL_PAYLOAD_TOPIC

__all__ = ["comment", "event_types"]

# Field numbers of FileDescriptorProto / DescriptorProto / EnumDescriptorProto,
# as they appear in SourceCodeInfo.Location.path.
_FILE_MESSAGE, _FILE_ENUM = 4, 5
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2


def event_types() -> list[tuple[str, Any]]:
    """(event type, payload message descriptor) for each ``Event.payload`` member,
    in proto order."""
    oneof = pb.Event.DESCRIPTOR.oneofs_by_name["payload"]
    # Internal payloads (the bridges' canary) are not for people to publish.
    return [
        (field.name, field.message_type)
        for field in oneof.fields
        if field.name not in INTERNAL_PAYLOAD_TOPIC
    ]


def comment(full_name: str) -> str:
    """The leading comment of a message, field, enum or enum value, on one line
    (``""`` when there is none)."""
    return _comments().get(full_name, "")


@functools.cache
def _comments() -> dict[str, str]:
    try:
        data = resources.files(pb.__package__).joinpath("source_info.binpb").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        text = {
            tuple(loc.path): " ".join(loc.leading_comments.split())
            for loc in file.source_code_info.location
            if loc.leading_comments
        }
        for path, name in _names(file):
            if path in text:
                out[name] = text[path]
    return out


def _names(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    for i, message in enumerate(file.message_type):
        yield from _message_names(message, (_FILE_MESSAGE, i), file.package)
    for i, enum in enumerate(file.enum_type):
        yield from _enum_names(enum, (_FILE_ENUM, i), file.package)


def _message_names(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    name = f"{scope}.{message.name}"
    yield path, name
    for i, field in enumerate(message.field):
        yield (*path, _MESSAGE_FIELD, i), f"{name}.{field.name}"
    for i, nested in enumerate(message.nested_type):
        yield from _message_names(nested, (*path, _MESSAGE_NESTED, i), name)
    for i, enum in enumerate(message.enum_type):
        yield from _enum_names(enum, (*path, _MESSAGE_ENUM, i), name)


def _enum_names(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, f"{scope}.{enum.name}"
    # Enum values are scoped like their enum's siblings in protobuf full names.
    for i, value in enumerate(enum.value):
        yield (*path, _ENUM_VALUE, i), f"{scope}.{value.name}"
