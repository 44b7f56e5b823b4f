"""The placement's vocabulary: options a workload can be placed with, why a pool was rejected, and
the planner's knobs.

* :class:`Option` — a complete placement of one workload (both phases: :class:`PhaseConfig`),
  colocated or disaggregated (:class:`Mode`), with its cost, times and the serving model's prediction;
* :class:`Rejection` / :class:`Reason` — why a pool (or one candidate on it) was not used, and how
  far the candidate got (``STAGES``: a later stage is a closer miss);
* :class:`PlanOptions` — what ``hetsched plan`` and the operator can tune;
* :func:`prune_dominated` — options no cheaper than another using no more devices are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from hetsched.scheduler.catalog.hardware import Efficiency
from hetsched.scheduler.estimator.analysis import PhaseAnalysis
from hetsched.scheduler.estimator.roofline import (
    DEFAULT_MEMORY_UTILIZATION,
)
from hetsched.scheduler.estimator.serving import (
    ServingPrediction,
)
from hetsched.scheduler.placement.request import WorkloadRequest


class Mode(StrEnum):
    COLOCATED = "colocated"
    DISAGGREGATED = "disaggregated"


class Reason(StrEnum):
    """Why a pool (or one candidate on it) was not used for a phase."""

    CAPACITY = "capacity"  # weights + one request's KV do not fit the devices' usable memory
    TP_EXCEEDS_NODE = "tp-exceeds-node"  # it would fit only with more devices than a node has
    SLO = "slo"  # TTFT or TPOT above the SLO even at the smallest batch
    DEMAND = "demand"  # replicas for the demand need more devices than the pool has at all
    NO_FREE_DEVICES = "no-free-devices"  # feasible, but the free devices are taken
    POOL_EXCLUDED = "pool-excluded"  # spec.pools excludes it, or allows only others
    HARDWARE_UNKNOWN = "hardware-unknown"  # the pool's hardware is not in the catalog
    PRICE_INVALID = "price-invalid"  # a node's hetsched.io/price-per-device-hour label is not a number
    PAIRING = "no-pairing"  # this phase fits here but no pool can run the other phase with it
    MODE = "mode"  # only the other serving mode could use it, and spec.disaggregation forbids it
    COST = "cost"  # feasible, but the chosen placement is cheaper
    CONTEXT_LIMIT = "context-limit"  # the request's context exceeds the model's own limit (any pool)
    NO_ENGINE_BUILD = "no-engine-build"  # the serving engine has no image for the pool's hardware
    KV_TRANSFER = "kv-transfer"  # the engine cannot move KV between this prefill and decode pool
    ENGINE_TP = "engine-tp"  # the engine's KV connector does not accept this prefill/decode TP pair


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rejected candidate or pool. ``severity`` ≈ needed / allowed (1 = at the limit)."""

    pool: str
    reason: Reason
    detail: str
    kind: str = ""  # "prefill", "decode" (disaggregated phases), "colocated", or "" (pool level)
    severity: float = math.inf
    tp: int | None = None
    batch: int | None = None
    stage: int = 0  # how far the candidate got: 0 memory, 1 node size, 2 SLO, 3 demand, 4 pairing

    def to_dict(self) -> dict[str, str]:
        return {"pool": self.pool, "reason": self.reason.value, "detail": self.detail}

    @property
    def rank(self) -> tuple[int, float]:
        """Closest miss first: the furthest stage, then the smallest severity."""
        return (-self.stage, self.severity)


# How far a candidate got before it was rejected; a later stage is a closer miss.
STAGES = {
    Reason.NO_ENGINE_BUILD: 0,
    Reason.CAPACITY: 0,
    Reason.TP_EXCEEDS_NODE: 1,
    Reason.SLO: 2,
    Reason.DEMAND: 3,
    Reason.PAIRING: 4,
    Reason.KV_TRANSFER: 4,
    Reason.ENGINE_TP: 4,
}
PAIR_STAGE = 4  # rejections of a pool pair (KV transfer, queueing): the phases themselves fit
DOMINATED_STAGE = 5  # a pool pair whose every option a colocated one dominates: feasible, not needed


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Knobs of the planner (defaults are what ``hetsched plan`` uses)."""

    utilization: float = DEFAULT_MEMORY_UTILIZATION  # usable fraction of device memory
    efficiency: Efficiency | None = None  # None: each hardware's calibrated efficiency
    max_batch: int = 1024  # ceiling of the decode / colocated batch ladder
    max_prefill_batch: int = 64  # ceiling of the prefill batch ladder
    max_tp: int = 64  # largest TP considered when diagnosing tp-exceeds-node
    max_exact_per_pair: int = 24  # serving-model evaluations per pool pair before giving up
    time_limit_seconds: float = 10.0  # MILP time limit; the greedy result is used past it
    solver: str = "milp"  # "milp" or "greedy"
    suggestions: bool = True  # compute suggestions for workloads that cannot be placed
    suggestion_seconds: float = 10.0  # time budget of a plan's re-estimated suggestions
    record_all_rejections: bool = False  # keep every rejected candidate (tests, debugging)

    def __post_init__(self) -> None:
        if not 0 < self.utilization <= 1:
            raise ValueError(f"utilization must be in (0, 1], got {self.utilization}")
        if self.solver not in ("milp", "greedy"):
            raise ValueError(f"solver must be milp or greedy, got {self.solver!r}")
        if self.max_batch < 1 or self.max_prefill_batch < 1 or self.max_tp < 1:
            raise ValueError("max_batch, max_prefill_batch and max_tp must be ≥ 1")


@dataclass(frozen=True, slots=True)
class PhaseConfig:
    """One phase on one pool: ``replicas`` replicas of ``tp`` devices each, at ``batch``."""

    pool: str
    tp: int
    batch: int
    replicas: int
    step_seconds: float
    requests_per_second_per_replica: float
    analysis: PhaseAnalysis | None  # None for intermediate configurations (decode per pool)

    @property
    def devices(self) -> int:
        return self.replicas * self.tp


@dataclass(frozen=True, slots=True)
class Option:
    """A complete placement of one workload (both phases), before capacity sharing."""

    mode: Mode
    prefill: PhaseConfig
    decode: PhaseConfig
    devices: tuple[tuple[str, int], ...]  # per pool, sorted by pool name
    cost_per_hour: float
    ttft_seconds: float
    tpot_seconds: float
    kv_transfer_seconds: float
    requests_per_second: float  # λ it is sized for (demand, or derived from sessions)
    prediction: ServingPrediction  # the serving model's prediction for this configuration
    prefill_cost_per_hour: float = 0.0
    decode_cost_per_hour: float = 0.0
    concurrency: int = 0  # disaggregated: requests in flight passed to predict_disaggregated

    def uses(self, phase: str, pool: str) -> bool:
        return (self.prefill.pool if phase == "prefill" else self.decode.pool) == pool

    @property
    def replica_blocks(self) -> tuple[tuple[str, int, int], ...]:
        """(pool, devices per replica, devices) of each phase's replicas (one entry when colocated)."""
        if self.mode is Mode.COLOCATED:
            c = self.prefill
            return ((c.pool, c.tp, self.devices[0][1]),)
        return tuple((c.pool, c.tp, c.devices) for c in (self.prefill, self.decode))

    def describe(self) -> str:
        if self.mode is Mode.COLOCATED:
            c = self.prefill
            return f"colocated on {c.pool}: TP {c.tp}, batch {c.batch}, {c.replicas} replica(s)"
        p, d = self.prefill, self.decode
        return (
            f"prefill on {p.pool} (TP {p.tp}, batch {p.batch}, {p.replicas} replica(s)), "
            f"decode on {d.pool} (TP {d.tp}, batch {d.batch}, {d.replicas} replica(s))"
        )


