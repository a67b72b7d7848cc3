"""Settings out of range stop ``clearpath serve`` / ``clearpath bridge`` at once: exit 2,
one line naming the setting, no traceback, nothing started."""

from __future__ import annotations

import pytest

from core.config import parse_retention
from tests.clients_helpers import run_cli


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("serve", "--retention", "parcels=10"), "retention"),
        (("serve", "--retention", "map_updates=0"), "retention"),
        (("serve", "--min-replicas", "-1"), "min_replicas"),
        (("serve", "--send-queue-bytes", "65535"), "send_queue_bytes"),  # just under 64 KiB
        (("bridge", "--core", "a:1,b"), "core"),
        (("bridge", "--slow-timeout", "0"), "slow_timeout"),
    ],
)
async def test_a_bad_setting_exits_2_naming_it(
    args: tuple[str, ...], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli(*args) == 2
    err = capsys.readouterr().err
    assert f"clearpath: {named}:" in err
    assert "Traceback" not in err


def test_retention_parses_counts_and_ages_and_names_the_bad_entry() -> None:
    assert parse_retention("") == {}
    assert parse_retention("map_updates=5000/10m, anomalies=/7d,package_updates=1") == {
        5: (5000, 600.0),
        2: (None, 604800.0),
        1: (1, None),
    }
    assert parse_retention("system_health=/90s") == {7: (None, 90.0)}
    for bad in ("map_updates=0", "map_updates=/", "map_updates=1/-5m", "map_updates=x", "x=1"):
        with pytest.raises(ValueError, match="retention entry"):
            parse_retention(bad)
