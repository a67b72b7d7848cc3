"""The baseline targets: servers shipped in ``bench/servers`` and run from this venv."""

from __future__ import annotations

import re
import sys

from bench.loadgen.publisher import PublishSpec
from bench.targets.base import Endpoint, GrpcStreamSpec, Target, WsSpec

__all__ = ["AiohttpEncodeOnceTarget", "GrpcRawTarget", "NaiveTarget"]

_LISTEN = re.compile(r"listening on ([\d.]+):(\d+)")


class _ModuleTarget(Target):
    module: str

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", "0"]

    def on_line(self, line: str) -> Endpoint | None:
        m = _LISTEN.search(line)
        if m is None:
            return None
        return self.endpoint(m.group(1), int(m.group(2)))

    def endpoint(self, host: str, port: int) -> Endpoint:
        return Endpoint(
            0,
            ws=WsSpec(host, port, "/ws/packages"),
            ws_publish=PublishSpec("http", host, port, "/publish"),
        )


class NaiveTarget(_ModuleTarget):
    name = "naive"
    description = "FastAPI + uvicorn; POST /publish loops `await ws.send_json(event)`"
    module = "bench.servers.naive_fastapi"
    workloads = frozenset({"W1", "W2", "W3"})


class AiohttpEncodeOnceTarget(_ModuleTarget):
    name = "aiohttp-encode-once"
    description = "aiohttp; POST /publish encodes once, loops `await ws.send_frame(bytes)`"
    module = "bench.servers.aiohttp_encode_once"
    workloads = frozenset({"W1", "W2", "W3"})


class GrpcRawTarget(_ModuleTarget):
    name = "grpc-raw"
    description = "minimal grpc.aio: pre-serialized 190-byte messages in a tight yield loop"
    module = "bench.servers.grpc_raw"
    workloads = frozenset({"G1", "G2"})

    def endpoint(self, host: str, port: int) -> Endpoint:
        return Endpoint(
            0,
            grpc_publish=PublishSpec("grpc", host, port, "/bench.Raw/Publish"),
            grpc_stream=GrpcStreamSpec(host, port, "/bench.Raw/Subscribe", "raw"),
        )
