"""``clearpath publish``: flags generated from the protos, --json, JSON lines on stdin."""

from __future__ import annotations

import argparse
import io
from typing import TYPE_CHECKING

import orjson
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from clearpath.realtime.v1 import events_pb2 as pb
from clients.cli._protos import comment
from clients.cli.app import build_parser
from clients.cli.publish import flag_names
from clients.sdk import Client
from core.codec import enum_names
from core.server import CoreNode
from core.topics import EVENT_TYPES, INTERNAL_PAYLOAD_TOPIC
from tests.clients_helpers import next_item, run_cli

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

pytest_plugins = ["tests.clients_fixtures"]

PAYLOAD = pb.Event.DESCRIPTOR.oneofs_by_name["payload"]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def event_parsers() -> dict[str, argparse.ArgumentParser]:
    return subparsers(subparsers(build_parser())["publish"])


async def offset(core: CoreNode, topic: int) -> int:
    """How many events ``topic`` has had."""
    return int((await core.broker.history(topic, None)).position.offset)


# --- generated from the descriptors ---------------------------------------------


#: Every payload people may publish: all but the internal ones (the bridges' canary).
PUBLIC = [field.name for field in PAYLOAD.fields if field.name not in INTERNAL_PAYLOAD_TOPIC]


def test_every_event_type_has_a_subcommand_and_internal_ones_none() -> None:
    assert set(PUBLIC) == set(event_parsers()) - {"-"}  # "-": JSON on standard input
    assert set(PUBLIC) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", PUBLIC)
def test_every_payload_field_has_a_typed_documented_flag(kind: str) -> None:
    parser = event_parsers()[kind]
    options = parser._option_string_actions
    message = pb.Event.DESCRIPTOR.fields_by_name[kind].message_type
    assert message is not None
    assert comment(message.full_name), "no proto comment: is source_info.binpb generated?"
    assert comment(message.full_name) in (parser.description or "")
    for field in message.fields:
        for flag in flag_names(field):
            assert flag in options, f"{kind}: no {flag}"
        action = options[flag_names(field)[0]]
        assert action.help is not None
        assert action.help.startswith(comment(field.full_name)), field.full_name
        assert comment(field.full_name), f"{field.full_name} has no comment in protos/"
        assert callable(action.type)
        if field.enum_type is not None:
            names = [n for number, n in enum_names(field.enum_type).items() if number]
            assert list(action.choices or ()) == names
        elif field.message_type is not None:
            assert field.message_type.full_name == Timestamp.DESCRIPTOR.full_name
            assert action.type("now") == "now"
            with pytest.raises(argparse.ArgumentTypeError, match="RFC 3339"):
                action.type("yesterday")
        elif field.type != field.TYPE_STRING:
            with pytest.raises(
                argparse.ArgumentTypeError, match=r"not an? (number|integer)|true or false"
            ):
                action.type("many")


# --- publishing -------------------------------------------------------------------


async def test_flags_publish_an_event_a_subscriber_receives(
    sdk_core: CoreNode, client: Client, capsys: CaptureFixture[str]
) -> None:
    async with client.subscribe("package_updates") as sub:
        code = await run_cli(
            "publish", "package_update", "--core", sdk_core.address,
            "--package-id", "p1", "--tracking_number", "1Z999",
            "--status", "OUT_FOR_DELIVERY", "--estimated-delivery", "2024-01-15T10:30:00Z",
        )  # fmt: skip
        event = await next_item(sub)
    assert code == 0
    assert isinstance(event, pb.Event)
    update = event.package_update
    assert (update.package_id, update.tracking_number) == ("p1", "1Z999")
    assert update.status == pb.PACKAGE_STATUS_OUT_FOR_DELIVERY
    assert update.estimated_delivery.ToJsonString() == "2024-01-15T10:30:00Z"
    printed = orjson.loads(capsys.readouterr().out)
    assert printed["id"] == event.id
    assert printed["subscription_type"] == "package_updates"
    assert printed["position"] == {"offset": 1, "epoch": event.position.epoch}


async def test_json_publishes_one_event(sdk_core: CoreNode, client: Client) -> None:
    frame = {"type": "notification", "data": {"title": "Hello", "severity": "high"}}
    async with client.subscribe("notifications") as sub:
        code = await run_cli(
            "publish", "--core", sdk_core.address, "--json", orjson.dumps(frame).decode()
        )
        event = await next_item(sub)
    assert code == 0
    assert isinstance(event, pb.Event)
    assert event.notification.title == "Hello"


