"""A forward step's efficiency-independent terms per device, and its time from them (vectorised).

**Step time** of a phase on one replica is the roofline of ``roofline.evaluate``: per operator
``max(FLOPs / (peak·η_c), bytes / (bandwidth·η_b))`` (the attention core at its own compute class;
the routed experts' grouped GEMMs at ``experts_compute·η_c`` and ``experts_bandwidth·η_b``), plus
the collectives (``latency + bytes / (link·η_link)`` each) and the fixed costs (per step, and
``layers × layer_overhead_seconds``). It is computed here from
:class:`StepTerms` (the efficiency-independent FLOPs and bytes of the step per device), so the
fit can evaluate thousands of steps at once with numpy; for ``dp = 1`` it equals
``evaluate(...).step_seconds`` exactly (a unit test checks it).

**Attention data parallelism** (``dp`` ranks, each running its own requests with ``tp``-way tensor
parallelism; MoE experts spread over all ``tp·dp`` devices, by expert or tensor parallelism, which
moves the same bytes per device): one rank's step is its own attention and dense layers at its
batch, plus ``1/dp`` of the experts of the whole worker's tokens, plus per MoE layer a token
exchange (dispatch and combine) of ``(G−1)/G · min(k, G)`` hidden vectors per token, ``G = tp·dp``.

:func:`step_terms` builds the terms from the estimator (:mod:`.cost`); :func:`kv_capacity` says how
many requests' KV cache fit next to the weights. The serving model (:mod:`.serving`) and the
calibration fit evaluate thousands of steps at once from these terms with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import (
    OperatorCost,
    Phase,
    PhaseCost,
    Precisions,
    estimate_phase,
    request_cache_bytes,
)
from hetsched.scheduler.estimator.precision import PRECISIONS, Precision
from hetsched.scheduler.estimator.roofline import DEFAULT_MEMORY_UTILIZATION

Array = npt.NDArray[np.float64]
ArrayLike = Array | float


# ---- step terms: efficiency-independent FLOPs and bytes per device ---------------------------


@dataclass(frozen=True, slots=True)
class StepTerms:
    """One phase step of one replica (``devices`` devices), before efficiencies are applied.

    ``flops``, ``dram_bytes``, ``weight_bytes``, ``experts`` and ``peak_flops`` have one entry per
    operator (last axis); FLOPs and bytes are per replica, as
    :class:`~hetsched.scheduler.estimator.cost.PhaseCost` counts them; ``peak_flops`` (at each operator's
    compute class), ``bandwidth`` and ``link_bandwidth`` are per device; ``collective_bytes`` is what one device
    sends per collective (ring factor included). Fields may carry a leading batch axis (the fit
    stacks many steps).
    """

    flops: Array
    dram_bytes: Array
    weight_bytes: Array
    experts: Array  # 1 for the routed-experts operator, 0 otherwise
    peak_flops: Array  # per device, at the operator's compute class
    devices: Array
    bandwidth: Array
    collectives: Array
    collective_bytes: Array
    link_bandwidth: Array
    layers: Array


@dataclass(frozen=True, slots=True)
class EfficiencyTerms:
    """The calibrated numbers of :class:`Efficiency`, as floats or arrays (one per step), so the fit
    can evaluate thousands of steps with different parameters at once. Defaults are neutral."""

    bandwidth: ArrayLike
    compute: ArrayLike
    step_overhead_seconds: ArrayLike
    collective_latency_seconds: ArrayLike
    link_efficiency: ArrayLike
    layer_overhead_seconds: ArrayLike = 0.0
    experts_bandwidth: ArrayLike = 1.0
    experts_compute: ArrayLike = 1.0
    request_overhead_seconds: ArrayLike = 0.0
    overlap: ArrayLike = 1.0

    @staticmethod
    def of(eff: Efficiency) -> EfficiencyTerms:
        return EfficiencyTerms(
            eff.bandwidth,
            eff.compute,
            eff.step_overhead_seconds,
            eff.collective_latency_seconds,
            eff.link_efficiency,
            eff.layer_overhead_seconds,
            eff.experts_bandwidth,
            eff.experts_compute,
            eff.request_overhead_seconds,
            eff.overlap,
        )


def _col(x: ArrayLike) -> Array:
    """A per-step value as a column, to broadcast against the operator axis."""
    return np.asarray(x, dtype=np.float64)[..., None]


def _busy(t: StepTerms, e: EfficiencyTerms, dram_bytes: Array) -> Array:
    """Σ_ops max(compute, memory) + (1 − overlap)·min(compute, memory): each operator on its own
    roof (``overlap`` 1, the default) or partly serialized (a CPU core); the routed experts' grouped
    GEMMs at ``experts_compute`` and ``experts_bandwidth`` of the dense fractions."""
    experts = t.experts
    compute = t.flops / (t.peak_flops * _col(t.devices * e.compute))
    compute = compute * (1.0 + experts * (1.0 / _col(e.experts_compute) - 1.0))
    memory = dram_bytes / _col(t.devices * t.bandwidth * e.bandwidth)
    memory = memory * (1.0 + experts * (1.0 / _col(e.experts_bandwidth) - 1.0))
    longer = np.maximum(compute, memory)
    shorter = np.minimum(compute, memory)
    return np.asarray((longer + (1.0 - _col(e.overlap)) * shorter).sum(axis=-1), dtype=np.float64)


def step_seconds(t: StepTerms, e: EfficiencyTerms) -> Array:
    """Σ_ops max(FLOPs/(N·peak·η_c), bytes/(N·bw·η_b)) + collectives + fixed costs per step and per
    layer: ``roofline.evaluate`` exactly."""
    comm = t.collectives * (
        e.collective_latency_seconds + t.collective_bytes / (t.link_bandwidth * e.link_efficiency)
    )
    fixed = e.step_overhead_seconds + t.layers * e.layer_overhead_seconds
    return np.asarray(_busy(t, e, t.dram_bytes) + comm + fixed, dtype=np.float64)


def marginal_seconds(t: StepTerms, e: EfficiencyTerms) -> Array:
    """Time the step's work adds to an iteration that already reads the weights and pays the
    fixed and latency costs: its FLOPs, its non-weight bytes and its collective bytes."""
    comm = t.collectives * t.collective_bytes / (t.link_bandwidth * e.link_efficiency)
    return np.asarray(_busy(t, e, t.dram_bytes - t.weight_bytes) + comm, dtype=np.float64)


def floor_seconds(t: StepTerms) -> Array:
    """The physical floor of a step: all bytes at peak bandwidth, or all FLOPs at peak FLOP/s."""
    flops = (t.flops / t.peak_flops).sum(axis=-1) / t.devices
    moved = t.dram_bytes.sum(axis=-1) / (t.devices * t.bandwidth)
    return np.asarray(np.maximum(flops, moved), dtype=np.float64)


# ---- building the terms from the estimator ------------------------------------------------------


def _compose_dp(model: ModelConfig, rank: PhaseCost, whole: PhaseCost, dp: int) -> PhaseCost:
    """One attention rank's step: its own operators, with the experts replaced by ``1/dp`` of the
    experts of the whole worker's tokens (``whole`` is the worker's step at ``dp`` × the batch)."""
    ops: list[OperatorCost] = []
    for op in rank.operators:
        if op.name != "experts":
            ops.append(op)
    for op in whole.operators:
        if op.name == "experts":
            ops.append(
                OperatorCost(
                    op.name,
                    op.flops / dp,
                    op.weight_bytes / dp,
                    op.kv_read_bytes / dp,
                    op.kv_write_bytes / dp,
                    op.activation_bytes / dp,
                )
            )
    flops = sum(op.flops for op in ops)
    weights = sum(op.weight_bytes for op in ops)
    kv_read = sum(op.kv_read_bytes for op in ops)
    kv_write = sum(op.kv_write_bytes for op in ops)
    act = sum(op.activation_bytes for op in ops)
    return replace(
        rank,
        operators=tuple(ops),
        flops=flops,
        weight_bytes=weights,
        kv_read_bytes=kv_read,
        kv_write_bytes=kv_write,
        activation_bytes=act,
        dram_bytes=weights + kv_read + kv_write + act,
    )


def step_terms(
    model: ModelConfig,
    hardware: HardwareSpec,
    phase: Phase,
    *,
    batch: int,
    new_tokens: int,
    context_tokens: int,
    precisions: Precisions,
    tp: int = 1,
    dp: int = 1,
) -> tuple[StepTerms, PhaseCost]:
    """The step of one attention rank (``tp`` devices) at ``batch`` requests per rank."""
    cost = estimate_phase(
        model,
        phase,
        batch=batch,
        new_tokens=new_tokens,
        context_tokens=context_tokens,
        precisions=precisions,
        tp=tp,
    )
    collectives = float(cost.allreduce_count)
    per_collective = 2.0 * (tp - 1) / tp * cost.allreduce_bytes if tp > 1 else 0.0
    if dp > 1 and model.moe is not None:
        whole = estimate_phase(
            model,
            phase,
            batch=batch * dp,
            new_tokens=new_tokens,
            context_tokens=context_tokens,
            precisions=precisions,
            tp=tp * dp,
        )
        cost = _compose_dp(model, cost, whole, dp)
        g = tp * dp
        # Two exchanges per MoE layer, spread over one collective per token mixer and per FFN.
        collectives = float(model.mixer_layers + model.ffn_sublayers)
        exchange = (g - 1) / g * min(model.moe.experts_per_token, g) * cost.tokens * model.hidden_size
        # Dispatch sends the GEMM inputs (activation format), combine returns BF16 partial sums:
        # the two collectives of a layer average the two widths.
        ab = PRECISIONS[precisions.activations].bytes_per_element
        exchange *= (ab + max(ab, PRECISIONS[Precision.BF16].bytes_per_element)) / 2
        exchange *= 2 * model.moe_layers / collectives
        per_collective += exchange
    terms = StepTerms(
        flops=np.array([op.flops for op in cost.operators], dtype=np.float64),
        dram_bytes=np.array([op.dram_bytes for op in cost.operators], dtype=np.float64),
        weight_bytes=np.array([op.weight_bytes for op in cost.operators], dtype=np.float64),
        experts=np.array([1.0 if op.name == "experts" else 0.0 for op in cost.operators], dtype=np.float64),
        peak_flops=np.array(
            [hardware.peak_for(op.compute_class or precisions.compute_class) for op in cost.operators],
            dtype=np.float64,
        ),
        devices=np.asarray(float(tp)),
        bandwidth=np.asarray(hardware.memory_bandwidth),
        collectives=np.asarray(collectives),
        collective_bytes=np.asarray(per_collective),
        link_bandwidth=np.asarray(hardware.intra_node_bandwidth),
        layers=np.asarray(float(cost.layers)),
    )
    return terms, cost


def kv_capacity(
    model: ModelConfig,
    hardware: HardwareSpec,
    *,
    context_tokens: int,
    precisions: Precisions,
    tp: int = 1,
    dp: int = 1,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
    cost: PhaseCost | None = None,
) -> int:
    """Requests per attention rank whose KV cache (at ``context_tokens``) fits next to the weights.

    Per device the weights are the non-expert weights ``/ tp`` plus the routed experts ``/ (tp·dp)``;
    the serving engine keeps ``utilization`` of the memory left after the weights for the KV cache
    (TensorRT-LLM's ``free_gpu_memory_fraction`` convention). 0: the weights alone do not fit.
    ``cost``: any step of the same model, precisions and ``tp`` (its resident weights are reused).
    """
    if cost is None:
        cost = estimate_phase(
            model,
            Phase.DECODE,
            batch=1,
            new_tokens=1,
            context_tokens=0,
            precisions=precisions,
            tp=tp,
        )
    routed = cost.scaling.moe_layers * cost.scaling.num_experts * cost.scaling.bytes_per_expert
    weights = (cost.weight_resident_bytes - routed) / tp + routed / (tp * dp)
    free = (hardware.memory_bytes - weights) * utilization
    _, kv = request_cache_bytes(model, context_tokens, precisions.kv_cache, tp)
    if free <= 0:
        return 0
    if kv <= 0:
        return 1 << 30
    return int(free // kv)


__all__ = [
    "EfficiencyTerms",
    "StepTerms",
    "floor_seconds",
    "kv_capacity",
    "marginal_seconds",
    "step_seconds",
    "step_terms",
]
