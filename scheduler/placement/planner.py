"""The placement engine: candidates per workload, one cluster-wide assignment, explanations.

``plan(requests, cluster, options)`` → :class:`Plan`. Steps (docs/placement.md):

1. per workload, candidate options (``candidates.CandidateGenerator``): colocated on one pool, or
   prefill on one pool and decode on another (or the same), each the cheapest configuration
   (TP, batch, replicas) of that pool or pair meeting memory, SLOs and demand;
2. options dominated by a cheaper one using no more devices anywhere are pruned, options needing
   more devices than a pool has free are set aside;
3. one option per workload under the pools' free devices (``solver.solve``: MILP, greedy fallback);
4. each chosen disaggregated option is re-evaluated with ``serving.predict_disaggregated`` (the
   shared formulas) and checked; every pool not used by a phase gets a reason; workloads that
   cannot be placed get their closest miss and suggestions, each re-estimated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from hetsched.scheduler.estimator import Precisions
from hetsched.scheduler.placement.candidates import (
    CandidateGenerator,
    EstimateCache,
    Mode,
    Option,
    PlanOptions,
    Reason,
    Rejection,
    WorkloadCandidates,
)
from hetsched.scheduler.placement.request import UNKNOWN_POOL, WorkloadRequest
from hetsched.scheduler.placement.result import (
    PhasePlacement,
    Plan,
    PoolUsage,
    SolverReport,
    Suggestion,
    WorkloadPlacement,
)
from hetsched.scheduler.placement.solver import Problem, solve
from hetsched.scheduler.pools import Cluster, Pool
from hetsched.scheduler.precision import PRECISIONS, Precision
from hetsched.scheduler.serving import predict_colocated, predict_disaggregated
from hetsched.scheduler.units import fmt_seconds

_SHARED_CACHE = EstimateCache()


def shared_cache() -> EstimateCache:
    """The process-wide estimate cache ``plan`` uses by default (the operator re-plans often)."""
    return _SHARED_CACHE


def build_problem(
    cands: Sequence[WorkloadCandidates], cluster: Cluster
) -> tuple[Problem, list[list[Option]]]:
    """The solver's instance: per workload the pruned options that fit the free devices at all.

    One capacity row per pool (its free devices) and, where nodes are fragmented (free devices per
    node not a multiple of a replica size), one more row per binding size ``s``: the devices of
    replicas of ``s`` or more devices, bounded by ``Pool.aligned_capacity(s)``."""
    rows: dict[tuple[str, int], int] = {}  # (pool, smallest replica size counted) -> row
    capacity: list[int] = []
    for p in cluster.pools:
        rows[(p.name, 1)] = len(capacity)
        capacity.append(p.free_devices)
    sizes: dict[str, list[int]] = {p.name: [] for p in cluster.pools}
    for p in cluster.pools:
        for size, cap in p.binding_sizes(max(p.node_devices, default=p.devices_per_node)):
            rows[(p.name, size)] = len(capacity)
            capacity.append(cap)
            sizes[p.name].append(size)

    def usage(o: Option) -> tuple[tuple[int, int], ...]:
        used: dict[int, int] = {}
        for pool, tp, n in o.replica_blocks:
            for size in (1, *sizes[pool]):
                if tp >= size:
                    row = rows[(pool, size)]
                    used[row] = used.get(row, 0) + n
        return tuple(sorted(used.items()))

    offered: list[list[Option]] = []
    usages: list[list[tuple[tuple[int, int], ...]]] = []
    for c in cands:
        opts, uses = [], []
        for o in c.options:
            u = usage(o)
            if all(n <= capacity[r] for r, n in u):
                opts.append(o)
                uses.append(u)
        offered.append(opts)
        usages.append(uses)
    problem = Problem(
        costs=tuple(tuple(o.cost_per_hour for o in opts) for opts in offered),
        usage=tuple(tuple(u) for u in usages),
        capacity=tuple(capacity),
    )
    return problem, offered


def plan(
    requests: Iterable[WorkloadRequest],
    cluster: Cluster,
    options: PlanOptions | None = None,
    *,
    cache: EstimateCache | None = None,
) -> Plan:
    """Place every workload on the cluster at least total cost (see the module docstring)."""
    options = options or PlanOptions()
    cache = cache if cache is not None else _SHARED_CACHE
    reqs = sorted(requests, key=lambda r: (r.namespace, r.name))
    seen: set[str] = set()
    for r in reqs:
        if r.key in seen:
            raise ValueError(f"workload {r.key} appears twice")
        seen.add(r.key)
    t0 = time.perf_counter()
    gen = CandidateGenerator(cluster, options, cache)
    cands = [gen.generate(r) for r in reqs]
    t1 = time.perf_counter()
    problem, offered = build_problem(cands, cluster)
    solution, report = solve(problem, method=options.solver, time_limit=options.time_limit_seconds)
    t2 = time.perf_counter()
    chosen: list[Option | None] = [
        None if o is None else offered[w][o] for w, o in enumerate(solution.choice)
    ]
    used = {p.name: 0 for p in cluster.pools}
    for o in chosen:
        if o is not None:
            for p, n in o.devices:
                used[p] += n
    warnings: list[str] = []
    placements = []
    deadline = time.perf_counter() + options.suggestion_seconds
    replicas: dict[str, list[int]] = {p.name: [] for p in cluster.pools}
    for o in chosen:
        if o is not None:
            for pool_name, size, n in o.replica_blocks:
                replicas[pool_name].extend([size] * (n // size))
    left = {p.name: p.take(replicas[p.name]) for p in cluster.pools}
    for c, o in zip(cands, chosen, strict=True):
        remaining = dict(left)
        if o is not None:  # this workload's own devices are available to its alternatives
            for pool_name, size, n in o.replica_blocks:
                remaining[pool_name] = remaining[pool_name].give_back([size] * (n // size))
        placements.append(_explain(c, o, cluster, remaining, gen, options, warnings, deadline))
    pools = tuple(
        PoolUsage(p.name, p.hardware.name, p.free_devices, used[p.name], p.price_per_device_hour)
        for p in cluster.pools
    )
    greedy_cost = report.get("greedy_cost_per_hour")
    gap = report.get("greedy_gap")
    milp_s = report.get("milp_seconds")
    solver = SolverReport(
        method=solution.method,
        status=solution.status,
        optimal=solution.optimal,
        workloads=len(reqs),
        options=problem.variables,
        options_generated=sum(len(c.all_options) for c in cands),
        candidates_evaluated=sum(c.evaluations for c in cands),
        candidate_seconds=t1 - t0,
        solve_seconds=t2 - t1,
        greedy_cost_per_hour=float(greedy_cost) if isinstance(greedy_cost, float) else None,
        greedy_gap=float(gap) if isinstance(gap, float) else None,
        milp_seconds=float(milp_s) if isinstance(milp_s, float) else None,
    )
    unavailable = tuple(Rejection(u.name, Reason(u.reason), u.detail) for u in cluster.unavailable)
    return Plan(tuple(placements), pools, solver, unavailable, tuple(warnings))


# ---- explanation -----------------------------------------------------------------------------------
def _tokens_per_hour(o: Option, req: WorkloadRequest) -> float:
    return float(o.requests_per_second * req.output_tokens * 3600.0)


def _per_mtok(cost_per_hour: float, tokens_per_hour: float) -> float | None:
    return cost_per_hour / (tokens_per_hour / 1e6) if tokens_per_hour > 0 else None


def _verify(
    o: Option, req: WorkloadRequest, cluster: Cluster, options: PlanOptions, warnings: list[str]
) -> None:
    """Re-evaluate a chosen option with ``serving.predict_*`` themselves; flag any disagreement."""
    if o.mode is Mode.COLOCATED:
        pool = cluster.pool(o.decode.pool)
        pred = predict_colocated(
            req.model,
            pool.hardware,
            concurrency=o.decode.batch,
            prompt_tokens=req.prompt_tokens,
            cached_tokens=req.cached_tokens,
            output_tokens=req.output_tokens,
            precisions=req.precisions,
            tp=o.decode.tp,
            efficiency=options.efficiency,
            utilization=options.utilization,
            engine=req.engine,
        )
    else:
        pp, dp = cluster.pool(o.prefill.pool), cluster.pool(o.decode.pool)
        pred = predict_disaggregated(
            req.model,
            pp.hardware,
            dp.hardware,
            prefill_batch=o.prefill.batch,
            decode_batch=o.decode.batch,
            prompt_tokens=req.prompt_tokens,
            cached_tokens=req.cached_tokens,
            output_tokens=req.output_tokens,
            precisions=req.precisions,
            prefill_tp=o.prefill.tp,
            decode_tp=o.decode.tp,
            kv_transfer_bandwidth=cluster.bandwidth_between(pp.name, dp.name),
            prefill_efficiency=options.efficiency,
            decode_efficiency=options.efficiency,
            utilization=options.utilization,
            prefill_workers=o.prefill.replicas,
            concurrency=o.concurrency,
            engine=req.engine,
        )
    for what, mine, theirs in (
        ("TTFT", o.ttft_seconds, pred.ttft_seconds),
        ("TPOT", o.tpot_seconds, pred.tpot_seconds),
    ):
        if not math.isclose(mine, theirs, rel_tol=1e-9):
            warnings.append(
                f"{req.key}: planner {what} {mine:.6g} s differs from serving.predict_{o.mode.value} {theirs:.6g} s; "
                "the serving model changed its composition (update placement.candidates.EstimateCache)"
            )


def _phase(
    phase: str, o: Option | None, cluster: Cluster, req: WorkloadRequest, rejected: tuple[Rejection, ...]
) -> PhasePlacement:
    if o is None:
        return PhasePlacement(phase, None, rejected=rejected)
    cfg = o.prefill if phase == "prefill" else o.decode
    pool = cluster.pool(cfg.pool)
    tokens = _tokens_per_hour(o, req)
    colocated = o.mode is Mode.COLOCATED
    analysis = o.prediction.prefill if phase == "prefill" else o.prediction.decode
    cost = (
        o.cost_per_hour
        if colocated
        else (o.prefill_cost_per_hour if phase == "prefill" else o.decode_cost_per_hour)
    )
    return PhasePlacement(
        phase=phase,
        pool=cfg.pool,
        hardware=pool.hardware.name,
        tp=cfg.tp,
        batch=cfg.batch,
        replicas=cfg.replicas,
        devices=cfg.devices,
        regime=analysis.performance.regime.value,
        step_seconds=analysis.performance.step_seconds,
        ttft_seconds=o.ttft_seconds if phase == "prefill" else None,
        tpot_seconds=o.tpot_seconds if phase == "decode" else None,
        kv_transfer_seconds=o.kv_transfer_seconds if phase == "prefill" else None,
        cost_per_hour=cost,
        cost_per_million_tokens=_per_mtok(cost, tokens),
        shared_replicas=colocated,
        node_selector=dict(pool.node_selector),
        rejected=rejected,
    )


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


def _phase_rejections(
    phase: str, c: WorkloadCandidates, chosen: Option | None, cluster: Cluster, remaining: Mapping[str, Pool]
) -> tuple[Rejection, ...]:
    req = c.request
    mine = None if chosen is None else (chosen.prefill.pool if phase == "prefill" else chosen.decode.pool)
    kinds = (phase, "colocated")
    known = _known_pools(cluster)
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


def _known_pools(cluster: Cluster) -> list[str]:
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


def _explain(
    c: WorkloadCandidates,
    o: Option | None,
    cluster: Cluster,
    remaining: Mapping[str, Pool],
    gen: CandidateGenerator,
    options: PlanOptions,
    warnings: list[str],
    deadline: float = math.inf,
) -> WorkloadPlacement:
    req = c.request
    pre_rej = _phase_rejections("prefill", c, o, cluster, remaining)
    dec_rej = _phase_rejections("decode", c, o, cluster, remaining)
    if o is not None:
        _verify(o, req, cluster, options, warnings)
        tokens = _tokens_per_hour(o, req)
        return WorkloadPlacement(
            name=req.name,
            namespace=req.namespace,
            model=req.model.name,
            agent=req.agent.name,
            concurrent_sessions=req.concurrent_sessions,
            max_model_len=req.capacity_context,
            mode=o.mode.value,
            prefill=_phase("prefill", o, cluster, req, pre_rej),
            decode=_phase("decode", o, cluster, req, dec_rej),
            requests_per_second=o.requests_per_second,
            concurrency=o.concurrency or None,
            ttft_seconds=o.ttft_seconds,
            tpot_seconds=o.tpot_seconds,
            output_tokens_per_second=tokens / 3600.0,
            cost_per_hour=o.cost_per_hour,
            cost_per_million_tokens=_per_mtok(o.cost_per_hour, tokens),
        )
    if c.all_options:
        reason = Reason.NO_FREE_DEVICES
        cheapest = c.all_options[0]
        detail = (
            f"feasible placements exist (cheapest: {cheapest.describe()}, ${cheapest.cost_per_hour:.2f}/h) "
            "but not enough free devices are left"
        )
        miss: Rejection | None = next(
            (r for r in (*pre_rej, *dec_rej) if r.reason is Reason.NO_FREE_DEVICES),
            None,
        )
    else:
        miss = c.closest_miss()
        reason = miss.reason if miss is not None else Reason.POOL_EXCLUDED
        detail = (
            f"no pool can serve it; closest: {miss.pool} ({miss.kind}): {miss.detail}"
            if miss is not None
            else "no pool is allowed or known"
        )
    suggestions = suggest(c, cluster, remaining, gen, options, deadline) if options.suggestions else ()
    # spec.pools naming pools the cluster lacks: say so first (a typo, or nodes not joined yet).
    unknown = req.unknown_pools(_known_pools(cluster))
    return WorkloadPlacement(
        name=req.name,
        namespace=req.namespace,
        model=req.model.name,
        agent=req.agent.name,
        concurrent_sessions=req.concurrent_sessions,
        max_model_len=req.capacity_context,
        mode=None,
        prefill=_phase("prefill", None, cluster, req, pre_rej),
        decode=_phase("decode", None, cluster, req, dec_rej),
        requests_per_second=req.requests_per_second,
        reason=UNKNOWN_POOL if unknown else reason.value,
        detail=f"{unknown}; {detail}" if unknown else detail,
        closest_miss=miss,
        suggestions=suggestions,
    )


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
