"""``clearpath token``: mint a signed bearer token (JWT) for development and tests.

The token goes to stdout, alone on its line, so ``TOKEN=$(clearpath token ...)``
works. HS* tokens are signed with ``--secret``, ``--secret-file`` or
``$CLEARPATH_AUTH_SECRET`` (in that order; the last two keep the secret out of
the process list); RS*/PS*/ES* tokens with ``--private-key``, whose type picks
the algorithm when ``--alg`` is not given. The claims are those of
:mod:`core.auth`. A bad flag exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from clients.cli._common import EXIT_OK, EXIT_USAGE, fail
from core.auth import ALGORITHMS, mint, read_secret

__all__ = ["SECRET_ENV", "parse_ttl", "register"]

#: Where the HMAC secret comes from when no key flag is given.
SECRET_ENV = "CLEARPATH_AUTH_SECRET"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def register(sub: Any) -> None:
    """Add ``token`` to the subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "token",
        help="mint a signed bearer token (JWT) for development and tests",
        description="Print a signed JWT: `clearpath token --subject alice --publish '*'`.",
    )
    parser.add_argument("--subject", required=True, help="the user id (the 'sub' claim)")
    parser.add_argument(
        "--subscribe",
        metavar="TYPES",
        help="subscription types it may read, comma-separated, or '*' (default: every type)",
    )
    parser.add_argument(
        "--publish",
        metavar="TYPES",
        help="subscription types it may publish, comma-separated, or '*' (default: none)",
    )
    parser.add_argument(
        "--operator",
        action="store_true",
        help="an operator token: every user's notifications and the operator endpoints",
    )
    parser.add_argument(
        "--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 7d or seconds (default 1h)"
    )
    parser.add_argument("--issuer", help="the 'iss' claim")
    parser.add_argument("--audience", help="the 'aud' claim")
    parser.add_argument("--kid", help="the header's key id, to pick the key of a JWKS")
    parser.add_argument(
        "--alg",
        choices=ALGORITHMS,
        help="signing algorithm (default: HS256, or RS256/ES256... from --private-key)",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--secret", help=f"HMAC secret, at least 32 bytes (default: ${SECRET_ENV})")
    key.add_argument("--secret-file", type=Path, metavar="FILE", help="file holding the secret")
    key.add_argument(
        "--private-key", type=Path, metavar="PEM", help="PEM private key for RS*/PS*/ES*"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the token; exit 2 naming the problem when a flag is wrong."""
    try:
        lifetime = parse_ttl(args.ttl)
        key, alg = _signing_key(args)
        token = mint(
            subject=args.subject,
            key=key,
            algorithm=alg,
            subscribe=_types(args.subscribe),
            publish=_types(args.publish),
            operator=args.operator,
            lifetime=lifetime,
            issuer=args.issuer,
            audience=args.audience,
            kid=args.kid,
        )
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    print(token)
    return EXIT_OK


def parse_ttl(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``7d`` or plain seconds → seconds (> 0). Raises ValueError."""
    unit = _UNITS.get(text.strip()[-1:].lower())
    number = text.strip()[:-1] if unit else text.strip()
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"--ttl {text!r}: expected a positive duration like 90s, 30m, 1h, 7d")
    return seconds


def _types(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _signing_key(args: argparse.Namespace) -> tuple[str | bytes, str]:
    """The key and algorithm the flags ask for. Raises ValueError."""
    if args.private_key is not None:
        pem = _read(args.private_key, "--private-key")
        alg = args.alg or _algorithm_of(pem)
        if alg.startswith("HS"):
            raise ValueError(f"--private-key signs RS/PS/ES tokens, not {alg}; use --secret")
        return pem, alg
    alg = args.alg or "HS256"
    if not alg.startswith("HS"):
        raise ValueError(f"--alg {alg} needs --private-key")
    if args.secret is not None:
        return args.secret, alg
    if args.secret_file is not None:
        return _read_secret_file(args.secret_file), alg
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise ValueError(
            f"no signing key: give --secret, --secret-file or --private-key, or set ${SECRET_ENV}"
        )
    return secret, alg


def _read_secret_file(path: Path) -> str:
    """``--secret-file``'s secret; ValueError naming the file when it cannot be read."""
    try:
        return read_secret(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"--secret-file {path}: {reason}") from None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror}") from None


def _algorithm_of(pem: bytes) -> str:
    """RS256 for an RSA private key, ES256/384/512 for an EC one by its curve."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"--private-key: not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, RSAPrivateKey):
        return "RS256"
    if isinstance(key, EllipticCurvePrivateKey) and key.curve.name in _CURVE_ALG:
        return _CURVE_ALG[key.curve.name]
    raise ValueError("--private-key: expected an RSA key or an EC key on P-256, P-384 or P-521")
