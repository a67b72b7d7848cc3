"""core.auth: tokens in, identities or Unauthenticated out; every refusal by its reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from clearpath.realtime.v1 import events_pb2 as pb
from core.auth import (
    ANONYMOUS,
    MAX_TOKEN_BYTES,
    AuthFields,
    Identity,
    Verifier,
    mint,
    parse_algorithms,
    parse_bearer,
)
from core.errors import Unauthenticated
from core.topics import TOPICS

SECRET = "correct-horse-battery-staple-0123456789"  # 39 bytes
OTHER_SECRET = "another-secret-that-is-long-enough-too!"
T0 = 1_700_000_000.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- helpers ------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def unb64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A token signed with HMAC-SHA256 under any key, which PyJWT would refuse to use."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def valid_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "iat": int(T0), "exp": int(T0) + 3600, **extra}


def signed(claims: dict[str, Any], key: str = SECRET) -> str:
    """An HS256 token of exactly ``claims``."""
    return jwt.encode(claims, key, algorithm="HS256")


def hs_verifier(**options: Any) -> Verifier:
    options.setdefault("clock", Clock())
    return Verifier(algorithms=["HS256"], secret=SECRET, **options)


def refused(verifier: Verifier, token: str) -> str:
    """The message of the Unauthenticated that ``token`` gets, checked not to leak it."""
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    message = str(info.value)
    assert message
    if token and len(token) > 8:
        assert token not in message
        for segment in token.split("."):
            if len(segment) > 8:
                assert segment not in message
    return message


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk(key: PrivateKey, kid: str | None, **extra: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**data, **({"kid": kid} if kid else {}), **extra}


def write_jwks(path: Path, *keys: dict[str, Any]) -> None:
    """Rewrite the JWKS file and move its mtime on, as a deploy would."""
    path.write_text(json.dumps({"keys": list(keys)}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


# --- keys (generated once per module: RSA generation is slow) -----------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def rsa_pem_file(keys_dir: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = keys_dir / "rsa.pub.pem"
    path.write_bytes(public_pem(rsa_key))
    return path


@pytest.fixture(scope="module")
def ec_pem_file(keys_dir: Path, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = keys_dir / "ec.pub.pem"
    path.write_bytes(public_pem(ec_key))
    return path


# --- identities -----------------------------------------------------------------------


def test_a_token_with_only_sub_reads_everything_and_publishes_nothing() -> None:
    identity = hs_verifier().verify(mint(subject="alice", key=SECRET, now=T0))
    assert identity == Identity("alice", None, frozenset(), False, T0 + 3600)
    assert all(identity.may_subscribe(t) for t in TOPICS)
    assert not any(identity.may_publish(t) for t in TOPICS)


def test_the_claims_become_the_identity() -> None:
    token = mint(
        subject="ops-1",
        key=SECRET,
        subscribe=["notifications", "TOPIC_ANOMALIES"],
        publish="*",
        operator=True,
        lifetime=600,
        now=T0,
    )
    identity = hs_verifier().verify(token)
    assert identity.subject == "ops-1"
    assert identity.subscribe == frozenset({pb.TOPIC_NOTIFICATIONS, pb.TOPIC_ANOMALIES})
    assert identity.may_subscribe(pb.TOPIC_ANOMALIES)
    assert not identity.may_subscribe(pb.TOPIC_MAP_UPDATES)
    assert identity.publish == frozenset(TOPICS)
    assert identity.operator is True
    assert identity.expires_at == T0 + 600


def test_an_empty_list_allows_nothing_and_a_star_inside_a_list_everything() -> None:
    verifier = hs_verifier()
    nothing = verifier.verify(signed(valid_claims(subscribe=[], publish=[])))
    assert not any(nothing.may_subscribe(t) or nothing.may_publish(t) for t in TOPICS)
    star = verifier.verify(signed(valid_claims(subscribe=["map_updates", "*"], publish=["*"])))
    assert star.subscribe == frozenset(TOPICS)
    assert star.publish == frozenset(TOPICS)


def test_publish_names_only_the_topics_named() -> None:
    identity = hs_verifier().verify(signed(valid_claims(publish=["package_updates"])))
    assert identity.may_publish(pb.TOPIC_PACKAGE_UPDATES)
    assert not identity.may_publish(pb.TOPIC_NOTIFICATIONS)


def test_anonymous_may_do_everything() -> None:
    assert ANONYMOUS.operator
    assert ANONYMOUS.expires_at is None
    assert all(ANONYMOUS.may_subscribe(t) and ANONYMOUS.may_publish(t) for t in TOPICS)


def test_same_subject_compares_users_only() -> None:
    alice = Identity("alice", None, frozenset(), False, 1.0)
    alice_again = Identity("alice", frozenset({1}), frozenset({2}), True, 2.0)
    bob = Identity("bob", None, frozenset(), False, 1.0)
    assert alice.same_subject(alice_again)
    assert alice.same_subject("alice")
    assert not alice.same_subject(bob)
    assert not alice.same_subject("Alice")


def test_identities_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ANONYMOUS.operator = False  # type: ignore[misc]


# --- time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds_past_leeway", "passes"), [(-1, True), (0, True), (1, False), (3600, False)]
)
def test_exp_passes_up_to_exactly_leeway_seconds_ago(
    seconds_past_leeway: int, passes: bool
) -> None:
    # exp = T0 - 30 - seconds_past_leeway; the clock reads T0; leeway 30.
    token = mint(subject="a", key=SECRET, lifetime=60, now=T0 - 90 - seconds_past_leeway)
    verifier = hs_verifier(leeway=30)
    if passes:
        assert verifier.verify(token).expires_at == T0 - 30 - seconds_past_leeway
    else:
        assert refused(verifier, token) == "token expired"


def test_without_leeway_a_token_expires_at_exp() -> None:
    token = mint(subject="a", key=SECRET, lifetime=60, now=T0 - 61)
    assert refused(hs_verifier(leeway=0), token) == "token expired"
    assert hs_verifier(leeway=0).verify(mint(subject="a", key=SECRET, lifetime=60, now=T0))


@pytest.mark.parametrize(("nbf_ahead", "passes"), [(0, True), (30, True), (31, False)])
def test_nbf_passes_up_to_leeway_seconds_ahead(nbf_ahead: int, passes: bool) -> None:
    token = mint(subject="a", key=SECRET, now=T0, not_before=T0 + nbf_ahead)
    verifier = hs_verifier(leeway=30)
    if passes:
        assert verifier.verify(token).subject == "a"
    else:
        assert refused(verifier, token) == "token not yet valid"


def test_the_clock_moving_on_expires_a_token() -> None:
    clock = Clock()
    verifier = hs_verifier(clock=clock, leeway=0)
    token = mint(subject="a", key=SECRET, lifetime=10, now=T0)
    assert verifier.verify(token).subject == "a"
    clock.now += 11
    assert refused(verifier, token) == "token expired"


def test_exp_is_required() -> None:
    claims = valid_claims()
    del claims["exp"]
    assert refused(hs_verifier(), signed(claims)) == "token has no 'exp' claim"


@pytest.mark.parametrize("bad", ["4102444800", True, None, float("nan"), float("inf"), [1]])
def test_exp_and_nbf_must_be_numbers(bad: Any) -> None:
    assert refused(hs_verifier(), signed(valid_claims(exp=bad))) == "claim 'exp' must be a number"
    assert refused(hs_verifier(), signed(valid_claims(nbf=bad))) == "claim 'nbf' must be a number"


def test_a_fractional_exp_is_a_number() -> None:
    assert hs_verifier().verify(signed(valid_claims(exp=T0 + 0.5))).expires_at == T0 + 0.5


# --- issuer and audience ----------------------------------------------------------------


def test_the_issuer_must_match_when_configured() -> None:
    verifier = hs_verifier(issuer="https://id.clearpath.example")
    good = mint(subject="a", key=SECRET, issuer="https://id.clearpath.example", now=T0)
    assert verifier.verify(good).subject == "a"
    wrong = mint(subject="a", key=SECRET, issuer="https://evil.example", now=T0)
    assert refused(verifier, wrong) == "wrong issuer"
    assert refused(verifier, mint(subject="a", key=SECRET, now=T0)) == "wrong issuer"
    as_list = valid_claims(iss=["https://id.clearpath.example"])
    assert refused(verifier, hs256_by_hand({"alg": "HS256"}, as_list, SECRET.encode())) == (
        "wrong issuer"
    )


def test_an_unconfigured_issuer_is_not_checked() -> None:
    assert hs_verifier().verify(mint(subject="a", key=SECRET, issuer="anyone", now=T0))


def test_the_audience_must_match_when_configured() -> None:
    verifier = hs_verifier(audience="bridge")
    assert verifier.verify(mint(subject="a", key=SECRET, audience="bridge", now=T0))
    assert verifier.verify(signed(valid_claims(aud=["core", "bridge"])))
    assert refused(verifier, mint(subject="a", key=SECRET, audience="core", now=T0)) == (
        "wrong audience"
    )
    assert refused(verifier, signed(valid_claims(aud=["core"]))) == "wrong audience"
    assert refused(verifier, signed(valid_claims(aud=5))) == "wrong audience"
    assert refused(verifier, mint(subject="a", key=SECRET, now=T0)) == "wrong audience"


def test_a_token_for_an_audience_is_refused_by_a_verifier_without_one() -> None:
    token = mint(subject="a", key=SECRET, audience="someone-else", now=T0)
    assert refused(hs_verifier(), token) == "wrong audience"


# --- signatures and algorithms ------------------------------------------------------------


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = mint(subject="a", key=OTHER_SECRET, now=T0)
    assert refused(hs_verifier(), token) == "bad signature"


@pytest.mark.parametrize(
    "change", [{"sub": "mallory"}, {"operator": True}, {"publish": "*"}, {"exp": int(T0) + 99999}]
)
def test_a_tampered_payload_is_refused(change: dict[str, Any]) -> None:
    token = mint(subject="alice", key=SECRET, now=T0)
    header, payload, signature = token.split(".")
    forged = f"{header}.{b64json({**unb64json(payload), **change})}.{signature}"
    assert refused(hs_verifier(), forged) == "bad signature"


def test_a_tampered_header_is_refused() -> None:
    token = mint(subject="alice", key=SECRET, now=T0)
    _, payload, signature = token.split(".")
    forged = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'x'})}.{payload}.{signature}"
    assert refused(hs_verifier(), forged) == "bad signature"


@pytest.mark.parametrize(
    "header",
    [{"alg": "none"}, {"alg": "None"}, {"alg": "NONE"}, {"alg": "none", "typ": "JWT"}],
)
def test_alg_none_is_always_refused(header: dict[str, str]) -> None:
    token = f"{b64json(header)}.{b64json(valid_claims(operator=True))}."
    assert refused(hs_verifier(), token) == f"algorithm {header['alg']!r} not accepted"


def test_alg_none_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'none'"):
        Verifier(algorithms=["none"])
    with pytest.raises(ValueError, match="unknown algorithm"):
        Verifier(algorithms=["HS256", "none"], secret=SECRET)


def test_an_algorithm_not_configured_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = mint(subject="a", key=private_pem(rsa_key), algorithm="RS256", now=T0)
    assert refused(hs_verifier(), token) == "algorithm 'RS256' not accepted"
    hs384 = jwt.encode(valid_claims(), SECRET + "x" * 10, algorithm="HS384")
    assert refused(hs_verifier(), hs384) == "algorithm 'HS384' not accepted"


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The HS/RS confusion: the public key PEM used as an HMAC secret."""
    token = hs256_by_hand(
        {"alg": "HS256", "typ": "JWT"}, valid_claims(operator=True), public_pem(rsa_key)
    )
    both = Verifier(
        algorithms=["HS256", "RS256"], secret=SECRET, public_key_file=rsa_pem_file, clock=Clock()
    )
    assert refused(both, token) == "bad signature"
    rs_only = Verifier(algorithms=["RS256"], public_key_file=rsa_pem_file, clock=Clock())
    assert refused(rs_only, token) == "algorithm 'HS256' not accepted"
    # The same forgery with the secret as key passes: the check above is not vacuous.
    genuine = hs256_by_hand({"alg": "HS256"}, valid_claims(operator=True), SECRET.encode())
    assert both.verify(genuine).operator


