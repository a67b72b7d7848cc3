"""``clearpath token``: a token on stdout that the verifier accepts, or exit 2 and one line."""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clearpath.realtime.v1 import events_pb2 as pb
from clients.cli import token as token_command
from clients.cli.token import SECRET_ENV, parse_ttl
from core.auth import Identity, Verifier
from core.topics import TOPICS

SECRET = "correct-horse-battery-staple-0123456789"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def run(*args: str) -> int:
    """``clearpath token ARGS`` on a parser of its own; the exit code."""
    parser = argparse.ArgumentParser(prog="clearpath")
    token_command.register(parser.add_subparsers(dest="command", required=True))
    try:
        namespace = parser.parse_args(["token", *args])
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)
    code: int = namespace.handler(namespace)
    return code


def printed_token(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert run(*args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    return lines[0]


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return result


def hs_verify(token: str, **options: Any) -> Identity:
    return Verifier(algorithms=["HS256"], secret=SECRET, **options).verify(token)


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)


# --- tokens ----------------------------------------------------------------------------


def test_a_token_with_the_flags_claims(capsys: pytest.CaptureFixture[str]) -> None:
    token = printed_token(
        capsys,
        "--subject",
        "alice",
        "--subscribe",
        "package_updates, notifications",
        "--publish",
        "*",
        "--operator",
        "--issuer",
        "https://id.example",
        "--audience",
        "bridge",
        "--secret",
        SECRET,
    )
    identity = hs_verify(token, issuer="https://id.example", audience="bridge")
    assert identity.subject == "alice"
    assert identity.subscribe == frozenset({pb.TOPIC_PACKAGE_UPDATES, pb.TOPIC_NOTIFICATIONS})
    assert identity.publish == frozenset(TOPICS)
    assert identity.operator


def test_defaults_read_everything_publish_nothing_for_an_hour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = time.time()
    token = printed_token(capsys, "--subject", "bob", "--secret", SECRET)
    identity = hs_verify(token)
    assert identity == Identity("bob", None, frozenset(), False, identity.expires_at)
    assert identity.expires_at is not None
    assert before + 3600 - 1 <= identity.expires_at <= time.time() + 3600
    assert "kid" not in json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))


@pytest.mark.parametrize(("ttl", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("45", 45)])
def test_ttl_sets_exp(capsys: pytest.CaptureFixture[str], ttl: str, seconds: int) -> None:
    claims = claims_of(printed_token(capsys, "--subject", "a", "--ttl", ttl, "--secret", SECRET))
    assert claims["exp"] - claims["iat"] == seconds


def test_the_secret_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert hs_verify(printed_token(capsys, "--subject", "env")).subject == "env"


def test_the_secret_flag_wins_over_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "x" * 40)
    assert hs_verify(printed_token(capsys, "--subject", "a", "--secret", SECRET)).subject == "a"


def test_the_secret_comes_from_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    token = printed_token(capsys, "--subject", "f", "--secret-file", str(secret_file))
    assert hs_verify(token).subject == "f"


def pem_files(tmp_path: Path, key: PrivateKey) -> tuple[Path, Path]:
    private, public = tmp_path / "private.pem", tmp_path / "public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())


@pytest.mark.parametrize(
    ("kind", "alg", "flags"),
    [
        ("rsa", "RS256", ()),
        ("rsa", "PS256", ("--alg", "PS256")),
        ("p256", "ES256", ()),
        ("p384", "ES384", ()),
    ],
)
def test_a_private_key_signs_and_picks_the_algorithm(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kind: str,
    alg: str,
    flags: tuple[str, ...],
) -> None:
    private, public = pem_files(tmp_path, new_key(kind))
    token = printed_token(
        capsys, "--subject", "k", "--private-key", str(private), "--kid", "k1", *flags
    )
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))
    assert (header["alg"], header["kid"]) == (alg, "k1")
    assert Verifier(algorithms=[alg], public_key_file=public).verify(token).subject == "k"


# --- errors ------------------------------------------------------------------------------


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The error line of ``clearpath token ARGS``, which must exit 2 and print no token."""
    assert run(*args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1 or "usage:" in err
    return err


def test_no_key_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "--subject", "a")
    assert err.startswith("clearpath: error: no signing key")
    assert SECRET_ENV in err


@pytest.mark.parametrize("ttl", ["0", "-5m", "soon", "1w", "inf", "nan", "", "h"])
def test_a_bad_ttl(capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    err = refused(capsys, "--subject", "a", "--secret", SECRET, f"--ttl={ttl}")
    assert err.startswith(f"clearpath: error: --ttl {ttl!r}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--subscribe", "parcels"), "subscribe: unknown subscription type 'parcels'"),
        (("--publish", "anomalies,nope"), "publish: unknown subscription type 'nope'"),
        (("--alg", "RS256"), "--alg RS256 needs --private-key"),
        (("--subject", ""), "subject must have 1 to 256 characters"),
    ],
)
def test_bad_claims_or_algorithm(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    err = refused(capsys, "--subject", "a", "--secret", SECRET, *args)
    assert err.startswith(f"clearpath: error: {message}")
    assert SECRET not in err


def test_a_short_secret(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "--subject", "a", "--secret", "short")
    assert "HS256 needs at least 32" in err
    assert "short" not in err.replace("shorter", "")


def test_missing_or_unusable_key_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    absent = str(tmp_path / "absent")
    assert "--secret-file" in refused(capsys, "--subject", "a", "--secret-file", absent)
    assert "No such file" in refused(capsys, "--subject", "a", "--private-key", absent)
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    err = refused(capsys, "--subject", "a", "--private-key", str(not_a_key))
    assert "not an unencrypted PEM private key" in err


def test_a_private_key_does_not_sign_hs256(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    private, _ = pem_files(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    err = refused(capsys, "--subject", "a", "--private-key", str(private), "--alg", "HS256")
    assert "not HS256" in err
    err = refused(capsys, "--subject", "a", "--private-key", str(private), "--alg", "RS256")
    assert "cannot sign RS256" in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    refused(capsys)  # no --subject
    refused(capsys, "--subject", "a", "--secret", SECRET, "--private-key", str(tmp_path))
    refused(capsys, "--subject", "a", "--secret", SECRET, "--alg", "none")


def test_parse_ttl() -> None:
    assert parse_ttl("1.5h") == 5400
    assert parse_ttl("7d") == 7 * 86400
    assert parse_ttl(" 10M ") == 600
    with pytest.raises(ValueError, match="positive duration"):
        parse_ttl("-1")
