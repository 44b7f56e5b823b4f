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

from hetsched.scheduler.catalog.hardware import DeviceKind, HardwareSpec
from hetsched.scheduler.estimator import efficiency
from hetsched.scheduler.estimator.serving import Parallel, predict_colocated, predict_disaggregated
from hetsched.scheduler.placement.candidates import CandidateGenerator
from hetsched.scheduler.placement.engine_limits import EngineLimits
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.explain import known_pools, phase_rejections, suggest
from hetsched.scheduler.placement.options import (
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
    WorkloadPlacement,
)
from hetsched.scheduler.placement.solver import Problem, solve
from hetsched.scheduler.pools import Cluster, Pool

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
    o: Option,
    req: WorkloadRequest,
    cluster: Cluster,
    options: PlanOptions,
    warnings: list[str],
    limits: EngineLimits,
) -> None:
    """Re-evaluate a chosen option with ``serving.predict_*`` themselves; flag any disagreement."""
    if o.mode is Mode.COLOCATED:
        pool = cluster.pool(o.decode.pool)
        pred = predict_colocated(
            req.model,
            pool.hardware,
            req.shape,
            Parallel(tp=o.decode.tp),
            concurrency=o.decode.batch,
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
            req.shape,
            prefill=Parallel(tp=o.prefill.tp),
            decode=Parallel(tp=o.decode.tp),
            prefill_batch=o.prefill.batch,
            decode_batch=o.decode.batch,
            kv_transfer_bandwidth=limits.kv_bandwidth(req.serving, pp.name, dp.name),
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


def error_band(hardware: HardwareSpec, phase: str, options: PlanOptions) -> float | None:
    """The held-out median error of a calibrated CPU prediction (TTFT for prefill, TPOT for
    decode; ``efficiency.CPU_ERROR_BAND``), None for other hardware or ``--efficiency ideal``."""
    band = efficiency.CPU_ERROR_BAND
    if hardware.kind is not DeviceKind.CPU or options.efficiency is not None or band is None:
        return None
    return band.ttft if phase == "prefill" else band.tpot


def _phase(
    phase: str,
    o: Option | None,
    cluster: Cluster,
    req: WorkloadRequest,
    rejected: tuple[Rejection, ...],
    options: PlanOptions,
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
        error_band=error_band(pool.hardware, phase, options),
    )


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
    pre_rej = phase_rejections("prefill", c, o, cluster, remaining)
    dec_rej = phase_rejections("decode", c, o, cluster, remaining)
    if o is not None:
        _verify(o, req, cluster, options, warnings, gen.limits)
        tokens = _tokens_per_hour(o, req)
        return WorkloadPlacement(
            name=req.name,
            namespace=req.namespace,
            model=req.model.name,
            agent=req.agent.name,
            concurrent_sessions=req.concurrent_sessions,
            max_model_len=req.capacity_context,
            mode=o.mode.value,
            prefill=_phase("prefill", o, cluster, req, pre_rej, options),
            decode=_phase("decode", o, cluster, req, dec_rej, options),
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
            f"no pool can serve it; closest: {miss.pool} ({miss.kind}, {miss.reason.value}): {miss.detail}"
            if miss is not None
            else "no pool is allowed or known"
        )
    suggestions = suggest(c, cluster, remaining, gen, options, deadline) if options.suggestions else ()
    # spec.pools naming pools the cluster lacks: say so first (a typo, or nodes not joined yet).
    unknown = req.unknown_pools(known_pools(cluster))
    return WorkloadPlacement(
        name=req.name,
        namespace=req.namespace,
        model=req.model.name,
        agent=req.agent.name,
        concurrent_sessions=req.concurrent_sessions,
        max_model_len=req.capacity_context,
        mode=None,
        prefill=_phase("prefill", None, cluster, req, pre_rej, options),
        decode=_phase("decode", None, cluster, req, dec_rej, options),
        requests_per_second=req.requests_per_second,
        reason=UNKNOWN_POOL if unknown else reason.value,
        detail=f"{unknown}; {detail}" if unknown else detail,
        closest_miss=miss,
        suggestions=suggestions,
    )
