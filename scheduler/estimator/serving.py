"""Serving modes as users run them: colocated (aggregated) and disaggregated prefill/decode.

These formulas turn per-step estimates into what a user measures (TTFT, TPOT, throughput) and are
the single source for the planner's colocated-versus-disaggregated choice, for ``hetsched
validate`` and for the calibration fit (docs/calibration.md derives every term).

The step time of a phase comes from :mod:`.steps` (efficiency-independent terms per device, and
the roofline time from them, vectorised).

**Colocated** (``agg``), ``B`` requests in flight per rank (a new one starts as one finishes), each
``P`` prompt tokens after ``C`` cached and ``O`` output tokens:

* the KV cache admits ``B_run = min(B, B_max)`` requests; ``B_max`` from the memory left after the
  weights (``(capacity − weights)·utilization / KV per request``);
* every request spends ``O`` decode iterations, so ``B_run / O`` prompts join each iteration
  (chunked prefill); they add their *marginal* work (FLOPs, KV and activation bytes and collective
  bytes; the weights are already being read for decode):
  ``TPOT = t_decode(B_run) + (B_run / O) · t_prefill_marginal``;
* TTFT: a prompt waits for the prompts queued ahead of it. The ``B_run`` requests form a closed
  loop: each is "thinking" (decoding) for ``Z = O·TPOT`` and then needs ``S = t_prefill + t_decode``
  of prefill service. The mean response of that loop (Schweitzer's approximate mean-value analysis,
  solved in closed form: ``R = (x + sqrt(x² + 4SZ)) / 2`` with ``x = B_run·S − Z``) is ``S`` when
  lightly loaded and ``B_run·S − Z`` when prefill is the bottleneck. Requests beyond ``B_max`` wait
  for a KV slot: ``(B/B_max − 1)·(R + Z)``. A benchmark that starts all requests at once adds, for
  the fraction ``warmup_fraction`` of requests in that first wave, half the queue of ``B_run``
  prompts: ``warmup_fraction · S · (B_run − 1) / 2``. Every request also pays the fixed
  ``request_overhead_seconds`` (admission, tokenization, returning the first token).

**Colocated, synchronized waves** (``arrivals="waves"``): a benchmark that sends equal requests
(``ignore_eos``, fixed ``O``) in waves of ``B`` at once keeps them in lockstep, which the steady
state above does not describe. The engine starts a step as soon as the wave's first request (the
leader) arrives, so the leader is prefilled alone, ``t_prefill(1)``, and the ``B − 1`` others
together in the next step, ``t_prefill(B − 1)``; then all decode at batch ``B``. The leader's first
inter-token gap holds the others' prefill step: ``TTFT = t_prefill(1) + (B−1)/B · t_prefill(B−1)``
(+ the per-request overhead), ``TPOT = t_decode(B) + (t_prefill(B−1) − t_decode(B)) / (B·(O−1))``.
The leader also finishes one step early, so the next wave's leader again arrives alone: the pattern
repeats (benchmarks/data/cpu/README.md shows it in the per-request TTFTs). It describes the CPU
benchmark's runs (``validate`` and the fit, rows with ``arrivals = waves``); the planner predicts
steady state.

**Disaggregated**: prefill workers run prompts in batches of ``Bp``; the prompt's KV then crosses
the network to a decode worker: ``TTFT = t_prefill(Bp) + KV bytes / bandwidth`` (+ the per-request
overhead),
``TPOT = t_decode(Bd)`` on the decode worker. Given the number of requests in flight
(``concurrency``, a closed loop), TTFT also includes waiting for a free prefill slot: the same
mean-value analysis with ``workers·dp·Bp`` parallel slots (Seidmann's approximation for a
multi-server station).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.analysis import PhaseAnalysis, decode_context
from hetsched.scheduler.estimator.cost import Phase, PhaseCost, Precisions
from hetsched.scheduler.estimator.efficiency import with_engine
from hetsched.scheduler.estimator.roofline import DEFAULT_MEMORY_UTILIZATION, evaluate
from hetsched.scheduler.estimator.steps import (
    EfficiencyTerms,
    StepTerms,
    kv_capacity,
    marginal_seconds,
    step_seconds,
    step_terms,
)

Array = npt.NDArray[np.float64]
ArrayLike = Array | float


# ---- what a prediction is of ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestShape:
    """One request as served: ``prompt_tokens`` new tokens after ``cached_tokens`` of reused prefix,
    then ``output_tokens`` generated; weights, KV cache and activations in ``precisions``."""

    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    precisions: Precisions

    @property
    def decode_context(self) -> int:
        """The context of the decode step standing for the generation (``analysis.decode_context``)."""
        return decode_context(self.cached_tokens, self.prompt_tokens, self.output_tokens)

    @property
    def final_context(self) -> int:
        """Tokens of KV a request holds at its last generated token: C + P + O."""
        return self.cached_tokens + self.prompt_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Parallel:
    """How a worker (a colocated replica, a prefill or a decode worker) spans its devices: ``tp``-way
    tensor parallelism in each of ``dp`` attention data-parallel ranks (MoE experts span all)."""

    tp: int = 1
    dp: int = 1

    @property
    def devices(self) -> int:
        return self.tp * self.dp


@dataclass(frozen=True, slots=True)
class ServingPrediction:
    ttft_seconds: float
    tpot_seconds: float
    prefill: PhaseAnalysis
    decode: PhaseAnalysis
    kv_transfer_seconds: float
    # Steady-state throughput of one replica (colocated) or one worker of each phase (disaggregated).
    prefill_requests_per_second: float
    decode_requests_per_second: float
    # How TTFT and TPOT came about (see the module docstring).
    prefill_seconds: float = 0.0  # one prefill step (prompt batch of the prefill phase)
    decode_step_seconds: float = 0.0  # one decode step at the running batch, without prefill work
    queue_seconds: float = 0.0  # TTFT spent waiting for prefill capacity or a KV slot
    running_batch: int = 0  # requests decoding together per rank (capped by the KV capacity)
    max_running_batch: int = 0  # the KV capacity per rank, in requests (0: does not fit)

    @property
    def output_tokens_per_second(self) -> float:
        return float(self.decode.cost.batch / self.tpot_seconds)

    @property
    def fits(self) -> bool:
        return self.max_running_batch >= 1

    @staticmethod
    def colocated(
        times: ColocatedTimes,
        prefill: PhaseAnalysis,
        decode: PhaseAnalysis,
        *,
        running: int,
        capacity: int,
        output_tokens: int,
        dp: int = 1,
    ) -> ServingPrediction:
        """A colocated replica's prediction from its times: ``running`` requests decoding together on
        each of ``dp`` attention ranks (``capacity``: the KV capacity per rank)."""
        ttft, tpot = float(times.ttft), float(times.tpot)
        rps = running * dp / (ttft + output_tokens * tpot)
        return ServingPrediction(
            ttft_seconds=ttft,
            tpot_seconds=tpot,
            prefill=prefill,
            decode=decode,
            kv_transfer_seconds=0.0,
            prefill_requests_per_second=rps,
            decode_requests_per_second=rps,
            prefill_seconds=float(times.prefill),
            decode_step_seconds=float(times.decode),
            queue_seconds=float(times.queue),
            running_batch=running,
            max_running_batch=capacity,
        )

    @staticmethod
    def not_fitting(prefill: PhaseAnalysis, decode: PhaseAnalysis) -> ServingPrediction:
        """A replica whose weights do not fit its devices: infinite times, no throughput."""
        inf = math.inf
        return ServingPrediction(
            ttft_seconds=inf,
            tpot_seconds=inf,
            prefill=prefill,
            decode=decode,
            kv_transfer_seconds=0.0,
            prefill_requests_per_second=0.0,
            decode_requests_per_second=0.0,
            prefill_seconds=inf,
            decode_step_seconds=inf,
            queue_seconds=inf,
            running_batch=0,
            max_running_batch=0,
        )


def closed_loop_response(
    customers: ArrayLike, service: ArrayLike, think: ArrayLike, servers: ArrayLike
) -> Array:
    """Mean response time of a station in a closed loop of ``customers`` (Schweitzer MVA).

    Each customer alternates between ``think`` seconds away and a visit to a station of ``servers``
    parallel servers needing ``service`` seconds. Seidmann's approximation turns the multi-server
    station into one server of ``service/servers`` plus a pure delay of ``service·(1 − 1/servers)``;
    Schweitzer's fixed point ``R = D·(1 + Q·(N−1)/N)``, ``Q = N·R/(R + Z)`` is then the quadratic
    ``R² + (Z − N·D)·R − D·Z = 0``. Limits: ``R → service`` when lightly loaded, ``R → N·service/
    servers − think`` when the station is the bottleneck.
    """
    n = np.asarray(customers, dtype=np.float64)
    s = np.asarray(service, dtype=np.float64)
    c = np.maximum(np.asarray(servers, dtype=np.float64), 1.0)
    delay = s * (1.0 - 1.0 / c)
    d = s / c
    z = np.asarray(think, dtype=np.float64) + delay
    x = n * d - z
    root = np.sqrt(x * x + 4.0 * d * z)
    # Stable form of (x + root)/2 when x < 0 (light load): 2·d·z / (root − x).
    r = np.where(x >= 0, (x + root) / 2.0, 2.0 * d * z / np.maximum(root - x, 1e-300))
    return np.asarray(delay + r, dtype=np.float64)


# ---- the serving formulas, vectorised --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColocatedTimes:
    ttft: Array
    tpot: Array
    prefill: Array
    decode: Array
    queue: Array


def colocated_times(
    decode: StepTerms,
    prefill: StepTerms,
    *,
    concurrency: ArrayLike,
    running: ArrayLike,
    output_tokens: ArrayLike,
    warmup_fraction: ArrayLike,
    eff: EfficiencyTerms,
) -> ColocatedTimes:
    """TTFT and TPOT of a colocated replica (module docstring); ``concurrency`` and ``running``
    are requests per attention rank, ``running = min(concurrency, KV capacity)``."""
    t_dec = step_seconds(decode, eff)
    t_pre = step_seconds(prefill, eff)
    b = np.asarray(running, dtype=np.float64)
    o = np.asarray(output_tokens, dtype=np.float64)
    tpot = t_dec + b / o * marginal_seconds(prefill, eff)
    service = t_pre + t_dec
    think = o * tpot
    response = closed_loop_response(b, service, think, 1.0)
    kv_wait = np.maximum(np.asarray(concurrency, dtype=np.float64) / b - 1.0, 0.0) * (response + think)
    warm = np.asarray(warmup_fraction, dtype=np.float64) * service * np.maximum(b - 1.0, 0.0) / 2.0
    ttft = response + kv_wait + warm + eff.request_overhead_seconds
    return ColocatedTimes(ttft, tpot, t_pre, t_dec, ttft - service)


def wave_times(
    decode: StepTerms,
    prefill: StepTerms,
    prefill_rest: StepTerms,
    *,
    concurrency: ArrayLike,
    running: ArrayLike,
    output_tokens: ArrayLike,
    eff: EfficiencyTerms,
) -> ColocatedTimes:
    """TTFT and TPOT of a colocated rank serving synchronized waves of ``running`` equal requests
    (module docstring): ``prefill`` is the step of one prompt, ``prefill_rest`` the step of the
    other ``running − 1`` prompts together (any terms when ``running`` is 1: they get no weight).
    Requests beyond the KV capacity (``concurrency > running``) wait for whole waves."""
    t_dec = step_seconds(decode, eff)
    t_one = step_seconds(prefill, eff)
    b = np.maximum(np.asarray(running, dtype=np.float64), 1.0)
    o = np.asarray(output_tokens, dtype=np.float64)
    t_rest = np.where(b > 1.0, step_seconds(prefill_rest, eff), 0.0)
    first = t_one + (b - 1.0) / b * t_rest
    gaps = np.maximum(o - 1.0, 1.0)
    tpot = t_dec + np.maximum(t_rest - t_dec, 0.0) / (b * gaps)
    waiting = np.maximum(np.asarray(concurrency, dtype=np.float64) / b - 1.0, 0.0)
    ttft = first + waiting * (first + gaps * tpot) + eff.request_overhead_seconds
    return ColocatedTimes(ttft, tpot, t_one, t_dec, ttft - t_one)


def disaggregated_times(
    decode: StepTerms,
    prefill: StepTerms,
    *,
    concurrency: ArrayLike,
    prefill_slots: ArrayLike,
    output_tokens: ArrayLike,
    kv_transfer_seconds: ArrayLike,
    warmup_fraction: ArrayLike,
    prefill_eff: EfficiencyTerms,
    decode_eff: EfficiencyTerms,
) -> ColocatedTimes:
    """TTFT and TPOT of disaggregated serving in a closed loop of ``concurrency`` requests;
    ``prefill_slots`` = prompts prefilled in parallel (workers × ranks × prompts per step).
    A ``concurrency`` of 0 means an open loop without queueing (TTFT = prefill + KV transfer)."""
    t_dec = step_seconds(decode, decode_eff)
    t_pre = step_seconds(prefill, prefill_eff)
    n = np.asarray(concurrency, dtype=np.float64)
    slots = np.asarray(prefill_slots, dtype=np.float64)
    kv = np.asarray(kv_transfer_seconds, dtype=np.float64)
    think = np.asarray(output_tokens, dtype=np.float64) * t_dec + kv
    response = np.where(n > 0, closed_loop_response(np.maximum(n, 1.0), t_pre, think, slots), t_pre)
    warm = np.asarray(warmup_fraction, dtype=np.float64) * t_pre * np.maximum(n / slots - 1.0, 0.0) / 2.0
    ttft = response + kv + np.where(n > 0, warm, 0.0) + prefill_eff.request_overhead_seconds
    return ColocatedTimes(ttft, t_dec, t_pre, t_dec, ttft - t_pre - kv)


def _per_rank(batch: int, dp: int) -> int:
    return max(1, math.ceil(batch / dp))


# ---- the public predictions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColocatedSetup:
    """Everything of a colocated prediction that does not depend on the efficiencies."""

    decode: StepTerms  # at the running batch per rank
    prefill: StepTerms  # one prompt per rank
    per_rank: int  # requests in flight per attention rank
    running: int  # min(per_rank, capacity), at least 1
    capacity: int  # KV capacity per rank (0: the weights do not fit)
    decode_cost: PhaseCost
    prefill_cost: PhaseCost
    #: ``arrivals="waves"`` only: the step of the other ``running − 1`` prompts of a wave.
    prefill_rest: StepTerms | None = None


#: How requests arrive at a colocated replica (module docstring): ``staggered`` (steady state, what
#: the planner predicts) or ``waves`` (a benchmark's synchronized waves of equal requests).
ARRIVALS = ("staggered", "waves")


def _prefill_terms(
    model: ModelConfig, hardware: HardwareSpec, shape: RequestShape, parallel: Parallel, batch: int
) -> tuple[StepTerms, PhaseCost]:
    """One rank's prefill step of ``batch`` prompts."""
    return step_terms(
        model,
        hardware,
        Phase.PREFILL,
        batch=batch,
        new_tokens=shape.prompt_tokens,
        context_tokens=shape.cached_tokens,
        precisions=shape.precisions,
        tp=parallel.tp,
        dp=parallel.dp,
    )


