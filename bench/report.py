"""Results: medians over repeats, and the Markdown + JSON files."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import median

__all__ = ["Run", "summarize", "write_results"]


@dataclass
class Run:
    """One workload against one target, one repeat; ``status`` is ok, failed or skipped."""

    target: str
    workload: str
    variant: str
    repeat: int
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """Per (target, workload, variant): the median of every numeric metric over ok repeats."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.target, r.workload, r.variant)].append(r)
    out = []
    for (target, workload, variant), rs in groups.items():
        ok = [r for r in rs if r.status == "ok"]
        med: dict[str, Any] = {}
        keys = {k for r in ok for k, v in r.metrics.items() if isinstance(v, int | float)}
        for k in sorted(keys):
            vals = [float(r.metrics[k]) for r in ok if isinstance(r.metrics.get(k), int | float)]
            med[k] = round(median(vals), 3)
            if len(vals) > 1:
                med[f"{k}__range"] = [min(vals), max(vals)]
        out.append(
            {
                "target": target,
                "workload": workload,
                "variant": variant,
                "repeats_ok": len(ok),
                "repeats": len(rs),
                "median": med,
                "errors": sorted({r.error for r in rs if r.error}),
            }
        )
    return out


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:  # NaN
        return "-"
    if isinstance(v, int | float):
        if digits == 0:
            return f"{round(v):,}"
        return f"{v:,.{digits}f}"
    return str(v)


def _ratio(v: Any, base: Any, pct: bool = False) -> str:
    if not isinstance(v, int | float) or not isinstance(base, int | float) or not base:
        return "-"
    return f"{v / base * 100:.0f} %" if pct else f"{v / base:.2f}x"


_LOADGEN_HOT = 90.0


def _hot(m: dict[str, Any]) -> str:
    """A warning mark when the load generator may have been the bottleneck."""
    # /proc/stat's per-core figure is tick-sampled and can read low; the processes'
    # own accounting (subscribers + harness/publisher, same core) is the other view.
    own = float(m.get("loadgen_cpu_pct", 0)) + float(m.get("publisher_cpu_pct", 0))
    cpu = max(float(m.get("loadgen_core_busy_pct", 0)), own)
    unread = m.get("unread_kib_at_t1", 0)
    if cpu >= _LOADGEN_HOT or unread > 1024:
        return " ⚠"
    return ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _by(summary: list[dict[str, Any]], workload: str) -> list[dict[str, Any]]:
    return [s for s in summary if s["workload"] == workload and s["repeats_ok"]]


def _md_w12(summary: list[dict[str, Any]], workload: str, title: str) -> list[str]:
    rows_in = _by(summary, workload)
    if not rows_in:
        return []
    base: dict[str, Any] = next((s["median"] for s in rows_in if s["target"] == "naive"), {})
    rows = []
    for s in rows_in:
        m = s["median"]
        rows.append(
            [
                f"`{s['target']}`",
                s["variant"],
                _fmt(m.get("deliveries_per_s")) + _hot(m),
                _ratio(m.get("deliveries_per_s"), base.get("deliveries_per_s")),
                _fmt(m.get("published_per_s")),
                _fmt(m.get("lost")),
                _fmt(m.get("cut_off")),
                _fmt(m.get("p50_ms"), 1),
                _fmt(m.get("p90_ms"), 1),
                _fmt(m.get("p99_ms"), 1),
                _fmt(m.get("max_ms"), 1),
                _fmt(m.get("server_cpu_pct")),
                _fmt(m.get("server_core_others_pct")),
                _fmt(m.get("loadgen_cpu_pct")),
                _fmt(m.get("publisher_cpu_pct")),
                _fmt(m.get("loadgen_core_busy_pct")),
                _fmt(m.get("unread_kib_at_t1")),
            ]
        )
    header = [
        "target",
        "load",
        "deliveries/s",
        "x naive",
        "published ev/s",
        "lost",
        "cut off",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "server CPU %",
        "others on server core %",
        "subscribers CPU %",
        "publisher CPU %",
        "load-gen core busy %",
        "unread KiB",
    ]
    return [f"### {title}", "", *_table(header, rows), ""]


