"""Subscription filters with plain calls: each filter, their combination, the limits."""

from __future__ import annotations

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.errors import InvalidArgument
from core.filters import build_matcher
from tests.events import package, sample


def anomaly(severity: int, package_id: str = "pkg-1") -> pb.Event:
    event = sample("anomaly_detected")
    event.anomaly_detected.severity = severity  # type: ignore[assignment]
    event.anomaly_detected.package_id = package_id
    return event


def notification(user: str, severity: int = pb.SEVERITY_MEDIUM) -> pb.Event:
    event = sample("notification")
    event.notification.user_id = user
    event.notification.severity = severity  # type: ignore[assignment]
    return event


def test_no_filter_is_no_matcher() -> None:
    assert build_matcher(spb.SubscriptionFilter()) is None


def test_package_ids_pass_events_without_one() -> None:
    match = build_matcher(spb.SubscriptionFilter(package_ids=["a", "b"]))
    assert match is not None
    assert match(package("a"))
    assert not match(package("c"))
    assert match(sample("dashboard_metrics"))  # no package_id: the filter does not apply


def test_tracking_numbers_apply_to_package_updates_only() -> None:
    match = build_matcher(spb.SubscriptionFilter(tracking_numbers=["PKG1"]))
    assert match is not None
    hit, miss = package("a"), package("b")
    hit.package_update.tracking_number = "PKG1"
    miss.package_update.tracking_number = "PKG2"
    assert match(hit)
    assert not match(miss)
    assert match(anomaly(pb.SEVERITY_LOW))


@pytest.mark.parametrize(
    ("severity", "passes"),
    [
        (pb.SEVERITY_LOW, False),
        (pb.SEVERITY_MEDIUM, False),
        (pb.SEVERITY_HIGH, True),
        (pb.SEVERITY_CRITICAL, True),
    ],
)
def test_min_severity_is_inclusive(severity: int, passes: bool) -> None:
    match = build_matcher(spb.SubscriptionFilter(min_severity=pb.SEVERITY_HIGH))
    assert match is not None
    assert match(anomaly(severity)) is passes
    assert match(notification("u", severity)) is passes
    assert match(package("a"))  # no severity: passes


def test_user_id_passes_that_user_and_broadcasts() -> None:
    match = build_matcher(spb.SubscriptionFilter(user_id="alice"))
    assert match is not None
    assert match(notification("alice"))
    assert match(notification(""))  # to everyone
    assert not match(notification("bob"))
    assert match(package("a"))


def test_filters_combine_with_and() -> None:
    match = build_matcher(spb.SubscriptionFilter(package_ids=["a"], min_severity=pb.SEVERITY_HIGH))
    assert match is not None
    assert match(anomaly(pb.SEVERITY_HIGH, "a"))
    assert not match(anomaly(pb.SEVERITY_HIGH, "b"))
    assert not match(anomaly(pb.SEVERITY_LOW, "a"))


def test_limits_exactly_at_and_just_past() -> None:
    assert build_matcher(spb.SubscriptionFilter(package_ids=[str(i) for i in range(1000)]))
    with pytest.raises(InvalidArgument, match=r"filter\.package_ids: at most 1000"):
        build_matcher(spb.SubscriptionFilter(package_ids=[str(i) for i in range(1001)]))
    with pytest.raises(InvalidArgument, match=r"filter\.tracking_numbers"):
        build_matcher(spb.SubscriptionFilter(tracking_numbers=[str(i) for i in range(1001)]))
    with pytest.raises(InvalidArgument, match=r"filter\.min_severity: unknown value 99"):
        build_matcher(spb.SubscriptionFilter(min_severity=99))  # type: ignore[arg-type]