def _decode_terms(
    model: ModelConfig, hardware: HardwareSpec, shape: RequestShape, parallel: Parallel, batch: int
) -> tuple[StepTerms, PhaseCost]:
    """One rank's decode step of ``batch`` requests, at the generation's decode context."""
    return step_terms(
        model,
        hardware,
        Phase.DECODE,
        batch=batch,
        new_tokens=1,
        context_tokens=shape.decode_context,
        precisions=shape.precisions,
        tp=parallel.tp,
        dp=parallel.dp,
    )


def _capacity(
    model: ModelConfig,
    hardware: HardwareSpec,
    shape: RequestShape,
    parallel: Parallel,
    utilization: float,
    cost: PhaseCost,
) -> int:
    return kv_capacity(
        model,
        hardware,
        context_tokens=shape.final_context,
        precisions=shape.precisions,
        tp=parallel.tp,
        dp=parallel.dp,
        utilization=utilization,
        cost=cost,
    )


def colocated_setup(
    model: ModelConfig,
    hardware: HardwareSpec,
    shape: RequestShape,
    parallel: Parallel = Parallel(),
    *,
    concurrency: int,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
    arrivals: str = "staggered",
) -> ColocatedSetup:
    if arrivals not in ARRIVALS:
        raise ValueError(f"arrivals: expected one of {', '.join(ARRIVALS)}, got {arrivals!r}")
    b = _per_rank(concurrency, parallel.dp)
    pre_terms, pre_cost = _prefill_terms(model, hardware, shape, parallel, 1)
    capacity = _capacity(model, hardware, shape, parallel, utilization, pre_cost)
    running = max(1, min(b, capacity))
    dec_terms, dec_cost = _decode_terms(model, hardware, shape, parallel, running)
    rest = None
    if arrivals == "waves":
        rest = _prefill_terms(model, hardware, shape, parallel, max(1, running - 1))[0]
    return ColocatedSetup(dec_terms, pre_terms, b, running, capacity, dec_cost, pre_cost, rest)


