"""Generate the code for ``protos/`` (never edit it by hand): the Python modules in
``clearpath/``, and the browser's typed catalog ``clients/web/src/generated/catalog.ts``
(payload interfaces, enums, schemas and ``CATALOG``, the JSON ``GET /ws/schema``
serves), written from :func:`core.catalog.build_catalog` of the same descriptors.

Usage: ``python scripts/gen_protos.py`` regenerates; ``--check`` regenerates into a
temporary folder and exits 1 when the committed code differs (stale). ``--root DIR``
works on another checkout (its ``protos/`` in, its generated files out).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import re
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("clearpath/realtime/v1")
HEADER = "# Generated from protos/ by scripts/gen_protos.py. Do not edit.\n"
# The descriptors with their comments (source info), which the generated _pb2
# modules leave out; the CLI reads its help text from it.
SOURCE_INFO = PACKAGE / "source_info.binpb"
#: The browser's typed catalog, generated from the same descriptors.
WEB_CATALOG = Path("clients/web/src/generated/catalog.ts")


def generate(out: Path, protos: Path = PROTOS) -> None:
    """Write the generated modules, stubs and package markers under ``out``, and the
    browser's catalog at ``out / WEB_CATALOG``, from the ``.proto`` files in ``protos``."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(protos)) for p in (protos / PACKAGE).glob("*.proto"))
    bindir = Path(sys.executable).parent
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{protos}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={out / SOURCE_INFO}",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for part in (Path("clearpath"), Path("clearpath/realtime"), PACKAGE):
        (out / part / "__init__.py").write_text(HEADER)
    (out / "clearpath" / "py.typed").write_text("")
    (out / WEB_CATALOG).parent.mkdir(parents=True, exist_ok=True)
    (out / WEB_CATALOG).write_text(typescript((out / SOURCE_INFO).read_bytes()))


