"""Sample events of every type, for tests."""

from __future__ import annotations

from typing import Any

from clearpath.realtime.v1 import events_pb2 as pb
from core.codec import event_from_frame

#: One valid JSON frame per event type, with the field values of the issue's examples.
SAMPLES: dict[str, dict[str, Any]] = {
    "package_update": {
        "package_id": "pkg-1",
        "tracking_number": "PKG123456789",
        "status": "in_transit",
        "location": "Chicago Distribution Center",
        "estimated_delivery": "2024-01-16T14:00:00Z",
        "last_scan_time": "2024-01-15T10:30:00Z",
        "carrier": "FedEx",
    },
    "anomaly_detected": {
        "package_id": "pkg-1",
        "anomaly_type": "delayed_delivery",
        "severity": "high",
        "description": "Package delayed by 4 hours",
        "recommended_action": "reroute_through_alternative_center",
        "confidence_score": 0.87,
        "detected_at": "2024-01-15T10:30:00Z",
    },
    "dashboard_metrics": {
        "total_packages": 1247,
        "in_transit": 892,
        "delivered": 312,
        "delayed": 43,
        "anomalies": 12,
        "recovery_rate": 0.94,
        "avg_delivery_time": 2.5,
    },
    "notification": {
        "notification_id": "n-1",
        "user_id": "alice",
        "title": "Package delayed",
        "message": "PKG123456789 is 4 hours late",
        "severity": "medium",
        "package_id": "pkg-1",
        "action_url": "/packages/pkg-1",
    },
    "map_update": {
        "package_id": "pkg-1",
        "vehicle_id": "truck-7",
        "latitude": 41.8781,
        "longitude": -87.6298,
        "heading": 270.0,
        "speed_kmh": 88.5,
        "route_id": "CHI-DEN",
        "next_stop": "Denver Hub",
        "status": "in_transit",
    },
    "agent_activity": {
        "agent_id": "recovery-agent-2",
        "agent_type": "recovery",
        "action": "reroute_package",
        "outcome": "succeeded",
        "package_id": "pkg-1",
        "details": "Rerouted through Indianapolis",
        "duration_ms": 420,
    },
    "system_health": {
        "component": "routing-service",
        "status": "degraded",
        "cpu_percent": 91.5,
        "memory_percent": 62.0,
        "latency_ms": 120.0,
        "error_rate": 0.5,
        "message": "High CPU",
    },
}


def sample(kind: str, timestamp: str | None = "2024-01-15T10:30:00Z", **data: Any) -> pb.Event:
    """The sample event of ``kind``, with ``data`` overriding payload fields."""
    frame: dict[str, Any] = {"type": kind, "data": {**SAMPLES[kind], **data}}
    if timestamp:
        frame["timestamp"] = timestamp
    return event_from_frame(frame)


def package(package_id: str = "pkg-1", **data: Any) -> pb.Event:
    """A package_update for ``package_id``."""
    return sample("package_update", package_id=package_id, **data)


def large_agent_activity(i: int, chars: int = 4096) -> pb.Event:
    """A valid agent_activity event of about ``5 * chars`` bytes: five string fields at
    the longest a string may be (4,096 characters), about 20.5 kB in all."""
    text = f"{i:08d}" + "x" * (chars - 8)  # i >= 0
    long_fields = ("agent_type", "action", "outcome", "package_id", "details")
    activity = pb.AgentActivity(agent_id=f"agent-{i}", duration_ms=i)
    for name in long_fields:
        setattr(activity, name, text)
    return pb.Event(agent_activity=activity)