BAD_VALUES = [
    ("package_update --package-id p --status flying", ["--status", "in_transit"]),
    ("map_update --package-id p --latitude north", ["--latitude", "not a number"]),
    ("agent_activity --agent-id a --action x --duration-ms -5", ["--duration-ms", "out of range"]),
    ("package_update --package-id p --last-scan-time today", ["--last-scan-time", "RFC 3339"]),
    ("map_update --package-id p --latitude 123", ["map_update.latitude", "out of range"]),
    ("anomaly_detected --package-id p --anomaly-type damaged", ["anomaly_detected.severity"]),
]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        *((line.split(), expected) for line, expected in BAD_VALUES),
        (["--json", '{"type": "package_update", "data": {"stat": 1}}'], ["unknown field 'stat'"]),
        (["--json", "{not json"], ["--json", "not valid JSON"]),
    ],
)
async def test_bad_values_are_refused_before_sending(
    sdk_core: CoreNode, capsys: CaptureFixture[str], args: list[str], expected: list[str]
) -> None:
    code = await run_cli("publish", "--core", sdk_core.address, *args)
    assert code == 2
    error = capsys.readouterr().err
    for text in expected:
        assert text in error
    for topic in (pb.TOPIC_PACKAGE_UPDATES, pb.TOPIC_MAP_UPDATES, pb.TOPIC_AGENT_ACTIVITY):
        assert await offset(sdk_core, topic) == 0


def jsonl(count: int, bad: dict[int, str] | None = None) -> io.TextIOWrapper:
    """``count`` package updates as JSON lines; ``bad`` replaces some lines (1-based)."""
    lines = [
        orjson.dumps(
            {"type": "package_update", "data": {"package_id": f"p{i}", "status": "created"}}
        ).decode()
        for i in range(1, count + 1)
    ]
    for number, text in (bad or {}).items():
        lines[number - 1] = text
    return io.TextIOWrapper(io.BytesIO("\n".join(lines).encode() + b"\n"))


async def test_stdin_publishes_json_lines_in_few_calls(
    sdk_core: CoreNode, monkeypatch: pytest.MonkeyPatch, capsys: CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", jsonl(1200))
    code = await run_cli("publish", "--stdin", "--core", sdk_core.address)
    assert code == 0
    assert capsys.readouterr().out.strip() == "published 1200 events in 3 calls"
    assert await offset(sdk_core, pb.TOPIC_PACKAGE_UPDATES) == 1200


async def test_a_dash_reads_stdin_too(
    sdk_core: CoreNode, monkeypatch: pytest.MonkeyPatch, capsys: CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", jsonl(7))
    code = await run_cli("publish", "-", "--core", sdk_core.address, "--batch-size", "3")
    assert code == 0
    assert capsys.readouterr().out.strip() == "published 7 events in 3 calls"


async def test_a_bad_line_is_reported_and_nothing_of_its_batch_is_sent(
    sdk_core: CoreNode, monkeypatch: pytest.MonkeyPatch, capsys: CaptureFixture[str]
) -> None:
    bad = {
        700: '{"type": "package_update", "data": {"package_id": "p", "status": "teleported"}}',
        802: "not json at all",
    }
    monkeypatch.setattr("sys.stdin", jsonl(1200, bad))
    code = await run_cli("publish", "--stdin", "--core", sdk_core.address)
    assert code == 2
    error = capsys.readouterr().err
    assert "line 700: event.data.status: 'teleported' is not one of" in error
    assert "line 802: not valid JSON" in error
    assert "nothing of lines 501-1000 was sent; 500 events published before them" in error
    assert await offset(sdk_core, pb.TOPIC_PACKAGE_UPDATES) == 500


async def test_rules_of_the_core_apply_to_lines_too(
    sdk_core: CoreNode, monkeypatch: pytest.MonkeyPatch, capsys: CaptureFixture[str]
) -> None:
    health = {"component": "x", "status": "healthy", "cpu_percent": 101}
    bad = {2: orjson.dumps({"type": "system_health", "data": health}).decode()}
    monkeypatch.setattr("sys.stdin", jsonl(3, bad))
    assert await run_cli("publish", "-", "--core", sdk_core.address) == 2
    assert "line 2: system_health.cpu_percent: 101.0 is out of range" in capsys.readouterr().err
    assert await offset(sdk_core, pb.TOPIC_PACKAGE_UPDATES) == 0


async def test_an_unreachable_core_fails_with_a_message(capsys: CaptureFixture[str]) -> None:
    code = await run_cli(
        "publish",
        "--core",
        "127.0.0.1:1",
        "--json",
        '{"type": "notification", "data": {"title": "x"}}',
    )
    assert code == 1
    assert "cannot reach the core at 127.0.0.1:1" in capsys.readouterr().err
