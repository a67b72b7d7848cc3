"""Logs an operator can use (core/logs.py): text by default, JSON lines with
``--log-format json``, an ``event`` field on the lines that matter, no token ever."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.cli.cluster import Options, json_line, plan
from core import logs
from tests.auth_helpers import SECRET, bearer, token
from tests.clients_helpers import run_cli
from tests.events import package
from tests.ws_helpers import recv, recv_type, send

if TYPE_CHECKING:
    from _pytest.capture import CaptureFixture

TIMEOUT = 15.0
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def record(message: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("clearpath.test", logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


# --- the formatters, with plain calls --------------------------------------------------


def test_json_has_time_level_logger_message_and_the_extra_fields() -> None:
    line = logs.formatter("json").format(
        record("connect %s", "abc", event="connect", connection_id="abc", duration_s=1.5)
    )
    assert "\n" not in line
    data = json.loads(line)
    assert RFC3339_UTC.match(data.pop("time"))
    assert data == {
        "level": "INFO",
        "logger": "clearpath.test",
        "message": "connect abc",
        "event": "connect",
        "connection_id": "abc",
        "duration_s": 1.5,
    }
    # A field not known is left out, not null.
    assert "user" not in json.loads(logs.formatter("json").format(record("x", user=None)))


def test_json_puts_an_exception_on_the_same_line_as_a_string() -> None:
    log = logging.getLogger("clearpath.test.exc")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = log.makeRecord(log.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = logs.formatter("json").format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "failed"
    assert data["level"] == "ERROR"
    assert isinstance(data["exc_info"], str)
    assert "RuntimeError: boom" in data["exc_info"]
    assert "Traceback" in data["exc_info"]


def test_text_is_the_format_clearpath_always_printed() -> None:
    line = logs.formatter("text").format(record("hello %s", "world", event="x"))
    assert TEXT_LINE.match(line), line
    assert line.endswith(" INFO clearpath.test: hello world")


@pytest.mark.parametrize("log_format", logs.FORMATS)
def test_tokens_are_blanked_in_both_formats(log_format: str) -> None:
    jwt = token("alice")
    line = logs.formatter(log_format).format(
        record("got %s from /ws/map?token=opaque-value&batch=1", jwt, detail=jwt)
    )
    assert jwt not in line
    assert jwt.split(".")[1] not in line
    assert "opaque-value" not in line
    assert "batch=1" in line  # only the token goes
    if log_format == "json":
        json.loads(line)


def test_the_format_is_the_flag_else_the_variable_else_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    assert logs.resolve_format(None) == "text"
    monkeypatch.setenv(logs.FORMAT_ENV, "JSON")
    assert logs.resolve_format(None) == "json"
    assert logs.resolve_format("text") == "text"
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match=r"\$CLEARPATH_LOG_FORMAT: expected text or json"):
        logs.resolve_format(None)
    with pytest.raises(ValueError, match="log level"):
        logs.resolve_level("loud")
    assert logs.resolve_level("debug") == logging.DEBUG


# --- the command line -------------------------------------------------------------------


async def test_a_bogus_log_format_exits_2_naming_it(capsys: CaptureFixture[str]) -> None:
    assert await run_cli("--log-format", "bogus", "token", "--help") == 2
    err = capsys.readouterr().err
    assert "argument --log-format: invalid choice: 'bogus'" in err
    assert "'text', 'json'" in err


async def test_a_bogus_log_format_variable_exits_2_naming_it(
    capsys: CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "yaml")
    assert await run_cli("status", "--bridge", "") == 2
    assert "$CLEARPATH_LOG_FORMAT: expected text or json, not 'yaml'" in capsys.readouterr().err


async def test_a_bogus_log_level_exits_2_without_a_traceback(capsys: CaptureFixture[str]) -> None:
    assert await run_cli("--log-level", "loud", "status", "--bridge", "") == 2
    err = capsys.readouterr().err
    assert "argument --log-level" in err
    assert "Traceback" not in err


def test_the_cluster_passes_the_log_format_to_its_clearpath_processes(tmp_path: Path) -> None:
    def options(log_format: str | None) -> Options:
        return Options(tmp_path, "127.0.0.1", 1, (2,), (3,), 4, log_format=log_format)

    clearpath = [
        spec.argv for stage in plan(options("json")) for spec in stage if "-m" in spec.argv
    ]
    assert len(clearpath) == 3  # core, bridge, simulator
    assert all(argv[3:5] == ("--log-format", "json") for argv in clearpath)
    plain = [spec.argv for stage in plan(options(None)) for spec in stage]
    assert all("--log-format" not in argv for argv in plain)


def test_the_cluster_relays_json_lines_with_their_source() -> None:
    relayed = json_line("bridge1", b'{"message": "connect", "event": "connect"}\n')
    assert relayed is not None
    assert relayed.endswith(b"\n")
    assert json.loads(relayed) == {"message": "connect", "event": "connect", "source": "bridge1"}
    assert json_line("redis", b"1:M 01 Jan 2025 * Ready to accept connections\n") is None
    assert json_line("redis", b"[1, 2]\n") is None


# --- real processes ---------------------------------------------------------------------


@dataclass
class Running:
    """A ``clearpath`` process, every stderr line it wrote kept."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    core: str = ""
    bridge: str = ""

    @property
    def ws(self) -> str:
        return self.bridge.replace("http://", "ws://")

    async def until(self, pattern: str, within: float = TIMEOUT, count: int = 1) -> str:
        """The ``count``-th line (seen or to come) matching ``pattern``."""
        compiled = re.compile(pattern)

        async def seen() -> str:
            while True:
                found = [line for line in self.lines if compiled.search(line)]
                if len(found) >= count:
                    return found[count - 1]
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(seen(), within)


