"""The placement a workload's status records, read back as a plan: what the *stable* policy keeps
across operator restarts and leader failovers.

The stable policy keeps a placed workload where it is unless its spec changed or its placement is
no longer feasible. Its memory used to live in the process only, so a restart planned every
workload afresh and moved some (each move a model reload with ``maxSurge: 0``: an outage). Now the
first plans come from the statuses:

* :func:`seed_from_status` — the status of a workload placed for its current generation (``Placed``
  True, ``observedGeneration`` = ``metadata.generation``) → a :class:`Seed`: mode, per phase the
  pool, hardware, TP, batch, replicas and the figures the status shows;
* :func:`children_disagree` — the seed is trusted only if the live children agree: each Deployment
  the status names exists, is controlled by this workload (owner uid) and runs on the status's
  pool with its TP and batch (a status written just before a crash, or edited by hand, is not);
* :func:`seeded_plan` — the seed as a :class:`~hetsched.operator.planning.plans.WorkloadPlan` on
  the live pools (their node selectors and taints); the planning round then treats it like the
  plan of its previous round: kept while its pools are valid and have room, re-planned otherwise.

Seeds of workloads not registered yet (the start-up barrier gave up waiting for them) still hold
their devices in a round (``reserved``), so a new workload is not placed on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hetsched.operator.planning.plans import PhasePlan, WorkloadPlan
from hetsched.operator.reconcile.manifests import TaintRef
from hetsched.scheduler.pools import Cluster

if TYPE_CHECKING:
    from hetsched.operator.planning.intake import Key
    from hetsched.operator.reconcile.children import ChildState

MODES = ("colocated", "disaggregated")


@dataclass(frozen=True, slots=True)
class SeedPhase:
    pool: str
    hardware: str
    deployment: str
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
    dollars_per_million_tokens: float | None
    price_per_hour: float


@dataclass(frozen=True, slots=True)
class Seed:
    generation: int
    mode: str
    model: str
    agent: str
    prefill: SeedPhase
    decode: SeedPhase
    ttft_seconds: float | None
    tpot_seconds: float | None
    tokens_per_second: float | None
    dollars_per_million_tokens: float | None
    rejected: tuple[tuple[str, str, str], ...]
    pools_fingerprint: str
    model_config_hash: str | None  # None: the status predates the field (not compared)

    def deployments(self) -> dict[str, SeedPhase]:
        """The Deployments the placement runs as, by name, with their phase."""
        if self.mode == "colocated":
            return {self.decode.deployment: self.decode}
        return {self.prefill.deployment: self.prefill, self.decode.deployment: self.decode}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _phase(doc: Any) -> SeedPhase:
    if not isinstance(doc, Mapping) or not doc.get("pool") or not doc.get("deployment"):
        raise ValueError("phase without pool or deployment")
    return SeedPhase(
        pool=str(doc["pool"]),
        hardware=str(doc.get("hardware") or ""),
        deployment=str(doc["deployment"]),
        tp=_int(doc.get("tp")),
        batch=_int(doc.get("batch")),
        max_batch=_int(doc.get("maxBatch", 0)),
        replicas=_int(doc.get("replicas")),
        devices=_int(doc.get("devices", 0)),
        operational_intensity=_num(doc.get("operationalIntensity")) or 0.0,
        ridge_point=_num(doc.get("ridgePoint")) or 0.0,
        capacity_footprint_bytes=_num(doc.get("capacityFootprintBytes")) or 0.0,
        regime=str(doc.get("regime") or ""),
        ttft_seconds=_num(doc.get("ttftSeconds")),
        tpot_seconds=_num(doc.get("tpotSeconds")),
        tokens_per_second=_num(doc.get("tokensPerSecond")) or 0.0,
        dollars_per_million_tokens=_num(doc.get("dollarsPerMillionTokens")),
        price_per_hour=_num(doc.get("pricePerHour")) or 0.0,
    )


def seed_from_status(status: Mapping[str, Any] | None, generation: int) -> Seed | None:
    """The placement ``status`` records, if it is a placement for ``generation`` (else None)."""
    if not isinstance(status, Mapping) or status.get("observedGeneration") != generation:
        return None
    placed = next(
        (c for c in status.get("conditions") or () if isinstance(c, Mapping) and c.get("type") == "Placed"),
        None,
    )
    if placed is None or placed.get("status") != "True" or status.get("mode") not in MODES:
        return None
    try:
        prefill, decode = _phase(status.get("prefill")), _phase(status.get("decode"))
        rejected = tuple(
            (str(r["pool"]), str(r["phase"]), str(r["reason"]))
            for r in status.get("rejectedPools") or ()
            if isinstance(r, Mapping)
        )
    except (ValueError, KeyError, TypeError):
        return None
    cm_hash = status.get("modelConfigHash")
    return Seed(
        generation=generation,
        mode=str(status["mode"]),
        model=str(status.get("model") or ""),
        agent=str(status.get("agent") or ""),
        prefill=prefill,
        decode=decode,
        ttft_seconds=_num(status.get("ttftSeconds")),
        tpot_seconds=_num(status.get("tpotSeconds")),
        tokens_per_second=_num(status.get("tokensPerSecond")),
        dollars_per_million_tokens=_num(status.get("dollarsPerMillionTokens")),
        rejected=rejected,
        pools_fingerprint=str(status.get("poolsFingerprint") or ""),
        model_config_hash=str(cm_hash) if isinstance(cm_hash, str) else None,
    )


def children_disagree(seed: Seed, uid: str, children: Mapping[tuple[str, str], ChildState]) -> str | None:
    """Why the live children do not run the seed's placement (None: they do)."""
    for name, phase in sorted(seed.deployments().items()):
        child = children.get(("Deployment", name))
        if child is None:
            return f"Deployment {name} does not exist"
        if child.controller_uid != uid:
            return f"Deployment {name} is not controlled by this workload"
        if child.pool != phase.pool:
            return f"Deployment {name} runs on pool {child.pool or '?'}, the status says {phase.pool}"
        if child.tp != phase.tp or child.max_batch != phase.batch:
            return (
                f"Deployment {name} has TP {child.tp}, batch {child.max_batch}; "
                f"the status says TP {phase.tp}, batch {phase.batch}"
            )
    return None


