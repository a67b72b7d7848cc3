"""The raw grpc.aio ceiling: the least a grpc.aio server can do per message.

``/bench.Raw/Subscribe`` streams one pre-serialized ~190-byte
``SubscribeResponse`` (bytes in, bytes out: no protobuf work at all) in a tight
``yield`` loop for the number of seconds given in the request (at most 120).
``/bench.Raw/Publish`` accepts any request and answers an empty one, the unary
ceiling. Run: ``python -m bench.servers.grpc_raw [--port 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from bench.events import grpc_stream_message

__all__ = ["SERVICE", "create_server", "main"]

SERVICE = "bench.Raw"
_MESSAGE = grpc_stream_message()


async def subscribe(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    try:
        seconds = min(120.0, float(request.decode() or "5"))
    except ValueError:
        seconds = 5.0
    deadline = time.monotonic() + seconds
    msg = _MESSAGE
    sent = 0
    while True:
        yield msg
        sent += 1
        if not sent & 255 and time.monotonic() > deadline:
            return


async def publish(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""


def create_server(host: str, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
            "Publish": grpc.unary_unary_rpc_method_handler(publish),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound


async def _serve(host: str, port: int) -> None:
    server, bound = create_server(host, port)
    await server.start()
    print(f"listening on {host}:{bound}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
