"""Subscription filters, evaluated in the core so unwanted events are never sent.

Pure functions of an event; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.errors import InvalidArgument

__all__ = ["Matcher", "build_matcher"]

Matcher = Callable[[pb.Event], bool]

_MAX_VALUES = 1000


def build_matcher(spec: spb.SubscriptionFilter) -> Matcher | None:
    """A predicate for events passing every filter set in ``spec``; None when none is.

    - ``package_ids``: events carrying a non-empty package_id must carry one of these;
    - ``tracking_numbers``: package updates must carry one of these;
    - ``min_severity``: anomalies and notifications must be at least this severe;
    - ``user_id``: notifications must be for this user or for everyone.

    Events a filter does not apply to pass it. Raises InvalidArgument for an
    unknown severity or more than 1000 values in a list.
    """
    for name in ("package_ids", "tracking_numbers"):
        if len(getattr(spec, name)) > _MAX_VALUES:
            raise InvalidArgument(f"filter.{name}: at most {_MAX_VALUES} values")
    if spec.min_severity not in pb.Severity.values():
        raise InvalidArgument(f"filter.min_severity: unknown value {spec.min_severity}")
    checks: list[Matcher] = []
    if spec.package_ids:
        ids = frozenset(spec.package_ids)
        checks.append(lambda e: _package_id(e) in ids or not _package_id(e))
    if spec.tracking_numbers:
        numbers = frozenset(spec.tracking_numbers)
        checks.append(
            lambda e: (
                not e.HasField("package_update") or e.package_update.tracking_number in numbers
            )
        )
    if spec.min_severity:
        low = spec.min_severity
        checks.append(lambda e: _severity(e) >= low)
    if spec.user_id:
        user = spec.user_id
        checks.append(
            lambda e: not e.HasField("notification") or e.notification.user_id in ("", user)
        )
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda e: all(check(e) for check in checks)


def _package_id(event: pb.Event) -> str:
    kind = event.WhichOneof("payload")
    payload = getattr(event, kind) if kind else None
    return str(getattr(payload, "package_id", ""))


def _severity(event: pb.Event) -> int:
    if event.HasField("anomaly_detected"):
        return int(event.anomaly_detected.severity)
    if event.HasField("notification"):
        return int(event.notification.severity)
    return pb.SEVERITY_CRITICAL