def test_rs256_with_a_pem_public_key(rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = Verifier(algorithms=["RS256", "PS256"], public_key_file=rsa_pem_file, clock=Clock())
    for alg in ("RS256", "PS256"):
        token = mint(subject="r", key=private_pem(rsa_key), algorithm=alg, now=T0)
        assert verifier.verify(token).subject == "r"


def test_rs256_signed_by_another_key_is_refused(
    rsa_pem_file: Path, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = Verifier(algorithms=["RS256"], public_key_file=rsa_pem_file, clock=Clock())
    token = mint(subject="r", key=private_pem(other_rsa_key), algorithm="RS256", now=T0)
    assert refused(verifier, token) == "bad signature"


def test_es256_with_a_pem_public_key(ec_pem_file: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = Verifier(algorithms=["ES256", "ES384"], public_key_file=ec_pem_file, clock=Clock())
    assert verifier.verify(mint(subject="e", key=private_pem(ec_key), algorithm="ES256", now=T0))
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = mint(subject="e", key=private_pem(p384), algorithm="ES384", now=T0)
    assert refused(verifier, token) == "no key for algorithm ES384"


def test_a_key_of_the_wrong_family_is_not_used(
    rsa_pem_file: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = Verifier(algorithms=["RS256", "ES256"], public_key_file=rsa_pem_file, clock=Clock())
    token = mint(subject="e", key=private_pem(ec_key), algorithm="ES256", now=T0)
    assert refused(verifier, token) == "no key for algorithm ES256"


# --- malformed tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", None])
def test_a_missing_token(token: str | None) -> None:
    assert refused(hs_verifier(), token) == "missing token"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c",
        "..",
        "...",
        "a.b.c.d",
        "eyJ.eyJ.sig",
        "Bearer x.y.z",
        "é.é.é",
        "\x00.\x00.\x00",
        f"{b64json([1])}.{b64json({})}.",
        f"{b64json('HS256')}.{b64json({})}.",
        f"{b64json({'alg': 256})}.{b64json({})}.",
        f"{b64json({'alg': 'HS256', 'kid': 7})}.{b64json({})}.",
        f"{b64(b'{not json')}.{b64json({})}.",
        f"{b64(b'[' * 5000)}.{b64json({})}.",
        f"{b64json({'alg': 'HS256', 'crit': ['exp']})}.{b64json(valid_claims())}.AAAA",
        f"{b64json({'alg': 'HS256'})}.{b64json(valid_claims())}.!!!!",
    ],
)
def test_garbage_is_a_malformed_token(token: str) -> None:
    assert refused(hs_verifier(), token) == "malformed token"


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"alice"', b"not json", b"\xff\xfe", b"1" * 5000])
def test_a_well_signed_payload_that_is_not_an_object_is_malformed(payload: bytes) -> None:
    signing_input = f"{b64json({'alg': 'HS256'})}.{b64(payload)}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert refused(hs_verifier(), f"{signing_input}.{b64(signature)}") == "malformed token"


def test_tokens_longer_than_the_cap_are_refused() -> None:
    verifier = hs_verifier()
    tokens = (
        signed(valid_claims(pad="x" * n)) for n in range(MAX_TOKEN_BYTES * 3 // 4 - 200, 10**5)
    )
    below = longest = ""
    for token in tokens:
        if len(token) > MAX_TOKEN_BYTES:
            longest = token
            break
        below = token
    assert MAX_TOKEN_BYTES - 4 <= len(below) <= MAX_TOKEN_BYTES < len(longest)
    assert verifier.verify(below).subject == "alice"
    assert refused(verifier, longest) == "token too long"
    assert refused(verifier, "A" * 10**6) == "token too long"


# --- identity claims -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"subscribe": ["parcels"]}, "claim 'subscribe': unknown subscription type 'parcels'"),
        ({"subscribe": ["notifications", "x"]}, "claim 'subscribe': unknown subscription type"),
        ({"publish": ["nope"]}, "claim 'publish': unknown subscription type 'nope'"),
        ({"subscribe": "notifications"}, "claim 'subscribe' must be a list"),
        ({"subscribe": None}, "claim 'subscribe' must be a list"),
        ({"subscribe": [1]}, "claim 'subscribe' must be a list"),
        ({"publish": {"anomalies": True}}, "claim 'publish' must be a list"),
        ({"publish": None}, "claim 'publish' must be a list"),
        ({"operator": "yes"}, "claim 'operator' must be true or false"),
        ({"operator": 1}, "claim 'operator' must be true or false"),
        ({"sub": ""}, "claim 'sub' must be a non-empty string"),
        ({"sub": "x" * 257}, "claim 'sub' must be a non-empty string"),
        ({"sub": 42}, "claim 'sub' must be a non-empty string"),
        ({"sub": None}, "token has no 'sub' claim"),
    ],
)
def test_bad_identity_claims_are_refused_naming_the_claim(
    claims: dict[str, Any], message: str
) -> None:
    assert refused(hs_verifier(), signed(valid_claims(**claims))).startswith(message)


def test_a_missing_sub_is_refused() -> None:
    claims = valid_claims()
    del claims["sub"]
    assert refused(hs_verifier(), signed(claims)) == "token has no 'sub' claim"


def test_a_subject_of_256_characters_passes() -> None:
    assert hs_verifier().verify(mint(subject="x" * 256, key=SECRET, now=T0)).subject == "x" * 256


# --- JWKS -------------------------------------------------------------------------------------


def jwks_verifier(path: Path, clock: Clock | None = None, **options: Any) -> Verifier:
    algorithms = options.pop("algorithms", ["RS256", "ES256"])
    return Verifier(algorithms=algorithms, jwks_file=path, clock=clock or Clock(), **options)


def test_a_jwks_of_two_keys_picks_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_key, "r1"), jwk(ec_key, "e1"))
    verifier = jwks_verifier(path)
    rsa_token = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", kid="r1", now=T0)
    ec_token = mint(subject="e", key=private_pem(ec_key), algorithm="ES256", kid="e1", now=T0)
    assert verifier.verify(rsa_token).subject == "r"
    assert verifier.verify(ec_token).subject == "e"
    swapped = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", kid="e1", now=T0)
    assert refused(verifier, swapped) == "no key for algorithm RS256"
    unknown = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", kid="zz", now=T0)
    assert refused(verifier, unknown) == "unknown key id"
    no_kid = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", now=T0)
    assert refused(verifier, no_kid) == "token has no key id ('kid')"


