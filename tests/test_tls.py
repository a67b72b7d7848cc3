"""TLS, mutual TLS and bearer tokens between every gRPC client and a real core.

Certificates are made here with ``cryptography``: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate from the same CA, and a rogue CA
with a client certificate of its own. Cores, bridges and CLIs are real and on
loopback ports; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic import SecretStr, ValidationError

from bridge.config import BridgeSettings
from bridge.upstream import core_credentials
from clearpath.realtime.v1 import service_pb2 as spb
from clearpath.realtime.v1 import service_pb2_grpc as sgrpc
from clients.sdk import AuthenticationError, Client, InvalidArgumentError, UnavailableError
from core.config import CoreSettings
from core.credentials import ClientCredentials, open_channel
from core.limits import channel_options
from core.server import CoreNode
from tests.clients_helpers import FAST, next_item, run_cli
from tests.conftest import StartBridge, StartCore
from tests.waiting import eventually

TIMEOUT = 10.0


# --- certificates ------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: ``ca`` signed ``server`` and ``client``; ``rogue_ca`` signed ``rogue``."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A certificate of ``subject`` for ``key``: a CA when ``issuer`` is None
    (self-signed), else a leaf signed by ``issuer`` (name, key) for ``usage``."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: Any | None = None) -> Path:
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "s", "c", "rca", "rc")}
    ca = _certificate("ClearPath test CA", keys["ca"])
    rogue_ca = _certificate("Rogue CA", keys["rca"])
    signer = ("ClearPath test CA", keys["ca"])
    server = _certificate(
        "core",
        keys["s"],
        signer,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _certificate("bridge", keys["c"], signer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = _certificate(
        "intruder", keys["rc"], ("Rogue CA", keys["rca"]), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Pki(
        ca=_write(folder, "ca", ca),
        server_cert=_write(folder, "server", server, keys["s"]),
        server_key=folder / "server.key",
        client_cert=_write(folder, "client", client, keys["c"]),
        client_key=folder / "client.key",
        rogue_ca=_write(folder, "rogue-ca", rogue_ca),
        rogue_cert=_write(folder, "rogue", rogue, keys["rc"]),
        rogue_key=folder / "rogue.key",
    )


@pytest.fixture
async def tls_core(start_core: StartCore, pki: Pki) -> CoreNode:
    """A core serving TLS only (no client certificate asked)."""
    return await start_core(tls_cert=pki.server_cert, tls_key=pki.server_key)


@pytest.fixture
async def mtls_core(start_core: StartCore, pki: Pki) -> CoreNode:
    """A core requiring a client certificate signed by the test CA."""
    return await start_core(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca)


def update(package_id: str) -> dict[str, object]:
    return {"type": "package_update", "data": {"package_id": package_id, "status": "in_transit"}}


async def _health(address: str, credentials: ClientCredentials | None) -> str:
    """One health check over a fresh channel; the status name, or raises AioRpcError."""
    async with (
        asyncio.timeout(TIMEOUT),
        open_channel(address, credentials, channel_options()) as channel,
    ):
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def _refused(address: str, credentials: ClientCredentials | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _health(address, credentials)
    return caught.value


# --- TLS ---------------------------------------------------------------------------


async def test_sdk_publishes_and_subscribes_over_tls(tls_core: CoreNode, pki: Pki) -> None:
    async with (
        Client(tls_core.address, tls_ca=pki.ca, timeout=5, backoff=FAST) as client,
        client.subscribe("package_updates") as sub,
    ):
        (result,) = await client.publish(update("over-tls"))
        item = await next_item(sub)
        assert await client.health() == "SERVING"
    assert result.position.offset == 1
    assert item.package_update.package_id == "over-tls"  # type: ignore[union-attr]


async def test_localhost_matches_the_certificate_too(tls_core: CoreNode, pki: Pki) -> None:
    address = f"localhost:{tls_core.port}"
    assert await _health(address, ClientCredentials(ca=pki.ca)) == "SERVING"


async def test_plaintext_client_of_a_tls_core_fails_and_the_core_stays_up(
    tls_core: CoreNode, pki: Pki
) -> None:
    error = await _refused(tls_core.address, None)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    async with Client(tls_core.address, timeout=2) as plain:
        with pytest.raises(UnavailableError):
            await plain.publish(update("never"))
    assert await _health(tls_core.address, ClientCredentials(ca=pki.ca)) == "SERVING"


async def test_client_trusting_another_ca_refuses_the_core(tls_core: CoreNode, pki: Pki) -> None:
    error = await _refused(tls_core.address, ClientCredentials(ca=pki.rogue_ca))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert await _health(tls_core.address, ClientCredentials(ca=pki.ca)) == "SERVING"


async def test_without_a_client_ca_no_client_certificate_is_checked(
    tls_core: CoreNode, pki: Pki
) -> None:
    # Without tls_client_ca a client certificate, even a rogue one, is not asked for.
    rogue = ClientCredentials(ca=pki.ca, cert=pki.rogue_cert, key=pki.rogue_key)
    assert await _health(tls_core.address, rogue) == "SERVING"


# --- mutual TLS --------------------------------------------------------------------


async def test_mtls_refuses_a_client_without_a_certificate(mtls_core: CoreNode, pki: Pki) -> None:
    error = await _refused(mtls_core.address, ClientCredentials(ca=pki.ca))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_certificate_of_another_ca(mtls_core: CoreNode, pki: Pki) -> None:
    rogue = ClientCredentials(ca=pki.ca, cert=pki.rogue_cert, key=pki.rogue_key)
    error = await _refused(mtls_core.address, rogue)
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_accepts_a_certificate_of_its_ca(mtls_core: CoreNode, pki: Pki) -> None:
    async with Client(
        mtls_core.address,
        tls_ca=pki.ca,
        tls_cert=pki.client_cert,
        tls_key=pki.client_key,
        timeout=5,
    ) as client:
        (result,) = await client.publish(update("mutual"))
        assert await client.health() == "SERVING"
    assert result.position.offset == 1


# --- the bridge's upstream ---------------------------------------------------------


async def test_bridge_streams_from_an_mtls_core(
    mtls_core: CoreNode, start_bridge: StartBridge, pki: Pki
) -> None:
    bridge = await start_bridge(
        mtls_core.address,
        core_tls_ca=pki.ca,
        core_tls_cert=pki.client_cert,
        core_tls_key=pki.client_key,
    )
    assert bridge.bridge.upstream.state == "connected"
    url = bridge.url.replace("http://", "ws://") + "/ws/packages"
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        assert orjson.loads(await ws.receive_str())["type"] == "welcome"
        async with Client(
            mtls_core.address, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key
        ) as client:
            await client.publish(update("through-the-bridge"))
        while "position" not in (frame := orjson.loads(await ws.receive_str())):
            pass
    assert frame["type"] == "package_update"
    assert frame["data"]["package_id"] == "through-the-bridge"


async def test_bridge_without_the_ca_cannot_connect(
    tls_core: CoreNode, start_bridge: StartBridge
) -> None:
    with pytest.raises(TimeoutError):  # start_bridge waits for the upstream to connect
        await asyncio.wait_for(start_bridge(tls_core.address), 1.5)


# --- the CLI -----------------------------------------------------------------------


async def test_cli_publishes_and_reports_status_over_tls(
    tls_core: CoreNode, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = ("--core", tls_core.address, "--tls-ca", str(pki.ca))
    frame = orjson.dumps(update("from-the-cli")).decode()
    assert await run_cli("publish", *tls, "--json", frame) == 0
    assert orjson.loads(capsys.readouterr().out)["position"]["offset"] == 1
    assert await run_cli("status", *tls, "--bridge", "") == 0
    assert "SERVING" in capsys.readouterr().out
    # The flags also follow an event type (each subparser offers them).
    assert (
        await run_cli(
            "publish", "package_update", *tls, "--package-id", "p2", "--status", "delivered"
        )
        == 0
    )


async def test_cli_without_the_ca_cannot_reach_a_tls_core(
    tls_core: CoreNode, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        await run_cli("status", "--core", tls_core.address, "--bridge", "", "--timeout", "1") == 1
    )
    assert "UNAVAILABLE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--tls-ca", "/nonexistent/ca.pem"), r"--tls-ca: cannot read '/nonexistent/ca\.pem'"),
        (("--tls-cert", "CERT"), "--tls-cert and --tls-key go together"),
        (("--tls-ca", "KEY"), "--tls-ca: '.*client.key' holds no PEM certificate"),
    ],
)
async def test_cli_bad_tls_files_exit_2_naming_them(
    pki: Pki, flags: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"CERT": str(pki.client_cert), "KEY": str(pki.client_key)}
    flags = tuple(files.get(f, f) for f in flags)
    for command in (("status", "--bridge", ""), ("publish", "--json", "{}")):
        assert await run_cli(*command, "--core", "127.0.0.1:1", *flags) == 2
        err = capsys.readouterr().err
        assert re.search(f"^clearpath: error: {says}", err, re.MULTILINE), err
        assert "Traceback" not in err


async def test_cli_serve_refuses_an_unreadable_certificate(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ("--tls-cert", "/nonexistent/core.pem", "--tls-key", str(pki.server_key))
    assert await run_cli("serve", *missing) == 2
    assert "clearpath: tls_cert: " in capsys.readouterr().err
    assert await run_cli("bridge", "--core-tls-ca", "/nonexistent/ca.pem") == 2
    assert "clearpath: core_tls_ca: " in capsys.readouterr().err
    assert await run_cli("serve", "--tls-client-ca", str(pki.ca)) == 2
    assert "tls_client_ca needs tls_cert" in capsys.readouterr().err


# --- the bearer token --------------------------------------------------------------


class _RecordAuthorization(grpc.aio.ServerInterceptor):
    """Records the ``authorization`` metadata of every call (None when absent)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata = dict(details.invocation_metadata or ())
        value = metadata.get("authorization")
        self.seen.append((details.method.rsplit("/", 1)[-1], None if value is None else str(value)))
        return await continuation(details)


