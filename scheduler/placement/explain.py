"""Why each pool was not used, and what would let an unplaced workload be placed.

* :func:`phase_rejections` — for a phase, every pool it does not run on and why (the closest miss
  of each pool, "cost" when a feasible but dearer option existed, "no-free-devices" when the
  devices are taken);
* :func:`suggest` — for a workload that cannot be placed, changes that would place it (a shorter
  context, narrower formats, relaxed SLOs, more devices), each re-estimated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import replace

from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.precision import PRECISIONS, Precision
from hetsched.scheduler.placement.candidates import CandidateGenerator
from hetsched.scheduler.placement.options import Option, PlanOptions, Reason, Rejection, WorkloadCandidates
from hetsched.scheduler.placement.request import WorkloadRequest
from hetsched.scheduler.placement.result import (
    Suggestion,
)
from hetsched.scheduler.pools import Cluster, Pool
from hetsched.scheduler.units import fmt_seconds


def _shortfalls(o: Option, free: Mapping[str, Pool]) -> list[tuple[str, int, int, int]]:
    """Where ``o`` does not fit the free devices: (pool, replica size, devices it needs in replicas
    of that size or more, devices such replicas can use there), the worst size per pool."""
    blocks: dict[str, list[tuple[int, int]]] = {}
    for pool_name, size, n in o.replica_blocks:
        blocks.setdefault(pool_name, []).append((size, n))
    out = []
    for pool_name, bl in sorted(blocks.items()):
        pool = free.get(pool_name)
        worst: tuple[str, int, int, int] | None = None
        for size in sorted({1, *(tp for tp, _ in bl)}):
            need = sum(n for tp, n in bl if tp >= size)
            have = 0 if pool is None else pool.aligned_capacity(size)
            if need > have and (worst is None or need - have > worst[2] - worst[3]):
                worst = (pool_name, size, need, have)
        if worst is not None:
            out.append(worst)
    return out


def _fits(o: Option, free: Mapping[str, Pool]) -> bool:
    return not _shortfalls(o, free)


def _shortfall_text(pool_name: str, size: int, need: int, have: int, free: Mapping[str, Pool]) -> str:
    pool = free.get(pool_name)
    total = 0 if pool is None else pool.free_devices
    text = f"needs {need} device{'s' if need != 1 else ''} of {pool_name}"
    if size == 1:
        return f"{text}, {max(total, 0)} free after the other workloads"
    return (
        f"{text} in replicas of {size}, {total} free after the other workloads but {have} usable by "
        f"replicas that size (a replica's devices sit on one node)"
    )


def phase_rejections(
    phase: str, c: WorkloadCandidates, chosen: Option | None, cluster: Cluster, remaining: Mapping[str, Pool]
) -> tuple[Rejection, ...]:
    req = c.request
    mine = None if chosen is None else (chosen.prefill.pool if phase == "prefill" else chosen.decode.pool)
    kinds = (phase, "colocated")
    known = known_pools(cluster)
    out: list[Rejection] = []
    for pool in cluster.pools:
        name = pool.name
        if name == mine:
            continue
        if not req.allows(phase, name):
            out.append(Rejection(name, Reason.POOL_EXCLUDED, req.exclusion_detail(phase, name, known), phase))
            continue
        using = [o for o in c.all_options if o.uses(phase, name)]
        if using:
            out.append(_option_rejection(phase, name, using, chosen, pool, remaining))
            continue
        misses = [
            c.best_rejections[(k, name)]
            for k in kinds
            if (k, name) in c.best_rejections and c.relevant(c.best_rejections[(k, name)])
        ]
        if misses:
            best = min(misses, key=lambda r: (*r.rank, r.kind))
            out.append(replace(best, kind=best.kind or phase))
            continue
        other = "decode" if phase == "prefill" else "prefill"
        if any(k == other and p == name for k, p in c.best_rejections) or not req.allows(other, name):
            detail = (
                f"colocated serving needs both phases here, but {other} is not possible on {name}"
                if req.disaggregation.value != "always"
                else f"spec.disaggregation=always and {phase} was not evaluated on {name}"
            )
            out.append(Rejection(name, Reason.MODE, detail, phase))
        else:
            out.append(
                Rejection(
                    name,
                    Reason.MODE,
                    f"no {phase} candidate on {name} (mode {req.disaggregation.value})",
                    phase,
                )
            )
    for u in cluster.unavailable:
        out.append(Rejection(u.name, Reason(u.reason), u.detail, phase))
    return tuple(out)


def known_pools(cluster: Cluster) -> list[str]:
    """Every pool the cluster has, usable or not (an unavailable pool is not an unknown one)."""
    return [p.name for p in cluster.pools] + [u.name for u in cluster.unavailable]


def _option_rejection(
    phase: str,
    name: str,
    using: list[Option],
    chosen: Option | None,
    pool: Pool,
    remaining: Mapping[str, Pool],
) -> Rejection:
    fitting = [o for o in using if _fits(o, remaining)]
    if not fitting:
        o = min(using, key=lambda x: x.cost_per_hour)
        short = _shortfalls(o, remaining)
        needs = "; ".join(_shortfall_text(*s, remaining) for s in short)
        sev = max(need / max(have, 1) for _, _, need, have in short)
        return Rejection(name, Reason.NO_FREE_DEVICES, f"{o.describe()}: {needs}", phase, sev)
    o = fitting[0]
    if chosen is None:  # cannot happen with a complete solver: it would have been placed
        return Rejection(
            name, Reason.COST, f"{o.describe()} at ${o.cost_per_hour:.2f}/h was not selected", phase
        )
    if o.cost_per_hour > chosen.cost_per_hour + 1e-9:
        detail = f"feasible ({o.describe()}) at ${o.cost_per_hour:.2f}/h; the chosen placement costs ${chosen.cost_per_hour:.2f}/h"
    elif o.cost_per_hour < chosen.cost_per_hour - 1e-9:
        detail = f"cheaper ({o.describe()}, ${o.cost_per_hour:.2f}/h) but not selected by the solver"
    else:
        detail = f"same cost (${o.cost_per_hour:.2f}/h, {o.describe()}); tie broken by fewer devices, then colocated, then pool order"
    return Rejection(name, Reason.COST, detail, phase, o.cost_per_hour / max(chosen.cost_per_hour, 1e-12))


# ---- suggestions -------------------------------------------------------------------------------------
def _cheapest_fitting(c: WorkloadCandidates, free: Mapping[str, Pool]) -> Option | None:
    return next((o for o in c.options if _fits(o, free)), None)


def _wider_than(p: Precision, bytes_per_element: float) -> bool:
    return bool(PRECISIONS[p].bytes_per_element > bytes_per_element)


def suggest(
    c: WorkloadCandidates,
    cluster: Cluster,
    remaining: Mapping[str, Pool],
    gen: CandidateGenerator,
    options: PlanOptions,
    deadline: float = math.inf,
) -> tuple[Suggestion, ...]:
    """Changes that would let an unplaced workload run, each checked by re-running the candidates.

    ``feasible`` means: with the change, some option fits the devices the other workloads leave.
    Re-runs stop at ``deadline`` (``PlanOptions.suggestion_seconds`` for the whole plan): the
    suggestions computed by then are returned.
    """
    req = c.request
    out: list[Suggestion] = []

    class _OutOfTime(Exception):
        pass

    def attempt(variant: WorkloadRequest, g: CandidateGenerator = gen) -> tuple[Option | None, Option | None]:
        if time.perf_counter() > deadline:
            raise _OutOfTime
        cc = g.generate(variant)
        return _cheapest_fitting(cc, remaining), (cc.options[0] if cc.options else None)

    # 1. Free or add devices for the cheapest feasible option.
    if c.options:
        o = c.options[0]
        short = {pool_name: need - have for pool_name, _, need, have in _shortfalls(o, remaining)}
        text = ", ".join(f"{n} more free device(s) in pool {p}" for p, n in short.items())
        out.append(
            Suggestion(
                "add-devices",
                f"{text} would allow {o.describe()} at ${o.cost_per_hour:.2f}/h",
                True,
                o.cost_per_hour,
                {"pools": short},
            )
        )
    try:
        # 2. Precision changes.
        if _wider_than(req.precisions.kv_cache, 1.0):
            fit, _ = attempt(req.with_precisions(replace(req.precisions, kv_cache=Precision.FP8)))
            out.append(
                _variant(
                    "kv-cache-fp8",
                    "store the KV cache in fp8 (spec.precision.kvCache: fp8)",
                    fit,
                    {"precision.kvCache": "fp8"},
                )
            )
        if _wider_than(req.precisions.weights, 1.0):
            p = Precisions(
                Precision.FP8, req.precisions.kv_cache, req.precisions.activations, req.precisions.experts
            )
            fit, _ = attempt(req.with_precisions(p))
            out.append(
                _variant(
                    "weights-fp8",
                    "serve fp8 weights (spec.precision.weights: fp8; a quantized checkpoint)",
                    fit,
                    {"precision.weights": "fp8"},
                )
            )
        # 3. Shorter context (memory and TPOT both shrink with it).
        ctx = req.capacity_context
        floor = req.prompt_tokens + req.output_tokens
        best_ctx: tuple[int, Option] | None = None
        trial = ctx // 2
        for _ in range(6):
            if trial < floor:
                break
            fit, _ = attempt(req.with_context(trial))
            if fit is not None:
                best_ctx = (trial, fit)
                break
            trial //= 2
        if best_ctx is not None:  # refine upwards between the fitting context and the one that failed
            lo, hi = best_ctx[0], min(ctx, best_ctx[0] * 2)
            for _ in range(4):
                mid = (lo + hi) // 2
                if mid <= lo:
                    break
                fit, _ = attempt(req.with_context(mid))
                if fit is not None:
                    lo, best_ctx = mid, (mid, fit)
                else:
                    hi = mid
            n, fit_o = best_ctx
            out.append(
                _variant(
                    "lower-context",
                    f"serve contexts up to {n} tokens (spec.maxContextTokens: {n})",
                    fit_o,
                    {"maxContextTokens": n},
                )
            )
        # 4. Looser SLOs: what the best configuration achieves.
        if any(r.reason is Reason.SLO for r in c.best_rejections.values()):
            loose = req.with_slo(ttft=req.ttft_slo_seconds * 1e3, tpot=req.tpot_slo_seconds * 1e3)
            fit_loose, any_o = attempt(loose)
            target = fit_loose or any_o
            if target is not None:
                ttft = max(req.ttft_slo_seconds, target.ttft_seconds * 1.01)
                tpot = max(req.tpot_slo_seconds, target.tpot_seconds * 1.01)
                fit, _ = attempt(req.with_slo(ttft=ttft, tpot=tpot))
                out.append(
                    _variant(
                        "relax-slo",
                        f"relax the SLOs to TTFT {fmt_seconds(ttft)}, TPOT {fmt_seconds(tpot)} "
                        f"(spec.slo.ttftSeconds: {ttft:.3g}, tpotSeconds: {tpot:.3g})",
                        fit,
                        {"slo.ttftSeconds": round(ttft, 4), "slo.tpotSeconds": round(tpot, 4)},
                    )
                )
        # 5. Bigger pools / nodes where the pool is too small for the demand or for the TP degree.
        for (_, pool_name), r in sorted(c.best_rejections.items()):
            if r.reason not in (Reason.DEMAND, Reason.TP_EXCEEDS_NODE) or len(out) >= 8:
                continue
            pool = cluster.pool(pool_name)
            if r.reason is Reason.DEMAND:
                need = math.ceil(r.severity * pool.total_devices)
                nodes = math.ceil(need / pool.devices_per_node)
                bigger = replace(
                    pool,
                    nodes=nodes,
                    free_devices=pool.free_devices + (nodes - pool.nodes) * pool.devices_per_node,
                    node_devices=(),
                )
                action, text, change = (
                    "add-devices",
                    f"grow pool {pool_name} to {nodes} nodes",
                    {"pools": {pool_name: {"nodes": nodes}}},
                )
            else:
                tp = r.tp or pool.devices_per_node * 2
                nodes = max(1, math.ceil(pool.total_devices / tp))
                bigger = replace(
                    pool,
                    devices_per_node=tp,
                    nodes=nodes,
                    free_devices=max(pool.free_devices, tp),
                    node_devices=(),
                )
                action, text, change = (
                    "bigger-nodes",
                    f"nodes with {tp} devices in pool {pool_name}",
                    {"pools": {pool_name: {"devicesPerNode": tp, "nodes": nodes}}},
                )
            variant_cluster = replace(
                cluster, pools=tuple(bigger if p.name == pool_name else p for p in cluster.pools)
            )
            g = CandidateGenerator(variant_cluster, options, gen.cache)
            cc = g.generate(req)
            free2 = dict(remaining)
            left = remaining[pool_name]
            extra = bigger.free_devices - pool.free_devices
            if r.reason is Reason.DEMAND:  # the same nodes plus new ones of the pool's size
                added = (pool.devices_per_node,) * (nodes - pool.nodes) if left.node_devices else ()
                free2[pool_name] = replace(
                    left,
                    nodes=nodes,
                    free_devices=left.free_devices + extra,
                    node_devices=(*left.node_devices, *added),
                )
            else:  # all nodes replaced by bigger ones
                free2[pool_name] = replace(bigger, free_devices=max(0, left.free_devices + extra))
            fit = _cheapest_fitting(cc, free2)
            out.append(_variant(action, text, fit, change))
    except _OutOfTime:
        pass
    out.sort(key=lambda s: (not s.feasible, s.cost_per_hour if s.cost_per_hour is not None else math.inf))
    return tuple(out)


def _variant(action: str, text: str, fit: Option | None, change: Mapping[str, object]) -> Suggestion:
    if fit is None:
        return Suggestion(action, f"{text}: still not placeable", False, None, dict(change))
    return Suggestion(
        action,
        f"{text}: {fit.describe()} at ${fit.cost_per_hour:.2f}/h",
        True,
        fit.cost_per_hour,
        dict(change),
    )
