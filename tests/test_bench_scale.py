"""W4/W5's pure parts: the load generator's backoff against core/backoff.py and the web
client's constants, merging reports, sizes and their overrides, the results tables."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import scale_config, scale_report
from bench.loadgen.cgen import build_wsgen
from bench.report import Run, summarize
from bench.scale import FD_BUDGET, gen_shares
from bench.scale_stats import (
    hist_count,
    hist_max,
    hist_quantile,
    merge_hists,
    merge_reports,
    spread,
)
from bench.stats import percentile
from bench.storm import behind
from bench.targets.base import TargetFailed
from core.backoff import Backoff

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web" / "src"


@pytest.fixture(scope="module")
def wsgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wsgen(tmp_path_factory.mktemp("build"))


# --- the reconnect schedule ------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_wsgen_schedule_is_core_backoff(wsgen: Path, jitter: float) -> None:
    rs = [0.0, 0.25, 0.5, 0.999]
    out = subprocess.run(
        [str(wsgen), "schedule", "initial_ms=500", "max_ms=15000", "factor=2",
         f"jitter={jitter}", "attempts=8", "r=" + ",".join(map(str, rs))],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    delays = json.loads(out.stdout)
    reference = Backoff(initial=0.5, maximum=15.0, factor=2.0, jitter=jitter)
    assert len(delays) == 8
    for attempt, row in enumerate(delays, start=1):
        for r, got in zip(rs, row, strict=True):
            expected = reference.delay(attempt, lambda: r) * 1000  # noqa: B023 - used at once
            assert got == pytest.approx(expected, abs=1e-3)


def test_scale_defaults_are_the_web_clients_schedule() -> None:
    """W5's clients back off as the web client does: backoff.ts's DEFAULT_BACKOFF and
    client.ts's default attempts and open timeout."""
    backoff = (WEB / "backoff.ts").read_text()
    client = (WEB / "client.ts").read_text()
    default = re.search(r"DEFAULT_BACKOFF[^=]*=\s*\{([^}]*)\}", backoff)
    assert default is not None
    values = {
        k: float(v.replace("_", "")) for k, v in re.findall(r"(\w+):\s*([\d_.]+)", default.group(1))
    }
    for sp in (scale_config.full(), scale_config.quick()):
        assert values == {
            "initialMs": sp.initial_ms,
            "maxMs": sp.max_ms,
            "factor": sp.factor,
            "jitter": 0.5,
        }
        assert 0.5 in sp.w5_jitters  # the web client's own
        # The web client never gives up by default; W5's clients take the most attempts
        # allowed, more than fit in the run's time bound.
        assert re.search(r"maxReconnectAttempts \?\? Infinity\b", client)
        assert sp.max_attempts == 250
        ms = f"{sp.connect_timeout_ms:_.0f}"
        assert re.search(rf"connectTimeoutMs \?\? {ms}\b", client)


# --- histograms and reports ------------------------------------------------------------


def test_merge_hists_adds_counts_of_equal_values() -> None:
    assert merge_hists([[[1, 2], [5, 1]], [], [[1, 1], [3, 4]]]) == [(1, 3), (3, 4), (5, 1)]
    assert merge_hists([]) == []


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200), st.floats(0, 100))
def test_hist_quantile_is_nearest_rank_of_the_values(values: list[int], q: float) -> None:
    hist = merge_hists([[[v, 1] for v in values]])
    assert hist_count(hist) == len(values)
    assert hist_quantile(hist, q) == percentile(sorted(values), q)
    assert hist_max(hist) == max(values)


def test_empty_histogram_has_no_quantile() -> None:
    assert hist_quantile([], 50) is None
    assert hist_max([]) is None


def test_merge_reports_sums_counters_and_keeps_the_extremes() -> None:
    a = {"event": "report", "n": 3, "duplicates": 1, "cpu_s": 0.25, "start_ns": 100,
         "first_welcome_ns": 150, "last_welcome_ns": 900, "marker_max_us": 40,
         "http_status": {"503": 2}, "connect_errors": {"eof": 1},
         "open_ms": [[1, 2], [4, 1]], "last_offsets": [[9, 3]]}  # fmt: skip
    b = {"event": "report", "n": 2, "duplicates": 0, "cpu_s": 0.5, "start_ns": 80,
         "first_welcome_ns": 0, "last_welcome_ns": 950, "marker_max_us": 30,
         "http_status": {"503": 1, "429": 4}, "connect_errors": {},
         "open_ms": [[4, 2]], "last_offsets": [[8, 1], [9, 1]]}  # fmt: skip
    merged = merge_reports([a, b])
    assert merged["processes"] == 2
    assert merged["n"] == 5
    assert merged["duplicates"] == 1
    assert merged["cpu_s"] == 0.75
    assert merged["start_ns"] == 80
    assert merged["first_welcome_ns"] == 150  # a process that welcomed nobody says 0
    assert merged["last_welcome_ns"] == 950
    assert merged["marker_max_us"] == 40
    assert merged["http_status"] == {"429": 4, "503": 3}
    assert merged["connect_errors"] == {"eof": 1}
    assert merged["close_codes"] == {}
    assert merged["open_ms"] == [(1, 2), (4, 3)]
    assert merged["last_offsets"] == [(8, 1), (9, 4)]
    assert merged["back_ms"] == []