def test_a_jwks_of_one_key_serves_tokens_without_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_key, None))
    token = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", now=T0)
    assert jwks_verifier(path).verify(token).subject == "r"


def test_a_jwk_with_an_alg_serves_only_that_algorithm(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_key, "r1", alg="PS256"))
    verifier = jwks_verifier(path, algorithms=["RS256", "PS256"])
    ps = mint(subject="r", key=private_pem(rsa_key), algorithm="PS256", kid="r1", now=T0)
    assert verifier.verify(ps).subject == "r"
    rs = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", kid="r1", now=T0)
    assert refused(verifier, rs) == "no key for algorithm RS256"


def test_symmetric_and_encryption_keys_of_a_jwks_are_skipped(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    oct_key = {"kty": "oct", "kid": "h", "k": b64(SECRET.encode())}
    write_jwks(path, oct_key, jwk(other_rsa_key, "enc", use="enc"), jwk(rsa_key, "r1"))
    verifier = jwks_verifier(path, algorithms=["RS256"])
    for kid in ("h", "enc"):
        token = mint(subject="x", key=private_pem(other_rsa_key), algorithm="RS256", kid=kid)
        assert refused(verifier, token) == "unknown key id"
    forged = hs256_by_hand({"alg": "HS256", "kid": "h"}, valid_claims(), SECRET.encode())
    assert refused(verifier, forged) == "algorithm 'HS256' not accepted"


def test_the_pem_key_serves_kids_the_jwks_does_not_know(
    tmp_path: Path,
    rsa_pem_file: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(ec_key, "e1"))
    verifier = jwks_verifier(path, public_key_file=rsa_pem_file)
    for kid in (None, "legacy"):
        token = mint(subject="r", key=private_pem(rsa_key), algorithm="RS256", kid=kid, now=T0)
        assert verifier.verify(token).subject == "r"
    ec_token = mint(subject="e", key=private_pem(ec_key), algorithm="ES256", kid="e1", now=T0)
    assert verifier.verify(ec_token).subject == "e"


def test_a_rewritten_jwks_is_picked_up_after_the_reload_interval(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_key, "k1"))
    clock = Clock()
    verifier = jwks_verifier(path, clock)
    old = mint(subject="o", key=private_pem(rsa_key), algorithm="RS256", kid="k1", now=T0)
    new = mint(subject="n", key=private_pem(other_rsa_key), algorithm="RS256", kid="k2", now=T0)
    assert verifier.verify(old).subject == "o"
    assert refused(verifier, new) == "unknown key id"

    write_jwks(path, jwk(other_rsa_key, "k2"))
    clock.now += 0.5
    assert verifier.verify(old).subject == "o"  # not looked at again yet
    clock.now += 0.5
    assert verifier.verify(new).subject == "n"
    assert refused(verifier, old) == "unknown key id"


