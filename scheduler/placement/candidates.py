"""Per-workload candidates: every (pool, TP, batch) of each phase, and the placement options.

This is the planner's hot path. Two levels of estimate, memoised in :class:`EstimateCache`:

* **bounds** from the phase steps (``estimate_phase`` once per (shape, phase, TP, batch) for all
  pools, and per hardware the step time as ``roofline.evaluate`` computes it — a unit test checks
  they are equal): a step's time is a lower bound on what a user sees
  (TPOT ≥ decode step, TTFT ≥ prefill step + KV transfer, colocated TTFT ≥ prefill + decode
  step), so candidates missing an SLO on a bound are rejected without further work, and the rest
  are visited in order of a lower bound on the devices they need;
* **the serving model**: every option offered to the solver has its TTFT, TPOT and throughput
  from the formulas of ``serving.predict_colocated`` / ``serving.predict_disaggregated`` — the
  same formulas ``hetsched validate`` uses and the calibration fits, including the queueing they
  model (disaggregated: ``concurrency`` requests in flight over ``prefill_workers`` prefill
  replicas). They are evaluated through the serving module's public parts (``step_terms``,
  ``kv_capacity``, ``colocated_times``, ``disaggregated_times``) with the step terms memoised;
  a unit test checks every option against the two functions, and the planner re-evaluates each
  chosen option with them.

Per pool (colocated, decode) or pool pair (disaggregated) only the configuration using the fewest
devices survives — devices of one pool are interchangeable, so it dominates the others (ties: the
smaller TP, then the larger batch). Options of a workload dominated in every pool's devices and
in cost by another are pruned before the solver (``prune_dominated``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hetsched.scheduler.analysis import PhaseAnalysis, decode_context
from hetsched.scheduler.calibration.calibrated import with_engine
from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.estimator import Phase, PhaseCost, estimate_phase
from hetsched.scheduler.placement.request import WorkloadRequest
from hetsched.scheduler.pools import Cluster, Pool
from hetsched.scheduler.roofline import (
    DEFAULT_MEMORY_UTILIZATION,
    PhasePerformance,
    allreduce_seconds,
    evaluate,
)
from hetsched.scheduler.serving import (
    EfficiencyTerms,
    ServingPrediction,
    StepTerms,
    colocated_times,
    disaggregated_times,
    kv_capacity,
    step_terms,
)
from hetsched.scheduler.spec import DisaggregationMode
from hetsched.scheduler.units import fmt_gib, fmt_seconds

_PREFILL = Phase.PREFILL  # module constants: enum attribute access is slow on the hot path
_DECODE = Phase.DECODE
_EPS = 1e-9
_SELF_CHECKS = 3  # fast step times checked against roofline.evaluate per (shape, hardware)


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
    Reason.CAPACITY: 0,
    Reason.TP_EXCEEDS_NODE: 1,
    Reason.SLO: 2,
    Reason.DEMAND: 3,
    Reason.PAIRING: 4,
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


# ---- estimate cache -----------------------------------------------------------------------------
class EstimateCache:
    """Memoised estimates, shared by the workloads of a plan (and across plans when reused).

    * phase costs (``estimate_phase``: FLOPs and bytes) do not depend on the hardware: keyed by
      (shape, phase, TP, batch), one estimate serves every pool;
    * their roofline step time per hardware (``step_time``; the full ``roofline.evaluate`` analysis
      only for configurations the serving model evaluates): (shape, hardware, TP, phase, batch);
    * the serving model's step terms (``serving.step_terms``) and predictions per configuration.

    A shape is (model, precisions, P, C, O); a hardware id covers the spec, the efficiency
    override and the memory utilisation. Cleared wholesale after ``max_entries`` insertions
    (about 3 kB each: ~0.5 MB per model shape on 12 pools).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._shapes: dict[object, int] = {}
        self._hardware: dict[str, int] = {}
        self._efficiency: dict[int, EfficiencyTerms] = {}
        self._costs: dict[tuple[int, bool, int, int], PhaseCost] = {}
        self._analyses: dict[tuple[int, int, int, bool, int], PhaseAnalysis] = {}
        self._steps: dict[tuple[int, int, int, bool, int], float] = {}
        self._roof: dict[tuple[int, str], tuple[Efficiency, float, float]] = {}
        self._eff: dict[int, Efficiency] = {}
        self._utilization: dict[int, float] = {}
        self._checked: dict[tuple[int, int], int] = {}  # (shape, hardware) -> fast steps checked, -1: off
        self.fast_mismatches = 0
        self._terms: dict[tuple[int, int, int, bool, int], tuple[StepTerms, PhaseCost]] = {}
        self._capacity: dict[tuple[int, int, int], int] = {}
        self._colocated: dict[tuple[int, int, int, int], ServingPrediction] = {}
        self._disaggregated: dict[tuple[object, ...], ServingPrediction] = {}
        self._memory: dict[tuple[int, int, int], tuple[float, float]] = {}
        self.hits = 0
        self.misses = 0
        self._inserts = 0

    def __len__(self) -> int:
        return (
            len(self._costs)
            + len(self._analyses)
            + len(self._terms)
            + len(self._colocated)
            + len(self._disaggregated)
            + len(self._memory)
        )

    def shape_id(self, req: WorkloadRequest) -> int:
        key = (req.model, req.precisions, req.prompt_tokens, req.cached_tokens, req.output_tokens)
        sid = self._shapes.get(key)
        if sid is None:
            sid = self._shapes[key] = len(self._shapes)
        return sid

    def hardware_id(self, hw: HardwareSpec, efficiency: Efficiency | None, utilization: float) -> int:
        key = f"{hw.model_dump_json()}|{efficiency.model_dump_json() if efficiency else ''}|{utilization!r}"
        hid = self._hardware.get(key)
        if hid is None:
            hid = self._hardware[key] = len(self._hardware)
            eff = hw.efficiency if efficiency is None else efficiency
            self._eff[hid] = eff
            self._utilization[hid] = utilization
            self._efficiency[hid] = EfficiencyTerms.of(eff)
        return hid

    def _trim(self) -> None:
        self._inserts += 1
        if self._inserts > self.max_entries:
            self._inserts = 0
            for d in (
                self._steps,
                self._costs,
                self._analyses,
                self._terms,
                self._capacity,
                self._colocated,
                self._disaggregated,
                self._memory,
            ):
                d.clear()

    @staticmethod
    def _step(req: WorkloadRequest, prefill: bool) -> tuple[Phase, int, int]:
        """(phase, new tokens, context) as ``serving`` steps them: prefill of P after C; decode at
        the mean context of the generation, C + P + O//2."""
        if prefill:
            return _PREFILL, req.prompt_tokens, req.cached_tokens
        return _DECODE, 1, decode_context(req.cached_tokens, req.prompt_tokens, req.output_tokens)

    def cost(self, req: WorkloadRequest, sid: int, phase: Phase, tp: int, batch: int) -> PhaseCost:
        key = (sid, phase is _PREFILL, tp, batch)
        hit = self._costs.get(key)
        if hit is not None:
            return hit
        ph, new, context = self._step(req, phase is _PREFILL)
        c = estimate_phase(
            req.model,
            ph,
            batch=batch,
            new_tokens=new,
            context_tokens=context,
            precisions=req.precisions,
            tp=tp,
        )
        self._trim()
        self._costs[key] = c
        return c

    def memory(self, req: WorkloadRequest, sid: int, tp: int, context: int) -> tuple[float, float]:
        """(weights per device, KV per device of one request holding ``context`` tokens)."""
        key = (sid, tp, context)
        hit = self._memory.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        cost = estimate_phase(
            req.model,
            _DECODE,
            batch=1,
            new_tokens=1,
            context_tokens=max(0, context - 1),
            precisions=req.precisions,
            tp=tp,
        )
        out = (cost.weight_resident_bytes / tp, cost.kv_bytes_per_request_per_device)
        self._trim()
        self._memory[key] = out
        return out

    def analysis(
        self,
        req: WorkloadRequest,
        sid: int,
        hw: HardwareSpec,
        hid: int,
        phase: Phase,
        tp: int,
        batch: int,
    ) -> PhaseAnalysis:
        """``analysis.analyze_phase`` of the step (its cost shared across hardware)."""
        key = (sid, hid, tp, phase is _PREFILL, batch)
        hit = self._analyses.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        cost = self.cost(req, sid, phase, tp, batch)
        perf = self._evaluate(req, cost, hw, hid)  # the efficiency of ``hid`` (engine terms included)
        a = PhaseAnalysis(phase, cost, perf)
        self._trim()
        self._analyses[key] = a
        return a

    def step_time(
        self,
        req: WorkloadRequest,
        sid: int,
        hw: HardwareSpec,
        hid: int,
        phase: Phase,
        tp: int,
        batch: int,
    ) -> float:
        """The step time of ``roofline.evaluate`` without the rest of its analysis (the hot path
        needs only the time): operators on their own roofs, the all-reduces, the fixed costs.

        Self-checking: the first steps of every (shape, hardware) are also evaluated with
        ``roofline.evaluate``; on any disagreement (the roofline changed) that pair falls back to
        ``evaluate`` for good, so the time is always the roofline's.
        """
        key = (sid, hid, tp, phase is _PREFILL, batch)
        hit = self._steps.get(key)
        if hit is not None:
            return hit
        cost = self.cost(req, sid, phase, tp, batch)
        check = (sid, hid)
        state = self._checked.get(check, 0)
        t: float
        if state < 0:  # the fast formula disagreed once: the roofline itself
            t = self._evaluate(req, cost, hw, hid).step_seconds
        else:
            t = self._fast_step(req, cost, hw, hid, tp)
            if state < _SELF_CHECKS:
                ref = self._evaluate(req, cost, hw, hid).step_seconds
                if math.isclose(t, ref, rel_tol=1e-9, abs_tol=1e-15):
                    self._checked[check] = state + 1
                else:
                    self._checked[check] = -1
                    self.fast_mismatches += 1
                    t = ref
        self._trim()
        self._steps[key] = t
        return t

    def _evaluate(
        self, req: WorkloadRequest, cost: PhaseCost, hw: HardwareSpec, hid: int
    ) -> PhasePerformance:
        return evaluate(
            cost,
            hw,
            compute_class=req.precisions.compute_class,
            efficiency=self._eff[hid],
            utilization=self._utilization[hid],
        )

    def _fast_step(self, req: WorkloadRequest, cost: PhaseCost, hw: HardwareSpec, hid: int, tp: int) -> float:
        cc = req.precisions.compute_class
        roof = self._roof.get((hid, cc))
        if roof is None:
            e = self._eff[hid]
            roof = self._roof[(hid, cc)] = (e, hw.peak_for(cc) * e.compute, hw.memory_bandwidth * e.bandwidth)
        eff, peak, bandwidth = roof
        peak_tp = peak * tp
        bw_tp = bandwidth * tp
        busy = 0.0
        for op in cost.operators:
            op_peak = (
                peak_tp if op.compute_class is None else hw.peak_for(op.compute_class) * tp * eff.compute
            )
            if op.name == "experts":
                c = op.flops / (op_peak * eff.experts_compute)
                m = op.dram_bytes / (bw_tp * eff.experts_bandwidth)
            else:
                c = op.flops / op_peak
                m = op.dram_bytes / bw_tp
            busy += c if c > m else m
        overhead = eff.step_overhead_seconds + cost.layers * eff.layer_overhead_seconds
        t: float = busy + allreduce_seconds(cost, hw, eff) + overhead
        return t

    def _step_terms(
        self, req: WorkloadRequest, sid: int, hw: HardwareSpec, hid: int, prefill: bool, tp: int, batch: int
    ) -> tuple[StepTerms, PhaseCost]:
        key = (sid, hid, tp, prefill, batch)
        hit = self._terms.get(key)
        if hit is not None:
            return hit
        ph, new, context = self._step(req, prefill)
        out: tuple[StepTerms, PhaseCost] = step_terms(
            req.model,
            hw,
            ph,
            batch=batch,
            new_tokens=new,
            context_tokens=context,
            precisions=req.precisions,
            tp=tp,
        )
        self._terms[key] = out
        return out

    def colocated(
        self,
        req: WorkloadRequest,
        sid: int,
        hw: HardwareSpec,
        hid: int,
        tp: int,
        batch: int,
        options: PlanOptions,
    ) -> ServingPrediction:
        """``serving.predict_colocated`` for ``batch`` requests in flight per replica.

        Composed from the serving module's public parts as ``predict_colocated`` composes them
        (``kv_capacity``, ``step_terms``, ``colocated_times``), with the step terms memoised; the
        contract test ``test_every_option_is_the_serving_models_prediction`` checks equality.
        """
        key = (sid, hid, tp, batch)
        hit = self._colocated.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        ckey = (sid, hid, tp)
        capacity = self._capacity.get(ckey)
        if capacity is None:
            capacity = self._capacity[ckey] = kv_capacity(
                req.model,
                hw,
                context_tokens=req.capacity_context,
                precisions=req.precisions,
                tp=tp,
                utilization=options.utilization,
            )
        running = max(1, min(batch, capacity))
        prefill = self.analysis(req, sid, hw, hid, _PREFILL, tp, 1)
        decode = self.analysis(req, sid, hw, hid, _DECODE, tp, running)
        if capacity < 1:
            inf = math.inf
            pred = ServingPrediction(inf, inf, prefill, decode, 0.0, 0.0, 0.0, inf, inf, inf, 0, 0)
        else:
            pre_terms, _ = self._step_terms(req, sid, hw, hid, True, tp, 1)
            dec_terms, _ = self._step_terms(req, sid, hw, hid, False, tp, running)
            times = colocated_times(
                dec_terms,
                pre_terms,
                concurrency=batch,
                running=running,
                output_tokens=req.output_tokens,
                warmup_fraction=0.0,
                eff=self._efficiency[hid],
            )
            ttft, tpot = float(times.ttft), float(times.tpot)
            rps = running / (ttft + req.output_tokens * tpot)
            pred = ServingPrediction(
                ttft,
                tpot,
                prefill,
                decode,
                0.0,
                rps,
                rps,
                float(times.prefill),
                float(times.decode),
                float(times.queue),
                running,
                capacity,
            )
        self._trim()
        self._colocated[key] = pred
        return pred

    def disaggregated(
        self,
        req: WorkloadRequest,
        sid: int,
        pre: tuple[HardwareSpec, int, int, int],
        dec: tuple[HardwareSpec, int, int, int],
        bandwidth: float,
        workers: int,
        concurrency: int,
        options: PlanOptions,
    ) -> ServingPrediction:
        """``serving.predict_disaggregated`` (``pre``/``dec`` = (hardware, hardware id, TP, batch)),
        composed from ``step_terms`` and ``disaggregated_times`` as that function composes them."""
        key = (sid, pre[1], pre[2], pre[3], dec[1], dec[2], dec[3], bandwidth, workers, concurrency)
        hit = self._disaggregated.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        phw, phid, ptp, pb = pre
        dhw, dhid, dtp, db = dec
        pre_terms, pre_cost = self._step_terms(req, sid, phw, phid, True, ptp, pb)
        dec_terms, _ = self._step_terms(req, sid, dhw, dhid, False, dtp, db)
        kv_seconds = pre_cost.kv_bytes_per_request / bandwidth
        times = disaggregated_times(
            dec_terms,
            pre_terms,
            concurrency=concurrency,
            prefill_slots=workers * pb,
            output_tokens=req.output_tokens,
            kv_transfer_seconds=kv_seconds,
            warmup_fraction=0.0,
            prefill_eff=self._efficiency[phid],
            decode_eff=self._efficiency[dhid],
        )
        t_prefill, tpot = float(times.prefill), float(times.tpot)
        capacity = self._capacity.get((sid, dhid, dtp))
        if capacity is None:
            capacity = self._capacity[(sid, dhid, dtp)] = kv_capacity(
                req.model,
                dhw,
                context_tokens=req.capacity_context,
                precisions=req.precisions,
                tp=dtp,
                utilization=options.utilization,
            )
        pred = ServingPrediction(
            float(times.ttft),
            tpot,
            self.analysis(req, sid, phw, phid, _PREFILL, ptp, pb),
            self.analysis(req, sid, dhw, dhid, _DECODE, dtp, db),
            kv_seconds,
            pb / t_prefill,
            db / (req.output_tokens * tpot),
            t_prefill,
            tpot,
            float(times.queue),
            db,
            capacity,
        )
        self._trim()
        self._disaggregated[key] = pred
        return pred


