"""The catalog (core/catalog.py), ``GET /ws/schema`` and the browser's generated
``catalog.ts``: all three say what the protos and the codec say."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from google.protobuf import descriptor_pb2

from bridge.app import BridgeNode
from bridge.config import BridgeSettings
from bridge.schema import CACHE_CONTROL, schema_body
from clearpath.realtime.v1 import events_pb2 as pb
from clients.cli._protos import comment
from clients.cli.app import main as cli
from core.catalog import build_catalog, catalog, descriptor_set, json_enum_value
from core.codec import enum_names, event_to_frame
from core.delivery import CONFLATION_KEYS, DELIVERY
from core.errors import InvalidArgument
from core.server import CoreNode
from core.topics import INTERNAL_PAYLOAD_TOPIC, TOPIC_NAMES, TOPIC_PAYLOAD, TOPICS
from tests.auth_helpers import auth_settings
from tests.conftest import StartBridge
from tests.events import SAMPLES, sample
from tests.grpc_helpers import publish
from tests.ws_helpers import TIMEOUT, open_ws, recv_events, subscribe

if TYPE_CHECKING:
    from clearpath.realtime.v1.service_pb2_grpc import RealtimeServiceAsyncStub as Stub

ROOT = Path(__file__).resolve().parent.parent
GENERATED_TS = ROOT / "clients/web/src/generated/catalog.ts"
_F = descriptor_pb2.FieldDescriptorProto
#: What the codec writes for each scalar proto type, as Python JSON values.
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _payload(event_type: str) -> Any:
    return pb.Event.DESCRIPTOR.fields_by_name[event_type].message_type


# --- the catalog against the descriptors --------------------------------------------


def test_every_subscription_type_with_its_event_type_delivery_class_and_keys() -> None:
    cat = catalog()
    assert [s["name"] for s in cat["subscription_types"]] == [TOPIC_NAMES[t] for t in TOPICS]
    for entry, topic in zip(cat["subscription_types"], TOPICS, strict=True):
        assert entry["proto_name"] == pb.Topic.Name(topic)  # type: ignore[arg-type]
        assert entry["number"] == topic
        assert entry["event_type"] == TOPIC_PAYLOAD[topic]
        assert entry["delivery_class"] == DELIVERY[topic].value
        keys = CONFLATION_KEYS.get(topic)
        assert entry["conflation_key"] == (None if keys is None else list(keys))
        assert entry["description"] == comment(f"clearpath.realtime.v1.{entry['proto_name']}")
        assert entry["description"]
    # Internal topics and payloads are not in the catalog.
    names = {s["name"] for s in cat["subscription_types"]} | {e["name"] for e in cat["event_types"]}
    assert "canary" not in names
    assert set(INTERNAL_PAYLOAD_TOPIC).isdisjoint(names)
    assert "canary" not in [v["name"] for v in cat["enums"]["Topic"]["values"]]
    assert set(cat["delivery_classes"]) == {"urgent", "reliable", "latest"}


def test_every_payload_field_with_its_json_type_enum_values_and_comment() -> None:
    cat = catalog()
    assert [e["name"] for e in cat["event_types"]] == [TOPIC_PAYLOAD[t] for t in TOPICS]
    for event in cat["event_types"]:
        message = _payload(event["name"])
        assert event["message"] == message.name
        assert event["topic"] == TOPIC_NAMES[TOPICS[cat["event_types"].index(event)]]
        assert event["description"] == comment(message.full_name) != ""
        assert [(f["name"], f["number"]) for f in event["fields"]] == [
            (f.name, f.number) for f in message.fields
        ]
        for entry, field in zip(event["fields"], message.fields, strict=True):
            where = f"{message.name}.{field.name}"
            assert entry["description"] == comment(field.full_name) != "", where
            assert entry["required"] is True
            if field.enum_type is not None:
                assert entry["json_type"] == "string"
                assert entry["proto_type"] == field.enum_type.name
                assert entry["enum"] == list(enum_names(field.enum_type).values()), where
            elif field.message_type is not None:
                assert field.message_type.full_name == "google.protobuf.Timestamp", where
                assert (entry["json_type"], entry["format"], entry["nullable"]) == (
                    "string",
                    "date-time",
                    True,
                )
            else:
                expected = {
                    _F.TYPE_STRING: "string",
                    _F.TYPE_DOUBLE: "number",
                    _F.TYPE_UINT32: "integer",
                }[field.type]
                assert entry["json_type"] == expected, where
                assert (entry["enum"], entry["format"], entry["nullable"]) == (None, None, False)


def test_the_json_types_are_what_the_codec_writes() -> None:
    """Every sample frame's data, as core.codec writes it, has exactly the catalog's
    fields, each of its JSON type (and an unset timestamp is null)."""
    cat = catalog()
    for event in cat["event_types"]:
        frame = event_to_frame(sample(event["name"]))
        assert list(frame["data"]) == [f["name"] for f in event["fields"]]
        for field in event["fields"]:
            value = frame["data"][field["name"]]
            assert isinstance(value, _PY_TYPES[field["json_type"]]), field
            assert not (field["json_type"] != "boolean" and isinstance(value, bool))
            if field["enum"] is not None:
                assert value in field["enum"]
        unset = event_to_frame(pb.Event(**{event["name"]: getattr(pb, event["message"])()}))
        for field in event["fields"]:
            if field["nullable"]:
                assert unset["data"][field["name"]] is None


def test_the_envelope_is_what_the_codec_writes() -> None:
    envelope = catalog()["envelope"]["fields"]
    bare = event_to_frame(sample("map_update"))
    assert list(bare) == [f["name"] for f in envelope if f["required"]]
    full = sample("map_update")
    full.published_at.GetCurrentTime()
    full.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert set(event_to_frame(full)) == {f["name"] for f in envelope}
    position = next(f for f in envelope if f["name"] == "position")
    assert [(f["name"], f["json_type"]) for f in position["fields"]] == [
        ("offset", "integer"),
        ("epoch", "string"),
    ]


def test_enums_are_complete_and_named_as_the_codec_names_them() -> None:
    cat = catalog()
    file = pb.DESCRIPTOR
    assert list(cat["enums"]) == list(file.enum_types_by_name)
    for name, enum in file.enum_types_by_name.items():
        values = [v for v in enum.values if not (name == "Topic" and v.number == pb.TOPIC_CANARY)]
        entry = cat["enums"][name]
        assert entry["description"] == comment(enum.full_name) != ""
        assert [v["proto_name"] for v in entry["values"]] == [v.name for v in values]
        assert [v["number"] for v in entry["values"]] == [v.number for v in values]
        names = enum_names(enum)
        assert [v["name"] for v in entry["values"]] == [names[v.number] for v in values]
        assert all(json_enum_value(name, v.name) == names[v.number] for v in enum.values)
        assert all(v["description"] for v in entry["values"])


def test_configured_conflation_keys_are_served_and_bad_ones_refused() -> None:
    defaults = {s["name"]: s["conflation_key"] for s in catalog()["subscription_types"]}
    assert defaults["map_updates"] == ["package_id", "vehicle_id"]  # a vehicle alone too
    by_name = {
        s["name"]: s["conflation_key"]
        for s in catalog("map_updates:vehicle_id+route_id")["subscription_types"]
    }
    assert by_name["map_updates"] == ["vehicle_id", "route_id"]
    assert by_name["system_health"] is None  # not conflated under this setting
    assert all(s["conflation_key"] is None for s in catalog("none")["subscription_types"])
    assert catalog("default") == catalog()
    with pytest.raises(InvalidArgument, match="anomalies is never conflated"):
        catalog("anomalies")
    with pytest.raises(InvalidArgument, match="'speed_kmh' is not a key"):
        catalog("map_updates:speed_kmh")


def test_a_field_type_without_a_json_mapping_fails_loudly() -> None:
    files = descriptor_set()
    message = next(m for f in files.file for m in f.message_type if m.name == "MapUpdate")
    message.field.add(name="stops", number=99, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED)
    with pytest.raises(ValueError, match=r"MapUpdate\.stops: repeated"):
        build_catalog(files)
    message.field[-1].label = _F.LABEL_OPTIONAL
    message.field[-1].type = _F.TYPE_BYTES
    with pytest.raises(ValueError, match=r"MapUpdate\.stops: type .* has no JSON mapping"):
        build_catalog(files)


def test_a_topic_missing_from_the_core_tables_fails_loudly() -> None:
    files = descriptor_set()
    topic = next(e for f in files.file for e in f.enum_type if e.name == "Topic")
    topic.value.add(name="TOPIC_WEATHER", number=42)
    with pytest.raises(ValueError, match="TOPIC_WEATHER has no event type"):
        build_catalog(files)


def test_without_source_info_the_types_are_the_same_without_descriptions() -> None:
    files = descriptor_pb2.FileDescriptorSet()
    files.file.add().ParseFromString(pb.DESCRIPTOR.serialized_pb)
    bare = build_catalog(files)
    full = catalog()
    assert [s["name"] for s in bare["subscription_types"]] == [
        s["name"] for s in full["subscription_types"]
    ]
    strip = re.compile(r'"description": "(?:[^"\\]|\\.)*"')
    assert strip.sub("", json.dumps(bare)) == strip.sub("", json.dumps(full))


# --- the generated TypeScript -------------------------------------------------------


def test_the_generated_typescript_catalog_is_the_catalog() -> None:
    text = GENERATED_TS.read_text()
    assert text.startswith("// Generated from protos/ by scripts/gen_protos.py. Do not edit.\n")
    body = text.split("export const CATALOG: Catalog = ", 1)[1]
    assert json.loads(body.rstrip().removesuffix(";")) == catalog()
    for event in catalog()["event_types"]:
        assert f"export interface {event['message']} {{" in text


def _copy_tree(dest: Path) -> None:
    """The inputs and outputs of the generator, copied to ``dest``."""
    for part in ("protos", "clearpath"):
        shutil.copytree(ROOT / part, dest / part)
    shutil.copytree(GENERATED_TS.parent, dest / GENERATED_TS.parent.relative_to(ROOT))


def _gen(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_protos.py"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_staleness_check_covers_the_typescript_catalog(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    fresh = _gen(tmp_path, "--check")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    ts = tmp_path / GENERATED_TS.relative_to(ROOT)
    # A hand edit of the generated file is stale.
    ts.write_text(ts.read_text().replace("speed_kmh: number;", "speed_kmh: string;"))
    edited = _gen(tmp_path, "--check")
    assert edited.returncode == 1
    assert "clients/web/src/generated/catalog.ts" in edited.stdout
    # A proto comment changed but not regenerated: the doc comments are stale.
    _gen(tmp_path)
    assert _gen(tmp_path, "--check").returncode == 0
    proto = tmp_path / "protos/clearpath/realtime/v1/events.proto"
    proto.write_text(proto.read_text().replace("// Speed in km/h", "// Ground speed in km/h"))
    changed = _gen(tmp_path, "--check")
    assert changed.returncode == 1
    assert "clients/web/src/generated/catalog.ts" in changed.stdout
    assert _gen(tmp_path).returncode == 0
    assert "Ground speed in km/h" in ts.read_text()
    # A stray file in the generated folder is stale too.
    (ts.parent / "extra.ts").write_text("export {};\n")
    assert "generated/extra.ts" in _gen(tmp_path, "--check").stdout


# --- clearpath schema --------------------------------------------------------------


def test_the_cli_prints_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == catalog()
    assert cli(["schema", "--conflate", "none"]) == 0
    assert json.loads(capsys.readouterr().out) == catalog("none")
    assert cli(["schema", "--conflate", "notifications"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clearpath: error: --conflate: notifications is never conflated")
    assert "Traceback" not in err


# --- GET /ws/schema ---------------------------------------------------------------


async def test_schema_endpoint_serves_the_catalog_cacheably(
    core: CoreNode, start_bridge: StartBridge
) -> None:
    # Public even when the bridge requires tokens: it describes the protocol, no data.
    node = await start_bridge(core.address, **auth_settings())
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(node.url + "/ws/schema") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert response.headers["Cache-Control"] == CACHE_CONTROL
            etag = response.headers["ETag"]
            served = await response.json()
        assert served == catalog()
        async with http.get(node.url + "/ws/schema", headers={"If-None-Match": etag}) as again:
            assert again.status == 304
            assert await again.read() == b""
            assert again.headers["ETag"] == etag
        stale = {"If-None-Match": '"something-else"'}
        async with http.get(node.url + "/ws/schema", headers=stale) as other:
            assert other.status == 200


def test_the_schema_serves_the_bridges_configured_conflation_keys() -> None:
    assert json.loads(schema_body(BridgeSettings.model_validate({}))) == catalog()
    configured = BridgeSettings.model_validate({"conflate": "map_updates:vehicle_id"})
    body = json.loads(schema_body(configured))
    keys = {s["name"]: s["conflation_key"] for s in body["subscription_types"]}
    assert keys["map_updates"] == ["vehicle_id"]
    assert keys["dashboard_metrics"] is None


async def test_frames_from_a_real_bridge_conform_to_the_served_schema(
    bridge: BridgeNode, stub: Stub
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(bridge.url + "/ws/schema") as response,
    ):
        schema = await response.json()
    ws, _ = await open_ws(bridge, "/ws/connect")
    for entry in schema["subscription_types"]:
        await subscribe(ws, entry["name"])
    await publish(stub, *(sample(kind) for kind in SAMPLES))
    frames = await recv_events(ws, len(SAMPLES))
    await ws.close()
    events = {e["name"]: e for e in schema["event_types"]}
    envelope = schema["envelope"]["fields"]
    assert {f["type"] for f in frames} == set(events)
    for frame in frames:
        _conforms(frame, envelope, f"frame {frame['type']}")
        _conforms(frame["data"], events[frame["type"]]["fields"], frame["type"])
        assert frame["subscription_type"] == events[frame["type"]]["topic"]


def _conforms(value: dict[str, Any], fields: list[dict[str, Any]], where: str) -> None:
    """``value`` has every required field, no unknown one, each of its JSON type."""
    known = {f["name"]: f for f in fields}
    assert set(value) <= set(known), f"{where}: unknown keys {set(value) - set(known)}"
    for name, field in known.items():
        if name not in value:
            assert not field["required"], f"{where}.{name} missing"
            continue
        item = value[name]
        if item is None:
            assert field["nullable"], f"{where}.{name} is null"
        elif field["json_type"] == "object":
            assert isinstance(item, dict), f"{where}.{name}"
            if "fields" in field:
                _conforms(item, field["fields"], f"{where}.{name}")
        else:
            assert isinstance(item, _PY_TYPES[field["json_type"]]), f"{where}.{name}"
            if field["enum"] is not None:
                assert item in field["enum"], f"{where}.{name}"
