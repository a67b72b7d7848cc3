"""What browsers may send, as pydantic models; anything else is refused with a clear error."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.errors import InvalidArgument
from core.viewport import BoundingBox

__all__ = [
    "Auth",
    "Bbox",
    "ClientMessage",
    "InvalidJson",
    "Ping",
    "Position",
    "Refresh",
    "Subscribe",
    "Unsubscribe",
    "Viewport",
    "parse",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Position(_Strict):
    """The last position a client saw on a topic."""

    offset: Annotated[StrictInt, Field(ge=0, lt=2**64)]  # not "3", 3.0 or true
    epoch: Annotated[str, Field(max_length=64)]


# JSON numbers only (not "3", not true), finite, in range: see core.viewport.
_Longitude = Annotated[StrictFloat, Field(ge=-180, le=180, allow_inf_nan=False)]
_Latitude = Annotated[StrictFloat, Field(ge=-90, le=90, allow_inf_nan=False)]


class Bbox(_Strict):
    """``{"west", "south", "east", "north"}`` in degrees, the rules of
    :class:`core.viewport.BoundingBox` (``west > east`` crosses the antimeridian)."""

    west: _Longitude
    south: _Latitude
    east: _Longitude
    north: _Latitude

    @model_validator(mode="after")
    def _ordered(self) -> Bbox:
        if self.south > self.north:
            raise PydanticCustomError(
                "bbox_order",
                "south must not be above north ({south} > {north})",
                {"south": self.south, "north": self.north},
            )
        return self

    def box(self) -> BoundingBox:
        """The box as the core's rule has it."""
        return BoundingBox(self.west, self.south, self.east, self.north)


class TopicData(_Strict):
    subscription_type: Annotated[str, Field(max_length=64)]


class SubscribeData(TopicData):
    since: Position | None = None
    #: map_updates only: send only map updates inside it.
    bbox: Bbox | None = None


class Subscribe(_Strict):
    """``{"type": "subscribe", "data": {"subscription_type": ..., "since": {...}?,
    "bbox": {...}?}}`` (``bbox``: map_updates only)"""

    type: Literal["subscribe"]
    data: SubscribeData


class ViewportData(TopicData):
    #: The new box; null: the whole world. Required, so a typo never clears a box.
    bbox: Bbox | None


class Viewport(_Strict):
    """``{"type": "viewport", "data": {"subscription_type": "map_updates", "bbox":
    {...} | null}}``: moves the box of a subscription in place; answered with a
    ``viewport`` frame."""

    type: Literal["viewport"]
    data: ViewportData


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


Message = Subscribe | Unsubscribe | Ping | Auth | Refresh | Viewport
ClientMessage = Annotated[Message, Field(discriminator="type")]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(ClientMessage)
_TYPES = ("subscribe", "unsubscribe", "ping", "auth", "refresh", "viewport")


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
