"""Tokens for tests: one HS256 secret, tokens minted with :func:`core.auth.mint`."""

from __future__ import annotations

from typing import Any

from core.auth import mint

__all__ = ["SECRET", "auth_settings", "bearer", "token"]

SECRET = "test-secret-of-at-least-32-bytes-long!"


def token(subject: str = "alice", **claims: Any) -> str:
    """An HS256 token for ``subject`` signed with :data:`SECRET` (``mint`` options)."""
    return mint(subject=subject, key=SECRET, **claims)


def bearer(value: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying ``value`` as the bearer token."""
    return (("authorization", f"Bearer {value}"),)


def auth_settings(**extra: Any) -> dict[str, Any]:
    """Settings overrides that turn authentication on with :data:`SECRET`."""
    return {"auth_secret": SECRET, **extra}
