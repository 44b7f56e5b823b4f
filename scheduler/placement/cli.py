"""``hetsched plan``: place AgentWorkload manifests on node pools and print the plan.

    hetsched plan --pools examples/pools/demo.yaml examples/workloads/*.yaml
    hetsched plan --nodes nodes.yaml -o json examples/workloads/mix.yaml

Exit status: 0 when every workload is placed, 1 when some cannot be (the plan still prints),
2 on a usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from hetsched.scheduler.catalog.hardware import IDEAL
from hetsched.scheduler.estimator.roofline import DEFAULT_MEMORY_UTILIZATION
from hetsched.scheduler.placement.options import PlanOptions
from hetsched.scheduler.placement.result import PhasePlacement, Plan, WorkloadPlacement
from hetsched.scheduler.units import fmt_money, fmt_optional_seconds


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plan",
        help="place workloads' prefill and decode on node pools at least cost",
        description="Place AgentWorkload manifests (prefill and decode) on node pools: pool, TP, batch and "
        "replicas per phase, colocated or disaggregated, meeting memory, SLOs and demand at least total cost.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pools", metavar="POOLS.yaml", help="pool file (docs/pools.md)")
    src.add_argument("--nodes", metavar="NODES.yaml", help="`kubectl get nodes -o yaml` output")
    p.add_argument("workloads", nargs="+", metavar="WORKLOAD.yaml", help="AgentWorkload manifests")
    p.add_argument(
        "--utilization",
        type=float,
        default=DEFAULT_MEMORY_UTILIZATION,
        help=f"usable fraction of device memory (default {DEFAULT_MEMORY_UTILIZATION})",
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--solver", choices=("milp", "greedy"), default="milp")
    p.add_argument(
        "--time-limit", type=float, default=10.0, metavar="SECONDS", help="MILP time limit (default 10)"
    )
    p.add_argument(
        "--efficiency",
        choices=("calibrated", "ideal"),
        default="calibrated",
        help="hardware efficiency: the catalog's calibrated figures, or the pure roofline",
    )
    p.add_argument("--no-suggestions", action="store_true", help="skip suggestions for unplaceable workloads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hetsched.scheduler.nodes import cluster_from_nodes, load_nodes
    from hetsched.scheduler.placement.planner import plan
    from hetsched.scheduler.placement.request import load_requests
    from hetsched.scheduler.pools import build_cluster

    if not 0 < args.utilization <= 1:
        raise ValueError(f"--utilization must be in (0, 1], got {args.utilization}")
    cluster = build_cluster(args.pools) if args.pools else cluster_from_nodes(load_nodes(args.nodes))
    requests = load_requests(list(args.workloads))
    options = PlanOptions(
        utilization=args.utilization,
        efficiency=IDEAL if args.efficiency == "ideal" else None,
        time_limit_seconds=args.time_limit,
        solver=args.solver,
        suggestions=not args.no_suggestions,
    )
    result = plan(requests, cluster, options)
    if args.output == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(result, sys.stdout)
    return 0 if result.placed == len(result.workloads) else 1


# ---- table ---------------------------------------------------------------------------------------
def _row(ph: PhasePlacement, w: WorkloadPlacement) -> list[str]:
    if ph.pool is None:
        reason = w.reason or ""
        return [ph.phase, "-", "-", "-", "-", "-", "-", "-", "-", "-", reason]
    reason = "colocated (same replicas)" if ph.shared_replicas else "cheapest feasible"
    return [
        ph.phase,
        ph.pool,
        ph.hardware or "-",
        str(ph.tp),
        str(ph.batch),
        str(ph.replicas),
        ph.regime or "-",
        _with_band(fmt_optional_seconds(ph.ttft_seconds), ph) if ph.phase == "prefill" else "-",
        _with_band(fmt_optional_seconds(ph.tpot_seconds), ph) if ph.phase == "decode" else "-",
        fmt_money(ph.cost_per_million_tokens, 3),
        reason
        + (" (CPU: ± = held-out median error on the calibrated CPU)" if ph.error_band is not None else ""),
    ]


def _with_band(text: str, ph: PhasePlacement) -> str:
    """A CPU phase's figure with its error band (the CPU fit's held-out median error)."""
    return text if ph.error_band is None else f"{text} ±{ph.error_band:.0%}"


def _table(rows: list[list[str]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write(indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")


def print_table(result: Plan, out: TextIO) -> None:
    header = [
        "PHASE",
        "POOL",
        "HARDWARE",
        "TP",
        "BATCH",
        "REPLICAS",
        "REGIME",
        "TTFT",
        "TPOT",
        "$/MTOK",
        "REASON",
    ]
    for w in result.workloads:
        if w.placed:
            demand = f"{w.requests_per_second:.3g} req/s" if w.requests_per_second is not None else "-"
            out.write(
                f"{w.key}  [{w.model}, {w.agent}]  {w.mode}  ${w.cost_per_hour:.2f}/h  "
                f"${fmt_money(w.cost_per_million_tokens, 3)}/Mtok  {demand}  max_model_len {w.max_model_len}\n"
            )
        else:
            out.write(f"{w.key}  [{w.model}, {w.agent}]  NOT PLACED ({w.reason}): {w.detail}\n")
        _table([header, _row(w.prefill, w), _row(w.decode, w)], out)
        for ph in (w.prefill, w.decode):
            for r in ph.rejected:
                out.write(f"    {ph.phase} not on {r.pool}: {r.reason.value}: {r.detail}\n")
        for s in w.suggestions:
            mark = "✓" if s.feasible else "✗"
            out.write(f"    suggestion {mark} {s.action}: {s.detail}\n")
        out.write("\n")
    for r in result.unavailable_pools:
        out.write(f"pool {r.pool} unavailable: {r.reason.value}: {r.detail}\n")
    rep = result.solver
    gap = "-" if rep.greedy_gap is None else f"{max(0.0, 100 * rep.greedy_gap):.2f}%"
    out.write(
        f"total ${result.total_cost_per_hour:.2f}/h; {result.placed}/{len(result.workloads)} placed; "
        f"solver {rep.method} ({rep.status}), {rep.options} options, greedy gap {gap}, "
        f"{rep.candidate_seconds + rep.solve_seconds:.2f} s\n"
    )
    used = [p for p in result.pools if p.used_devices]
    if used:
        out.write("pools: " + ", ".join(f"{p.name} {p.used_devices}/{p.free_devices}" for p in used) + "\n")
    for warning in result.warnings:
        out.write(f"warning: {warning}\n")