def _md_w6(summary: list[dict[str, Any]]) -> list[str]:
    rows_in = _by(summary, "W6")
    if not rows_in:
        return []
    rows = []
    for s in rows_in:
        m = s["median"]
        rows.append(
            [
                f"`{s['target']}`",
                s["variant"],
                f"{_fmt(m.get('caught_up'))} / {_fmt(m.get('subscribers'))}",
                _fmt(m.get("back_read_p50_ms")),
                _fmt(m.get("catchup_p50_ms")),
                _fmt(m.get("catchup_p99_ms")),
                _fmt(m.get("per_sub_catchup_ev_s")),
                _fmt(m.get("total_catchup_ev_s")),
                _fmt(m.get("lost")),
                _fmt(m.get("cut_off")),
                _fmt(m.get("recovered_false")),
                _fmt(m.get("server_cpu_pct")),
                _fmt(m.get("server_core_others_pct")),
            ]
        )
    header = [
        "target",
        "load",
        "caught up",
        "back read p50 ms",
        "caught up p50 ms",
        "caught up p99 ms",
        "per subscriber ev/s",
        "total ev/s",
        "lost",
        "cut off",
        "recovered false",
        "server CPU %",
        "others on server core %",
    ]
    title = "### W6: catch-up, subscribers resuming from far back while events go on"
    return [title, "", *_table(header, rows), ""]


def _md_l1(summary: list[dict[str, Any]]) -> list[str]:
    rows_in = _by(summary, "L1")
    if not rows_in:
        return []
    rows = []
    for s in rows_in:
        m = s["median"]
        rows.append(
            [
                f"`{s['target']}`",
                s["variant"],
                *(_fmt(m.get(f"fast_{k}"), 1) for k in ("p50_ms", "p99_ms", "max_ms")),
                *(_fmt(m.get(f"slow_{k}"), 1) for k in ("p50_ms", "p99_ms", "max_ms")),
                f"{_fmt(m.get('fast_alerts_lost'))} / {_fmt(m.get('slow_alerts_lost'))}",
                _fmt(m.get("map_deliveries_per_s")),
                _fmt(m.get("slow_map_per_sub_s")),
                _fmt(m.get("slow_conflated_frames")),
                f"{_fmt(m.get('fast_cut_off'))} / {_fmt(m.get('slow_cut_off'))}",
                _fmt(m.get("server_cpu_pct")),
                _fmt(m.get("server_core_others_pct")),
            ]
        )
    header = [
        "target",
        "run",
        "fast p50 ms",
        "fast p99 ms",
        "fast max ms",
        "slowed p50 ms",
        "slowed p99 ms",
        "slowed max ms",
        "alerts missing fast / slowed",
        "map deliveries/s",
        "map/s per slowed",
        "conflated frames (slowed)",
        "cut off fast / slowed",
        "server CPU %",
        "others on server core %",
    ]
    return ["### L1: alert latency under a map flood", "", *_table(header, rows), ""]


def _md_w3(summary: list[dict[str, Any]]) -> list[str]:
    rows_in = _by(summary, "W3")
    if not rows_in:
        return []
    base: dict[str, Any] = next((s["median"] for s in rows_in if s["target"] == "naive"), {})
    rows = [
        [
            f"`{s['target']}`",
            _fmt(s["median"].get("connections")),
            _fmt(s["median"].get("rss_per_conn_kib"), 1),
            _ratio(s["median"].get("rss_per_conn_kib"), base.get("rss_per_conn_kib")),
            _fmt(s["median"].get("rss_before_mib"), 1),
            _fmt(s["median"].get("rss_after_mib"), 1),
        ]
        for s in rows_in
    ]
    header = ["target", "connections", "RSS/conn KiB", "x naive", "RSS before MiB", "RSS after MiB"]
    return ["### W3: idle WebSocket connections", "", *_table(header, rows), ""]


def _md_g1(summary: list[dict[str, Any]]) -> list[str]:
    rows_in = _by(summary, "G1")
    if not rows_in:
        return []
    raw = {s["variant"]: s["median"] for s in rows_in if s["target"] == "grpc-raw"}
    rows = [
        [
            f"`{s['target']}`",
            s["variant"],
            _fmt(s["median"].get("events_per_s")),
            _fmt(s["median"].get("calls_per_s")),
            _ratio(
                s["median"].get("calls_per_s"),
                raw.get(s["variant"], {}).get("calls_per_s"),
                pct=True,
            ),
            _fmt(s["median"].get("server_cpu_pct")),
            _fmt(s["median"].get("server_core_others_pct")),
            _fmt(s["median"].get("publisher_cpu_pct")),
        ]
        for s in rows_in
    ]
    header = [
        "target",
        "events/call",
        "events/s",
        "calls/s",
        "% of raw unary",
        "server CPU %",
        "others on server core %",
        "client CPU %",
    ]
    return ["### G1: gRPC Publish throughput", "", *_table(header, rows), ""]


