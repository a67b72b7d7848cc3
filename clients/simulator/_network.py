"""The simulated network's geography: distribution centers, linehaul routes, carriers.

Static data and pure geometry; positions are real-ish US coordinates (WGS 84).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = [
    "CARRIERS",
    "CENTERS",
    "ROUTES",
    "Center",
    "Route",
    "bearing",
    "distance_km",
    "interpolate",
    "nearby_point",
    "tracking_number",
]


@dataclass(frozen=True)
class Center:
    """A distribution center."""

    code: str
    name: str
    city: str
    latitude: float
    longitude: float

    @property
    def point(self) -> tuple[float, float]:
        return self.latitude, self.longitude


@dataclass(frozen=True)
class Route:
    """A linehaul route: the centers a package passes, origin first."""

    route_id: str
    stops: tuple[Center, ...]


def _center(code: str, city: str, state: str, latitude: float, longitude: float) -> Center:
    return Center(code, f"{city} Distribution Center", f"{city}, {state}", latitude, longitude)


CENTERS: dict[str, Center] = {
    c.code: c
    for c in (
        _center("ATL", "Atlanta", "GA", 33.7490, -84.3880),
        _center("CHI", "Chicago", "IL", 41.8781, -87.6298),
        _center("CLT", "Charlotte", "NC", 35.2271, -80.8431),
        _center("CMH", "Columbus", "OH", 39.9612, -82.9988),
        _center("DAL", "Dallas", "TX", 32.7767, -96.7970),
        _center("DEN", "Denver", "CO", 39.7392, -104.9903),
        _center("EWR", "Newark", "NJ", 40.7357, -74.1724),
        _center("IND", "Indianapolis", "IN", 39.7684, -86.1581),
        _center("LAX", "Los Angeles", "CA", 34.0522, -118.2437),
        _center("MCI", "Kansas City", "MO", 39.0997, -94.5786),
        _center("MEM", "Memphis", "TN", 35.1495, -90.0490),
        _center("MIA", "Miami", "FL", 25.7617, -80.1918),
        _center("PHX", "Phoenix", "AZ", 33.4484, -112.0740),
        _center("SDF", "Louisville", "KY", 38.2527, -85.7585),
        _center("SEA", "Seattle", "WA", 47.6062, -122.3321),
        _center("SLC", "Salt Lake City", "UT", 40.7608, -111.8910),
    )
}


def _route(*codes: str) -> Route:
    return Route(f"RT-{codes[0]}-{codes[-1]}", tuple(CENTERS[c] for c in codes))


ROUTES: tuple[Route, ...] = (
    _route("LAX", "PHX", "DAL", "ATL"),
    _route("SEA", "SLC", "DEN", "MCI", "CHI"),
    _route("EWR", "CLT", "ATL", "MIA"),
    _route("CHI", "MEM", "DAL"),
    _route("ATL", "CLT", "EWR"),
    _route("DEN", "SLC", "LAX"),
    _route("MEM", "SDF", "IND", "CHI"),
    _route("DAL", "DEN", "SLC", "SEA"),
    _route("SDF", "CMH", "EWR"),
    _route("PHX", "DEN", "MCI", "CHI"),
    _route("MIA", "ATL", "MEM", "DAL"),
    _route("EWR", "CMH", "IND", "MCI", "DEN"),
)

CARRIERS: tuple[str, ...] = ("FedEx", "UPS", "USPS", "DHL", "OnTrac")

_ALNUM = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def tracking_number(carrier: str, rng: random.Random) -> str:
    """A tracking number in the carrier's usual format."""

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    if carrier == "UPS":
        return "1Z" + "".join(rng.choice(_ALNUM) for _ in range(6)) + digits(10)
    if carrier == "USPS":
        return "9400" + digits(18)
    if carrier == "DHL":
        return digits(10)
    if carrier == "OnTrac":
        return "C" + digits(14)
    return digits(12)  # FedEx


_EARTH_KM = 6371.0


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_KM * math.asin(math.sqrt(h))


def bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Initial heading from ``a`` to ``b``, degrees clockwise from north, in [0, 360)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    y = math.sin(lon2 - lon1) * math.cos(lat2)
    x = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return math.degrees(math.atan2(y, x)) % 360.0


def interpolate(
    a: tuple[float, float], b: tuple[float, float], share: float
) -> tuple[float, float]:
    """The point ``share`` (0..1) of the way from ``a`` to ``b`` (linear; legs are short
    enough for a map)."""
    share = min(max(share, 0.0), 1.0)
    return a[0] + (b[0] - a[0]) * share, a[1] + (b[1] - a[1]) * share


def nearby_point(center: tuple[float, float], rng: random.Random) -> tuple[float, float]:
    """A delivery address 5-30 km from ``center``."""
    km = rng.uniform(5.0, 30.0)
    angle = rng.uniform(0.0, 2 * math.pi)
    lat = center[0] + (km * math.cos(angle)) / 111.0
    lon = center[1] + (km * math.sin(angle)) / (111.0 * math.cos(math.radians(center[0])))
    return lat, lon
