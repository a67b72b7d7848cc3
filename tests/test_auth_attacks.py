"""Forged tokens against both entrances at once: a core and a bridge that accept
RS256 tokens of one key (and HS256 of a secret), with an issuer and an audience.
Each forgery is refused by the core (UNAUTHENTICATED) and the bridge (close 4001);
the genuine token passes both."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.app import BridgeNode
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from core.auth import mint
from core.server import CoreNode
from tests.auth_helpers import SECRET, bearer
from tests.conftest import StartBridge, StartCore
from tests.events import sample
from tests.ws_helpers import TIMEOUT, recv, send, ws_url

pytestmark = pytest.mark.timeout(60)

ISSUER, AUDIENCE = "https://id.clearpath.example", "clearpath-realtime"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """An RSA key pair: private PEM, public PEM, and the public PEM's file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_bytes(public)
    return private, public, path


def settings(public_file: Path) -> dict[str, Any]:
    return {
        "auth_algorithms": "RS256,HS256",
        "auth_public_key": public_file,
        "auth_secret": SECRET,
        "auth_issuer": ISSUER,
        "auth_audience": AUDIENCE,
    }


@pytest.fixture
async def nodes(
    keys: tuple[bytes, bytes, Path], start_core: StartCore, start_bridge: StartBridge
) -> tuple[CoreNode, BridgeNode]:
    private, _, public_file = keys
    core = await start_core(**settings(public_file))
    operator = genuine(private, subject="bridge", operator=True)
    bridge = await start_bridge(core.address, core_token=operator, **settings(public_file))
    return core, bridge


def genuine(private: bytes, **claims: Any) -> str:
    claims = {"subject": "svc", "publish": "*", **claims}
    return mint(key=private, algorithm="RS256", issuer=ISSUER, audience=AUDIENCE, **claims)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "svc", "publish": "*", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, **extra}


def hs256_with(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token signed with ``key``, by hand (PyJWT refuses a PEM as an HMAC key)."""
    signing = f"{_b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{_b64(orjson.dumps(claims))}"
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


def forgeries(private: bytes, public: bytes) -> dict[str, str]:
    """Every way the issue lists of making a token the entrances must refuse."""
    good = genuine(private)
    header, _, signature = good.split(".")
    raised = _b64(orjson.dumps({**_claims(), "operator": True}))
    return {
        "wrong issuer": mint(
            key=private,
            algorithm="RS256",
            subject="svc",
            issuer="https://evil.example",
            audience=AUDIENCE,
        ),
        "wrong audience": mint(
            key=private, algorithm="RS256", subject="svc", issuer=ISSUER, audience="other-app"
        ),
        "no audience": mint(key=private, algorithm="RS256", subject="svc", issuer=ISSUER),
        "alg none": f"{_b64(orjson.dumps({'alg': 'none'}))}.{_b64(orjson.dumps(_claims()))}.",
        "HS/RS confusion": hs256_with(public, _claims()),
        "tampered payload": f"{header}.{raised}.{signature}",
        "expired": mint(
            key=private,
            algorithm="RS256",
            subject="svc",
            issuer=ISSUER,
            audience=AUDIENCE,
            now=time.time() - 3600,
            lifetime=60,
        ),
        "not yet valid": mint(
            key=private,
            algorithm="RS256",
            subject="svc",
            issuer=ISSUER,
            audience=AUDIENCE,
            not_before=time.time() + 3600,
        ),
        "other key": mint(
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            algorithm="RS256",
            subject="svc",
            issuer=ISSUER,
            audience=AUDIENCE,
        ),
        "unsigned HS256 of the secret's neighbour": hs256_with(SECRET.encode() + b"x", _claims()),
    }


async def test_every_forgery_is_refused_by_the_core_and_the_bridge(
    keys: tuple[bytes, bytes, Path], nodes: tuple[CoreNode, BridgeNode]
) -> None:
    private, public, _ = keys
    core, bridge = nodes
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = sgrpc.RealtimeServiceStub(channel)
        request = spb.PublishRequest(events=[sample("system_health", status="down")])
        for name, forged in forgeries(private, public).items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Publish(request, metadata=bearer(forged), timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            async with connect(ws_url(bridge, "/ws/agents")) as ws:
                await send(ws, "auth", token=forged)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        frame = await recv(ws, TIMEOUT)
                        assert frame["type"] == "error", (name, frame)
            assert closed.value.rcvd is not None, name
            assert closed.value.rcvd.code == 4001, (name, closed.value.rcvd)
        # The genuine token passes both; nothing forged was stored.
        reply = await stub.Publish(request, metadata=bearer(genuine(private)), timeout=TIMEOUT)
        assert reply.results[0].position.offset == 1
    async with connect(ws_url(bridge, "/ws/agents")) as ws:
        await send(ws, "auth", token=genuine(private, subject="viewer"))
        welcome = await recv(ws, TIMEOUT)
        assert welcome["type"] == "welcome"
        assert welcome["data"]["subject"] == "viewer"