def test_a_jwks_that_stops_parsing_keeps_the_previous_keys(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(rsa_key, "k1"))
    clock = Clock()
    verifier = jwks_verifier(path, clock)
    token = mint(subject="o", key=private_pem(rsa_key), algorithm="RS256", kid="k1", now=T0)

    path.write_text('{"keys": [')
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10_000_000_000))
    for _ in range(3):
        clock.now += 2
        with caplog.at_level(logging.WARNING, logger="core.auth"):
            assert verifier.verify(token).subject == "o"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per change, not once per look
    assert str(path) in warnings[0].getMessage()
    assert "keeping the previous keys" in warnings[0].getMessage()

    path.unlink()
    clock.now += 2
    with caplog.at_level(logging.WARNING, logger="core.auth"):
        assert verifier.verify(token).subject == "o"
    assert "No such file" in caplog.records[-1].getMessage()


def test_a_pem_file_is_reloaded_too(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(public_pem(rsa_key))
    clock = Clock()
    verifier = Verifier(algorithms=["RS256"], public_key_file=path, clock=clock)
    token = mint(subject="n", key=private_pem(other_rsa_key), algorithm="RS256", now=T0)
    assert refused(verifier, token) == "bad signature"
    path.write_bytes(public_pem(other_rsa_key))
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10_000_000_000))
    clock.now += 1
    assert verifier.verify(token).subject == "n"


