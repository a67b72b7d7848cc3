"""Bounding boxes of map_updates subscriptions: the one rule of what is inside.

A :class:`BoundingBox` is west, south, east, north in degrees. A point is
inside when ``south <= lat <= north`` and, when ``west <= east``,
``west <= lon <= east``; when ``west > east`` the box crosses the antimeridian
and a point is inside when ``lon >= west or lon <= east``. Points on an edge
are inside. Longitudes 180 and -180 are one meridian: a point on it is inside
when either number is (a box with an edge at -180 takes a point at 180, and
the other way round). The gRPC filter (:mod:`core.filters`), the WebSocket bridge and the
SSE endpoint all use this module; it does no I/O.

Valid boxes: every value a finite number (not a bool, not a string),
``-90 <= south <= north <= 90`` and ``-180 <= west, east <= 180``. A box with
``west == east`` is a meridian line; ``west = -180, east = 180`` is every
longitude.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidArgument

__all__ = ["MAX_QUERY_CHARS", "BoundingBox", "parse_bbox_query"]

#: The longest ``W,S,E,N`` text :func:`parse_bbox_query` reads (four long decimals fit).
MAX_QUERY_CHARS = 200

_NAMES = ("west", "south", "east", "north")


#: A plain decimal number as JSON writes it (and Python's repr, JavaScript's String):
#: an optional minus, digits, an optional fraction and exponent. No spaces, no
#: ``_``, no ``+`` in front, no ``inf``/``nan``.
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number(value: object, where: str) -> float:
    # bool is an int in Python; JSON true is not a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{where}: must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond a double's range (e.g. 10**400)
        raise InvalidArgument(f"{where}: must be a number of degrees, got a huge integer") from None
    if not math.isfinite(number):
        raise InvalidArgument(f"{where}: must be a finite number")
    return number


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """A map area in degrees; always valid (see the module docstring).

    Constructing one with a bad value raises :class:`InvalidArgument` naming
    the field (``bbox.south: ...``); :meth:`of` names it under another prefix.
    """

    west: float
    south: float
    east: float
    north: float

    def __post_init__(self) -> None:
        _check(self.west, self.south, self.east, self.north, "bbox")

    @classmethod
    def of(
        cls, west: object, south: object, east: object, north: object, *, where: str = "bbox"
    ) -> BoundingBox:
        """A box from untrusted values; InvalidArgument naming ``{where}.south`` etc."""
        w, s, e, n = _check(west, south, east, north, where)
        return cls(w, s, e, n)

    @classmethod
    def from_mapping(cls, data: object, *, where: str = "bbox") -> BoundingBox:
        """A box from ``{"west", "south", "east", "north"}`` (exactly those keys)."""
        if not isinstance(data, dict):
            raise InvalidArgument(f"{where}: must be an object with west, south, east, north")
        for key in data:
            if key not in _NAMES:
                raise InvalidArgument(f"{where}.{str(key)[:64]}: unknown field")
        for name in _NAMES:
            if name not in data:
                raise InvalidArgument(f"{where}.{name}: required")
        return cls.of(data["west"], data["south"], data["east"], data["north"], where=where)

    @property
    def crosses_antimeridian(self) -> bool:
        """Whether the box spans the 180th meridian (``west > east``)."""
        return self.west > self.east

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point is inside (edges included; longitude 180 is -180).
        NaN is never inside."""
        if not self.south <= lat <= self.north:
            return False
        if _spans(self.west, self.east, lon):
            return True
        # The antimeridian has two numbers: try the other one (rare: only on a miss).
        return (lon == 180.0 or lon == -180.0) and _spans(self.west, self.east, -lon)

    def as_dict(self) -> dict[str, Any]:
        """``{"west", "south", "east", "north"}``, as frames and messages carry it."""
        return {"west": self.west, "south": self.south, "east": self.east, "north": self.north}

    def as_query(self) -> str:
        """``W,S,E,N``: what :func:`parse_bbox_query` reads back."""
        return ",".join(repr(v) for v in (self.west, self.south, self.east, self.north))


def _spans(west: float, east: float, lon: float) -> bool:
    """Whether ``lon`` is within ``west``..``east`` as numbers (``west > east``: across 180)."""
    if west <= east:
        return west <= lon <= east
    return lon >= west or lon <= east


def _check(
    west: object, south: object, east: object, north: object, where: str
) -> tuple[float, float, float, float]:
    w = _number(west, f"{where}.west")
    s = _number(south, f"{where}.south")
    e = _number(east, f"{where}.east")
    n = _number(north, f"{where}.north")
    for name, value, limit in (("west", w, 180), ("east", e, 180)):
        if not -limit <= value <= limit:
            raise InvalidArgument(f"{where}.{name}: must be between -180 and 180, got {value:g}")
    for name, value in (("south", s), ("north", n)):
        if not -90 <= value <= 90:
            raise InvalidArgument(f"{where}.{name}: must be between -90 and 90, got {value:g}")
    if s > n:
        raise InvalidArgument(f"{where}.south: must not be above north ({s:g} > {n:g})")
    return w, s, e, n


def parse_bbox_query(text: str, *, where: str = "bbox") -> BoundingBox:
    """The box in ``W,S,E,N`` (e.g. a ``?bbox=`` query value: ``-125,24,-66,50``).

    Each part is a plain decimal number (``-125``, ``24.5``, ``1e-05``): no
    spaces, no ``_``, no leading ``+``, no ``inf``/``nan``. InvalidArgument
    naming ``where`` (and the part, ``{where}.south``) for anything else: not
    four numbers, longer than :data:`MAX_QUERY_CHARS`, or a box that is not valid.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"{where}: at most {MAX_QUERY_CHARS} characters")
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidArgument(f"{where}={text[:100]!r}: expected W,S,E,N (four numbers)")
    values: list[float] = []
    for name, part in zip(_NAMES, parts, strict=True):
        if not _DECIMAL.fullmatch(part):
            raise InvalidArgument(f"{where}.{name}: {part[:40]!r} is not a plain decimal number")
        values.append(float(part))  # finite or ±inf (a huge exponent): _check decides
    return BoundingBox.of(*values, where=where)
