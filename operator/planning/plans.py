"""Plans: one planning round for all registered workloads, and what the reconciler needs of each.

* :func:`plan_workloads` — one planning round, with the *stable* policy (placed workloads whose
  spec and pools did not change keep their placement and their devices count as used; the rest
  are planned together on what is left) or the *joint* policy (everything re-optimised together
  every round);
* :class:`WorkloadPlan` / :class:`PhasePlan` — what the reconciler needs per workload, with the OI
  and CF of each phase at its operating point (re-derived with ``analysis.analyze_phase``, the
  same conventions as the planner's estimate cache);
* :func:`what_if` — the HTTP API's plans on the live pools, net of the devices in use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hetsched.operator.planning.intake import Key, Registration
from hetsched.operator.pools.build import PoolsInput, with_used
from hetsched.operator.reconcile.manifests import TaintRef
from hetsched.scheduler.engines.platform import Platform, platform_of
from hetsched.scheduler.estimator.analysis import analyze_phase, decode_context
from hetsched.scheduler.estimator.cost import Phase, estimate_phase
from hetsched.scheduler.placement.options import PlanOptions
from hetsched.scheduler.placement.planner import plan as engine_plan
from hetsched.scheduler.placement.request import WorkloadRequest
from hetsched.scheduler.placement.result import PhasePlacement, WorkloadPlacement
from hetsched.scheduler.pools import Cluster


@dataclass(frozen=True, slots=True)
class PhasePlan:
    phase: str  # prefill | decode
    pool: str
    hardware: str
    tp: int
    batch: int
    max_batch: int
    replicas: int
    devices: int
    operational_intensity: float
    ridge_point: float
    capacity_footprint_bytes: float
    regime: str
    ttft_seconds: float | None
    tpot_seconds: float | None
    tokens_per_second: float
    cost_per_hour: float
    dollars_per_million_tokens: float | None
    node_selector: Mapping[str, str]
    taints: tuple[TaintRef, ...]
    gpu: bool
    # What the manifests need of the pool and the replica: the pool's platform (build, vendor,
    # device resource, overrides), a replica's resident weights and one request's KV at the
    # serving context (max_model_len), and the node's CPUs per device (CPU pods' whole cores).
    platform: Platform | None = None
    weight_bytes: float = 0.0
    kv_bytes_per_request: float = 0.0
    cpus_per_device: float = 0.0
    #: On a CPU: the held-out median error of this phase's TTFT (prefill) or TPOT (decode)
    #: (``PhasePlacement.error_band``); None elsewhere.
    error_band: float | None = None

    def band(self) -> str:
        """``"; TPOT 41 ms ±12% (CPU, held-out median error on the calibrated CPU)"`` for a CPU phase, else ``""``."""
        if self.error_band is None:
            return ""
        value, name = (self.ttft_seconds, "TTFT") if self.phase == "prefill" else (self.tpot_seconds, "TPOT")
        if value is None:
            return ""
        shown = f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
        return f"; {name} {shown} ±{self.error_band:.0%} (CPU, held-out median error on the calibrated CPU)"


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    key: Key
    generation: int
    placed: bool
    model: str
    agent: str
    mode: str | None = None
    prefill: PhasePlan | None = None
    decode: PhasePlan | None = None
    max_model_len: int = 0
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    output_tokens_per_second: float | None = None
    dollars_per_million_tokens: float | None = None
    cost_per_hour: float = 0.0
    rejected: tuple[tuple[str, str, str], ...] = ()  # (pool, phase, "reason: detail")
    reason: str | None = None  # not placed: machine-readable reason
    message: str = ""
    suggestions: tuple[str, ...] = ()
    pools_fingerprint: str = ""
    revision: str = ""  # the registration's revision it was planned for (its model config's hash)

    def signature(self) -> tuple[Any, ...]:
        """What a placement *is* (for change detection and events): mode, pools, TP, replicas, batch."""
        if not self.placed:
            return ("unplaced", self.reason)
        return (
            self.mode,
            *(
                (p.phase, p.pool, p.tp, p.replicas, p.batch)
                for p in (self.prefill, self.decode)
                if p is not None
            ),
            self.max_model_len,
        )

    def devices(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if not self.placed:
            return out
        phases = [self.prefill] if self.mode == "colocated" else [self.prefill, self.decode]
        for p in phases:
            if p is not None:
                out[p.pool] = out.get(p.pool, 0) + p.devices
        return out

    def replica_sizes(self) -> dict[str, list[int]]:
        """Devices of each replica, per pool (a replica's devices sit on one node)."""
        out: dict[str, list[int]] = {}
        if not self.placed:
            return out
        phases = [self.prefill] if self.mode == "colocated" else [self.prefill, self.decode]
        for p in phases:
            if p is not None:
                out.setdefault(p.pool, []).extend([p.tp] * p.replicas)
        return out

    def describe(self) -> str:
        if not self.placed:
            return f"not placed ({self.reason}): {self.message}"
        assert self.prefill is not None and self.decode is not None
        cost = (
            ""
            if self.dollars_per_million_tokens is None
            else f", ${self.dollars_per_million_tokens:.3g}/Mtok"
        )
        if self.mode == "colocated":
            d = self.decode
            return (
                f"colocated on {d.pool} ({d.hardware}): TP {d.tp} × {d.replicas} replica(s), batch {d.batch}, "
                f"{d.regime}{cost}{self.prefill.band()}{d.band()}"
            )
        p, d = self.prefill, self.decode
        return (
            f"prefill on {p.pool} ({p.hardware}, TP {p.tp} × {p.replicas}, {p.regime}), "
            f"decode on {d.pool} ({d.hardware}, TP {d.tp} × {d.replicas}, batch {d.batch}, {d.regime}){cost}"
            f"{p.band()}{d.band()}"
        )


def _phase_plan(
    pp: PhasePlacement,
    req: WorkloadRequest,
    cluster: Cluster,
    colocated: bool,
    options: PlanOptions,
) -> PhasePlan:
    assert pp.pool is not None and pp.tp is not None and pp.batch is not None and pp.replicas is not None
    pool = cluster.pool(pp.pool)
    hw = pool.hardware
    if pp.phase == "prefill":
        batch = 1 if colocated else pp.batch
        a = analyze_phase(
            req.model,
            hw,
            Phase.PREFILL,
            batch=batch,
            new_tokens=req.prompt_tokens,
            context_tokens=req.cached_tokens,
            precisions=req.precisions,
            tp=pp.tp,
            efficiency=options.efficiency,
            utilization=options.utilization,
        )
    else:
        a = analyze_phase(
            req.model,
            hw,
            Phase.DECODE,
            batch=pp.batch,
            new_tokens=1,
            context_tokens=decode_context(req.cached_tokens, req.prompt_tokens, req.output_tokens),
            precisions=req.precisions,
            tp=pp.tp,
            efficiency=options.efficiency,
            utilization=options.utilization,
        )
    perf = a.performance
    # One request holding the whole serving context (C + P + O): what the KV cache is sized for.
    memory = estimate_phase(
        req.model,
        Phase.DECODE,
        batch=1,
        new_tokens=1,
        context_tokens=max(0, req.capacity_context - 1),
        precisions=req.precisions,
        tp=pp.tp,
    )
    return PhasePlan(
        phase=pp.phase,
        pool=pp.pool,
        hardware=hw.name,
        tp=pp.tp,
        batch=pp.batch,
        max_batch=perf.max_batch,
        replicas=pp.replicas,
        devices=pp.devices,
        operational_intensity=a.cost.operational_intensity,
        ridge_point=perf.ridge_point,
        capacity_footprint_bytes=a.cost.capacity_footprint_bytes,
        regime=pp.regime or perf.regime.value,
        ttft_seconds=pp.ttft_seconds,
        tpot_seconds=pp.tpot_seconds,
        tokens_per_second=a.tokens_per_second * pp.replicas,
        cost_per_hour=pp.cost_per_hour,
        dollars_per_million_tokens=pp.cost_per_million_tokens,
        node_selector=dict(pool.node_selector),
        taints=tuple(TaintRef(t.key, t.value, t.effect) for t in pool.taints),
        gpu=hw.kind.value != "cpu",
        platform=platform_of(hw, pool.serving),
        weight_bytes=memory.weight_resident_bytes,
        kv_bytes_per_request=memory.kv_bytes_per_request,
        cpus_per_device=pool.node_cpu / pool.devices_per_node if pool.node_cpu > 0 else 0.0,
        error_band=pp.error_band,
    )


def _rejections(w: WorkloadPlacement, limit: int) -> tuple[tuple[str, str, str], ...]:
    out: list[tuple[str, str, str]] = []
    for phase in (w.prefill, w.decode):
        for r in phase.rejected:
            out.append((r.pool, r.kind or phase.phase, f"{r.reason.value}: {r.detail}"))
    # Most informative first: hard reasons before "cost", then by pool.
    order = {"cost": 2, "pool-excluded": 1}
    out.sort(key=lambda x: (order.get(x[2].split(":", 1)[0], 0), x[0], x[1]))
    return tuple(out[:limit])


def to_workload_plan(
    w: WorkloadPlacement,
    reg: Registration,
    cluster: Cluster,
    options: PlanOptions,
    fingerprint: str,
    max_rejected: int = 24,
) -> WorkloadPlan:
    if not w.placed:
        suggestions = tuple(s.detail for s in w.suggestions if s.feasible)[:3]
        return WorkloadPlan(
            key=reg.key,
            generation=reg.generation,
            placed=False,
            model=w.model,
            agent=w.agent,
            max_model_len=w.max_model_len,
            rejected=_rejections(w, max_rejected),
            reason=w.reason or "infeasible",
            message=w.detail or "no placement",
            suggestions=suggestions,
            pools_fingerprint=fingerprint,
            revision=reg.revision,
        )
    req = reg.request
    assert req is not None
    colocated = w.mode == "colocated"
    prefill = _phase_plan(w.prefill, req, cluster, colocated, options)
    decode = _phase_plan(w.decode, req, cluster, colocated, options)
    return WorkloadPlan(
        key=reg.key,
        generation=reg.generation,
        placed=True,
        model=w.model,
        agent=w.agent,
        mode=w.mode,
        prefill=prefill,
        decode=decode,
        max_model_len=w.max_model_len,
        ttft_seconds=w.ttft_seconds,
        tpot_seconds=w.tpot_seconds,
        output_tokens_per_second=w.output_tokens_per_second,
        dollars_per_million_tokens=w.cost_per_million_tokens,
        cost_per_hour=w.cost_per_hour,
        rejected=_rejections(w, max_rejected),
        pools_fingerprint=fingerprint,
        revision=reg.revision,
    )


def _still_valid(p: WorkloadPlan, cluster: Cluster) -> bool:
    """A kept placement must still name usable pools with the same hardware and node size."""
    if not p.placed:
        return False
    names = {q.name: q for q in cluster.pools}
    for ph in (p.prefill, p.decode):
        if ph is None:
            return False
        pool = names.get(ph.pool)
        if pool is None or pool.hardware.name != ph.hardware or ph.tp > pool.devices_per_node:
            return False
        if dict(pool.node_selector) != dict(ph.node_selector):
            return False
        if ph.platform is not None and platform_of(pool.hardware, pool.serving) != ph.platform:
            return False  # the pool's serving overrides changed: its children render anew
    return True


def plan_workloads(
    regs: Sequence[Registration],
    pools: PoolsInput,
    previous: Mapping[Key, WorkloadPlan] | None = None,
    *,
    policy: str = "stable",
    options: PlanOptions | None = None,
) -> dict[Key, WorkloadPlan]:
    """One planning round (see the module docstring for the policies)."""
    options = options or PlanOptions()
    previous = previous or {}
    cluster = pools.cluster
    pinned: dict[Key, WorkloadPlan] = {}
    if policy == "stable":
        capacity = {p.name: p.free_devices for p in cluster.pools}
        keep = []
        for reg in regs:
            prev = previous.get(reg.key)
            if (
                prev is not None
                and prev.generation == reg.generation
                and prev.revision == reg.revision
                and _still_valid(prev, cluster)
            ):
                keep.append((reg, prev))
        # Devices lost (nodes gone): unpin the newest placements on an over-full pool until it fits.
        keep.sort(key=lambda rp: (rp[0].created, rp[0].key))
        used: dict[str, int] = {}
        for _, prev in keep:
            for pool, n in prev.devices().items():
                used[pool] = used.get(pool, 0) + n
        for pool, n in sorted(used.items()):
            excess = n - capacity.get(pool, 0)
            if excess <= 0:
                continue
            on_pool = [(reg, prev) for reg, prev in keep if pool in prev.devices()]
            for reg, prev in reversed(on_pool):
                if excess <= 0:
                    break
                keep.remove((reg, prev))
                excess -= prev.devices()[pool]
        pinned = {reg.key: prev for reg, prev in keep}
    elif policy != "joint":
        raise ValueError(f"policy must be stable or joint, got {policy!r}")
    replicas_now: dict[str, list[int]] = {}
    for p in pinned.values():
        for pool, sizes in p.replica_sizes().items():
            replicas_now.setdefault(pool, []).extend(sizes)
    todo = [r for r in regs if r.key not in pinned]
    out = dict(pinned)
    for reg in [r for r in todo if r.request is None]:  # no model config to plan with: not placed
        reason, message = reg.problem or ("ConfigMapNotFound", "the model config cannot be read")
        out[reg.key] = WorkloadPlan(
            key=reg.key,
            generation=reg.generation,
            placed=False,
            model=reg.model_id,
            agent="",
            reason=reason,
            message=f"{message}; its placement cannot be kept and no other can be planned without it",
            pools_fingerprint=pools.fingerprint,
            revision=reg.revision,
        )
    todo = [r for r in todo if r.request is not None]
    if todo:
        remaining = replace(cluster, pools=tuple(p.take(replicas_now.get(p.name, ())) for p in cluster.pools))
        result = engine_plan([r.request for r in todo if r.request is not None], remaining, options)
        by_key = {(w.namespace, w.name): w for w in result.workloads}
        for reg in todo:
            out[reg.key] = to_workload_plan(by_key[reg.key], reg, remaining, options, pools.fingerprint)
    return out


def what_if(
    requests: Iterable[WorkloadRequest],
    pools: PoolsInput,
    used: Mapping[str, int] | None = None,
    options: PlanOptions | None = None,
) -> dict[str, Any]:
    """Plan ``requests`` on the live pools (optionally net of ``used`` devices); the engine's JSON."""
    cluster = with_used(pools.cluster, used or {})
    result = engine_plan(list(requests), cluster, options or PlanOptions())
    doc = result.to_dict()
    doc["poolsFingerprint"] = pools.fingerprint
    out: dict[str, Any] = _finite(doc)
    return out


def _finite(x: Any) -> Any:
    """JSON-safe: infinities and NaN become None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