# --- configuration -----------------------------------------------------------------------------


def test_impossible_configurations_raise_value_error(
    tmp_path: Path, rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(private_pem(rsa_key))
    weak = tmp_path / "weak.pem"
    weak.write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    no_keys = tmp_path / "jwks.json"
    no_keys.write_text(json.dumps({"keys": [{"kty": "oct", "k": "AAAA"}]}))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"algorithms": []}, "no algorithm"),
        ({"algorithms": ["HS1"]}, "unknown algorithm 'HS1'"),
        ({"algorithms": ["HS256"]}, "HS256 is accepted but no secret"),
        ({"algorithms": ["HS256"], "secret": "x" * 31}, "31 bytes; HS256 needs at least 32"),
        ({"algorithms": ["HS256", "HS512"], "secret": "x" * 40}, "HS512 needs at least 64"),
        ({"algorithms": ["HS256"], "secret": public_pem(rsa_key).decode()}, "looks like a PEM"),
        ({"algorithms": ["RS256"]}, "RS256 is accepted but no public key"),
        ({"algorithms": ["HS256", "ES256"], "secret": SECRET}, "ES256 is accepted but no public"),
        ({"algorithms": ["HS256"], "secret": SECRET, "public_key_file": rsa_pem_file}, "no RS"),
        ({"algorithms": ["RS256"], "secret": SECRET, "public_key_file": rsa_pem_file}, "no HS"),
        ({"algorithms": ["RS256"], "public_key_file": tmp_path / "absent"}, "No such file"),
        ({"algorithms": ["RS256"], "public_key_file": private}, "not a PEM public key"),
        ({"algorithms": ["RS256"], "public_key_file": weak}, "1024 bits"),
        ({"algorithms": ["RS256"], "jwks_file": no_keys}, "no usable RSA or EC"),
        ({"algorithms": ["RS256"], "jwks_file": rsa_pem_file}, "not JSON"),
        ({"algorithms": ["HS256"], "secret": SECRET, "issuer": ""}, "issuer must not be empty"),
        ({"algorithms": ["HS256"], "secret": SECRET, "audience": ""}, "audience must not be"),
        ({"algorithms": ["HS256"], "secret": SECRET, "leeway": -1}, "leeway"),
        ({"algorithms": ["HS256"], "secret": SECRET, "leeway": float("inf")}, "leeway"),
        ({"algorithms": ["HS256"], "secret": SECRET, "leeway": float("nan")}, "leeway"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            Verifier(**options)


def test_a_secret_of_exactly_the_hash_size_is_enough() -> None:
    assert Verifier(algorithms=["HS256"], secret="x" * 32).algorithms == ("HS256",)


def test_parse_algorithms_normalizes_and_dedupes() -> None:
    assert parse_algorithms(" hs256, RS256 ,,HS256") == ("HS256", "RS256")
    assert parse_algorithms(["es256"]) == ("ES256",)
    with pytest.raises(ValueError, match="no algorithm"):
        parse_algorithms(" , ")


# --- bearer header ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  x.y.z ", "x.y.z"), ("BEARER t", "t")],
)
def test_parse_bearer_takes_the_token(value: str, token: str) -> None:
    assert parse_bearer(value) == token


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("   ", "missing token"),
        ("Bearer", "expected 'Bearer <token>'"),
        ("Bearer   ", "expected 'Bearer <token>'"),
        ("Basic dXNlcjpwYXNz", "expected 'Bearer <token>'"),
        ("abc.def.ghi", "expected 'Bearer <token>'"),
        ("Bearer a b", "expected 'Bearer <token>'"),
    ],
)
def test_parse_bearer_refuses_other_shapes(value: str | None, message: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        parse_bearer(value)
    assert str(info.value) == message


# --- mint --------------------------------------------------------------------------------------


def test_mint_normalizes_names_and_sets_the_header() -> None:
    token = mint(
        subject="a",
        key=SECRET,
        subscribe=["TOPIC_ANOMALIES", "anomalies", " Notifications "],
        publish=[],
        kid="k7",
        now=T0,
        lifetime=90,
    )
    header, payload, _ = token.split(".")
    assert unb64json(header)["kid"] == "k7"
    claims = unb64json(payload)
    assert claims["subscribe"] == ["anomalies", "notifications"]
    assert claims["publish"] == []
    assert "operator" not in claims
    assert (claims["iat"], claims["exp"]) == (int(T0), int(T0) + 90)
    assert unb64json(mint(subject="a", key=SECRET, subscribe="*").split(".")[1])["subscribe"] == "*"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "short"}, "HS256 needs at least 32"),
        ({"key": b"x" * 40, "algorithm": "HS512"}, "HS512 needs at least 64"),
        ({"subscribe": ["parcels"]}, "subscribe: unknown subscription type 'parcels'"),
        ({"publish": ["nope"]}, "publish: unknown subscription type 'nope'"),
        ({"lifetime": 0}, "lifetime"),
        ({"lifetime": float("nan")}, "lifetime"),
        ({"subject": ""}, "subject"),
        ({"algorithm": "none"}, "unknown algorithm"),
        ({"algorithm": "RS256"}, "cannot sign RS256"),
    ],
)
def test_mint_refuses_what_would_not_verify(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"subject": "a", "key": SECRET, **options}
    with pytest.raises(ValueError, match=message):
        mint(**arguments)