def _analysis(
    cost: PhaseCost, hardware: HardwareSpec, precisions: Precisions, eff: Efficiency, utilization: float
) -> PhaseAnalysis:
    """The roofline view of a step (regime, MFU/MBU, ...): ``analyze_phase`` without re-estimating."""
    perf = evaluate(
        cost, hardware, compute_class=precisions.compute_class, efficiency=eff, utilization=utilization
    )
    return PhaseAnalysis(cost.phase, cost, perf)


def predict_colocated(
    model: ModelConfig,
    hardware: HardwareSpec,
    shape: RequestShape,
    parallel: Parallel = Parallel(),
    *,
    concurrency: int,
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
    warmup_fraction: float = 0.0,
    engine: str | None = None,
    arrivals: str = "staggered",
) -> ServingPrediction:
    """A colocated replica of ``tp × dp`` devices (``parallel``) with ``concurrency`` requests of
    ``shape`` in flight, arriving staggered (steady state) or in synchronized ``waves`` (a
    benchmark's; module docstring).

    ``dp`` attention data-parallel ranks split the requests (MoE experts span all devices);
    ``warmup_fraction`` is the share of requests that arrive in a first wave all at once (a
    benchmark's start; 0 for steady state). A replica whose weights do not fit gets infinite
    TTFT and TPOT and ``fits == False``. ``prefill``/``decode`` are the roofline analyses of one
    attention rank's steps (one prompt; the running batch). ``engine`` (``engines.engine_of_image``
    / ``engine_of_backend``): the serving engine, whose fitted terms replace the shared ones in the
    hardware's efficiency (``calibrated.with_engine``); an explicit ``efficiency`` is used as given.
    """
    eff = with_engine(hardware.efficiency, engine, hardware.kind) if efficiency is None else efficiency
    precisions, output_tokens = shape.precisions, shape.output_tokens
    setup = colocated_setup(
        model,
        hardware,
        shape,
        parallel,
        concurrency=concurrency,
        utilization=utilization,
        arrivals=arrivals,
    )
    prefill = _analysis(setup.prefill_cost, hardware, precisions, eff, utilization)
    decode = _analysis(setup.decode_cost, hardware, precisions, eff, utilization)
    if setup.capacity < 1:
        return ServingPrediction.not_fitting(prefill, decode)
    if setup.prefill_rest is not None:
        times = wave_times(
            setup.decode,
            setup.prefill,
            setup.prefill_rest,
            concurrency=setup.per_rank,
            running=setup.running,
            output_tokens=output_tokens,
            eff=EfficiencyTerms.of(eff),
        )
    else:
        times = colocated_times(
            setup.decode,
            setup.prefill,
            concurrency=setup.per_rank,
            running=setup.running,
            output_tokens=output_tokens,
            warmup_fraction=warmup_fraction,
            eff=EfficiencyTerms.of(eff),
        )
    return ServingPrediction.colocated(
        times,
        prefill,
        decode,
        running=setup.running,
        capacity=setup.capacity,
        output_tokens=output_tokens,
        dp=parallel.dp,
    )


