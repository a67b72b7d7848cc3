"""The simulated logistics network: a pure, seeded model that turns steps into events.

No I/O and no clock of its own: :meth:`NetworkModel.step` takes the time to
stamp events with and returns that step's events, so a run is reproducible
from its seed and the times given. Time is compressed: each step moves every
vehicle ``hours_per_step`` hours along its route, while timestamps are the
``now`` passed in. A package's ETA is promised when it is created (its
planned travel, plus a margin) and moves only when a delay pushes it back or a
recovery brings it forward.

Rules the stream keeps (and the tests check):

- a package's statuses go created → in_transit (one update per center
  reached) → out_for_delivery → delivered; from in_transit or
  out_for_delivery it may become delayed, and it then resumes the status it
  had; a delay pushes its ETA back by the hours of the delay;
- every delay raises a delayed_delivery anomaly; other anomalies (missed scan,
  route deviation, damage, temperature for cold-chain packages) are raised
  while moving; a package has at most one open anomaly;
- a recovery agent takes each anomaly: ``pending``, then ``succeeded`` or
  ``failed``; after two failures it ``escalated`` to operations. ``succeeded``
  and ``escalated`` close the anomaly (a success ends a delay early);
- dashboard metrics are counted from the same state, after the step's other
  events: totals match the package updates sent so far.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.protobuf.message import Message

from clearpath.realtime.v1 import events_pb2 as pb
from clients.simulator._network import (
    CARRIERS,
    ROUTES,
    Route,
    bearing,
    distance_km,
    interpolate,
    nearby_point,
    tracking_number,
)

__all__ = ["COMPONENTS", "NetworkModel"]

#: Components reporting system health.
COMPONENTS: tuple[str, ...] = (
    "core",
    "bridge",
    "tracking-ingest",
    "routing-service",
    "anomaly-detector",
    "recovery-agents",
)
# Chances per step of travel that a package is delayed, or hits another anomaly.
_DELAY_CHANCE, _ANOMALY_CHANCE = 0.008, 0.005
_AGENTS = tuple(f"recovery-agent-{i}" for i in range(1, 5))
_MOVING = (pb.PACKAGE_STATUS_IN_TRANSIT, pb.PACKAGE_STATUS_OUT_FOR_DELIVERY)
# Causes of delays: (cause, action in transit, action on the last mile).
_DELAY_CAUSES = (
    ("severe weather on the route", "reroute_through_alternative_center", "reschedule_delivery"),
    ("a mechanical failure of the vehicle", "dispatch_replacement_vehicle", "dispatch_backup_van"),
    ("a sorting backlog", "prioritize_sorting", "expedite_last_mile"),
    ("a missed linehaul connection", "book_next_linehaul", "expedite_last_mile"),
    ("traffic congestion", "reroute_through_alternative_center", "optimize_delivery_route"),
)


@dataclass(frozen=True)
class _Kind:
    """An anomaly other than a delay, and how the detector reports it."""

    anomaly_type: int
    severities: tuple[int, int]
    confidences: tuple[float, float]
    text: str
    action: str


_MISSED, _DEVIATION, _DAMAGED = (
    pb.ANOMALY_TYPE_MISSED_SCAN,
    pb.ANOMALY_TYPE_ROUTE_DEVIATION,
    pb.ANOMALY_TYPE_DAMAGED,
)
_OTHER_ANOMALIES = (
    _Kind(_MISSED, (1, 2), (0.55, 0.8), "No scan for {h} hours", "request_manual_scan"),
    _Kind(_DEVIATION, (2, 3), (0.6, 0.9), "Vehicle left route {route}", "contact_driver"),
    _Kind(_DAMAGED, (2, 3), (0.7, 0.95), "Damage reported at a scan", "inspect_and_repack"),
)
_TEMPERATURE = _Kind(
    pb.ANOMALY_TYPE_TEMPERATURE_EXCURSION,
    (3, 4),
    (0.85, 0.99),
    "Temperature {t:.1f}°C, outside 2-8°C",
    "dispatch_cold_chain_team",
)


@dataclass
class _Package:
    package_id: str
    tracking_number: str
    carrier: str
    route: Route
    cold_chain: bool
    speed_kmh: float
    destination: tuple[float, float]
    status: int = pb.PACKAGE_STATUS_CREATED
    resume_status: int = pb.PACKAGE_STATUS_IN_TRANSIT
    dwell: int = 1  # steps before pick-up
    leg: int = 0  # travelling from route.stops[leg] to the next stop (or the address)
    km_done: float = 0.0
    delay_steps: int = 0
    hours: float = 0.0  # travel hours since creation
    vehicle_id: str = ""
    eta: datetime | None = None
    anomaly: _Anomaly | None = None


@dataclass
class _Anomaly:
    package: _Package
    anomaly_type: int
    action: str
    agent_id: str
    due: int  # step at which the agent acts next
    failures: int = 0
    started: bool = False


@dataclass
class _Health:
    cpu: float
    memory: float
    latency: float
    errors: float = 0.0


@dataclass
class _Counts:
    statuses: dict[int, int] = field(default_factory=dict)
    created: int = 0
    open_anomalies: int = 0
    recovered: int = 0
    escalated: int = 0
    delivered_days: float = 0.0


class NetworkModel:
    """A logistics network of about ``packages`` packages in flight at once.

    ``seed`` makes a run reproducible. Each :meth:`step` advances every
    package by ``hours_per_step`` hours of travel and returns the events of
    that step, in the order they should be published.
    """

    def __init__(
        self,
        packages: int = 200,
        seed: int | None = None,
        *,
        hours_per_step: float = 1.0,
        metrics_every: int = 5,
        health_every: int = 10,
    ) -> None:
        if packages < 1:
            raise ValueError("packages must be at least 1")
        self.target = packages
        self.hours_per_step = hours_per_step
        self.metrics_every = metrics_every
        self.health_every = health_every
        self.steps = 0
        self._rng = random.Random(seed)
        self._active: list[_Package] = []
        self._anomalies: list[_Anomaly] = []
        self._counts = _Counts()
        rng = self._rng
        self._health = {
            name: _Health(rng.uniform(15, 45), rng.uniform(30, 60), rng.uniform(5, 40))
            for name in COMPONENTS
        }
        self._now = datetime.min
        self._events: list[pb.Event] = []

    # --- the step ----------------------------------------------------------------

    def step(self, now: datetime) -> list[pb.Event]:
        """Advance one step; return its events, stamped with ``now`` (timezone-aware)."""
        self._now, self._events = now, []
        self.steps += 1
        self._create_packages()
        for package in list(self._active):
            self._advance(package)
        for anomaly in list(self._anomalies):
            if anomaly.due <= self.steps:
                self._agent_acts(anomaly)
        self._active = [p for p in self._active if p.status != pb.PACKAGE_STATUS_DELIVERED]
        if self.steps % self.health_every == 1 or self.health_every == 1:
            self._report_health()
        if self.steps % self.metrics_every == 1 or self.metrics_every == 1:
            self._emit("dashboard_metrics", self.metrics())
        return self._events

    def metrics(self) -> pb.DashboardMetrics:
        """The network's figures now."""
        counts = self._counts
        delivered = counts.statuses.get(pb.PACKAGE_STATUS_DELIVERED, 0)
        closed = counts.recovered + counts.escalated
        return pb.DashboardMetrics(
            total_packages=counts.created,
            in_transit=sum(counts.statuses.get(s, 0) for s in _MOVING),
            delivered=delivered,
            delayed=counts.statuses.get(pb.PACKAGE_STATUS_DELAYED, 0),
            anomalies=counts.open_anomalies,
            recovery_rate=round(counts.recovered / closed, 4) if closed else 0.0,
            avg_delivery_time=round(counts.delivered_days / delivered, 3) if delivered else 0.0,
        )

    # --- packages ----------------------------------------------------------------

    def _create_packages(self) -> None:
        ramp = max(1, math.ceil(self.target / 10))
        for _ in range(min(ramp, self.target - len(self._active))):
            rng = self._rng
            carrier = rng.choice(CARRIERS)
            route = rng.choice(ROUTES)
            package = _Package(
                package_id=f"pkg-{self._counts.created + 1:06d}",
                tracking_number=tracking_number(carrier, rng),
                carrier=carrier,
                route=route,
                cold_chain=rng.random() < 0.1,
                speed_kmh=rng.uniform(70, 95),
                destination=nearby_point(route.stops[-1].point, rng),
                dwell=rng.randint(1, 3),
            )
            self._counts.created += 1
            self._active.append(package)
            self._set_status(package, pb.PACKAGE_STATUS_CREATED, route.stops[0].name, new=True)

    def _advance(self, package: _Package) -> None:
        rng = self._rng
        if package.status == pb.PACKAGE_STATUS_CREATED:
            package.dwell -= 1
            if package.dwell <= 0:
                package.vehicle_id = f"TRK-{rng.randint(100, 999)}"
                self._set_status(package, pb.PACKAGE_STATUS_IN_TRANSIT, package.route.stops[0].name)
            return
        if package.status == pb.PACKAGE_STATUS_DELAYED:
            package.delay_steps -= 1
            package.hours += self.hours_per_step
            if package.delay_steps <= 0:
                self._set_status(package, package.resume_status, self._location(package))
            elif rng.random() < 0.2:
                self._map_update(package, speed=0.0)
            return
        package.hours += self.hours_per_step
        if package.anomaly is None and rng.random() < _DELAY_CHANCE:
            self._delay(package)
            return
        if package.anomaly is None and rng.random() < _ANOMALY_CHANCE:
            self._other_anomaly(package)
        self._move(package)

    def _move(self, package: _Package) -> None:
        start, end = self._leg(package)
        length = distance_km(start, end)
        last_mile = package.status == pb.PACKAGE_STATUS_OUT_FOR_DELIVERY
        speed = package.speed_kmh * (0.45 if last_mile else 1.0)
        package.km_done += speed * self.hours_per_step
        if package.km_done < length:
            if self._rng.random() < 0.35:
                self._map_update(package, speed=speed * self._rng.uniform(0.85, 1.1))
            return
        package.km_done = 0.0
        stops = package.route.stops
        if last_mile:
            self._counts.delivered_days += package.hours / 24
            self._set_status(package, pb.PACKAGE_STATUS_DELIVERED, f"Delivered, {stops[-1].city}")
            return
        package.leg += 1
        if package.leg == len(stops) - 1:
            package.vehicle_id = f"VAN-{self._rng.randint(1000, 9999)}"
            self._set_status(package, pb.PACKAGE_STATUS_OUT_FOR_DELIVERY, stops[-1].name)
        else:
            self._set_status(package, pb.PACKAGE_STATUS_IN_TRANSIT, stops[package.leg].name)
        self._map_update(package, speed=0.0)

    def _leg(self, package: _Package) -> tuple[tuple[float, float], tuple[float, float]]:
        stops = package.route.stops
        if package.leg >= len(stops) - 1:
            return stops[-1].point, package.destination
        return stops[package.leg].point, stops[package.leg + 1].point

    def _location(self, package: _Package) -> str:
        stops = package.route.stops
        if package.leg >= len(stops) - 1:
            return f"Out for delivery, {stops[-1].city}"
        return f"In transit to {stops[package.leg + 1].name}"

    def _hours_left(self, package: _Package) -> float:
        stops = package.route.stops
        km = -package.km_done
        for leg in range(package.leg, len(stops) - 1):
            km += distance_km(stops[leg].point, stops[leg + 1].point)
        km += distance_km(stops[-1].point, package.destination)
        dwell = max(package.dwell, 0) + (len(stops) - 1 - package.leg) * 0.5
        return max(km, 0.0) / package.speed_kmh + dwell + package.delay_steps * self.hours_per_step

    def _set_status(self, package: _Package, status: int, location: str, new: bool = False) -> None:
        statuses = self._counts.statuses
        if not new:
            statuses[package.status] -= 1
        statuses[status] = statuses.get(status, 0) + 1
        package.status = status
        update = pb.PackageUpdate(
            package_id=package.package_id,
            tracking_number=package.tracking_number,
            status=status,  # type: ignore[arg-type]
            location=location,
            carrier=package.carrier,
        )
        update.last_scan_time.FromDatetime(self._now)
        if package.eta is None:  # promised at creation; moved only by delays and recoveries
            eta = self._now + timedelta(hours=self._hours_left(package) + 2)
            package.eta = eta.replace(second=0, microsecond=0)
        update.estimated_delivery.FromDatetime(package.eta)
        self._emit("package_update", update)

    def _map_update(self, package: _Package, speed: float) -> None:
        start, end = self._leg(package)
        length = distance_km(start, end) or 1.0
        latitude, longitude = interpolate(start, end, package.km_done / length)
        stops = package.route.stops
        next_stop = (
            f"Delivery address, {stops[-1].city}"
            if package.leg >= len(stops) - 1
            else stops[package.leg + 1].name
        )
        self._emit(
            "map_update",
            pb.MapUpdate(
                package_id=package.package_id,
                vehicle_id=package.vehicle_id,
                latitude=round(latitude, 5),
                longitude=round(longitude, 5),
                heading=round(bearing(start, end), 1) % 360.0,
                speed_kmh=round(speed, 1),
                route_id=package.route.route_id,
                next_stop=next_stop,
                status=package.status,  # type: ignore[arg-type]
            ),
        )

    # --- anomalies and agents ------------------------------------------------------

    def _delay(self, package: _Package) -> None:
        rng = self._rng
        hours = rng.choice((2, 3, 4, 6, 8, 12, 18, 24, 36))
        cause, linehaul_action, last_mile_action = rng.choice(_DELAY_CAUSES)
        last_mile = package.status == pb.PACKAGE_STATUS_OUT_FOR_DELIVERY
        package.resume_status = package.status
        package.delay_steps = max(1, math.ceil(hours / self.hours_per_step))
        if package.eta is not None:
            package.eta += timedelta(hours=hours)
        self._set_status(package, pb.PACKAGE_STATUS_DELAYED, self._location(package))
        severity = (
            pb.SEVERITY_LOW
            if hours < 6
            else pb.SEVERITY_MEDIUM
            if hours < 12
            else pb.SEVERITY_HIGH
            if hours < 24
            else pb.SEVERITY_CRITICAL
        )
        self._open_anomaly(
            package,
            pb.ANOMALY_TYPE_DELAYED_DELIVERY,
            severity,
            confidence=min(0.99, 0.72 + hours / 100 + rng.uniform(0, 0.1)),
            description=f"Package {package.tracking_number} delayed by {hours} hours ({cause})",
            action=last_mile_action if last_mile else linehaul_action,
        )

    def _other_anomaly(self, package: _Package) -> None:
        rng = self._rng
        kind = (
            _TEMPERATURE
            if package.cold_chain and rng.random() < 0.5
            else rng.choice(_OTHER_ANOMALIES)
        )
        description = kind.text.format(
            h=rng.randint(6, 30), route=package.route.route_id, t=rng.uniform(9.0, 14.0)
        )
        self._open_anomaly(
            package,
            kind.anomaly_type,
            rng.randint(*kind.severities),
            confidence=rng.uniform(*kind.confidences),
            description=f"{description} ({package.tracking_number})",
            action=kind.action,
        )

    def _open_anomaly(
        self,
        package: _Package,
        anomaly_type: int,
        severity: int,
        *,
        confidence: float,
        description: str,
        action: str,
    ) -> None:
        anomaly = _Anomaly(package, anomaly_type, action, self._rng.choice(_AGENTS), self.steps + 1)
        package.anomaly = anomaly
        self._anomalies.append(anomaly)
        self._counts.open_anomalies += 1
        detected = pb.AnomalyDetected(
            package_id=package.package_id,
            anomaly_type=anomaly_type,  # type: ignore[arg-type]
            severity=severity,  # type: ignore[arg-type]
            description=description,
            recommended_action=action,
            confidence_score=round(confidence, 3),
        )
        detected.detected_at.FromDatetime(self._now)
        self._emit("anomaly_detected", detected)
        if severity >= pb.SEVERITY_HIGH:
            self._notify(package, "Anomaly needs attention", description, severity)

    def _agent_acts(self, anomaly: _Anomaly) -> None:
        rng = self._rng
        if not anomaly.started:
            anomaly.started = True
            anomaly.due = self.steps + rng.randint(1, 2)
            self._activity(anomaly, anomaly.action, "pending", "Working on it")
            return
        if rng.random() < 0.7:
            self._activity(anomaly, anomaly.action, "succeeded", "Recovered")
            self._close(anomaly, recovered=True)
            package = anomaly.package
            if package.status == pb.PACKAGE_STATUS_DELAYED and package.delay_steps > 1:
                saved = (package.delay_steps - 1) * self.hours_per_step
                package.delay_steps = 1  # resumes next step, and the ETA comes back
                if package.eta is not None:
                    package.eta -= timedelta(hours=saved)
            return
        anomaly.failures += 1
        if anomaly.failures < 2:
            anomaly.due = self.steps + rng.randint(1, 3)
            self._activity(anomaly, anomaly.action, "failed", "Will retry")
            return
        self._activity(anomaly, "escalate_to_operations", "escalated", "Handed to people")
        self._close(anomaly, recovered=False)
        self._notify(
            anomaly.package,
            "Recovery escalated",
            f"{anomaly.agent_id} could not resolve the anomaly on {anomaly.package.package_id}",
            pb.SEVERITY_HIGH,
        )

    def _activity(self, anomaly: _Anomaly, action: str, outcome: str, details: str) -> None:
        self._emit(
            "agent_activity",
            pb.AgentActivity(
                agent_id=anomaly.agent_id,
                agent_type="recovery",
                action=action,
                outcome=outcome,
                package_id=anomaly.package.package_id,
                details=f"{details}: {anomaly.package.tracking_number}",
                duration_ms=self._rng.randint(150, 4000),
            ),
        )

    def _close(self, anomaly: _Anomaly, *, recovered: bool) -> None:
        self._anomalies.remove(anomaly)
        anomaly.package.anomaly = None
        self._counts.open_anomalies -= 1
        if recovered:
            self._counts.recovered += 1
        else:
            self._counts.escalated += 1

    def _notify(self, package: _Package, title: str, message: str, severity: int) -> None:
        self._emit(
            "notification",
            pb.Notification(
                notification_id=f"ntf-{self.steps:06d}-{self._rng.randrange(16**6):06x}",
                title=title,
                message=message,
                severity=severity,  # type: ignore[arg-type]
                package_id=package.package_id,
                action_url=f"/packages/{package.package_id}",
            ),
        )

    # --- system health -------------------------------------------------------------

    def _report_health(self) -> None:
        rng = self._rng
        for name, health in self._health.items():
            health.cpu = min(99.0, max(2.0, health.cpu + rng.gauss(0, 6)))
            health.memory = min(97.0, max(10.0, health.memory + rng.gauss(0, 2)))
            health.latency = min(900.0, max(1.0, health.latency * math.exp(rng.gauss(0, 0.25))))
            health.errors = max(
                0.0, health.errors * 0.5 + (rng.expovariate(2) if rng.random() < 0.2 else 0)
            )
            degraded = health.cpu > 85 or health.latency > 250 or health.errors > 1.5
            status = pb.HEALTH_STATUS_DEGRADED if degraded else pb.HEALTH_STATUS_HEALTHY
            self._emit(
                "system_health",
                pb.SystemHealth(
                    component=name,
                    status=status,
                    cpu_percent=round(health.cpu, 1),
                    memory_percent=round(health.memory, 1),
                    latency_ms=round(health.latency, 1),
                    error_rate=round(health.errors, 2),
                    message="running hot" if degraded else "ok",
                ),
            )

    def _emit(self, kind: str, payload: Message) -> None:
        event = pb.Event()
        getattr(event, kind).CopyFrom(payload)
        event.timestamp.FromDatetime(self._now)
        self._events.append(event)
