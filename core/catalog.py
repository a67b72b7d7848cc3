"""The catalog: what a browser or a tool needs to know about the events, as data.

Pure: built from the proto descriptors (a ``FileDescriptorSet`` with source
info, so the comments of ``protos/`` become descriptions), the delivery table of
:mod:`core.delivery` and the topic table of :mod:`core.topics`. Internal topics
and payloads (the bridges' canary) are left out. ``GET /ws/schema`` serves it,
and ``scripts/gen_protos.py`` writes the browser's TypeScript types from it
(``clients/web/src/generated/catalog.ts``), so both say the same thing.

Shape (``version`` changes only when a key is removed or changes meaning)::

    {"version": 1, "package": "clearpath.realtime.v1",
     "delivery_classes": {"urgent": "…", "reliable": "…", "latest": "…"},
     "subscription_types": [{"name": "map_updates", "proto_name": "TOPIC_MAP_UPDATES",
        "number": 5, "event_type": "map_update", "delivery_class": "latest",
        "conflation_key": ["package_id", "vehicle_id"], "description": "…"}, …],
     "event_types": [{"name": "map_update", "topic": "map_updates",
        "message": "MapUpdate", "description": "…", "fields": [FIELD, …]}, …],
     "enums": {"PackageStatus": {"description": "…", "values": [
        {"name": "in_transit", "proto_name": "PACKAGE_STATUS_IN_TRANSIT",
         "number": 2, "description": "…"}, …]}, …},
     "envelope": {"description": "…", "fields": [FIELD, …]}}

    FIELD = {"name": "latitude", "number": 3, "json_type": "number",
             "proto_type": "double", "format": null, "enum": null,
             "nullable": false, "required": true, "description": "…"}

``json_type`` is a JSON Schema type name (``string``, ``number``, ``integer``,
``boolean``, ``object``), as :mod:`core.codec` writes the field: enums are
strings listed in ``enum`` (``proto_type`` names the entry of ``enums``; the
zero value ``unspecified`` only appears as an unset default), timestamps are
strings of ``format`` ``date-time``, ``nullable`` when unset; 64-bit integers
are JSON numbers too (exact in browsers up to 2**53). ``conflation_key`` is
null for a topic that is never conflated, else the payload fields whose values
name one thing (``[]``: the whole topic is one thing). An ``object`` field (the
envelope's ``position``) lists its own ``fields``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2

from clearpath.realtime.v1 import events_pb2 as pb
from core.delivery import CONFLATION_KEYS, DELIVERY, DeliveryClass, parse_conflation
from core.topics import INTERNAL_TOPICS, TOPIC_NAMES, TOPIC_PAYLOAD

__all__ = [
    "CATALOG_VERSION",
    "DELIVERY_DESCRIPTIONS",
    "PACKAGE",
    "build_catalog",
    "catalog",
    "descriptor_set",
    "json_enum_value",
]

#: The catalog's shape version (see the module doc).
CATALOG_VERSION = 1
#: The proto package the catalog describes.
PACKAGE = "clearpath.realtime.v1"
_EVENTS_FILE = "clearpath/realtime/v1/events.proto"
_TIMESTAMP = ".google.protobuf.Timestamp"

#: What each delivery class promises (see :mod:`core.delivery`).
DELIVERY_DESCRIPTIONS: dict[str, str] = {
    DeliveryClass.URGENT: "Never waits behind events of other classes in a subscriber's "
    "queue (the priority lane); every event, never conflated.",
    DeliveryClass.RELIABLE: "Every event, in order; never conflated.",
    DeliveryClass.LATEST: "Latest state per conflation key: a subscriber that has fallen "
    "behind receives only the newest event of each key and is told how many it skipped; "
    "one that keeps up receives every event.",
}

_F = descriptor_pb2.FieldDescriptorProto
#: Scalar proto type → (its name in .proto, its JSON Schema type as core.codec writes it).
_SCALARS: dict[int, tuple[str, str]] = {
    _F.TYPE_DOUBLE: ("double", "number"),
    _F.TYPE_FLOAT: ("float", "number"),
    _F.TYPE_INT32: ("int32", "integer"),
    _F.TYPE_INT64: ("int64", "integer"),
    _F.TYPE_UINT32: ("uint32", "integer"),
    _F.TYPE_UINT64: ("uint64", "integer"),
    _F.TYPE_SINT32: ("sint32", "integer"),
    _F.TYPE_SINT64: ("sint64", "integer"),
    _F.TYPE_FIXED32: ("fixed32", "integer"),
    _F.TYPE_FIXED64: ("fixed64", "integer"),
    _F.TYPE_SFIXED32: ("sfixed32", "integer"),
    _F.TYPE_SFIXED64: ("sfixed64", "integer"),
    _F.TYPE_BOOL: ("bool", "boolean"),
    _F.TYPE_STRING: ("string", "string"),
}
# SourceCodeInfo.Location.path steps (FileDescriptorProto / DescriptorProto /
# EnumDescriptorProto field numbers).
_FILE_MESSAGE, _FILE_ENUM, _MESSAGE_FIELD, _ENUM_VALUE = 4, 5, 2, 2


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The installed descriptors: ``source_info.binpb`` (written beside the
    generated modules by ``scripts/gen_protos.py``, with comments), else the
    generated module's own descriptor (the same types, no descriptions)."""
    try:
        data = resources.files(pb.__package__).joinpath("source_info.binpb").read_bytes()
    except OSError:
        files = descriptor_pb2.FileDescriptorSet()
        files.file.add().ParseFromString(pb.DESCRIPTOR.serialized_pb)
        return files
    return descriptor_pb2.FileDescriptorSet.FromString(data)