@dataclass(frozen=True, slots=True)
class DisaggregatedSetup:
    """Everything of a disaggregated prediction that does not depend on the efficiencies."""

    decode: StepTerms  # per decode rank
    prefill: StepTerms  # per prefill rank
    prefill_per_rank: int
    decode_per_rank: int
    prefill_slots: int  # prompts prefilled in parallel: workers × ranks × prompts per rank
    kv_transfer_seconds: float
    capacity: int  # KV capacity per decode rank (0: the weights do not fit)
    kv_bytes_per_request: float
    decode_cost: PhaseCost
    prefill_cost: PhaseCost


def disaggregated_setup(
    model: ModelConfig,
    prefill_hardware: HardwareSpec,
    decode_hardware: HardwareSpec,
    shape: RequestShape,
    *,
    prefill: Parallel = Parallel(),
    decode: Parallel = Parallel(),
    prefill_batch: int,
    decode_batch: int,
    kv_transfer_bandwidth: float,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
    prefill_workers: int = 1,
) -> DisaggregatedSetup:
    pb = _per_rank(prefill_batch, prefill.dp)
    db = _per_rank(decode_batch, decode.dp)
    pre_terms, pre_cost = _prefill_terms(model, prefill_hardware, shape, prefill, pb)
    dec_terms, dec_cost = _decode_terms(model, decode_hardware, shape, decode, db)
    capacity = _capacity(model, decode_hardware, shape, decode, utilization, dec_cost)
    # The whole prompt's KV (cached prefix included) moves to the decode worker.
    kv_bytes = pre_cost.kv_bytes_per_request
    slots = prefill_workers * prefill.dp * pb
    return DisaggregatedSetup(
        dec_terms,
        pre_terms,
        pb,
        db,
        slots,
        kv_bytes / kv_transfer_bandwidth,
        capacity,
        kv_bytes,
        dec_cost,
        pre_cost,
    )