# --- settings -------------------------------------------------------------------------------------


class CoreLike(AuthFields, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLEARPATH_TESTAUTH_", extra="forbid")

    port: int = 0


class BridgeLike(BaseSettings, AuthFields):
    model_config = SettingsConfigDict(env_prefix="CLEARPATH_TESTAUTH2_", extra="forbid")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    for name in list(os.environ):
        if name.startswith("CLEARPATH_TESTAUTH"):
            monkeypatch.delenv(name)

    def set_env(prefix: str = "CLEARPATH_TESTAUTH_", **values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(prefix + key.upper(), value)

    return set_env


def test_no_secret_and_no_key_means_auth_off(env: Callable[..., None]) -> None:
    assert CoreLike().verifier() is None
    assert BridgeLike().verifier() is None


def test_settings_read_their_own_prefix(env: Callable[..., None]) -> None:
    env(auth_secret=SECRET, auth_issuer="iss", auth_audience="aud", auth_leeway="0")
    env("CLEARPATH_TESTAUTH2_", auth_secret=OTHER_SECRET)
    core = CoreLike()
    assert core.auth_secret is not None
    assert SECRET not in repr(core)
    verifier = core.verifier()
    assert verifier is not None
    token = mint(subject="a", key=SECRET, issuer="iss", audience="aud")
    assert verifier.verify(token).subject == "a"
    assert refused(verifier, mint(subject="a", key=SECRET, audience="aud")) == "wrong issuer"
    bridge = BridgeLike().verifier()
    assert bridge is not None
    assert refused(bridge, token) == "bad signature"


def test_settings_read_the_secret_file(env: Callable[..., None], tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    env(auth_secret_file=str(secret_file), auth_algorithms="hs256")
    settings = CoreLike()
    assert settings.auth_algorithms == "HS256"
    verifier = settings.verifier()
    assert verifier is not None
    assert verifier.verify(mint(subject="a", key=SECRET)).subject == "a"
    secret_file.unlink()
    with pytest.raises(ValueError, match=r"auth_secret_file .*No such file"):
        settings.verifier()


def test_settings_with_a_public_key(
    env: Callable[..., None], rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    env(auth_public_key=str(rsa_pem_file))
    with pytest.raises(ValueError, match="HS256 is accepted but no secret"):
        CoreLike().verifier()
    env(auth_algorithms="RS256")
    verifier = CoreLike().verifier()
    assert verifier is not None
    assert verifier.verify(mint(subject="r", key=private_pem(rsa_key), algorithm="RS256"))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"auth_algorithms": "none"}, "auth_algorithms"),
        ({"auth_algorithms": ""}, "auth_algorithms"),
        ({"auth_leeway": "301"}, "auth_leeway"),
        ({"auth_leeway": "-1"}, "auth_leeway"),
        ({"auth_secret": SECRET, "auth_secret_file": "/x"}, "not both"),
    ],
)
def test_bad_auth_settings_fail_validation(
    env: Callable[..., None], values: dict[str, str], field: str
) -> None:
    env(**values)
    with pytest.raises(ValidationError, match=field):
        CoreLike()