def _md_g2(summary: list[dict[str, Any]]) -> list[str]:
    rows_in = _by(summary, "G2")
    if not rows_in:
        return []
    raw = {s["variant"]: s["median"] for s in rows_in if s["target"] == "grpc-raw"}
    rows = []
    for s in rows_in:
        m = s["median"]
        rows.append(
            [
                f"`{s['target']}`",
                s["variant"],
                _fmt(m.get("deliveries_per_s")) + _hot(m),
                _ratio(
                    m.get("deliveries_per_s"),
                    raw.get(s["variant"], {}).get("deliveries_per_s"),
                    pct=True,
                ),
                _fmt(m.get("lost")),
                _fmt(m.get("p50_ms"), 1),
                _fmt(m.get("p99_ms"), 1),
                _fmt(m.get("server_cpu_pct")),
                _fmt(m.get("server_core_others_pct")),
                _fmt(m.get("loadgen_cpu_pct")),
                _fmt(m.get("loadgen_core_busy_pct")),
            ]
        )
    header = [
        "target",
        "streams",
        "deliveries/s",
        "% of raw ceiling",
        "lost",
        "p50 ms",
        "p99 ms",
        "server CPU %",
        "others on server core %",
        "subscribers CPU %",
        "load-gen core busy %",
    ]
    return ["### G2: gRPC Subscribe fan-out", "", *_table(header, rows), ""]


def to_markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    mach = meta["machine"]
    lines = [
        f"# Benchmark results ({meta['mode']})",
        "",
        f"- date: {meta['date']} (took {meta['elapsed_s']:.0f} s)",
        f"- machine: {mach['cpu_model']}, {mach['cores']} cores ({mach['cores_usable']} usable), "
        f"{mach['memory_gib']} GiB, Linux {mach['kernel']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in mach['loadavg_at_start'])}",
        f"- python: {mach['implementation']} {mach['python']}; commit {mach['git_commit']}",
        f"- pinning: {meta['pinning']}; subscriber worker processes: {meta['workers']}",
        f"- repeats: {meta['repeat']}; every figure is the median over ok repeats",
        f"- command: `{meta['command']}`",
        "",
        "## Targets",
        "",
    ]
    status_rows = [
        [
            f"`{t['name']}`",
            t["status"],
            t["description"],
            t.get("reason", "")[:300].replace("|", "/"),
        ]
        for t in doc["targets"]
    ]
    lines += _table(["target", "status", "what", "note"], status_rows)
    lines += ["", "## Results", ""]
    summary = doc["summary"]
    lines += _md_w12(summary, "W1", "W1: fan-out at a paced rate (offered deliveries/s in `load`)")
    lines += _md_w12(
        summary, "W1l", "W1l: W1's rate to few subscribers (latency with nothing saturated)"
    )
    lines += _md_w12(summary, "W2", "W2: fan-out, publisher as fast as delivered")
    lines += _md_w12(summary, "W2w", "W2w: W2 with the publisher up to 20,000 events ahead")
    lines += _md_w3(summary)
    lines += _md_w6(summary)
    lines += _md_l1(summary)
    lines += _md_g1(summary)
    lines += _md_g2(summary)
    lines += [
        "⚠ marks a row where the load generator may have been the bottleneck "
        f"(its core ≥ {_LOADGEN_HOT:.0f} % busy by /proc/stat, or subscribers + publisher "
        f"≥ {_LOADGEN_HOT:.0f} % of a core, or > 1 MiB unread in the subscribers' "
        "sockets at the end of the window). `others on server core %` is CPU time that "
        "other processes took on the server's core during the window: machine noise.",
        "",
        "How to read this: see `bench/README.md`. Raw per-repeat figures are in the JSON file.",
        "",
    ]
    return "\n".join(lines)


def write_results(doc: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath = out_dir / f"{stem}.json"
    mpath = out_dir / f"{stem}.md"
    jpath.write_text(json.dumps(doc, indent=1, default=lambda o: asdict(o)) + "\n")
    mpath.write_text(to_markdown(doc))
    return mpath, jpath