def differences(left: Path, right: Path) -> list[str]:
    """Relative paths of files that differ between two trees, or exist in one only."""
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    names |= {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    names = {n for n in names if "__pycache__" not in n.parts}
    return sorted(
        str(n)
        for n in names
        if not ((left / n).exists() and (right / n).exists() and filecmp.cmp(left / n, right / n))
    )


# --- the browser's catalog (TypeScript) -------------------------------------------

_TS_HEADER = HEADER.replace("#", "//", 1)
_TS_INTRO = """\
/**
 * The typed catalog of `clearpath.realtime.v1` for browsers: the payloads, enums and
 * subscription types in their JSON form (core/codec.py: snake_case fields, enum values
 * lower case without their prefix, timestamps RFC 3339 UTC strings or null, numbers
 * as numbers), with the comments of protos/ as doc comments. `CATALOG` is the JSON
 * `GET /ws/schema` serves with the default conflation keys (a bridge configured
 * otherwise says so there). Import it through `../frames`.
 */
"""


def _doc(text: str, indent: str = "", extra: list[str] | None = None) -> str:
    """A JSDoc comment of ``text`` (and bullet lines ``extra``), wrapped at 100 columns."""
    lines = [text.replace("*/", "*\\/")] if text else []
    if extra:
        lines += ["", *(line.replace("*/", "*\\/") for line in extra)]
    if not lines:
        return ""
    if len(lines) == 1 and len(indent) + len(lines[0]) + 7 <= 100:
        return f"{indent}/** {lines[0]} */\n"
    width = 100 - len(indent) - 3
    body: list[str] = []
    for line in lines:
        hang = "  " if line.startswith("- ") else ""
        body += textwrap.wrap(line, width, subsequent_indent=hang) or [""]
    text = "".join(f"{indent} * {b}".rstrip() + "\n" for b in body)
    return f"{indent}/**\n{text}{indent} */\n"


def _array(head: str, values: list[str], tail: str) -> str:
    """``head[ 'a', 'b' ]tail`` on one line, or one value a line when that is too long."""
    line = head + "[" + ", ".join(f"'{v}'" for v in values) + "]" + tail
    if len(line) <= 100:
        return line + "\n"
    return head + "[\n" + "".join(f"  '{v}',\n" for v in values) + "]" + tail + "\n"


def _const_name(enum: str) -> str:
    """``PackageStatus`` → ``PACKAGE_STATUSES`` (the value list's name)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", enum).upper()
    if snake.endswith("S"):
        return snake + "ES"
    if snake.endswith("Y") and snake[-2:-1] not in tuple("AEIOU"):
        return snake[:-1] + "IES"
    return snake + "S"


def _ts_type(field: dict[str, Any]) -> str:
    if field["enum"] is not None:
        return str(field["proto_type"])
    if field["format"] == "date-time":
        return "Timestamp | null" if field["nullable"] else "Timestamp"
    if field["json_type"] == "object":
        return str(field["proto_type"])
    return {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}[
        field["json_type"]
    ]


def _kind(field: dict[str, Any]) -> str:
    """The field's ``FieldKind`` literal (see the generated file)."""
    if field["enum"] is not None:
        return f"{{ enum: '{field['proto_type']}' }}"
    if field["format"] == "date-time":
        return "'timestamp'"
    kinds = {"string": "string", "number": "number", "integer": "number", "boolean": "bool"}
    return f"'{kinds[field['json_type']]}'"


def _interface(name: str, description: str, fields: list[dict[str, Any]]) -> str:
    out = _doc(description) + f"export interface {name} {{\n"
    for field in fields:
        out += _doc(field["description"], "  ") + f"  {field['name']}: {_ts_type(field)};\n"
    return out + "}\n"


def _enums_ts(catalog: dict[str, Any]) -> str:
    topics = [s["name"] for s in catalog["subscription_types"]]
    out = _doc(
        "Subscription types (proto enum `Topic`, without `unspecified` and internal topics)."
    )
    out += _array("export const TOPICS = ", topics, " as const;")
    out += "/** A subscription type. */\nexport type Topic = (typeof TOPICS)[number];\n"
    consts = {"Topic": "TOPICS"}
    for name, enum in catalog["enums"].items():
        if name == "Topic":
            continue
        const = consts[name] = _const_name(name)
        notes = [f"- `{v['name']}`: {v['description']}" for v in enum["values"]]
        out += "\n" + _doc(f"{enum['description']} (proto enum `{name}`)", extra=notes)
        out += _array(f"export const {const} = ", [v["name"] for v in enum["values"]], " as const;")
        out += f"export type {name} = (typeof {const})[number];\n"
    out += "\n/** Every enum of events.proto by its proto name, values in number order. */\n"
    out += "export const ENUMS = {\n"
    for name in catalog["enums"]:
        values = "['unspecified', ...TOPICS]" if name == "Topic" else consts[name]
        out += f"  {name}: {values},\n"
    out += "} as const;\nexport type EnumName = keyof typeof ENUMS;\n"
    return out


def _delivery_ts(catalog: dict[str, Any]) -> str:
    classes = list(catalog["delivery_classes"])
    notes = [f"- `{k}`: {v}" for k, v in catalog["delivery_classes"].items()]
    out = _doc("How a topic's events wait for a subscriber that is behind.", extra=notes)
    out += _array("export const DELIVERY_CLASSES = ", classes, " as const;")
    out += "export type DeliveryClass = (typeof DELIVERY_CLASSES)[number];\n\n"
    out += "/** Each subscription type's delivery class. */\nexport const TOPIC_DELIVERY = {\n"
    for s in catalog["subscription_types"]:
        out += f"  {s['name']}: '{s['delivery_class']}',\n"
    out += "} as const satisfies Record<Topic, DeliveryClass>;\n"
    return out


def _payloads_ts(catalog: dict[str, Any]) -> str:
    events = catalog["event_types"]
    out = "/** RFC 3339 UTC timestamp ending in `Z`, e.g. `2024-01-15T10:30:00Z`. */\n"
    out += "export type Timestamp = string;\n"
    for event in events:
        about = f"(proto `{event['message']}`; event type `{event['name']}` on `{event['topic']}`)"
        out += "\n" + _interface(
            event["message"], f"{event['description']} {about}", event["fields"]
        )
    position = next(f for f in catalog["envelope"]["fields"] if f["name"] == "position")
    out += "\n" + _interface(
        position["proto_type"],
        f"{position['description']} (proto `StreamPosition`)",
        position["fields"],
    )
    out += "\n/** Event frame `type` -> payload. */\nexport interface EventPayloads {\n"
    out += "".join(f"  {e['name']}: {e['message']};\n" for e in events)
    out += "}\nexport type EventType = keyof EventPayloads;\n"
    out += "\n/** Event frame `type` -> the topic it is published on. */\n"
    out += "export const EVENT_TOPICS = {\n"
    out += "".join(f"  {e['name']}: '{e['topic']}',\n" for e in events)
    out += "} as const satisfies Record<EventType, Topic>;\n"
    out += "\n/** Every event type, in topic order. */\n"
    out += _array("export const EVENT_TYPES: EventType[] = ", [e["name"] for e in events], ";")
    return out


def _schemas_ts(catalog: dict[str, Any]) -> str:
    out = (
        "/** How a proto field appears in JSON. */\n"
        "export type FieldKind = 'string' | 'number' | 'bool' | 'timestamp'"
        " | { readonly enum: EnumName };\n"
        "\n/** Payload message name in the proto, and its fields in proto field order. */\n"
        "export const PAYLOAD_SCHEMAS = {\n"
    )
    for event in catalog["event_types"]:
        out += f"  {event['name']}: {{\n    message: '{event['message']}',\n    fields: {{\n"
        out += "".join(f"      {f['name']}: {_kind(f)},\n" for f in event["fields"])
        out += "    },\n  },\n"
    out += "} as const satisfies Record<EventType, "
    out += "{ message: string; fields: Record<string, FieldKind> }>;\n"
    return out


_CATALOG_TYPES = """\
/** A field of a payload or of the envelope, as `GET /ws/schema` describes it. */
export interface CatalogField {
  name: string;
  /** The proto field number; null for envelope fields the codec adds. */
  number: number | null;
  /** The JSON Schema type of the value. */
  json_type: 'string' | 'number' | 'integer' | 'boolean' | 'object';
  /** The proto type: a scalar, `google.protobuf.Timestamp`, or a key of `Catalog.enums`. */
  proto_type: string | null;
  /** `date-time` for RFC 3339 timestamps. */
  format: 'date-time' | null;
  /** The values an enum field may carry (`unspecified` only as an unset default). */
  enum: string[] | null;
  /** Whether the value may be null (unset timestamps). */
  nullable: boolean;
  /** Whether the key is always present. */
  required: boolean;
  description: string;
  /** The fields of an `object` field. */
  fields?: CatalogField[];
}

/** A subscription type in the catalog. */
export interface CatalogSubscriptionType {
  name: Topic;
  proto_name: string;
  number: number;
  event_type: EventType;
  delivery_class: DeliveryClass;
  /** Null: never conflated; else the payload fields naming one thing ([]: the whole topic). */
  conflation_key: string[] | null;
  description: string;
}

/** An event type in the catalog. */
export interface CatalogEventType {
  name: EventType;
  topic: Topic;
  message: string;
  description: string;
  fields: CatalogField[];
}

/** An enum in the catalog, values in number order. */
export interface CatalogEnum {
  description: string;
  values: { name: string; proto_name: string; number: number; description: string }[];
}

/** The body of `GET /ws/schema`. */
export interface Catalog {
  /** Changes only when a key is removed or changes meaning. */
  version: number;
  package: string;
  delivery_classes: Record<DeliveryClass, string>;
  subscription_types: CatalogSubscriptionType[];
  event_types: CatalogEventType[];
  enums: Record<EnumName, CatalogEnum>;
  /** The event frame around a payload. */
  envelope: { description: string; fields: CatalogField[] };
}
"""


def typescript(descriptors: bytes) -> str:
    """The text of ``catalog.ts`` from a serialized FileDescriptorSet with source info."""
    from google.protobuf import descriptor_pb2

    # Imported here: the core reads the generated modules that generate() may replace.
    from core.catalog import build_catalog

    catalog = build_catalog(descriptor_pb2.FileDescriptorSet.FromString(descriptors))
    rule = "// " + "-" * 77 + "\n"
    parts = [
        _TS_HEADER + _TS_INTRO,
        rule + "// Subscription types and enums\n" + rule + "\n" + _enums_ts(catalog),
        _delivery_ts(catalog),
        rule + "// Payloads (proto messages)\n" + rule + "\n" + _payloads_ts(catalog),
        rule + "// Runtime schemas\n" + rule + "\n" + _schemas_ts(catalog),
        rule + "// The catalog (GET /ws/schema)\n" + rule + "\n" + _CATALOG_TYPES,
        "/** The catalog with the default conflation keys, as `GET /ws/schema` serves it. */\n"
        "export const CATALOG: Catalog = "
        + json.dumps(catalog, indent=2, ensure_ascii=False)
        + ";\n",
    ]
    return "\n".join(parts)


# --- the command -------------------------------------------------------------------

#: The generated folders: the Python package, and the browser's generated sources.
OUTPUTS = (Path("clearpath"), WEB_CATALOG.parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout to work on (default: this one)"
    )
    args = parser.parse_args()
    root: Path = args.root.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), root / "protos")
        stale = [
            str(folder / name)
            for folder in OUTPUTS
            for name in differences(Path(tmp) / folder, root / folder)
        ]
        if args.check:
            if stale:
                print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
                return 1
            print("generated code is up to date")
            return 0
        for folder in OUTPUTS:
            shutil.rmtree(root / folder, ignore_errors=True)
            shutil.copytree(Path(tmp) / folder, root / folder)
    print("generated", PACKAGE, "and", WEB_CATALOG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