def seeded_plan(
    seed: Seed, key: Key, cluster: Cluster, *, max_model_len: int = 0, revision: str = ""
) -> WorkloadPlan | None:
    """The seed as a plan on the live pools (None when a pool it names is not offered now)."""
    pools = {p.name: p for p in cluster.pools}

    def phase(name: str, s: SeedPhase) -> PhasePlan | None:
        pool = pools.get(s.pool)
        if pool is None:
            return None
        return PhasePlan(
            phase=name,
            pool=s.pool,
            hardware=s.hardware,
            tp=s.tp,
            batch=s.batch,
            max_batch=s.max_batch,
            replicas=s.replicas,
            devices=s.devices or s.tp * s.replicas,
            operational_intensity=s.operational_intensity,
            ridge_point=s.ridge_point,
            capacity_footprint_bytes=s.capacity_footprint_bytes,
            regime=s.regime,
            ttft_seconds=s.ttft_seconds,
            tpot_seconds=s.tpot_seconds,
            tokens_per_second=s.tokens_per_second,
            cost_per_hour=s.price_per_hour,
            dollars_per_million_tokens=s.dollars_per_million_tokens,
            node_selector=dict(pool.node_selector),
            taints=tuple(TaintRef(t.key, t.value, t.effect) for t in pool.taints),
            gpu=pool.hardware.kind.value != "cpu",
        )

    prefill, decode = phase("prefill", seed.prefill), phase("decode", seed.decode)
    if prefill is None or decode is None:
        return None
    cost = decode.cost_per_hour if seed.mode == "colocated" else prefill.cost_per_hour + decode.cost_per_hour
    return WorkloadPlan(
        key=key,
        generation=seed.generation,
        placed=True,
        model=seed.model,
        agent=seed.agent,
        mode=seed.mode,
        prefill=prefill,
        decode=decode,
        max_model_len=max_model_len,
        ttft_seconds=seed.ttft_seconds,
        tpot_seconds=seed.tpot_seconds,
        output_tokens_per_second=seed.tokens_per_second,
        dollars_per_million_tokens=seed.dollars_per_million_tokens,
        cost_per_hour=cost,
        rejected=seed.rejected,
        pools_fingerprint=seed.pools_fingerprint,
        revision=revision,
    )
