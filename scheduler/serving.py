"""Serving modes as users run them: colocated (aggregated) and disaggregated prefill/decode.

These formulas turn per-step estimates into what a user measures (TTFT, TPOT, throughput) and are
the single source for both the planner's colocated-versus-disaggregated choice and
``hetsched validate``.

Colocated (``agg``), ``B`` requests in flight, each ``P`` new prompt tokens and ``O`` output tokens:
every request spends ``O`` decode iterations, so on average ``B / O`` new prefills join each
iteration (chunked prefill). An iteration costs the decode step plus the *marginal* work of those
prefill tokens (their FLOPs and KV traffic; the weights are already being read for decode), so
``TPOT = t_decode(B) + (B / O) · t_prefill_marginal``. A new request waits, on average, for half
of the prefills queued in its iteration and then runs its own: ``TTFT = t_prefill(1) · (1 + B/(2O))
+ t_decode(B)``.

Disaggregated: prefill workers run batches of ``Bp`` prompts, then the prompt's KV crosses the
network to a decode worker: ``TTFT = t_prefill(Bp) + KV bytes / bandwidth``;
``TPOT = t_decode(B)`` on the decode worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from hetsched.scheduler.analysis import PhaseAnalysis, analyze_phase
from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator import Phase, Precisions
from hetsched.scheduler.roofline import DEFAULT_MEMORY_UTILIZATION


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

    @property
    def output_tokens_per_second(self) -> float:
        return self.decode.cost.batch / self.tpot_seconds


def _prefill_marginal_seconds(prefill: PhaseAnalysis, hw: HardwareSpec, eff: Efficiency) -> float:
    """Time a prompt adds to a decode iteration it joins: its FLOPs, and its non-weight bytes."""
    cost = prefill.cost
    peak = hw.peak_for(prefill.performance.compute_class) * cost.tp * eff.compute
    bandwidth = hw.memory_bandwidth * cost.tp * eff.bandwidth
    non_weight_bytes = cost.dram_bytes - cost.weight_bytes
    return max(cost.flops / peak, non_weight_bytes / bandwidth)


def predict_colocated(
    model: ModelConfig,
    hardware: HardwareSpec,
    *,
    concurrency: int,
    prompt_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    precisions: Precisions,
    tp: int = 1,
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> ServingPrediction:
    eff = hardware.efficiency if efficiency is None else efficiency
    prefill = analyze_phase(
        model, hardware, Phase.PREFILL, batch=1, new_tokens=prompt_tokens, context_tokens=cached_tokens,
        precisions=precisions, tp=tp, efficiency=eff, utilization=utilization,
    )
    # Decode at the mean context over the generation.
    context = cached_tokens + prompt_tokens + output_tokens // 2
    decode = analyze_phase(
        model, hardware, Phase.DECODE, batch=concurrency, new_tokens=1, context_tokens=context,
        precisions=precisions, tp=tp, efficiency=eff, utilization=utilization,
    )
    t_decode = decode.performance.step_seconds
    joins_per_iteration = concurrency / output_tokens
    tpot = t_decode + joins_per_iteration * _prefill_marginal_seconds(prefill, hardware, eff)
    t_prefill = prefill.performance.step_seconds
    ttft = t_prefill * (1.0 + joins_per_iteration / 2.0) + t_decode
    request_seconds = ttft + output_tokens * tpot
    rps = concurrency / request_seconds
    return ServingPrediction(ttft, tpot, prefill, decode, 0.0, rps, rps)


def predict_disaggregated(
    model: ModelConfig,
    prefill_hardware: HardwareSpec,
    decode_hardware: HardwareSpec,
    *,
    prefill_batch: int,
    decode_batch: int,
    prompt_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    precisions: Precisions,
    prefill_tp: int = 1,
    decode_tp: int = 1,
    kv_transfer_bandwidth: float,
    prefill_efficiency: Efficiency | None = None,
    decode_efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> ServingPrediction:
    """``kv_transfer_bandwidth`` in bytes/s between the prefill and the decode pool."""
    prefill = analyze_phase(
        model, prefill_hardware, Phase.PREFILL, batch=prefill_batch, new_tokens=prompt_tokens,
        context_tokens=cached_tokens, precisions=precisions, tp=prefill_tp, efficiency=prefill_efficiency,
        utilization=utilization,
    )
    context = cached_tokens + prompt_tokens + output_tokens // 2
    decode = analyze_phase(
        model, decode_hardware, Phase.DECODE, batch=decode_batch, new_tokens=1, context_tokens=context,
        precisions=precisions, tp=decode_tp, efficiency=decode_efficiency, utilization=utilization,
    )
    # The whole prompt's KV (cached prefix included) moves to the decode worker.
    kv_seconds = prefill.cost.kv_bytes_per_request / kv_transfer_bandwidth
    t_prefill = prefill.performance.step_seconds
    ttft = t_prefill + kv_seconds
    tpot = decode.performance.step_seconds
    prefill_rps = prefill_batch / t_prefill
    decode_rps = decode_batch / (output_tokens * tpot)
    return ServingPrediction(ttft, tpot, prefill, decode, kv_seconds, prefill_rps, decode_rps)
