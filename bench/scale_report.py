"""The W4 and W5 tables of the results' Markdown (added by :func:`add_tables`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["add_tables", "markdown"]

#: The paragraph of the results file the tables go before (``bench/report.py``).
_BEFORE = "⚠ marks a row"


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return f"{round(v):,}" if digits == 0 else f"{v:,.{digits}f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items()) or "0"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _last(s: dict[str, Any], runs: list[dict[str, Any]], key: str) -> Any:
    """A non-numeric figure (a dict, a flag) of the last ok repeat of ``s``."""
    for r in reversed(runs):
        if (r["target"], r["workload"], r["variant"], r["status"]) == (
            s["target"],
            s["workload"],
            s["variant"],
            "ok",
        ):
            return r["metrics"].get(key)
    return None


def _w4(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    fleet, cap = [], []
    for s in summary:
        if s["workload"] != "W4" or not s["repeats_ok"]:
            continue
        m = s["median"]
        if "offered" in m:
            cap.append(
                [f"`{s['target']}`", s["variant"], _fmt(m.get("max_connections")),
                 _fmt(m.get("connected")), _fmt(m.get("bridge_fds")), _fmt(m.get("rss_mib"), 1),
                 _fmt(m.get("rss_per_conn_kib"), 1), _fmt(_last(s, runs, "refused_http")),
                 _fmt(m.get("unanswered")), _fmt(m.get("gave_up")),
                 _fmt(_last(s, runs, "connect_errors")), _fmt(_last(s, runs, "bridge_alive")),
                 _fmt(_last(s, runs, "healthz_after")), _fmt(_last(s, runs, "bridge_log"))]
            )  # fmt: skip
            continue
        spread = _last(s, runs, "worker_spread") or {}
        fleet.append(
            [f"`{s['target']}`", s["variant"], _fmt(m.get("connected")), _fmt(m.get("open_s"), 1),
             _fmt(m.get("rss_per_conn_kib"), 1), _fmt(m.get("bridge_rss_after_mib")),
             _fmt(m.get("core_rss_delta_mib"), 1),
             f"{_fmt(spread.get('min'))} to {_fmt(spread.get('max'))}",
             _fmt(m.get("marker_max_ms")), _fmt(m.get("marker_p99_ms")),
             _fmt(m.get("marker_reached")), _fmt(m.get("bridge_cpu_ms_per_conn"), 2),
             _fmt(m.get("listen_overflows")), _fmt(m.get("loadgen_rss_mib"), 1),
             _fmt(m.get("retries")), _fmt(m.get("gave_up")),
             _fmt(_last(s, runs, "connect_errors"))]
        )  # fmt: skip
    out: list[str] = []
    if fleet:
        header = ["target", "sockets", "connected", "open all s (≤ 60)",
                  "RSS/conn KiB (≤ 14.6)", "bridge RSS MiB", "core RSS Δ MiB",
                  "sockets per worker", "one event: max ms (≤ 2000)", "p99 ms", "reached",
                  "bridge CPU ms/conn", "listen overflows", "load-gen RSS MiB", "retries",
                  "gave up", "connect errors"]  # fmt: skip
        out += ["### W4: idle WebSocket connections at scale", "", *_table(header, fleet), ""]
    if cap:
        header = ["target", "offered", "max_connections", "connected", "bridge fds",
                  "RSS MiB", "RSS/conn KiB", "HTTP refusals", "unanswered", "gave up",
                  "connect errors",
                  "alive",
                  "/healthz after", "bridge log"]  # fmt: skip
        out += ["### W4: one bridge process at its open-file cap", "", *_table(header, cap), ""]
    return out


def _w5(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for s in summary:
        if s["workload"] != "W5" or not s["repeats_ok"]:
            continue
        m = s["median"]
        rows.append(
            [f"`{s['target']}`", s["variant"], _fmt(m.get("restart_s"), 1),
             _fmt(m.get("all_back_s"), 1), _fmt(m.get("resumed_p50_s"), 1),
             _fmt(m.get("resumed_p99_s"), 1), _fmt(m.get("resumed_max_s"), 1),
             _fmt(m.get("resumed_p99_after_restart_s"), 1), _fmt(m.get("live_p99_s"), 1),
             _fmt(m.get("gave_up")), _fmt(m.get("recovered_false")), _fmt(m.get("gap_events")),
             _fmt(m.get("duplicates")), _fmt(m.get("behind_events_at_end")),
             _fmt(m.get("refused_healthy")), _fmt(m.get("outage_events")),
             _fmt(_last(s, runs, "connect_errors"))]
        )  # fmt: skip
    if not rows:
        return []
    header = ["target", "clients, jitter", "restart s", "all back s", "resumed p50 s",
              "resumed p99 s (≤ 5)", "resumed max s", "p99 from restart s", "live p99 s",
              "gave up", "recovered false", "missed events", "duplicates", "behind at end",
              "refused 503/429", "outage events", "connect errors"]  # fmt: skip
    return ["### W5: reconnect storm (times from the SIGKILL)", "", *_table(header, rows), ""]


def markdown(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """The W4 and W5 sections (empty when neither ran)."""
    return _w4(summary, runs) + _w5(summary, runs)


def add_tables(path: Path, doc: dict[str, Any]) -> None:
    """Put the W4/W5 sections into the Markdown results at ``path``, before its
    closing notes (at the end if they are not found)."""
    lines = markdown(doc["summary"], doc["runs"])
    if not lines:
        return
    text = path.read_text()
    block = "\n".join(lines) + "\n"
    at = text.find(_BEFORE)
    text = text[:at] + block + text[at:] if at >= 0 else text + "\n" + block
    path.write_text(text)
