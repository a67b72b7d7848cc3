"""Identity: who a bearer token says the caller is, and what it may do.

A token is a signed JWT (RFC 7519). :class:`Verifier` checks one and returns an
:class:`Identity`, or raises :class:`~core.errors.Unauthenticated` with a short
message that never repeats the token. The module does no I/O except reading the
key files it is configured with.

Claims
------
``sub``        required: the user id, a non-empty string of at most 256 characters.
``exp``        required: NumericDate (unix seconds). ``nbf`` optional. Both are
               checked with ``leeway`` seconds: a token whose ``exp`` is exactly
               ``leeway`` seconds ago still passes.
``iss``        when the verifier has an issuer: must equal it.
``aud``        when the verifier has an audience: must equal it or, as a list,
               contain it. A token that names an audience is refused by a
               verifier configured without one (RFC 7519 §4.1.3).
``subscribe``  a list of subscription type names (``package_updates``,
               ``notifications``, ...) or ``"*"``. Absent means every type: a
               browser token with only ``sub`` may read everything (its
               notifications are restricted to its own user elsewhere).
``publish``    a list of names or ``"*"``. Absent means none.
``operator``   bool, default false. Operator tokens see every user's
               notifications and the operator endpoints; the bridge's own
               token to the core is one.

An unknown type name or a claim of the wrong JSON type is refused with a
message naming the claim. ``"*"`` may also appear inside a list (= every type).

Rules of verification
---------------------
* The accepted algorithms come only from configuration: the header's ``alg`` must
  be one of them and is then the only algorithm tried. ``none`` is never accepted.
* HS256/384/512 verify only with the configured secret; RS*/PS*/ES* only with the
  public key (a PEM file) or a key of the JWKS file, picked by the header's
  ``kid`` (a JWKS of one key also serves tokens without ``kid``; the PEM key
  serves tokens whose ``kid`` is not in the JWKS). So an HS256 token "signed"
  with the RSA public key is refused even when both families are accepted.
* A JWK with an ``alg`` serves only that algorithm; an ES key only its curve.
* Tokens longer than :data:`MAX_TOKEN_BYTES` are refused before any parsing.
* The PEM and JWKS files are re-read when their mtime, size or inode changes,
  looked at no more than once per :data:`RELOAD_INTERVAL`; a file that no longer
  parses keeps the previous keys and logs a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from core.errors import Unauthenticated, UnknownTopic
from core.topics import TOPIC_NAMES, TOPICS, topic_from_name

__all__ = [
    "ALGORITHMS",
    "ANONYMOUS",
    "MAX_SUBJECT_CHARS",
    "MAX_TOKEN_BYTES",
    "RELOAD_INTERVAL",
    "AuthFields",
    "Identity",
    "Verifier",
    "mint",
    "parse_algorithms",
    "parse_bearer",
    "read_secret",
    "self_signer",
]

log = logging.getLogger(__name__)

#: Longest token accepted, in bytes (characters: a token is ASCII).
MAX_TOKEN_BYTES = 8192
#: Longest ``sub`` accepted.
MAX_SUBJECT_CHARS = 256
#: Seconds between two looks at a key file's mtime and size.
RELOAD_INTERVAL = 1.0
#: Shortest RSA key accepted, in bits.
MIN_RSA_BITS = 2048

#: HMAC algorithm → shortest secret in bytes: the hash size (RFC 7518 §3.2).
_HMAC = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
#: EC algorithm → the curve its keys must be on.
_EC = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
#: Every algorithm a verifier can be configured with.
ALGORITHMS: tuple[str, ...] = (*_HMAC, *_RSA, *_EC)
_EVERY = "*"

PublicKey = RSAPublicKey | EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the caller is and what it may do, as its token says.

    ``subscribe`` None means every topic; ``publish`` empty means none;
    ``expires_at`` is the token's ``exp`` (unix seconds), None without a token.
    """

    subject: str
    subscribe: frozenset[int] | None
    publish: frozenset[int]
    operator: bool
    expires_at: float | None

    def may_subscribe(self, topic: int) -> bool:
        """Whether this identity may subscribe to (and read the history of) ``topic``."""
        return self.subscribe is None or topic in self.subscribe

    def may_publish(self, topic: int) -> bool:
        """Whether this identity may publish events of ``topic``."""
        return topic in self.publish

    def same_subject(self, other: Identity | str) -> bool:
        """Whether ``other`` (an identity or a subject) names the same user as this one."""
        subject = other.subject if isinstance(other, Identity) else other
        return subject == self.subject