# ---- helpers -----------------------------------------------------------------------------------
def tp_degrees(devices_per_node: int, limit: int) -> list[int]:
    """Powers of two up to the devices of one node (a replica does not span nodes)."""
    out, tp = [], 1
    while tp <= min(devices_per_node, limit):
        out.append(tp)
        tp *= 2
    return out


def batch_ladder(cap: int) -> list[int]:
    """1, 2, 4, … below ``cap``, and ``cap`` itself."""
    if cap < 1:
        return []
    out, b = [], 1
    while b < cap:
        out.append(b)
        b *= 2
    out.append(cap)
    return out


def ceil_div(x: float, y: float) -> int:
    """⌈x / y⌉ for x ≥ 0, robust to float noise (x/y = 3.0000000001 counts as 3)."""
    q = x / y
    return math.ceil(q - 1e-9 * (q if q > 1.0 else 1.0))


@dataclass(slots=True)
class _PoolCtx:
    pool: Pool
    index: int
    hid: int
    usable: float
    tps: list[int]
    total: int


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


class _Recorder:
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


@dataclass(frozen=True, slots=True)
class _PrefillCfg:
    tp: int
    batch: int
    seconds: float
    rps: float
    cost: PhaseCost


# ---- generation ----------------------------------------------------------------------------------
class CandidateGenerator:
    """Generates candidates for workloads on one cluster (reuse it across a plan's workloads)."""

    def __init__(
        self, cluster: Cluster, options: PlanOptions | None = None, cache: EstimateCache | None = None
    ):
        self.cluster = cluster
        self.options = options or PlanOptions()
        self.cache = cache if cache is not None else EstimateCache()
        self.pools: list[_PoolCtx] = []
        for i, p in enumerate(cluster.pools):
            hid = self.cache.hardware_id(p.hardware, self.options.efficiency, self.options.utilization)
            self.pools.append(
                _PoolCtx(
                    pool=p,
                    index=i,
                    hid=hid,
                    usable=p.hardware.memory_bytes * self.options.utilization,
                    tps=tp_degrees(p.devices_per_node, self.options.max_tp),
                    total=max(p.total_devices, p.free_devices),
                )
            )
        self._engine_pools: dict[str, list[_PoolCtx]] = {}
        self._bandwidth: dict[tuple[str, str], float] = {}
        self._price = {p.name: p.price_per_device_hour for p in cluster.pools}

    def pools_for(self, engine: str | None) -> list[_PoolCtx]:
        """The pools, priced with the serving ``engine``'s fitted terms (``calibrated.with_engine``)
        in each hardware's efficiency; an explicit ``PlanOptions.efficiency`` (``ideal``) is used
        as given, and no engine keeps the shared values."""
        if engine is None or self.options.efficiency is not None:
            return self.pools
        ctxs = self._engine_pools.get(engine)
        if ctxs is None:
            ctxs = self._engine_pools[engine] = [
                replace(
                    c,
                    hid=self.cache.hardware_id(
                        c.pool.hardware,
                        with_engine(c.pool.hardware.efficiency, engine),
                        self.options.utilization,
                    ),
                )
                for c in self.pools
            ]
        return ctxs

    def bandwidth(self, a: str, b: str) -> float:
        key = (a, b)
        bw = self._bandwidth.get(key)
        if bw is None:
            bw = self._bandwidth[key] = self.cluster.bandwidth_between(a, b)
        return bw

    # -- memory --------------------------------------------------------------------------------
    def _fits_or_reject(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, kind: str, context: int, rec: _Recorder
    ) -> list[tuple[int, int]]:
        """[(tp, largest batch that fits)] for the pool's TP degrees; rejections for the rest."""
        out: list[tuple[int, int]] = []
        hw = ctx.pool.hardware
        for tp in ctx.tps:
            w, kv = self.cache.memory(req, sid, tp, context)
            need = w + kv
            if need > ctx.usable:
                sev = need / ctx.usable
                if rec.wants(kind, ctx.pool.name, sev, 0):
                    rec.add(
                        Rejection(
                            ctx.pool.name,
                            Reason.CAPACITY,
                            f"TP {tp}: needs {fmt_gib(need)} per device (weights {fmt_gib(w)} + KV "
                            f"{fmt_gib(kv)} for one request of {context} tokens) > {fmt_gib(ctx.usable)} usable "
                            f"({self.options.utilization:g} × {fmt_gib(hw.memory_bytes)})",
                            kind,
                            sev,
                            tp,
                            1,
                            0,
                        )
                    )
                else:
                    rec.count += 1
                continue
            bmax = int((ctx.usable - w) // kv) if kv > 0 else 1 << 30
            out.append((tp, bmax))
        if not out:
            self._diagnose_tp(req, sid, ctx, kind, context, rec)
        return out

    def _diagnose_tp(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, kind: str, context: int, rec: _Recorder
    ) -> None:
        dpn = ctx.pool.devices_per_node
        tp = 1
        while tp <= self.options.max_tp:
            if tp > dpn:
                w, kv = self.cache.memory(req, sid, tp, context)
                if w + kv <= ctx.usable:
                    rec.add(
                        Rejection(
                            ctx.pool.name,
                            Reason.TP_EXCEEDS_NODE,
                            f"fits only at TP {tp} ({fmt_gib(w + kv)} per device) but nodes of {ctx.pool.name} "
                            f"have {dpn} device(s); a replica does not span nodes",
                            kind,
                            tp / dpn,
                            tp,
                            1,
                            1,
                        )
                    )
                    return
            tp *= 2

    # -- phases --------------------------------------------------------------------------------
    # Keys: fewest devices, then the smaller TP, then the larger batch. A replica uses ≥ tp devices,
    # so once a pool's best uses ≤ tp devices no larger TP can beat it; along a batch ladder, once
    # one replica covers the demand a larger batch only adds latency.
    def _decode_best(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, rec: _Recorder
    ) -> tuple[PhaseConfig | None, int]:
        """The decode configuration of a pool using the fewest devices (TPOT = the decode step)."""
        name = ctx.pool.name
        best: PhaseConfig | None = None
        best_key: tuple[float, ...] = ()
        evals = 0
        lam = req.requests_per_second
        sessions = req.concurrent_sessions
        slo = req.tpot_slo_seconds
        o = req.output_tokens
        for tp, bmax in self._fits_or_reject(req, sid, ctx, "decode", req.capacity_context, rec):
            if best is not None and best.devices <= tp:
                break
            cap = min(bmax, req.max_batch or bmax, self.options.max_batch, sessions or bmax)
            for b in batch_ladder(cap):
                tpot = self.cache.step_time(req, sid, ctx.pool.hardware, ctx.hid, _DECODE, tp, b)
                evals += 1
                if tpot > slo * (1 + _EPS):
                    rec.reject(
                        "decode",
                        name,
                        Reason.SLO,
                        tpot / slo,
                        f"TPOT {fmt_seconds(tpot)} > {fmt_seconds(slo)} (TP {tp}, batch {b})",
                        tp,
                        b,
                    )
                    break
                rps = b / (o * tpot)
                reps = ceil_div(sessions, b) if sessions else ceil_div(lam or 0.0, rps)
                devs = reps * tp
                if devs > ctx.total:
                    rec.reject(
                        "decode",
                        name,
                        Reason.DEMAND,
                        devs / ctx.total,
                        f"{_replicas(reps, tp, devs)} (batch {b}) for {_demand(req)}; the pool has {ctx.total}",
                        tp,
                        b,
                    )
                    continue
                key = (devs, tp, -b)
                if best is None or key < best_key:
                    best, best_key = PhaseConfig(name, tp, b, reps, tpot, rps, None), key
                if reps == 1:
                    break
        return best, evals

    def _prefill_configs(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, rec: _Recorder
    ) -> tuple[list[_PrefillCfg], int]:
        """Prefill configurations of a pool whose step alone meets the TTFT SLO."""
        name = ctx.pool.name
        slo = req.ttft_slo_seconds
        out: list[_PrefillCfg] = []
        evals = 0
        for tp, bmax in self._fits_or_reject(req, sid, ctx, "prefill", req.prefill_context, rec):
            cap = min(bmax, req.max_batch or bmax, self.options.max_prefill_batch)
            for b in batch_ladder(cap):
                t = self.cache.step_time(req, sid, ctx.pool.hardware, ctx.hid, _PREFILL, tp, b)
                evals += 1
                if t > slo * (1 + _EPS):
                    rec.reject(
                        "prefill",
                        name,
                        Reason.SLO,
                        t / slo,
                        f"TTFT ≥ prefill step {fmt_seconds(t)} > {fmt_seconds(slo)} (TP {tp}, batch {b})",
                        tp,
                        b,
                    )
                    break
                out.append(_PrefillCfg(tp, b, t, b / t, self.cache.cost(req, sid, _PREFILL, tp, b)))
        return out, evals

    def _colocated_best(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, rec: _Recorder
    ) -> tuple[Option | None, int]:
        """The colocated configuration of a pool using the fewest devices, by ``predict_colocated``.

        Candidates are visited by a lower bound on their devices (throughput bounded with TTFT ≥
        prefill + decode step and TPOT ≥ decode step); the first ones whose bound exceeds the best
        found are never evaluated.
        """
        name = ctx.pool.name
        hw = ctx.pool.hardware
        evals = 0
        sessions = req.concurrent_sessions
        lam = req.requests_per_second
        o = req.output_tokens
        ttft_slo, tpot_slo = req.ttft_slo_seconds, req.tpot_slo_seconds
        queue: list[tuple[int, int, int]] = []  # (lower bound on devices, tp, -batch)
        for tp, bmax in self._fits_or_reject(req, sid, ctx, "colocated", req.capacity_context, rec):
            cap = min(bmax, req.max_batch or bmax, self.options.max_batch, sessions or bmax)
            t_pre = self.cache.step_time(req, sid, hw, ctx.hid, _PREFILL, tp, 1)
            for b in batch_ladder(cap):
                t_dec = self.cache.step_time(req, sid, hw, ctx.hid, _DECODE, tp, b)
                evals += 1
                if t_dec > tpot_slo * (1 + _EPS) or t_pre + t_dec > ttft_slo * (1 + _EPS):
                    if t_dec / tpot_slo >= (t_pre + t_dec) / ttft_slo:
                        what, sev = (
                            f"TPOT ≥ decode step {fmt_seconds(t_dec)} > {fmt_seconds(tpot_slo)}",
                            t_dec / tpot_slo,
                        )
                    else:
                        what = f"TTFT ≥ prefill + decode step {fmt_seconds(t_pre + t_dec)} > {fmt_seconds(ttft_slo)}"
                        sev = (t_pre + t_dec) / ttft_slo
                    rec.reject(
                        "colocated", name, Reason.SLO, sev, f"{what} colocated (TP {tp}, batch {b})", tp, b
                    )
                    break
                if sessions:
                    lb = ceil_div(sessions, b)
                else:
                    lb = ceil_div(lam or 0.0, b / (t_pre + t_dec + o * t_dec))
                queue.append((lb * tp, tp, -b))
                if lb == 1:
                    break
        queue.sort()
        best: tuple[tuple[int, int, int], int, ServingPrediction] | None = None
        for lb_devs, tp, neg_b in queue:
            if best is not None and (lb_devs, tp, neg_b) >= best[0]:
                break
            b = -neg_b
            pred = self.cache.colocated(req, sid, hw, ctx.hid, tp, b, self.options)
            evals += 1
            over_ttft = pred.ttft_seconds / ttft_slo
            over_tpot = pred.tpot_seconds / tpot_slo
            if over_ttft > 1 + _EPS or over_tpot > 1 + _EPS:
                if over_tpot >= over_ttft:
                    what = f"TPOT {fmt_seconds(pred.tpot_seconds)} > {fmt_seconds(tpot_slo)}"
                else:
                    what = f"TTFT {fmt_seconds(pred.ttft_seconds)} > {fmt_seconds(ttft_slo)}"
                rec.reject(
                    "colocated",
                    name,
                    Reason.SLO,
                    max(over_ttft, over_tpot),
                    f"{what} colocated (TP {tp}, batch {b})",
                    tp,
                    b,
                )
                continue
            rps = pred.decode_requests_per_second
            reps = ceil_div(sessions, b) if sessions else ceil_div(lam or 0.0, rps)
            devs = reps * tp
            if devs > ctx.total:
                rec.reject(
                    "colocated",
                    name,
                    Reason.DEMAND,
                    devs / ctx.total,
                    f"{_replicas(reps, tp, devs)} colocated (batch {b}) for {_demand(req)}; "
                    f"the pool has {ctx.total}",
                    tp,
                    b,
                )
                continue
            key = (devs, tp, neg_b)
            if best is None or key < best[0]:
                best = (key, reps, pred)
        if best is None:
            return None, evals
        (devs, tp, neg_b), reps, pred = best
        b = -neg_b
        rps = pred.decode_requests_per_second
        if lam is None:  # closed loop: each session has one request in flight (Little's law)
            lam = (sessions or 0) / (pred.ttft_seconds + o * pred.tpot_seconds)
        cost = devs * ctx.pool.price_per_device_hour
        pre = PhaseConfig(name, tp, b, reps, pred.prefill.performance.step_seconds, rps, pred.prefill)
        dec = PhaseConfig(name, tp, b, reps, pred.tpot_seconds, rps, pred.decode)
        opt = Option(
            Mode.COLOCATED,
            pre,
            dec,
            ((name, devs),),
            cost,
            pred.ttft_seconds,
            pred.tpot_seconds,
            0.0,
            lam,
            pred,
            cost,
            cost,
            0,
        )
        return opt, evals

    # -- workload ------------------------------------------------------------------------------
    def generate(self, req: WorkloadRequest) -> WorkloadCandidates:
        rec = _Recorder(self.options.record_all_rejections)
        sid = self.cache.shape_id(req)
        evals = 0
        pools = self.pools_for(req.engine)
        allow_coloc = req.disaggregation is not DisaggregationMode.ALWAYS
        allow_disagg = req.disaggregation is not DisaggregationMode.NEVER
        options: list[Option] = []
        colocated: dict[str, Option] = {}
        if allow_coloc:
            for ctx in pools:
                if req.allows("prefill", ctx.pool.name) and req.allows("decode", ctx.pool.name):
                    opt, n = self._colocated_best(req, sid, ctx, rec)
                    evals += n
                    if opt is not None:
                        options.append(opt)
                        colocated[ctx.pool.name] = opt
                        rec.feasible.add(("colocated", ctx.pool.name))
        if allow_disagg:
            decode_best: dict[str, PhaseConfig] = {}
            prefill_cfgs: dict[str, list[_PrefillCfg]] = {}
            for ctx in pools:
                if req.allows("decode", ctx.pool.name):
                    cfg, n = self._decode_best(req, sid, ctx, rec)
                    evals += n
                    if cfg is not None:
                        decode_best[ctx.pool.name] = cfg
                        rec.feasible.add(("decode", ctx.pool.name))
            for ctx in pools:
                if req.allows("prefill", ctx.pool.name):
                    cfgs, n = self._prefill_configs(req, sid, ctx, rec)
                    evals += n
                    if cfgs:
                        prefill_cfgs[ctx.pool.name] = cfgs
                        rec.feasible.add(("prefill", ctx.pool.name))
            pairs, n = self._pairs(req, sid, decode_best, prefill_cfgs, colocated, rec)
            options.extend(pairs)
            evals += n

        order = {c.pool.name: c.index for c in pools}

        def rank(o: Option) -> tuple[float, int, int, int, int]:
            return (
                o.cost_per_hour,
                sum(n for _, n in o.devices),
                0 if o.mode is Mode.COLOCATED else 1,
                order[o.prefill.pool],
                order[o.decode.pool],
            )

        options.sort(key=rank)
        pruned = prune_dominated(options)
        return WorkloadCandidates(req, pruned, options, rec.best, rec.all, rec.count, evals, rec.feasible)

    def _pairs(
        self,
        req: WorkloadRequest,
        sid: int,
        decode_best: dict[str, PhaseConfig],
        prefill_cfgs: dict[str, list[_PrefillCfg]],
        colocated: dict[str, Option],
        rec: _Recorder,
    ) -> tuple[list[Option], int]:
        """Per (prefill pool, decode pool): the fewest prefill devices meeting TTFT by the serving model.

        The decode side is the pool's best decode configuration. Requests in flight: ``S`` for
        sessions, else ``⌈λ · (t_prefill + KV transfer + O · TPOT)⌉`` (Little's law at the open-loop
        request time). Prefill replicas start at the throughput minimum ``⌈λ · t_prefill / Bp⌉``
        (λ for sessions: ``S / (t_prefill + KV transfer + O · TPOT)``, an upper bound) and grow
        while queueing keeps TTFT above the SLO.
        """
        out: list[Option] = []
        evals = 0
        slo = req.ttft_slo_seconds
        o_tokens = req.output_tokens
        sessions = req.concurrent_sessions
        ctxs = {c.pool.name: c for c in self.pools_for(req.engine)}
        if not decode_best:
            for p, cfgs in prefill_cfgs.items():
                rec.reject(
                    "prefill",
                    p,
                    Reason.PAIRING,
                    math.inf,
                    f"prefill fits (TP {cfgs[0].tp}, step {fmt_seconds(cfgs[0].seconds)}) but no pool can run decode",
                    cfgs[0].tp,
                    cfgs[0].batch,
                )
        if not prefill_cfgs:
            for d, dec in decode_best.items():
                rec.reject(
                    "decode",
                    d,
                    Reason.PAIRING,
                    math.inf,
                    f"decode fits (TP {dec.tp}, TPOT {fmt_seconds(dec.step_seconds)}) but no pool can run prefill",
                    dec.tp,
                    dec.batch,
                )
        for p, cfgs in prefill_cfgs.items():
            pctx = ctxs[p]
            kv_bytes = cfgs[0].cost.kv_bytes_per_request
            min_tp = min(c.tp for c in cfgs)
            for d, dec in decode_best.items():
                quick = self._dominated(p, d, min_tp, dec, colocated)  # a replica needs ≥ TP devices
                if quick is not None:
                    self._record_dominated(p, d, *quick, rec)
                    continue
                dctx = ctxs[d]
                bw = self.bandwidth(p, d)
                kv_s = kv_bytes / bw
                room = pctx.total - (dec.devices if p == d else 0)
                heap: list[tuple[int, int, int, int, int, int]] = []  # devices, tp, -Bp, index, replicas, N
                fastest: _PrefillCfg | None = None
                for i, cfg in enumerate(cfgs):
                    open_loop = cfg.seconds + kv_s + o_tokens * dec.step_seconds
                    if cfg.seconds + kv_s > slo * (1 + _EPS):
                        if fastest is None or cfg.seconds < fastest.seconds:
                            fastest = cfg
                        continue
                    if sessions:
                        lam, inflight = sessions / open_loop, sessions
                    else:
                        lam = req.requests_per_second or 0.0
                        inflight = max(1, math.ceil(lam * open_loop - 1e-9))
                    reps = max(1, ceil_div(lam, cfg.rps))
                    if reps * cfg.tp > room:
                        sev = reps * cfg.tp / max(room, 1)
                        if rec.wants("prefill", p, sev, PAIR_STAGE):
                            rec.add(
                                Rejection(
                                    p,
                                    Reason.DEMAND,
                                    f"{_replicas(reps, cfg.tp, reps * cfg.tp)} of prefill (batch {cfg.batch}) "
                                    f"for {lam:.3g} req/s; the pool has {room}"
                                    + (" beside decode" if p == d else ""),
                                    "prefill",
                                    sev,
                                    cfg.tp,
                                    cfg.batch,
                                    PAIR_STAGE,
                                )
                            )
                        continue
                    heap.append((reps * cfg.tp, cfg.tp, -cfg.batch, i, reps, inflight))
                if not heap:
                    if fastest is not None and not any(c.seconds + kv_s <= slo * (1 + _EPS) for c in cfgs):
                        ttft = fastest.seconds + kv_s
                        rec.reject(
                            "prefill",
                            p,
                            Reason.SLO,
                            ttft / slo,
                            f"TTFT ≥ {fmt_seconds(ttft)} = prefill {fmt_seconds(fastest.seconds)} + KV transfer "
                            f"{fmt_seconds(kv_s)} ({fmt_gib(kv_bytes)} at {bw / 1e9:g} GB/s to decode on {d}) "
                            f"> {fmt_seconds(slo)}",
                            fastest.tp,
                            fastest.batch,
                            PAIR_STAGE,
                        )
                    continue
                heapq.heapify(heap)
                dominated = self._dominated(p, d, heap[0][0], dec, colocated)
                if dominated is not None:
                    self._record_dominated(p, d, *dominated, rec)
                    continue
                found: tuple[int, _PrefillCfg, int, int, ServingPrediction] | None = None
                tries = 0
                last: tuple[_PrefillCfg, int, ServingPrediction] | None = None
                while heap and tries < self.options.max_exact_per_pair:
                    devs, _, _, i, reps, inflight = heapq.heappop(heap)
                    cfg = cfgs[i]
                    pred = self.cache.disaggregated(
                        req,
                        sid,
                        (pctx.pool.hardware, pctx.hid, cfg.tp, cfg.batch),
                        (dctx.pool.hardware, dctx.hid, dec.tp, dec.batch),
                        bw,
                        reps,
                        inflight,
                        self.options,
                    )
                    tries += 1
                    evals += 1
                    if pred.tpot_seconds > req.tpot_slo_seconds * (1 + _EPS):
                        rec.reject(
                            "decode",
                            d,
                            Reason.SLO,
                            pred.tpot_seconds / req.tpot_slo_seconds,
                            f"TPOT {fmt_seconds(pred.tpot_seconds)} > {fmt_seconds(req.tpot_slo_seconds)} "
                            f"(TP {dec.tp}, batch {dec.batch})",
                            dec.tp,
                            dec.batch,
                            PAIR_STAGE,
                        )
                        heap.clear()
                        break
                    if sessions is None:  # the serving model's throughput must carry λ too
                        need = max(
                            ceil_div(req.requests_per_second or 0.0, pred.prefill_requests_per_second), reps
                        )
                        if need > reps:
                            if need * cfg.tp <= room:
                                heapq.heappush(heap, (need * cfg.tp, cfg.tp, -cfg.batch, i, need, inflight))
                            continue
                    if pred.ttft_seconds <= slo * (1 + _EPS):
                        found = (devs, cfg, reps, inflight, pred)
                        break
                    last = (cfg, reps, pred)
                    if (reps + 1) * cfg.tp <= room:  # more prefill replicas: less queueing
                        heapq.heappush(heap, ((reps + 1) * cfg.tp, cfg.tp, -cfg.batch, i, reps + 1, inflight))
                if found is None:
                    if last is not None:
                        cfg, reps, pred = last
                        rec.reject(
                            "prefill",
                            p,
                            Reason.SLO,
                            pred.ttft_seconds / slo,
                            f"TTFT {fmt_seconds(pred.ttft_seconds)} (prefill {fmt_seconds(cfg.seconds)}, KV transfer "
                            f"{fmt_seconds(kv_s)} to decode on {d}, queueing with {reps} prefill replica"
                            f"{'s' if reps != 1 else ''}) > {fmt_seconds(slo)}",
                            cfg.tp,
                            cfg.batch,
                            PAIR_STAGE,
                        )
                    continue
                devs, cfg, reps, inflight, pred = found
                if req.requests_per_second is not None:
                    lam = req.requests_per_second
                else:  # closed loop (Little's law) at the serving model's request time
                    lam = (sessions or 0) / (pred.ttft_seconds + o_tokens * pred.tpot_seconds)
                pre = PhaseConfig(
                    p,
                    cfg.tp,
                    cfg.batch,
                    reps,
                    pred.prefill_seconds or cfg.seconds,
                    pred.prefill_requests_per_second,
                    pred.prefill,
                )
                dec_reps = (
                    ceil_div(sessions, dec.batch)
                    if sessions
                    else max(dec.replicas, ceil_div(lam, pred.decode_requests_per_second))
                )
                dcfg = PhaseConfig(
                    d,
                    dec.tp,
                    dec.batch,
                    dec_reps,
                    pred.tpot_seconds,
                    pred.decode_requests_per_second,
                    pred.decode,
                )
                if p == d:
                    devices: tuple[tuple[str, int], ...] = ((p, pre.devices + dcfg.devices),)
                else:
                    devices = tuple(sorted(((p, pre.devices), (d, dcfg.devices))))
                pc = pre.devices * pctx.pool.price_per_device_hour
                dc = dcfg.devices * dctx.pool.price_per_device_hour
                out.append(
                    Option(
                        Mode.DISAGGREGATED,
                        pre,
                        dcfg,
                        devices,
                        pc + dc,
                        pred.ttft_seconds,
                        pred.tpot_seconds,
                        pred.kv_transfer_seconds,
                        lam,
                        pred,
                        pc,
                        dc,
                        inflight,
                    )
                )
        return out, evals

    @staticmethod
    def _record_dominated(p: str, d: str, co: Option, cost_lb: float, rec: _Recorder) -> None:
        sev = cost_lb / max(co.cost_per_hour, 1e-12)
        for kind, pool_name in (("prefill", p), ("decode", d)):
            if rec.wants(kind, pool_name, sev, DOMINATED_STAGE):
                rec.add(
                    Rejection(
                        pool_name,
                        Reason.COST,
                        f"prefill on {p} with decode on {d} costs ≥ ${cost_lb:.2f}/h; {co.describe()} costs "
                        f"${co.cost_per_hour:.2f}/h with no more devices",
                        kind,
                        sev,
                        None,
                        None,
                        DOMINATED_STAGE,
                    )
                )
            else:
                rec.count += 1

    def _dominated(
        self, p: str, d: str, prefill_devices_lb: int, dec: PhaseConfig, colocated: dict[str, Option]
    ) -> tuple[Option, float] | None:
        """A colocated option dominating every (p, d) option (no more devices anywhere, no dearer),
        judged on a lower bound of the prefill devices; with its cost bound, else None."""
        cost_lb = prefill_devices_lb * self._price[p] + dec.devices * self._price[d]
        need = {p: prefill_devices_lb} if p != d else {p: prefill_devices_lb + dec.devices}
        if p != d:
            need[d] = dec.devices
        for q in dict.fromkeys((p, d)):
            co = colocated.get(q)
            if co is not None and co.cost_per_hour <= cost_lb + 1e-12 and co.devices[0][1] <= need[q]:
                return co, cost_lb
        return None


def _replicas(reps: int, tp: int, devices: int) -> str:
    return (
        f"{reps} replica{'s' if reps != 1 else ''} × TP {tp} = {devices} device{'s' if devices != 1 else ''}"
    )


def _demand(req: WorkloadRequest) -> str:
    if req.concurrent_sessions is not None:
        return f"{req.concurrent_sessions} concurrent sessions"
    return f"{req.requests_per_second:g} req/s"


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