def test_an_empty_secret_does_not_turn_auth_off(env: Callable[..., None]) -> None:
    env(auth_secret="")
    with pytest.raises(ValueError, match="0 bytes"):
        CoreLike().verifier()


# --- anything at all ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_verifier(rsa_pem_file: Path) -> Verifier:
    return Verifier(
        algorithms=["HS256", "RS256", "ES256"],
        secret=SECRET,
        public_key_file=rsa_pem_file,
        issuer="iss",
        audience="aud",
        clock=Clock(),
    )


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["*", "anomalies", "notifications", "aud", "iss"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "RS256", "ES256", "none", "HS384", ""]) | _json},
    optional={"kid": st.text(max_size=4) | _json, "crit": _json, "b64": _json, "typ": _json},
)
_claims = st.dictionaries(
    st.sampled_from(["sub", "exp", "nbf", "iss", "aud", "subscribe", "publish", "operator"]),
    _json,
)


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=400))
def test_any_string_is_refused_with_unauthenticated_only(
    fuzz_verifier: Verifier, token: str
) -> None:
    with pytest.raises(Unauthenticated):
        fuzz_verifier.verify(token)


@settings(max_examples=300, deadline=None)
@given(
    header=_headers,
    changes=_claims,
    from_valid=st.booleans(),
    sign=st.booleans(),
    signature=st.binary(max_size=70),
)
def test_any_shaped_token_gives_an_identity_or_unauthenticated(
    fuzz_verifier: Verifier,
    header: dict[str, Any],
    changes: dict[str, Any],
    from_valid: bool,
    sign: bool,
    signature: bytes,
) -> None:
    claims = {**valid_claims(iss="iss", aud="aud"), **changes} if from_valid else changes
    if sign:
        token = hs256_by_hand(header, claims, SECRET.encode())
    else:
        token = f"{b64json(header)}.{b64json(claims)}.{b64(signature)}"
    try:
        identity = fuzz_verifier.verify(token)
    except Unauthenticated:
        return
    assert identity.subject == claims["sub"]
    assert header["alg"] == "HS256"
    assert sign