@asynccontextmanager
async def clearpath(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """Run ``clearpath ARGS`` (a core and/or bridge), reading its stderr until it
    stops; SIGTERM at the end of the block, and every line is in ``lines``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli.app",
        *args,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    running = Running(process)

    async def read() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            running.lines.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        if "serve" in args:
            line = await running.until(r"core listening on (\S+)")
            running.core = re.search(r"core listening on ([^\s\"]+)", line).group(1)  # type: ignore[union-attr]
        if "--no-bridge" not in args:
            line = await running.until(r"bridge listening on (\S+)")
            running.bridge = re.search(r"bridge listening on ([^\s\"]+)", line).group(1)  # type: ignore[union-attr]
        yield running
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
        await asyncio.wait_for(reader, TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object with the four fields (asserted)."""
    records = []
    for line in lines:
        data = json.loads(line)
        assert isinstance(data, dict), line
        assert RFC3339_UTC.match(data["time"]), line
        assert data["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        assert isinstance(data["logger"], str), line
        assert isinstance(data["message"], str), line
        records.append(data)
    return records


def events(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == kind]


def by_event(records: list[dict[str, Any]], kind: str, connection_id: str) -> dict[str, Any]:
    (found,) = [r for r in events(records, kind) if r.get("connection_id") == connection_id]
    return found


async def closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_a_serve_process_logs_json_lines_with_events_and_no_token() -> None:
    auth = {"CLEARPATH_CORE_AUTH_SECRET": SECRET, "CLEARPATH_BRIDGE_AUTH_SECRET": SECRET}
    bad = token("mallory") + "x"  # a bad signature
    good = token("alice")
    refresh = token("alice", lifetime=7200)
    at_upgrade = token("bob")
    publisher = token("simulator", publish=["*"])
    secrets = [bad, good, refresh, at_upgrade, publisher]
    assert len(set(secrets)) == len(secrets)

    args = ("--log-format", "json", "--log-level", "DEBUG", "serve")
    async with clearpath(*args, "--grpc-port", "0", "--http-port", "0", env=auth) as running:
        # 1. An auth that fails: closed 4001.
        async with connect(running.ws + "/ws/packages") as ws:
            await send(ws, "auth", token=bad)
            assert await closed_code(ws) == 4001
        # 2. Auth, subscribe, an event, a refresh, unsubscribe, close.
        async with connect(running.ws + "/ws/connect") as ws:
            await send(ws, "auth", token=good)
            assert (await recv_type(ws, "welcome"))["data"]["subject"] == "alice"
            await send(ws, "subscribe", subscription_type="package_updates")
            await recv_type(ws, "subscribed")
            async with grpc.aio.insecure_channel(running.core) as channel:
                stub = sgrpc.RealtimeServiceStub(channel)
                request = spb.PublishRequest(events=[package("traced")])
                published = await asyncio.wait_for(
                    stub.Publish(request, metadata=bearer(publisher)), TIMEOUT
                )
            event = await recv_type(ws, "package_update")
            assert event["id"] == published.results[0].id
            await send(ws, "refresh", token=refresh)
            await recv_type(ws, "refreshed")
            await send(ws, "unsubscribe", subscription_type="package_updates")
            await recv_type(ws, "unsubscribed")
        # 3. A token in the URL (a browser's way).
        async with connect(running.ws + f"/ws/packages?token={at_upgrade}") as ws:
            assert (await recv(ws))["type"] == "welcome"
        await running.until(r'"event": "disconnect".*"user": "bob"')

    text = "".join(running.lines)
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[1] not in text, "a token's claims were logged"
        assert secret.split(".")[2][:-1] not in text, "a token's signature was logged"
    records = parsed(running.lines)

    (listening,) = [r for r in events(records, "listening") if "url" in r]
    assert listening["url"] == running.bridge
    assert any(r["state"] == "connected" and r["core"] for r in events(records, "upstream_state"))

    (failed,) = events(records, "auth_failed")
    assert failed["reason"] == "unauthorized"
    assert failed["remote"] == "127.0.0.1"
    assert failed["code"] == 4001

    connects = events(records, "connect")
    assert [c["endpoint"] for c in connects] == ["/ws/packages", "/ws/connect", "/ws/packages"]
    assert all(c["remote"] == "127.0.0.1" and c["connection_id"] for c in connects)
    alice = connects[1]["connection_id"]
    assert {r["user"] for r in events(records, "authenticated")} == {"alice", "bob"}
    bob = connects[2]["connection_id"]
    (at_connect,) = [r for r in events(records, "subscribe") if r["connection_id"] == bob]
    assert at_connect["topics"] == ["package_updates"]
    assert "user" not in by_event(records, "disconnect", connects[0]["connection_id"])

    (subscribed,) = [r for r in events(records, "subscribe") if r["connection_id"] == alice]
    assert subscribed["topic"] == "package_updates"
    (unsubscribed,) = events(records, "unsubscribe")
    assert unsubscribed == {**unsubscribed, "connection_id": alice, "topic": "package_updates"}

    # At DEBUG the event is traceable to the sockets it was dispatched to.
    (dispatch,) = [r for r in events(records, "dispatch") if r["event_id"] == event["id"]]
    assert dispatch["level"] == "DEBUG"
    assert dispatch["topic"] == "package_updates"
    assert dispatch["offset"] == event["position"]["offset"]
    assert dispatch["sockets"] >= 1
    assert f"dispatch id={event['id']} " in dispatch["message"]

    by_id = {r["connection_id"]: r for r in events(records, "disconnect")}
    assert set(by_id) == {c["connection_id"] for c in connects}
    gone = by_id[alice]
    assert gone["user"] == "alice"
    assert gone["code"] == 1000
    assert gone["endpoint"] == "/ws/connect"
    assert gone["frames_sent"] >= 5  # welcome, subscribed, the event, refreshed, unsubscribed
    assert gone["frames_dropped"] == 0
    assert isinstance(gone["reason"], str)
    assert 0 < gone["duration_s"] < TIMEOUT * 4


async def test_text_is_the_default_and_reads_as_before() -> None:
    env = {logs.FORMAT_ENV: ""}
    async with clearpath("serve", "--grpc-port", "0", "--http-port", "0", env=env) as running:
        await running.until("upstream connected")
    assert running.lines
    assert all(TEXT_LINE.match(line) for line in running.lines), running.lines
    assert any(" INFO clearpath.bridge: bridge listening on http://" in x for x in running.lines)
    assert not any(line.lstrip().startswith("{") for line in running.lines)


async def test_bridge_workers_log_in_the_format_of_their_parent() -> None:
    async with clearpath("serve", "--grpc-port", "0", "--no-bridge") as core:
        args = ("--log-format", "json", "bridge", "--core", core.core, "--http-port", "0")
        async with clearpath(*args, "--workers", "2") as pool:
            await pool.until(r"bridge worker 2/2 .* listening")
            # Each worker has its own upstream: wait for both to say they connected.
            await pool.until(r'"event": "upstream_state", "state": "connected"', count=2)
    records = parsed(pool.lines)
    workers = [r for r in records if re.match(r"bridge worker \d/2 \(pid", r["message"])]
    assert len(workers) == 2
    assert len(events(records, "upstream_state")) >= 2  # one per worker
