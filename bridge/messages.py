"""What browsers may send, as pydantic models; anything else is refused with a clear error."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from core.errors import InvalidArgument

__all__ = [
    "Auth",
    "ClientMessage",
    "InvalidJson",
    "Ping",
    "Position",
    "Refresh",
    "Subscribe",
    "Unsubscribe",
    "parse",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Position(_Strict):
    """The last position a client saw on a topic."""

    offset: Annotated[StrictInt, Field(ge=0, lt=2**64)]  # not "3", 3.0 or true
    epoch: Annotated[str, Field(max_length=64)]


class TopicData(_Strict):
    subscription_type: Annotated[str, Field(max_length=64)]


class SubscribeData(TopicData):
    since: Position | None = None


class Subscribe(_Strict):
    """``{"type": "subscribe", "data": {"subscription_type": ..., "since": {...}?}}``"""

    type: Literal["subscribe"]
    data: SubscribeData


class Unsubscribe(_Strict):
    """``{"type": "unsubscribe", "data": {"subscription_type": ...}}``"""

    type: Literal["unsubscribe"]
    data: TopicData


class Ping(_Strict):
    """``{"type": "ping", "data": {}}``; answered with a ``pong`` frame."""

    type: Literal["ping"]
    data: dict[str, object] = Field(default_factory=dict, max_length=16)


#: The longest token accepted (a JWT with a few claims is well under 2 kB).
MAX_TOKEN_CHARS = 8192


class TokenData(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS)]


class Auth(_Strict):
    """``{"type": "auth", "data": {"token": JWT}}``: the first message when the
    bridge requires authentication (later ones act as :class:`Refresh`)."""

    type: Literal["auth"]
    data: TokenData


class Refresh(_Strict):
    """``{"type": "refresh", "data": {"token": JWT}}``: a fresh token for the same
    subject, replacing the current one in place (answered ``refreshed``)."""

    type: Literal["refresh"]
    data: TokenData


Message = Subscribe | Unsubscribe | Ping | Auth | Refresh
ClientMessage = Annotated[Message, Field(discriminator="type")]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(ClientMessage)
_TYPES = ("subscribe", "unsubscribe", "ping", "auth", "refresh")


class InvalidJson(InvalidArgument):
    """The message is not JSON at all."""

    ws_error = "invalid_json"


def parse(text: str) -> Message:
    """The client message in ``text``; InvalidJson or InvalidArgument (``invalid_message``)."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"message is not valid JSON: {exc.msg}") from None
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise InvalidArgument(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    if first["type"] == "union_tag_invalid":
        return f"type: must be one of {', '.join(_TYPES)}"
    if first["type"] == "union_tag_not_found":
        return f"type: required (one of {', '.join(_TYPES)})"
    if first["type"] == "model_type" and where == "message":
        return "message must be a JSON object with type and data"
    # Drop the union tag pydantic puts first, e.g. "subscribe.data.since".
    parts = where.split(".", 1)
    where = parts[1] if len(parts) == 2 and parts[0] in _TYPES else where
    return f"{where}: {first['msg']}"