def test_behind_counts_clients_and_events_short_of_the_head() -> None:
    assert behind([(7, 2), (9, 1), (10, 5)], 10) == (3, 2 * 3 + 1)
    assert behind([(10, 5)], 10) == (0, 0)
    assert behind([], 10) == (0, 0)


def test_spread() -> None:
    assert spread([10, 20, 30]) == {"min": 10, "max": 30, "max_over_mean": 1.5}
    assert spread([]) == {"min": 0, "max": 0, "max_over_mean": 0.0}


# --- sizes ---------------------------------------------------------------------------


def test_full_sizes_fit_the_open_file_cap() -> None:
    sp = scale_config.full()
    assert sp.w5_jitters == (0.5, 1.0, 0.0)  # the web client's, full, none: compared
    assert sp.w4_connections == 100_000
    assert sp.w4_connections / sp.w4_bridge_workers <= FD_BUDGET
    assert sp.w4_connections / sp.w4_loadgens <= FD_BUDGET
    assert sp.w5_clients == 10_000
    # one source address has ~28k ephemeral ports towards the bridge
    assert sp.w4_connections / len(scale_config.SOURCE_ADDRESSES) < 28_000


def test_override_changes_the_named_fields() -> None:
    sp = scale_config.override(scale_config.full(), "w4_connections=5000, w5_jitters=0.5/0")
    assert sp.w4_connections == 5000
    assert sp.w5_jitters == (0.5, 0.0)
    assert sp.w5_clients == scale_config.full().w5_clients
    assert scale_config.override(sp, "") == sp


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("w4_sockets=5", "--scale 'w4_sockets=5': expected KEY=VALUE, KEY one of"),
        ("w4_connections", "expected KEY=VALUE"),
        ("w4_connections=many", "--scale w4_connections: 'many' is not a int"),
        ("w4_connections=-1", "--scale w4_connections: must be >= 0"),
        ("w4_loadgens=0", "--scale w4_loadgens: must be between 1 and 64"),
        ("w5_rate=0", "--scale w5_rate: must be > 0"),
        ("w5_jitters=1.5", "--scale w5_jitters: one or more shares in [0, 1]"),
        ("max_attempts=0", "--scale max_attempts: must be between 1 and 250"),
    ],
)
def test_override_refuses_bad_input_naming_the_field(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        scale_config.override(scale_config.full(), spec)


def test_gen_shares_split_connections_and_rate() -> None:
    shares = gen_shares(10, 3, 300.0, frozenset({1}), {"port": 9, "mode": "idle"})
    args = [dict(a.split("=", 1) for a in share) for share in shares]
    assert [int(a["n"]) for a in args] == [4, 3, 3]
    assert [float(a["rate"]) for a in args] == [120.0, 90.0, 90.0]
    assert {a["cpus"] for a in args} == {"1"}
    assert {a["port"] for a in args} == {"9"}
    assert args[0]["src"] == ",".join(scale_config.SOURCE_ADDRESSES)
    assert len({a["seed"] for a in args}) == 3


def test_gen_shares_refuses_more_sockets_than_a_process_may_open() -> None:
    with pytest.raises(TargetFailed, match="give more load generators"):
        gen_shares(2 * FD_BUDGET + 2, 2, 1000.0, frozenset(), {})


# --- the results tables ----------------------------------------------------------------


def _run(workload: str, variant: str, metrics: dict[str, Any]) -> Run:
    return Run("clearpath-workers", workload, variant, 1, "ok", metrics)


def test_tables_go_before_the_closing_notes(tmp_path: Path) -> None:
    w4 = {"connected": 100_000, "open_s": 51.2, "rss_per_conn_kib": 13.9, "marker_max_ms": 812,
          "worker_spread": {"min": 14_100, "max": 14_500}}  # fmt: skip
    cap = {"offered": 20_500, "connected": 19_950, "refused_http": {"503": 550},
           "bridge_alive": True}  # fmt: skip
    w5 = {"resumed_p99_s": 4.2, "gap_events": 0, "connect_errors": {"ECONNREFUSED": 9}}
    runs = [_run("W4", "fleet", w4), _run("W4", "cap", cap), _run("W5", "jitter 0.5", w5)]
    path = tmp_path / "results.md"
    path.write_text("# Results\n\n## Results\n\n⚠ marks a row where ...\n")
    doc = {"summary": summarize(runs), "runs": [asdict(r) for r in runs]}
    scale_report.add_tables(path, doc)
    text = path.read_text()
    assert text.index("### W4: idle WebSocket") < text.index("### W4: one bridge process")
    assert text.index("### W5: reconnect storm") < text.index("⚠ marks a row")
    assert "| 100,000 | 51.2 | 13.9 |" in text
    assert "14,100 to 14,500" in text
    assert "503: 550" in text
    assert "| yes |" in text
    assert "ECONNREFUSED: 9" in text


def test_no_tables_without_scale_runs(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text("unchanged")
    scale_report.add_tables(path, {"summary": [], "runs": []})
    assert path.read_text() == "unchanged"