@functools.cache
def _default_catalog(conflate: str | None) -> dict[str, Any]:
    keys = None if conflate is None else parse_conflation(conflate)
    return build_catalog(descriptor_set(), keys)


def catalog(conflate: str | None = None) -> dict[str, Any]:
    """The catalog of the installed protos, with the conflation keys of the setting
    ``conflate`` (see :func:`core.delivery.parse_conflation`; None: the defaults,
    :data:`core.delivery.CONFLATION_KEYS`). A fresh copy each call.

    Raises InvalidArgument for a bad ``conflate``."""
    return copy.deepcopy(_default_catalog(conflate))


def json_enum_value(enum_name: str, value_name: str) -> str:
    """The JSON name of an enum value, as :func:`core.codec.enum_names` writes it:
    ``("PackageStatus", "PACKAGE_STATUS_IN_TRANSIT")`` → ``"in_transit"``."""
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum_name))
    return value_name.removeprefix(prefix.upper() + "_").lower()


def build_catalog(
    files: descriptor_pb2.FileDescriptorSet,
    conflation: Mapping[int, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """The catalog (module doc) of the ``events.proto`` in ``files``.

    ``conflation``: conflated topic → key fields, as the bridge is configured
    (None: :data:`core.delivery.CONFLATION_KEYS`). Raises ValueError when the
    protos and the tables of :mod:`core.topics` / :mod:`core.delivery` disagree
    (a topic with no payload or no delivery class) or a payload field has a type
    the JSON mapping does not cover (repeated, bytes, nested messages).
    """
    file = _events_file(files)
    text = _comments(file)
    messages = {m.name: m for m in file.message_type}
    enums = {e.name: e for e in file.enum_type}
    keys = dict(CONFLATION_KEYS if conflation is None else conflation)
    internal_numbers = set(INTERNAL_TOPICS)

    topic_enum = enums["Topic"]
    subscription_types: list[dict[str, Any]] = []
    event_types: list[dict[str, Any]] = []
    event_message = messages["Event"]
    payload_fields = {
        f.name: f
        for f in event_message.field
        if f.HasField("oneof_index") and event_message.oneof_decl[f.oneof_index].name == "payload"
    }
    for value in topic_enum.value:
        if value.number == 0 or value.number in internal_numbers:
            continue
        payload = TOPIC_PAYLOAD.get(value.number)
        if payload is None or value.number not in DELIVERY:
            raise ValueError(
                f"{value.name} has no event type in core/topics.py or no delivery class in "
                "core/delivery.py; add it there"
            )
        if payload not in payload_fields:
            raise ValueError(f"Event.payload has no field {payload!r} for {value.name}")
        name = TOPIC_NAMES[value.number]
        key = keys.get(value.number)
        subscription_types.append(
            {
                "name": name,
                "proto_name": value.name,
                "number": value.number,
                "event_type": payload,
                "delivery_class": str(DELIVERY[value.number]),
                "conflation_key": None if key is None else list(key),
                "description": text.get(f"{PACKAGE}.{value.name}", ""),
            }
        )
        message_name = payload_fields[payload].type_name.rsplit(".", 1)[-1]
        message = messages[message_name]
        event_types.append(
            {
                "name": payload,
                "topic": name,
                "message": message_name,
                "description": text.get(f"{PACKAGE}.{message_name}", ""),
                "fields": [_field(f, message_name, enums, text, messages) for f in message.field],
            }
        )
    return {
        "version": CATALOG_VERSION,
        "package": PACKAGE,
        "delivery_classes": {str(k): v for k, v in DELIVERY_DESCRIPTIONS.items()},
        "subscription_types": subscription_types,
        "event_types": event_types,
        "enums": {
            e.name: _enum(e, text, internal_numbers if e.name == "Topic" else set())
            for e in file.enum_type
        },
        "envelope": _envelope(subscription_types, event_types, messages, enums, text),
    }


def _events_file(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorProto:
    for file in files.file:
        if file.name == _EVENTS_FILE:
            return file
    raise ValueError(f"the descriptor set has no {_EVENTS_FILE}")


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, text: Mapping[str, str], skip: set[int]
) -> dict[str, Any]:
    return {
        "description": text.get(f"{PACKAGE}.{enum.name}", ""),
        "values": [
            {
                "name": json_enum_value(enum.name, v.name),
                "proto_name": v.name,
                "number": v.number,
                "description": text.get(f"{PACKAGE}.{v.name}", ""),
            }
            for v in enum.value
            if v.number not in skip
        ],
    }


def _field(
    field: descriptor_pb2.FieldDescriptorProto,
    owner: str,
    enums: Mapping[str, descriptor_pb2.EnumDescriptorProto],
    text: Mapping[str, str],
    messages: Mapping[str, descriptor_pb2.DescriptorProto],
    *,
    required: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """One field as core.codec writes it (see the module doc for the keys)."""
    where = f"{owner}.{field.name}"
    if field.label == _F.LABEL_REPEATED:
        raise ValueError(f"{where}: repeated fields have no JSON mapping in core/codec.py")
    out: dict[str, Any] = {
        "name": field.name,
        "number": field.number,
        "json_type": "string",
        "proto_type": "",
        "format": None,
        "enum": None,
        "nullable": False,
        "required": required,
        "description": text.get(f"{PACKAGE}.{where}", "") if description is None else description,
    }
    if field.type in _SCALARS:
        out["proto_type"], out["json_type"] = _SCALARS[field.type]
    elif field.type == _F.TYPE_ENUM:
        name = field.type_name.rsplit(".", 1)[-1]
        if name not in enums:
            raise ValueError(f"{where}: enum {field.type_name} is not in events.proto")
        out["proto_type"] = name
        out["enum"] = [json_enum_value(name, v.name) for v in enums[name].value]
    elif field.type == _F.TYPE_MESSAGE and field.type_name == _TIMESTAMP:
        out.update(proto_type="google.protobuf.Timestamp", format="date-time", nullable=True)
    elif field.type == _F.TYPE_MESSAGE and field.type_name == f".{PACKAGE}.StreamPosition":
        position = messages["StreamPosition"]
        out.update(
            json_type="object",
            proto_type="StreamPosition",
            fields=[_field(f, "StreamPosition", enums, text, messages) for f in position.field],
        )
    else:
        raise ValueError(
            f"{where}: type {field.type_name or field.type} has no JSON mapping in the catalog; "
            "extend core/catalog.py (and the TypeScript generator in scripts/gen_protos.py)"
        )
    return out


def _envelope(
    subscription_types: list[dict[str, Any]],
    event_types: list[dict[str, Any]],
    messages: Mapping[str, descriptor_pb2.DescriptorProto],
    enums: Mapping[str, descriptor_pb2.EnumDescriptorProto],
    text: Mapping[str, str],
) -> dict[str, Any]:
    """The event frame around a payload, as core.codec.event_to_frame writes it."""
    event = {f.name: f for f in messages["Event"].field}

    def proto(name: str, required: bool = True, format_: str | None = None) -> dict[str, Any]:
        out = _field(event[name], "Event", enums, text, messages, required=required)
        if format_ is not None:  # the codec writes these itself, never null
            out.update(format=format_, nullable=False)
        return out

    def plain(
        name: str, description: str, values: list[str] | None, json_type: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "number": None,
            "json_type": json_type,
            "proto_type": None,
            "format": None,
            "enum": values,
            "nullable": False,
            "required": True,
            "description": description,
        }

    return {
        "description": "Every event frame: the event type, its topic and position around the "
        "payload in data. published_at and traceparent are present only when the event has them.",
        "fields": [
            plain(
                "type",
                "The event type; names the payload in data.",
                [e["name"] for e in event_types],
                "string",
            ),
            plain(
                "subscription_type",
                "The topic the event was published on.",
                [s["name"] for s in subscription_types],
                "string",
            ),
            proto("id"),
            proto("position"),
            plain("data", "The payload: the fields of the event type.", None, "object"),
            proto("timestamp", format_="date-time"),
            proto("published_at", required=False, format_="date-time"),
            proto("traceparent", required=False),
        ],
    }


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Full name → leading comment on one line, for the file's top-level messages,
    their fields, enums and enum values (enum values are scoped like their enum)."""
    text = {
        tuple(loc.path): " ".join(loc.leading_comments.split())
        for loc in file.source_code_info.location
        if loc.leading_comments
    }
    return {name: text[path] for path, name in _names(file) if path in text}


def _names(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    scope = file.package
    for i, message in enumerate(file.message_type):
        yield (_FILE_MESSAGE, i), f"{scope}.{message.name}"
        for j, field in enumerate(message.field):
            yield (_FILE_MESSAGE, i, _MESSAGE_FIELD, j), f"{scope}.{message.name}.{field.name}"
    for i, enum in enumerate(file.enum_type):
        yield (_FILE_ENUM, i), f"{scope}.{enum.name}"
        for j, value in enumerate(enum.value):
            yield (_FILE_ENUM, i, _ENUM_VALUE, j), f"{scope}.{value.name}"