@dataclass(slots=True)
class WorkloadCandidates:
    """What the generator found for one workload."""

    request: WorkloadRequest
    options: list[Option]  # pruned, sorted by (cost, devices, preference): the solver's choices
    all_options: list[Option]  # one per pool (colocated) or pool pair (disaggregated), unpruned
    best_rejections: dict[tuple[str, str], Rejection]  # (kind, pool) -> closest miss
    rejections: list[Rejection] = field(default_factory=list)  # every one (record_all_rejections)
    rejection_count: int = 0
    evaluations: int = 0

    feasible: set[tuple[str, str]] = field(default_factory=set)  # (kind, pool) with a configuration

    def relevant(self, r: Rejection) -> bool:
        """A configuration-level rejection does not explain a pool where another configuration fits."""
        return r.stage >= PAIR_STAGE or (r.kind, r.pool) not in self.feasible

    def closest_miss(self) -> Rejection | None:
        """The nearest miss over the pools: each pool's own reason (its furthest-stage rejection),
        then across pools the smallest excess (needed / allowed), the later stage on ties."""
        misses = [r for r in self.best_rejections.values() if self.relevant(r)]
        if not misses:
            return None
        return min(misses, key=lambda r: (r.severity, -r.stage, r.pool, r.kind))


class RejectionRecorder:
    """Keeps, per (kind, pool), the closest miss of a workload's candidates (every one when asked)."""

    def __init__(self, record_all: bool) -> None:
        self.best: dict[tuple[str, str], Rejection] = {}
        self.all: list[Rejection] = []
        self.record_all = record_all
        self.count = 0
        self.feasible: set[tuple[str, str]] = set()

    def wants(self, kind: str, pool: str, severity: float, stage: int) -> bool:
        if self.record_all:
            return True
        cur = self.best.get((kind, pool))
        return cur is None or (-stage, severity) < cur.rank

    def add(self, r: Rejection) -> None:
        self.count += 1
        if self.record_all:
            self.all.append(r)
        cur = self.best.get((r.kind, r.pool))
        if cur is None or r.rank < cur.rank:
            self.best[(r.kind, r.pool)] = r

    def reject(
        self,
        kind: str,
        pool: str,
        reason: Reason,
        severity: float,
        detail: str,
        tp: int | None = None,
        batch: int | None = None,
        stage: int | None = None,
    ) -> None:
        st = STAGES.get(reason, 0) if stage is None else stage
        if self.wants(kind, pool, severity, st):
            self.add(Rejection(pool, reason, detail, kind, severity, tp, batch, st))
        else:
            self.count += 1


def prune_dominated(options: list[Option]) -> list[Option]:
    """Drop options no cheaper than another that uses no more devices of every pool.

    ``options`` must be sorted by cost (then preference): a kept option can only be dominated by an
    earlier one, and only by one whose pools are a subset of its own (options use ≤ 2 pools).
    """
    kept: list[Option] = []
    by_pools: dict[tuple[str, ...], list[Option]] = {}
    for o in options:
        pools = tuple(p for p, _ in o.devices)
        subsets = [pools] if len(pools) == 1 else [pools, (pools[0],), (pools[1],)]
        need = dict(o.devices)
        dominated = False
        for s in subsets:
            for k in by_pools.get(s, ()):
                if k.cost_per_hour <= o.cost_per_hour + 1e-12 and all(n <= need[p] for p, n in k.devices):
                    dominated = True
                    break
            if dominated:
                break
        if not dominated:
            kept.append(o)
            by_pools.setdefault(pools, []).append(o)
    return kept