def predict_disaggregated(
    model: ModelConfig,
    prefill_hardware: HardwareSpec,
    decode_hardware: HardwareSpec,
    shape: RequestShape,
    *,
    prefill: Parallel = Parallel(),
    decode: Parallel = Parallel(),
    prefill_batch: int,
    decode_batch: int,
    kv_transfer_bandwidth: float,
    prefill_efficiency: Efficiency | None = None,
    decode_efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
    prefill_workers: int = 1,
    concurrency: int | None = None,
    warmup_fraction: float = 0.0,
    engine: str | None = None,
) -> ServingPrediction:
    """Prefill workers (``prefill``: TP × DP devices, ``prefill_batch`` prompts per step) feeding
    decode workers (``decode``, ``decode_batch`` requests each) with requests of ``shape``;
    ``kv_transfer_bandwidth`` in bytes/s between the pools.

    Without ``concurrency`` (an open loop at the given batches) TTFT is the prefill step plus the
    KV transfer. With ``concurrency`` requests in flight (a closed loop over ``prefill_workers``
    prefill workers), TTFT also includes waiting for a prefill slot. ``engine``: the serving engine,
    as for :func:`predict_colocated` (applied to the hardware's efficiencies, not to explicit ones).
    """
    pre_eff = (
        with_engine(prefill_hardware.efficiency, engine, prefill_hardware.kind)
        if prefill_efficiency is None
        else prefill_efficiency
    )
    dec_eff = (
        with_engine(decode_hardware.efficiency, engine, decode_hardware.kind)
        if decode_efficiency is None
        else decode_efficiency
    )
    precisions, output_tokens = shape.precisions, shape.output_tokens
    setup = disaggregated_setup(
        model,
        prefill_hardware,
        decode_hardware,
        shape,
        prefill=prefill,
        decode=decode,
        prefill_batch=prefill_batch,
        decode_batch=decode_batch,
        kv_transfer_bandwidth=kv_transfer_bandwidth,
        utilization=utilization,
        prefill_workers=prefill_workers,
    )
    prefill_analysis = _analysis(setup.prefill_cost, prefill_hardware, precisions, pre_eff, utilization)
    decode_analysis = _analysis(setup.decode_cost, decode_hardware, precisions, dec_eff, utilization)
    times = disaggregated_times(
        setup.decode,
        setup.prefill,
        concurrency=concurrency or 0,
        prefill_slots=setup.prefill_slots,
        output_tokens=output_tokens,
        kv_transfer_seconds=setup.kv_transfer_seconds,
        warmup_fraction=warmup_fraction,
        prefill_eff=EfficiencyTerms.of(pre_eff),
        decode_eff=EfficiencyTerms.of(dec_eff),
    )
    t_prefill = float(times.prefill)
    tpot = float(times.tpot)
    prefill_rps = prefill_batch / t_prefill
    decode_rps = decode_batch / (output_tokens * tpot)
    return ServingPrediction(
        ttft_seconds=float(times.ttft),
        tpot_seconds=tpot,
        prefill=prefill_analysis,
        decode=decode_analysis,
        kv_transfer_seconds=setup.kv_transfer_seconds,
        prefill_requests_per_second=prefill_rps,
        decode_requests_per_second=decode_rps,
        prefill_seconds=t_prefill,
        decode_step_seconds=tpot,
        queue_seconds=float(times.queue),
        running_batch=setup.decode_per_rank,
        max_running_batch=setup.capacity,
    )


__all__ = [
    "ColocatedSetup",
    "ColocatedTimes",
    "DisaggregatedSetup",
    "Parallel",
    "RequestShape",
    "ServingPrediction",
    "closed_loop_response",
    "colocated_setup",
    "colocated_times",
    "disaggregated_setup",
    "disaggregated_times",
    "predict_colocated",
    "predict_disaggregated",
]