class _Refuse(sgrpc.RealtimeServiceServicer):
    """Answers every call UNAUTHENTICATED (not retried by the SDK)."""

    async def Publish(self, request: spb.PublishRequest, context: Any) -> spb.PublishResponse:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "recorded")
        raise AssertionError("unreachable")

    async def Subscribe(self, request: spb.SubscribeRequest, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "recorded")
        yield spb.SubscribeResponse()  # never reached; makes this a stream handler

    async def History(self, request: spb.HistoryRequest, context: Any) -> spb.HistoryResponse:
        raise AssertionError("not called here")


Recorded = tuple[_RecordAuthorization, str, Path | None]


@pytest.fixture(params=["plaintext", "tls"])
async def recorded(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[Recorded]:
    """A server recording the ``authorization`` it gets, plaintext or TLS; yields
    it, its address and the CA to trust (None: plaintext)."""
    recorder = _RecordAuthorization()
    server = grpc.aio.server(interceptors=[recorder])
    sgrpc.add_RealtimeServiceServicer_to_server(_Refuse(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    ca: Path | None = None
    if request.param == "tls":
        key, cert = pki.server_key.read_bytes(), pki.server_cert.read_bytes()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
        ca = pki.ca
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield recorder, f"127.0.0.1:{port}", ca
    await server.stop(0)


async def _every_kind_of_call(client: Client) -> None:
    """A health check (unary, health service), a Publish, a Subscribe (server stream)."""
    await asyncio.wait_for(client.health(), TIMEOUT)
    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(client.publish(update("p")), TIMEOUT)
    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(client.subscribe("anomalies").start(), TIMEOUT)


async def test_a_static_token_goes_with_every_call(
    recorded: Recorded,
) -> None:
    recorder, address, ca = recorded
    async with Client(address, token="static-token", backoff=FAST, tls_ca=ca) as client:
        await _every_kind_of_call(client)
    assert recorder.seen == [
        ("Check", "Bearer static-token"),
        ("Publish", "Bearer static-token"),
        ("Subscribe", "Bearer static-token"),
    ]


async def test_a_token_function_is_asked_again_for_every_call(
    recorded: Recorded,
) -> None:
    recorder, address, ca = recorded
    counter = itertools.count(1)
    async with Client(address, token=lambda: f"rotated-{next(counter)}", tls_ca=ca) as client:
        await _every_kind_of_call(client)
    assert recorder.seen == [
        ("Check", "Bearer rotated-1"),
        ("Publish", "Bearer rotated-2"),
        ("Subscribe", "Bearer rotated-3"),
    ]


async def test_no_token_sends_no_authorization(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, address, ca = recorded
    monkeypatch.delenv("CLEARPATH_TOKEN", raising=False)
    tokens = iter(["", None])
    async with (
        Client(address, tls_ca=ca) as plain,
        Client(address, token=lambda: next(tokens), tls_ca=ca) as empty,
    ):
        await asyncio.wait_for(plain.health(), TIMEOUT)
        await asyncio.wait_for(empty.health(), TIMEOUT)
        await asyncio.wait_for(empty.health(), TIMEOUT)
    assert recorder.seen == [("Check", None)] * 3


async def test_the_token_comes_from_the_environment_and_replaces_call_metadata(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, address, ca = recorded
    monkeypatch.setenv("CLEARPATH_TOKEN", "from-env")
    assert ClientCredentials.from_env().token == "from-env"
    credentials = ClientCredentials(token=ClientCredentials.from_env().token, ca=ca)
    async with open_channel(address, credentials, channel_options()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await asyncio.wait_for(
            stub.Check(health_pb2.HealthCheckRequest(), metadata=(("authorization", "old"),)),
            TIMEOUT,
        )
    assert recorder.seen == [("Check", "Bearer from-env")]


async def test_the_bridge_upstream_sends_its_core_token(
    recorded: Recorded,
    start_bridge: StartBridge,
) -> None:
    recorder, address, ca = recorded
    # The recorder refuses the stream, so the bridge never connects: do not wait for it.
    starting = asyncio.ensure_future(
        start_bridge(address, core_token="bridge-secret", core_tls_ca=ca)
    )

    async def subscribes() -> list[str | None]:
        return [token for method, token in recorder.seen if method == "Subscribe"]

    try:
        seen = await eventually(subscribes, within=TIMEOUT)
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    assert seen[0] == "Bearer bridge-secret"


# --- settings and credentials ------------------------------------------------------


def _core(**values: Any) -> CoreSettings:
    return CoreSettings(**values)


def _bridge(**values: Any) -> BridgeSettings:
    return BridgeSettings(**values)


def test_core_settings_check_the_tls_files(pki: Pki) -> None:
    settings = _core(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca)
    files = settings.tls_files()
    assert files is not None
    assert files[2] == pki.ca.read_bytes()
    assert _core().tls_files() is None
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        _core(tls_cert=pki.server_cert)
    with pytest.raises(ValidationError, match="tls_client_ca needs tls_cert"):
        _core(tls_client_ca=pki.ca)
    with pytest.raises(ValidationError, match=r"tls_key\n.*cannot read '/nonexistent/k.pem'"):
        _core(tls_cert=pki.server_cert, tls_key="/nonexistent/k.pem")
    with pytest.raises(ValidationError, match=r"tls_cert\n.*holds no PEM certificate"):
        _core(tls_cert=pki.server_key, tls_key=pki.server_key)
    with pytest.raises(ValidationError, match="max_streams_per_connection"):
        _core(max_streams_per_connection=0)


def test_core_settings_come_from_the_environment(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARPATH_CORE_TLS_CERT", str(pki.server_cert))
    monkeypatch.setenv("CLEARPATH_CORE_TLS_KEY", str(pki.server_key))
    monkeypatch.setenv("CLEARPATH_CORE_MAX_STREAMS_PER_CONNECTION", "7")
    settings = _core()
    assert settings.tls_cert == pki.server_cert
    assert settings.max_streams_per_connection == 7


def test_bridge_settings_carry_the_upstream_credentials(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARPATH_BRIDGE_CORE_TOKEN", "s3cret")
    monkeypatch.setenv("CLEARPATH_BRIDGE_CORE_TLS_CA", str(pki.ca))
    settings = _bridge()
    assert settings.core_token == SecretStr("s3cret")
    assert "s3cret" not in repr(settings)
    # The worker pool hands settings over as JSON: the token must survive it.
    assert BridgeSettings.model_validate_json(settings.model_dump_json()) == settings
    credentials = core_credentials(settings)
    assert credentials == ClientCredentials(token="s3cret", ca=pki.ca)
    assert credentials.tls
    with pytest.raises(ValidationError, match="core_tls_cert and core_tls_key go together"):
        _bridge(core_tls_cert=pki.client_cert)
    with pytest.raises(ValidationError, match=r"core_tls_key\n.*cannot read"):
        _bridge(core_tls_cert=pki.client_cert, core_tls_key="/nonexistent")


def test_client_credentials_rules(pki: Pki) -> None:
    assert not ClientCredentials(token="t").tls
    assert ClientCredentials(ca=pki.ca).tls
    assert ClientCredentials(cert=pki.client_cert, key=pki.client_key).tls
    with pytest.raises(ValueError, match="give both or neither"):
        ClientCredentials(cert=pki.client_cert)
    assert ClientCredentials(token=" padded\n").metadata() == (("authorization", "Bearer padded"),)
    assert ClientCredentials(token="").metadata() == ()
    with pytest.raises(ValueError, match="CA certificate: cannot read"):
        ClientCredentials(ca=Path("/nonexistent")).channel_credentials()


async def test_sdk_refuses_an_unreadable_file_at_construction(pki: Pki) -> None:
    with pytest.raises(InvalidArgumentError, match=r"cannot read '/nonexistent/ca\.pem'"):
        Client("127.0.0.1:1", tls_ca="/nonexistent/ca.pem")
    with pytest.raises(InvalidArgumentError, match="give both or neither"):
        Client("127.0.0.1:1", tls_ca=pki.ca, tls_cert=pki.client_cert)
