"""A simulated logistics network publishing believable traffic through the SDK.

:class:`NetworkModel` is the pure, seeded model (steps in, events out, no I/O);
:func:`run_simulator` publishes its events to a core at a steady rate.
"""

from __future__ import annotations

from clients.simulator._model import COMPONENTS, NetworkModel
from clients.simulator._network import CARRIERS, CENTERS, ROUTES, Center, Route
from clients.simulator._runner import run_simulator

__all__ = [
    "CARRIERS",
    "CENTERS",
    "COMPONENTS",
    "ROUTES",
    "Center",
    "NetworkModel",
    "Route",
    "run_simulator",
]
