"""Memoised estimates shared by a plan's workloads (the planner's hot path).

Two levels, memoised in :class:`EstimateCache`:

* **bounds** from the phase steps (``estimate_phase`` once per (shape, phase, TP, batch) for all
  pools, and per hardware the step time as ``roofline.evaluate`` computes it — a unit test checks
  they are equal): a step's time is a lower bound on what a user sees;
* **the serving model**: every option offered to the solver has its TTFT, TPOT and throughput from
  the formulas of ``serving.predict_colocated`` / ``serving.predict_disaggregated``, evaluated
  through the serving model's public parts (``step_terms``, ``kv_capacity``, ``colocated_times``,
  ``disaggregated_times``) with the step terms memoised; a unit test checks every option against
  the two functions, and the planner re-evaluates each chosen option with them.
"""

from __future__ import annotations

import math

from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.estimator.analysis import PhaseAnalysis, decode_context
from hetsched.scheduler.estimator.cost import Phase, PhaseCost, estimate_phase
from hetsched.scheduler.estimator.roofline import (
    PhasePerformance,
    allreduce_seconds,
    evaluate,
)
from hetsched.scheduler.estimator.serving import ServingPrediction, colocated_times, disaggregated_times
from hetsched.scheduler.estimator.steps import EfficiencyTerms, StepTerms, kv_capacity, step_terms
from hetsched.scheduler.placement.options import PlanOptions
from hetsched.scheduler.placement.request import WorkloadRequest

_PREFILL = Phase.PREFILL  # module constants: enum attribute access is slow on the hot path
_DECODE = Phase.DECODE
_SELF_CHECKS = 3  # fast step times checked against roofline.evaluate per (shape, hardware)


# ---- estimate cache -----------------------------------------------------------------------------
class EstimateCache:
    """Memoised estimates, shared by the workloads of a plan (and across plans when reused).

    * phase costs (``estimate_phase``: FLOPs and bytes) do not depend on the hardware: keyed by
      (shape, phase, TP, batch), one estimate serves every pool;
    * their roofline step time per hardware (``step_time``; the full ``roofline.evaluate`` analysis
      only for configurations the serving model evaluates): (shape, hardware, TP, phase, batch);
    * the serving model's step terms (``steps.step_terms``) and predictions per configuration.

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

        Composed from the serving model's public parts as ``predict_colocated`` composes them
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
            pred = ServingPrediction.not_fitting(prefill, decode)
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
            pred = ServingPrediction.colocated(
                times, prefill, decode, running=running, capacity=capacity, output_tokens=req.output_tokens
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
            ttft_seconds=float(times.ttft),
            tpot_seconds=tpot,
            prefill=self.analysis(req, sid, phw, phid, _PREFILL, ptp, pb),
            decode=self.analysis(req, sid, dhw, dhid, _DECODE, dtp, db),
            kv_transfer_seconds=kv_seconds,
            prefill_requests_per_second=pb / t_prefill,
            decode_requests_per_second=db / (req.output_tokens * tpot),
            prefill_seconds=t_prefill,
            decode_step_seconds=tpot,
            queue_seconds=float(times.queue),
            running_batch=db,
            max_running_batch=capacity,
        )
        self._trim()
        self._disaggregated[key] = pred
        return pred