#: The identity of every caller when auth is off: everything allowed.
ANONYMOUS = Identity("", None, frozenset(TOPICS), True, None)


def parse_bearer(value: str | None) -> str:
    """The token of an ``authorization`` value ``Bearer <token>`` (any case of ``Bearer``).

    Raises Unauthenticated("missing token") for None or blank, and
    Unauthenticated("expected 'Bearer <token>'") for any other shape."""
    if value is None or not value.strip():
        raise Unauthenticated("missing token")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise Unauthenticated("expected 'Bearer <token>'")
    return token


def parse_algorithms(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"HS256, rs256"`` (or a list) → ``("HS256", "RS256")``, checked.

    Raises ValueError for an empty list or a name not in :data:`ALGORITHMS`
    (``none`` included)."""
    names = text.split(",") if isinstance(text, str) else list(text)
    found: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if not name:
            continue
        if name not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {raw.strip()!r}; valid: {', '.join(ALGORITHMS)}")
        if name not in found:
            found.append(name)
    if not found:
        raise ValueError("no algorithm given")
    return tuple(found)


def read_secret(path: Path) -> str:
    """The secret in the file ``path``, without its trailing newline.

    Raises OSError when the file cannot be read, ValueError when it is not UTF-8."""
    return path.read_text(encoding="utf-8").rstrip("\r\n")


# --- keys -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """A public key, its ``kid`` and the one algorithm its JWK names, if any."""

    kid: str | None
    alg: str | None
    key: PublicKey

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        if alg in _EC:
            return isinstance(self.key, EllipticCurvePublicKey) and self.key.curve.name == _EC[alg]
        return alg in _RSA and isinstance(self.key, RSAPublicKey)


def _public(key: Any) -> PublicKey:
    """The RSA or EC public key of ``key`` (a private key gives its public half).

    Raises ValueError for any other kind of key and for RSA keys that are too short."""
    if isinstance(key, RSAPrivateKey | EllipticCurvePrivateKey):
        key = key.public_key()
    if not isinstance(key, RSAPublicKey | EllipticCurvePublicKey):
        raise ValueError("expected an RSA or EC public key")
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
    return key


def _load_pem(data: bytes) -> tuple[_Key, ...]:
    """The one key of a PEM public key file. Raises ValueError."""
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key ({exc})") from None
    return (_Key(None, None, _public(key)),)


def _load_jwks(data: bytes) -> tuple[_Key, ...]:
    """The RSA and EC signing keys of a JWKS document; others are skipped.

    Raises ValueError when the document is not a JWKS or has no usable key."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("expected a JSON object with a 'keys' list")
    keys = tuple(key for entry in entries if (key := _jwk(entry)) is not None)
    if not keys:
        raise ValueError("no usable RSA or EC signing key in 'keys'")
    return keys


def _jwk(entry: Any) -> _Key | None:
    """One JWK as a key, or None when it is not an RSA/EC signing key we can use."""
    if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    if entry.get("use", "sig") != "sig" or not isinstance(kid, str | None):
        return None
    if alg is not None and (alg not in _RSA and alg not in _EC):
        return None
    try:
        return _Key(kid, alg, _public(jwt.PyJWK(entry).key))
    except (jwt.PyJWTError, ValueError, TypeError):
        return None


def _stamp(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class _KeyFile:
    """The keys of one file, re-read when the file changes.

    The constructor reads the file and raises ValueError when it cannot.
    :meth:`current` looks at the file's mtime, size and inode at most once per
    RELOAD_INTERVAL of ``clock`` (or whenever the clock goes back), re-reads it
    when they changed, and keeps the previous keys (logging a warning, once
    per change) when the new content does not load."""

    def __init__(
        self, path: Path, load: Callable[[bytes], tuple[_Key, ...]], clock: Callable[[], float]
    ) -> None:
        self._path, self._load, self._clock = path, load, clock
        try:
            self._stamp: tuple[int, int, int] | None = _stamp(path)
            self._keys = load(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"key file {path}: {_reason(exc)}") from None
        self._checked = clock()

    def current(self) -> tuple[_Key, ...]:
        now = self._clock()
        if not 0 <= now - self._checked < RELOAD_INTERVAL:
            self._checked = now
            self._refresh()
        return self._keys

    def _refresh(self) -> None:
        try:
            stamp: tuple[int, int, int] | None = _stamp(self._path)
        except OSError as exc:
            stamp, problem = None, _reason(exc)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is not None:
            try:
                self._keys = self._load(self._path.read_bytes())
            except (OSError, ValueError) as exc:
                problem = _reason(exc)
            else:
                log.info("reloaded key file %s: %d key(s)", self._path, len(self._keys))
                return
        log.warning("key file %s: %s; keeping the previous keys", self._path, problem)


def _reason(exc: Exception) -> str:
    """A short message for a file error: ``No such file or directory``."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# --- verification ------------------------------------------------------------------


class Verifier:
    """Checks bearer tokens against one configuration; see the module docstring.

    The constructor raises ValueError for a configuration that cannot work: no
    or unknown algorithm, an HS algorithm without ``secret`` (or a secret shorter
    than the hash, or shaped like a PEM key), an RS/PS/ES algorithm without
    ``public_key_file`` or ``jwks_file``, key material no accepted algorithm
    uses, a key file that does not load, an empty issuer or audience, a
    negative leeway. ``clock`` gives unix seconds (for ``exp``/``nbf`` and the
    key files' reload interval).
    """

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        secret: str | None = None,
        public_key_file: Path | None = None,
        jwks_file: Path | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = parse_algorithms(algorithms)
        hmac_algs = [a for a in self.algorithms if a in _HMAC]
        key_algs = [a for a in self.algorithms if a not in _HMAC]
        self._secret = _check_secret(secret, hmac_algs)
        has_keys = public_key_file is not None or jwks_file is not None
        if key_algs and not has_keys:
            raise ValueError(f"{key_algs[0]} is accepted but no public key or JWKS file is given")
        if has_keys and not key_algs:
            raise ValueError("a public key or JWKS file is given but no RS/PS/ES algorithm")
        for name, value in (("issuer", issuer), ("audience", audience)):
            if value is not None and not value:
                raise ValueError(f"{name} must not be empty (None: not checked)")
        if not 0 <= leeway < math.inf:
            raise ValueError(f"leeway must be a finite number >= 0, not {leeway}")
        self._issuer, self._audience, self._leeway, self._clock = issuer, audience, leeway, clock
        self._pem = _KeyFile(public_key_file, _load_pem, clock) if public_key_file else None
        self._jwks = _KeyFile(jwks_file, _load_jwks, clock) if jwks_file else None
        # Too short a key is an error, not a warning repeated on every token.
        self._jws = jwt.PyJWS(
            algorithms=self.algorithms,
            options={"verify_signature": True, "enforce_minimum_key_length": True},
        )

    def verify(self, token: str) -> Identity:
        """The identity of a valid ``token``; raises Unauthenticated otherwise.

        The message says what is wrong in a few words ("token expired", "bad
        signature", ...) and never contains the token."""
        if not isinstance(token, str) or not token:
            raise Unauthenticated("missing token")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("token too long")
        if not token.isascii():
            raise Unauthenticated("malformed token")
        alg, kid = self._header(token)
        key: bytes | PublicKey = self._secret if alg in _HMAC else self._key_for(alg, kid).key
        claims = self._signed_claims(token, key, alg)
        self._check_registered(claims)
        return _identity(claims)

    def _header(self, token: str) -> tuple[str, str | None]:
        """The header's ``alg`` (accepted) and ``kid``; the signature is not checked yet."""
        try:
            header = self._jws.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or not isinstance(kid, str | None):
            raise Unauthenticated("malformed token")
        if alg not in self.algorithms:
            raise Unauthenticated(f"algorithm {alg[:16]!r} not accepted")
        return alg, kid

    def _key_for(self, alg: str, kid: str | None) -> _Key:
        """The public key to check a token of ``alg`` and ``kid`` with."""
        default = self._pem.current()[0] if self._pem is not None else None
        jwks = self._jwks.current() if self._jwks is not None else ()
        if kid is not None:
            named = [k for k in jwks if k.kid == kid]
            key = next((k for k in named if k.fits(alg)), named[0] if named else default)
            if key is None:
                raise Unauthenticated("unknown key id")
        elif default is not None or len(jwks) == 1:
            key = default if default is not None else jwks[0]
        else:
            raise Unauthenticated("token has no key id ('kid')")
        if not key.fits(alg):
            raise Unauthenticated(f"no key for algorithm {alg}")
        return key

    def _signed_claims(self, token: str, key: bytes | PublicKey, alg: str) -> dict[str, Any]:
        """The payload, once the signature is good."""
        try:
            decoded = self._jws.decode_complete(token, key=key, algorithms=[alg])
            claims = json.loads(decoded["payload"])
        except jwt.InvalidSignatureError:
            raise Unauthenticated("bad signature") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            log.debug("token refused: %s", type(exc).__name__)
            raise Unauthenticated("malformed token") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("malformed token")
        return claims

    def _check_registered(self, claims: Mapping[str, Any]) -> None:
        """``exp``, ``nbf``, ``iss`` and ``aud``; raises Unauthenticated."""
        now = self._clock()
        if "exp" not in claims:
            raise Unauthenticated("token has no 'exp' claim")
        if _number(claims, "exp") + self._leeway < now:
            raise Unauthenticated("token expired")
        if "nbf" in claims and _number(claims, "nbf") - self._leeway > now:
            raise Unauthenticated("token not yet valid")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise Unauthenticated("wrong issuer")
        audiences = _audiences(claims.get("aud"))
        if self._audience is None and audiences:
            # RFC 7519 §4.1.3: a token meant for someone is not for a verifier with no name.
            raise Unauthenticated("wrong audience")
        if self._audience is not None and self._audience not in audiences:
            raise Unauthenticated("wrong audience")


def _audiences(aud: Any) -> list[str]:
    """The ``aud`` claim as a list; raises Unauthenticated when it is not a string or list."""
    if aud is None:
        return []
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return aud
    raise Unauthenticated("wrong audience")


def _check_secret(secret: str | None, hmac_algs: Sequence[str]) -> bytes:
    """The HMAC key, checked against every accepted HS algorithm. Raises ValueError."""
    if secret is None:
        if hmac_algs:
            raise ValueError(
                f"{hmac_algs[0]} is accepted but no secret is given "
                "(to verify with a public key only, accept only RS/PS/ES algorithms)"
            )
        return b""
    if not hmac_algs:
        raise ValueError("a secret is given but no HS algorithm is accepted")
    return _check_hmac_key(secret.encode("utf-8"), hmac_algs)


def _check_hmac_key(key: bytes, hmac_algs: Sequence[str]) -> bytes:
    """``key``, when long enough for every algorithm and not a PEM/SSH key. Raises ValueError."""
    for alg in hmac_algs:
        if len(key) < _HMAC[alg]:
            raise ValueError(f"the secret has {len(key)} bytes; {alg} needs at least {_HMAC[alg]}")
    try:
        jwt.get_algorithm_by_name(hmac_algs[0]).prepare_key(key)
    except jwt.InvalidKeyError:
        raise ValueError("the secret looks like a PEM or SSH key; give a random string") from None
    return key


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"claim {name!r} must be a number")
    return float(value)


def _identity(claims: Mapping[str, Any]) -> Identity:
    """The identity the (verified) ``claims`` describe; raises Unauthenticated."""
    subject = claims.get("sub")
    if subject is None:
        raise Unauthenticated("token has no 'sub' claim")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
        raise Unauthenticated(
            f"claim 'sub' must be a non-empty string of at most {MAX_SUBJECT_CHARS} characters"
        )
    operator = claims.get("operator", False)
    if not isinstance(operator, bool):
        raise Unauthenticated("claim 'operator' must be true or false")
    publish = _topics(claims, "publish")
    return Identity(
        subject=subject,
        subscribe=_topics(claims, "subscribe") if "subscribe" in claims else None,
        publish=frozenset() if publish is None else publish,
        operator=operator,
        expires_at=float(claims["exp"]),
    )


def _topics(claims: Mapping[str, Any], name: str) -> frozenset[int] | None:
    """A ``subscribe``/``publish`` claim as topics: all of them for ``"*"``, None if absent."""
    if name not in claims:
        return None
    value = claims[name]
    if value == _EVERY:
        return frozenset(TOPICS)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthenticated(f"claim {name!r} must be a list of subscription types or '*'")
    if _EVERY in value:
        return frozenset(TOPICS)
    topics = set()
    for item in value:
        try:
            topics.add(topic_from_name(item))
        except UnknownTopic:
            shown = item[:40]
            raise Unauthenticated(f"claim {name!r}: unknown subscription type {shown!r}") from None
    return frozenset(topics)


# --- minting -------------------------------------------------------------------------


def mint(
    *,
    subject: str,
    key: str | bytes,
    algorithm: str = "HS256",
    subscribe: Sequence[str] | None = None,
    publish: Sequence[str] | None = None,
    operator: bool = False,
    lifetime: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    not_before: float | None = None,
    now: float | None = None,
    kid: str | None = None,
) -> str:
    """A signed token with the claims of the module docstring, for development and tests.

    ``key`` is the secret for HS algorithms, a PEM private key for the others.
    ``subscribe``/``publish`` None leave the claim out (every type / none);
    ``"*"`` in them means every type; names are normalized (``TOPIC_ANOMALIES``
    → ``anomalies``). ``iat`` is ``now`` (default: the current time) and ``exp``
    is ``now + lifetime``, both whole seconds. Raises ValueError for an unknown
    algorithm or type name, a bad subject or lifetime, or a key that cannot sign
    (an HMAC secret shorter than the hash included)."""
    (alg,) = parse_algorithms([algorithm])
    if not 0 < len(subject) <= MAX_SUBJECT_CHARS:
        raise ValueError(f"subject must have 1 to {MAX_SUBJECT_CHARS} characters")
    if not 0 < lifetime < math.inf:
        raise ValueError(f"lifetime must be a positive number of seconds, not {lifetime}")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": subject, "iat": int(issued), "exp": int(issued + lifetime)}
    if subscribe is not None:
        claims["subscribe"] = _names_claim(subscribe, "subscribe")
    if publish is not None:
        claims["publish"] = _names_claim(publish, "publish")
    if operator:
        claims["operator"] = True
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    if not_before is not None:
        claims["nbf"] = int(not_before)
    if alg in _HMAC:
        _check_hmac_key(key.encode("utf-8") if isinstance(key, str) else key, [alg])
    signer = jwt.PyJWT(options={"enforce_minimum_key_length": True})
    try:
        return signer.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)
    except (jwt.PyJWTError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"cannot sign {alg} with this key ({exc})") from None


def _names_claim(names: Sequence[str], claim: str) -> str | list[str]:
    """``subscribe``/``publish`` for a token: ``"*"`` or canonical names. Raises ValueError."""
    names = [names] if isinstance(names, str) else list(names)
    if _EVERY in names:
        return _EVERY
    found: list[str] = []
    for name in names:
        try:
            canonical = TOPIC_NAMES[topic_from_name(name)]
        except UnknownTopic as exc:
            raise ValueError(f"{claim}: {exc}") from None
        if canonical not in found:
            found.append(canonical)
    return found


def self_signer(
    secret: str,
    *,
    subject: str,
    algorithm: str = "HS256",
    lifetime: float = 3600.0,
    renew: float = 600.0,
    issuer: str | None = None,
    audience: str | None = None,
    **claims: Any,
) -> Callable[[], str]:
    """A function returning a valid token of ``secret`` (HMAC) for ``subject`` with
    ``claims``, made anew when the last one has less than ``renew`` seconds left.

    For processes that hold the signing secret anyway (a bridge with a shared
    secret, a development CLI): a holder of the secret can sign any token, so
    signing its own gives it nothing it did not have."""
    current = ("", 0.0)

    def token() -> str:
        nonlocal current
        now = time.time()
        if now > current[1] - renew:
            value = mint(
                subject=subject,
                key=secret,
                algorithm=algorithm,
                lifetime=lifetime,
                issuer=issuer,
                audience=audience,
                now=now,
                **claims,
            )
            current = (value, now + lifetime)
        return current[0]

    return token


# --- settings ------------------------------------------------------------------------


class AuthFields(BaseModel):
    """The auth settings, shared by the core's and the bridge's settings classes.

    Inherit it next to ``BaseSettings``; each field then reads the class's own
    prefix (``CLEARPATH_CORE_AUTH_SECRET``, ...). Auth is off when neither a
    secret nor a key file is set."""

    auth_algorithms: str = Field(
        default="HS256",
        description="accepted JWT algorithms, comma-separated: HS256/384/512, RS256/384/512, "
        "PS256/384/512, ES256/384/512",
    )
    auth_secret: SecretStr | None = Field(
        default=None, description="HMAC secret for HS* tokens (at least 32 bytes); sets auth on"
    )
    auth_secret_file: Path | None = Field(
        default=None, description="file holding the HMAC secret (instead of auth_secret)"
    )
    auth_public_key: Path | None = Field(
        default=None, description="PEM public key for RS*/PS*/ES* tokens; re-read when it changes"
    )
    auth_jwks: Path | None = Field(
        default=None, description="JWKS file of public keys, picked by kid; re-read when it changes"
    )
    auth_issuer: str | None = Field(default=None, description="required 'iss' of tokens, if set")
    auth_audience: str | None = Field(default=None, description="required 'aud' of tokens, if set")
    auth_leeway: float = Field(
        default=30.0, ge=0, le=300, description="seconds of clock skew allowed for exp/nbf"
    )

    @field_validator("auth_algorithms")
    @classmethod
    def _algorithms_known(cls, value: str) -> str:
        return ",".join(parse_algorithms(value))

    @model_validator(mode="after")
    def _one_secret(self) -> AuthFields:
        if self.auth_secret is not None and self.auth_secret_file is not None:
            raise ValueError("give auth_secret or auth_secret_file, not both")
        return self

    def verifier(self) -> Verifier | None:
        """The verifier these settings describe; None when auth is off.

        Reads the secret file and the key files; raises ValueError for a
        configuration that cannot work (see :class:`Verifier`)."""
        secret = self.auth_secret.get_secret_value() if self.auth_secret is not None else None
        if self.auth_secret_file is not None:
            try:
                secret = read_secret(self.auth_secret_file)
            except (OSError, ValueError) as exc:  # ValueError: not UTF-8
                raise ValueError(
                    f"auth_secret_file {self.auth_secret_file}: {_reason(exc)}"
                ) from None
        if secret is None and self.auth_public_key is None and self.auth_jwks is None:
            return None
        return Verifier(
            algorithms=parse_algorithms(self.auth_algorithms),
            secret=secret,
            public_key_file=self.auth_public_key,
            jwks_file=self.auth_jwks,
            issuer=self.auth_issuer,
            audience=self.auth_audience,
            leeway=self.auth_leeway,
        )
