"""Subscription filters with plain calls: each filter, their combination, the limits."""

from __future__ import annotations

import math

import pytest

from clearpath.realtime.v1 import events_pb2 as pb
from clearpath.realtime.v1 import service_pb2 as spb
from core.errors import InvalidArgument
from core.filters import TELL_EVERY, Skipped, bbox_of, build_matcher
from core.positions import Position
from core.viewport import BoundingBox
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


def at(lat: float, lon: float, package_id: str = "pkg-1") -> pb.Event:
    return sample("map_update", latitude=lat, longitude=lon, package_id=package_id)


def test_bbox_applies_to_map_updates_only() -> None:
    box = spb.BoundingBox(west=-90, south=30, east=-80, north=45)
    match = build_matcher(spb.SubscriptionFilter(bbox=box))
    assert match is not None
    assert match(at(40, -85))
    assert match(at(30, -90))
    assert match(at(45, -80))
    assert not match(at(40, -79.99))
    assert not match(at(45.01, -85))
    assert match(package("a"))
    assert match(anomaly(pb.SEVERITY_LOW))


def test_bbox_across_the_antimeridian() -> None:
    box = spb.BoundingBox(west=170, south=-10, east=-170, north=10)
    match = build_matcher(spb.SubscriptionFilter(bbox=box))
    assert match is not None
    assert match(at(0, 175))
    assert match(at(0, -175))
    assert match(at(0, 180))
    assert not match(at(0, 0))


def test_bbox_combines_with_other_filters() -> None:
    box = spb.BoundingBox(west=-90, south=30, east=-80, north=45)
    match = build_matcher(spb.SubscriptionFilter(bbox=box, package_ids=["a"]))
    assert match is not None
    assert match(at(40, -85, "a"))
    assert not match(at(40, -85, "b"))
    assert not match(at(0, 0, "a"))


def test_an_unset_bbox_is_no_box_and_a_set_one_is_a_box_even_all_zero() -> None:
    assert build_matcher(spb.SubscriptionFilter()) is None
    assert bbox_of(spb.SubscriptionFilter()) is None
    # Set, all zero: the point at 0, 0 (as on the bridge), presence surviving the wire.
    spec = spb.SubscriptionFilter.FromString(
        spb.SubscriptionFilter(bbox=spb.BoundingBox()).SerializeToString()
    )
    assert bbox_of(spec) == BoundingBox(0, 0, 0, 0)
    match = build_matcher(spec)
    assert match is not None
    assert match(at(0, 0))
    assert not match(at(41.9, -87.6))


def test_the_antimeridian_is_one_meridian_in_the_filter_too() -> None:
    match = build_matcher(
        spb.SubscriptionFilter(bbox=spb.BoundingBox(west=-180, south=-20, east=-170, north=20))
    )
    assert match is not None
    assert match(at(0, 180))
    assert match(at(0, -180))


def test_skipped_keeps_the_newest_position_per_topic_until_told_or_passed() -> None:
    skipped = Skipped()
    assert not skipped
    assert not skipped.skip(5, pb.StreamPosition(offset=3, epoch="e"))
    skipped.skip(5, pb.StreamPosition(offset=4, epoch="e"))
    skipped.skip(2, pb.StreamPosition(offset=9, epoch="e"))
    assert skipped.count == 3
    skipped.passed(5, pb.StreamPosition(offset=3, epoch="e"))  # older: says less
    skipped.passed(2, pb.StreamPosition(offset=10, epoch="f"))  # another epoch: says nothing
    assert skipped.take() == {5: Position(4, "e"), 2: Position(9, "e")}
    assert not skipped
    assert skipped.count == 0
    skipped.skip(5, pb.StreamPosition(offset=6, epoch="e"))
    skipped.passed(5, pb.StreamPosition(offset=6, epoch="e"))  # sent: nothing to tell
    assert skipped.take() == {}


def test_skipped_says_when_it_is_time_to_tell() -> None:
    skipped = Skipped()
    due = [skipped.skip(5, pb.StreamPosition(offset=i, epoch="e")) for i in range(TELL_EVERY)]
    assert due == [False] * (TELL_EVERY - 1) + [True]
    assert skipped.due()
    skipped.skip(5, pb.StreamPosition(offset=TELL_EVERY, epoch="e"))
    assert skipped.due()  # still due until taken, but said once
    skipped.take()
    assert not skipped.due()


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (spb.BoundingBox(west=0, south=10, east=1, north=5), r"filter\.bbox\.south: must not"),
        (spb.BoundingBox(west=0, south=-95, east=1, north=5), r"filter\.bbox\.south: must be"),
        (spb.BoundingBox(west=0, south=1, east=1, north=95), r"filter\.bbox\.north"),
        (spb.BoundingBox(west=-200, south=1, east=1, north=5), r"filter\.bbox\.west"),
        (spb.BoundingBox(west=0, south=1, east=181, north=5), r"filter\.bbox\.east"),
        (spb.BoundingBox(west=math.nan, south=1, east=1, north=5), r"filter\.bbox\.west: .*finite"),
        (spb.BoundingBox(west=0, south=1, east=math.inf, north=5), r"filter\.bbox\.east: .*finite"),
    ],
)
def test_bad_bbox_names_the_field(box: spb.BoundingBox, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build_matcher(spb.SubscriptionFilter(bbox=box))
