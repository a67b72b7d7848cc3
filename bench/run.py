"""The benchmark's command line: ``python -m bench`` or ``python bench/run.py``.

Runs every workload against every target that takes part in it, ``--repeat``
times, interleaving targets within each repeat so slow drifts of a noisy machine
hit all of them alike; writes Markdown + JSON results. Exits 1 when a target
that started failed a workload, or a ``--require``d target was unavailable; never
because of a performance figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import config, scale_config, scale_report
from bench.report import Run, summarize, write_results
from bench.sysinfo import machine_info, plan_cpus, raise_nofile_limit
from bench.targets import Target, get_targets
from bench.targets.base import TargetFailed, TargetUnavailable
from bench.workloads import WORKLOADS, Context, run_workload

__all__ = ["main", "plan_runs"]

_RESULTS = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a few-second smoke run (CI)")
    ap.add_argument("--repeat", type=int, default=None, help="repeats (default 3; 1 with --quick)")
    ap.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    ap.add_argument("--workloads", default="", help="comma-separated: W1,W2,W3,G1,G2 (default all)")
    ap.add_argument("--require", action="append", default=[], help="fail if TARGET is unavailable")
    ap.add_argument("--workers", type=int, default=1, help="subscriber worker processes")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and load generator")
    ap.add_argument("--budget", type=float, default=None, help="skip runs past this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument("--name", default=None, help="results file stem (default: date and mode)")
    ap.add_argument(
        "--scale",
        default="",
        help="W4/W5 sizes, KEY=VALUE,... over the mode's (bench/scale_config.py), "
        "e.g. w4_connections=5000,w5_clients=1000",
    )
    return ap.parse_args(argv)


def plan_runs(
    workloads: list[str], targets: list[Target], *, breadth_first: bool
) -> list[tuple[str, Target]]:
    """The (workload, target) runs of one repeat, in order.

    Workload after workload, each against every target that takes part in it
    (targets interleaved). ``breadth_first`` (``--quick``): round after round
    instead, every workload against its first target (``clearpath`` first) before any
    against its second, so a spent time budget skips comparisons, never a workload.
    """
    takers = [[t for t in targets if w in t.workloads] for w in workloads]
    if not breadth_first:
        return [(w, t) for w, ts in zip(workloads, takers, strict=True) for t in ts]
    ordered = [sorted(ts, key=lambda t: t.name != "clearpath") for ts in takers]
    rounds = max((len(ts) for ts in ordered), default=0)
    plan: list[tuple[str, Target]] = []
    for i in range(rounds):
        plan += [(w, ts[i]) for w, ts in zip(workloads, ordered, strict=True) if i < len(ts)]
    return plan


async def _probe(target: Target, ctx: Context) -> str:
    """Start and stop the target once; return '' if it listens, else why not."""
    from bench.targets.base import ServerProcess

    try:
        async with ServerProcess(target, ctx.cpus.server):
            return ""
    except (TargetUnavailable, TargetFailed) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _run_all(args: argparse.Namespace) -> dict[str, Any]:
    params = config.quick() if args.quick else config.full()
    repeat = args.repeat or (1 if args.quick else 3)
    machine = machine_info()  # before this process is pinned
    cpus = plan_cpus(not args.no_pin)
    if cpus.loadgen:
        os.sched_setaffinity(0, cpus.loadgen)
    raise_nofile_limit()
    scale = scale_config.quick() if args.quick else scale_config.full()
    try:
        scale = scale_config.override(scale, args.scale)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    ctx = Context(params, cpus, args.workers, scale=scale)
    targets = get_targets([t for t in args.targets.split(",") if t])
    workloads = [w for w in (args.workloads.split(",") if args.workloads else WORKLOADS) if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    budget = args.budget if args.budget is not None else (90.0 if args.quick else 900.0)
    started = time.monotonic()

    status: dict[str, dict[str, str]] = {}
    for t in targets:
        reason = await _probe(t, ctx)
        status[t.name] = {
            "name": t.name,
            "description": t.description,
            "status": "unavailable" if reason else "ok",
            "reason": reason,
        }
        print(
            f"[bench] target {t.name}: {'unavailable: ' + reason if reason else 'ok'}", flush=True
        )

    runs: list[Run] = []
    for rep in range(1, repeat + 1):
        for w, t in plan_runs(workloads, targets, breadth_first=args.quick):
            if status[t.name]["status"] == "unavailable":
                continue
            elapsed = time.monotonic() - started
            if elapsed > budget:
                runs.append(Run(t.name, w, "", rep, "skipped", error="time budget spent"))
                continue
            t_run = time.monotonic()
            try:
                results = await run_workload(ctx, w, t)
            except (TargetFailed, TargetUnavailable, RuntimeError, OSError) as exc:
                err = f"{type(exc).__name__}: {exc}"[:800]
                runs.append(Run(t.name, w, "", rep, "failed", error=err))
                status[t.name]["status"] = "failed"
                status[t.name]["reason"] = err
                print(f"[bench] {w} {t.name} #{rep}: FAILED {err}", flush=True)
                continue
            except TimeoutError:
                err = f"{w} exceeded its time limit"
                runs.append(Run(t.name, w, "", rep, "failed", error=err))
                status[t.name]["status"] = "failed"
                status[t.name]["reason"] = err
                print(f"[bench] {w} {t.name} #{rep}: FAILED {err}", flush=True)
                continue
            secs = round(time.monotonic() - t_run, 1)
            for variant, metrics in results:
                runs.append(Run(t.name, w, variant, rep, "ok", metrics, seconds=secs))
                print(
                    f"[bench] {w} {t.name} {variant} #{rep} ({secs}s): {_brief(metrics)}",
                    flush=True,
                )

    cmd = "python -m bench " + " ".join(sys.argv[1:])
    return {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "machine": machine,
            "pinning": cpus.describe(),
            "workers": args.workers,
            "repeat": repeat,
            "params": asdict(params),
            "scale_params": asdict(scale),
            "command": cmd.strip(),
            "elapsed_s": round(time.monotonic() - started, 1),
        },
        "targets": list(status.values()),
        "summary": summarize(runs),
        "runs": [asdict(r) for r in runs],
    }


def _brief(m: dict[str, Any]) -> str:
    keys = (
        "deliveries_per_s",
        "published_per_s",
        "lost",
        "cut_off",
        "p50_ms",
        "p99_ms",
        "catchup_p50_ms",
        "per_sub_catchup_ev_s",
        "fast_p99_ms",
        "slow_p99_ms",
        "rss_per_conn_kib",
        "events_per_s",
        "server_cpu_pct",
        "loadgen_cpu_pct",
    )
    return ", ".join(f"{k}={m[k]}" for k in keys if k in m)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        import uvloop

        doc = uvloop.run(_run_all(args))
    except ImportError:
        doc = asyncio.run(_run_all(args))
    out = args.out or (_RESULTS / "tmp" if args.quick else _RESULTS)
    stem = args.name or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{doc['meta']['mode']}"
    mpath, jpath = write_results(doc, out, stem)
    scale_report.add_tables(mpath, doc)
    print(f"[bench] wrote {mpath} and {jpath}", flush=True)
    code = 0
    for t in doc["targets"]:
        if t["status"] == "failed":
            print(f"[bench] FAILED target {t['name']}: {t['reason']}", flush=True)
            code = 1
        elif t["status"] == "unavailable" and t["name"] in args.require:
            print(f"[bench] required target {t['name']} unavailable", flush=True)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
