"""Both phases over a grid of batches × decode contexts, as arrays: ``analyze`` for every cell.

At a fixed token shape every operator of a step is linear in the batch ``B``: FLOPs, KV and
activation bytes grow as ``B``, the weights read are fixed, except the embedding rows (``∝ B``)
and the routed experts (``E_touched(B·n)`` of them, :class:`~.cost.StepScaling`). So one
:func:`~.cost.estimate_phase` per decode context (at ``B = 1``) gives every operator's
coefficients, and the whole grid is numpy arithmetic: the roofline is
`steps.step_seconds` (``roofline.evaluate`` per operator, vectorised), the largest batch,
the ridge batch and the regime follow ``roofline.evaluate``'s rules, and a capacity-bound cell is
re-evaluated at the batch that fits, as :func:`~.analysis.analyze` does. A unit test checks every
cell against ``analyze``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Phase, PhaseCost, Precisions, estimate_phase
from hetsched.scheduler.estimator.roofline import DEFAULT_MEMORY_UTILIZATION, Regime, _peak
from hetsched.scheduler.estimator.steps import EfficiencyTerms, StepTerms, step_seconds

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Regime codes of :attr:`PhaseGrid.regime`, in this order.
REGIMES: tuple[Regime, ...] = (
    Regime.COMPUTE_BOUND,
    Regime.BANDWIDTH_BOUND,
    Regime.CAPACITY_BOUND,
    Regime.DOES_NOT_FIT,
)
_RIDGE_LIMIT = 1 << 24  # as StepScaling.batch_to_reach


@dataclass(frozen=True, slots=True)
class PhaseGrid:
    """One phase over the grid: arrays of shape (contexts, batches) unless noted."""

    step_seconds: Array
    flops: Array
    dram_bytes: Array
    operational_intensity: Array
    capacity_footprint_bytes: Array  # per request at the requested batch
    kv_bytes_per_request: Array  # (contexts,)
    max_batch: IntArray  # (contexts,)
    ridge_batch: IntArray  # (contexts,); 0: never
    figures_batch: IntArray  # the batch the step figures are for (B_max when capacity-bound)
    regime: IntArray  # index into REGIMES
    mfu: Array
    mbu: Array


@dataclass(frozen=True, slots=True)
class GridAnalysis:
    batches: IntArray
    contexts: IntArray
    prefill: PhaseGrid
    decode: PhaseGrid


@dataclass(frozen=True, slots=True)
class _Coefficients:
    """Per context (rows) and operator (columns): the step at ``B = 1`` split by how it grows."""

    flops: Array  # ∝ B
    fixed_weights: Array  # read once per step
    scaled_bytes: Array  # ∝ B: KV, activations, embedding rows
    expert_bytes: Array  # × E_touched(B·n): the routed experts' weights per touched expert
    experts: Array  # 1 for the routed-experts operator
    peak: Array  # per device, at the operator's class
    kv_per_device: Array  # (contexts,)
    kv_per_request: Array  # (contexts,)
    collective_bytes: Array  # (contexts,) ∝ B, per device, ring factor included
    cost: PhaseCost  # the first context's, for the constants


def _coefficients(
    model: ModelConfig,
    hw: HardwareSpec,
    phase: Phase,
    new_tokens: int,
    contexts: Sequence[int],
    precisions: Precisions,
    tp: int,
) -> _Coefficients:
    rows = []
    for c in contexts:
        cost = estimate_phase(
            model, phase, batch=1, new_tokens=new_tokens, context_tokens=c, precisions=precisions, tp=tp
        )
        rows.append(cost)
    first = rows[0]
    nops = len(first.operators)
    flops = np.array([[op.flops for op in r.operators] for r in rows])
    weights = np.array([[op.weight_bytes for op in r.operators] for r in rows])
    other = np.array(
        [[op.kv_read_bytes + op.kv_write_bytes + op.activation_bytes for op in r.operators] for r in rows]
    )
    names = [op.name for op in first.operators]
    embedding = np.array([1.0 if n == "embedding" else 0.0 for n in names])
    experts = np.array([1.0 if n == "experts" else 0.0 for n in names])
    expert_bytes = np.zeros(nops)
    if first.scaling.moe_layers:
        expert_bytes = experts * first.scaling.moe_layers * first.scaling.bytes_per_expert
    scaled = other + weights * embedding
    fixed = weights * (1.0 - embedding - experts)
    peak = np.array([_peak(hw, op.compute_class or precisions.compute_class) for op in first.operators])
    ring = 2.0 * (tp - 1) / tp if tp > 1 else 0.0
    return _Coefficients(
        flops=flops,
        fixed_weights=fixed,
        scaled_bytes=scaled,
        expert_bytes=np.broadcast_to(expert_bytes, flops.shape),
        experts=experts,
        peak=peak,
        kv_per_device=np.array([r.kv_bytes_per_request_per_device for r in rows]),
        kv_per_request=np.array([r.kv_bytes_per_request for r in rows]),
        collective_bytes=np.array([ring * r.allreduce_bytes for r in rows]),
        cost=first,
    )


def _touched(k: _Coefficients, tokens: Array) -> Array:
    s = k.cost.scaling
    if not s.moe_layers:
        return np.zeros_like(tokens)
    e, top = s.num_experts, s.experts_per_token
    return np.asarray(e * (1.0 - np.power(1.0 - top / e, tokens)), dtype=np.float64)


def _step(k: _Coefficients, hw: HardwareSpec, eff: Efficiency, batch: Array) -> tuple[Array, Array, Array]:
    """Step seconds, FLOPs and DRAM bytes at ``batch`` (contexts × batches)."""
    b = batch[..., None]
    n = k.cost.new_tokens
    flops = k.flops[:, None, :] * b
    touched = _touched(k, batch * n)[..., None]
    dram = k.fixed_weights[:, None, :] + k.scaled_bytes[:, None, :] * b + k.expert_bytes[:, None, :] * touched
    weights = k.fixed_weights[:, None, :] + k.expert_bytes[:, None, :] * touched
    terms = StepTerms(
        flops=flops,
        dram_bytes=dram,
        weight_bytes=weights,
        experts=k.experts,
        peak_flops=k.peak,
        devices=np.asarray(float(k.cost.tp)),
        bandwidth=np.asarray(hw.memory_bandwidth),
        collectives=np.asarray(float(k.cost.allreduce_count)),
        collective_bytes=k.collective_bytes[:, None] * batch,
        link_bandwidth=np.asarray(hw.intra_node_bandwidth),
        layers=np.asarray(float(k.cost.layers)),
    )
    return step_seconds(terms, EfficiencyTerms.of(eff)), flops.sum(axis=-1), dram.sum(axis=-1)


def _oi(k: _Coefficients, batch: Array) -> Array:
    """StepScaling.operational_intensity for every context (rows) at ``batch``."""
    s = k.cost.scaling
    per_flops = k.flops.sum(axis=-1)[:, None]
    fixed = (k.fixed_weights.sum(axis=-1))[:, None]
    per_bytes = k.scaled_bytes.sum(axis=-1)[:, None]
    expert = s.moe_layers * s.bytes_per_expert * _touched(k, batch * s.tokens_per_request)
    return np.asarray(batch * per_flops / (fixed + expert + batch * per_bytes), dtype=np.float64)


def _ridge_batch(k: _Coefficients, ridge: float) -> IntArray:
    """StepScaling.batch_to_reach for every context: doubling, then bisection (0: never)."""
    rows = k.flops.shape[0]
    ones = np.ones((rows, 1))
    hi = np.ones((rows, 1))
    never = _oi(k, ones * _RIDGE_LIMIT)[:, 0] < ridge
    for _ in range(25):
        low = _oi(k, hi)[:, 0] < ridge
        hi = np.where(low[:, None], hi * 2, hi)
    lo = np.maximum(hi / 2, 1.0)
    reached1 = _oi(k, ones)[:, 0] >= ridge
    for _ in range(26):
        mid = np.floor((lo + hi) / 2)
        ok = _oi(k, mid)[:, 0] >= ridge
        hi = np.where(ok[:, None] & (hi - lo > 1), mid, hi)
        lo = np.where(~ok[:, None] & (hi - lo > 1), mid, lo)
    out = np.where(reached1, 1, hi[:, 0]).astype(np.int64)
    return np.asarray(np.where(never, 0, out), dtype=np.int64)


def _phase(
    model: ModelConfig,
    hw: HardwareSpec,
    phase: Phase,
    new_tokens: int,
    contexts: Sequence[int],
    batches: IntArray,
    precisions: Precisions,
    tp: int,
    eff: Efficiency,
    utilization: float,
) -> PhaseGrid:
    k = _coefficients(model, hw, phase, new_tokens, contexts, precisions, tp)
    n = len(contexts)
    b = np.broadcast_to(batches.astype(np.float64), (n, len(batches)))
    peak = _peak(hw, precisions.compute_class) * tp
    bandwidth = hw.memory_bandwidth * tp
    ridge = peak / bandwidth
    # Largest batch that fits (roofline.max_batch_that_fits).
    free = hw.memory_bytes * utilization - k.cost.weight_resident_bytes / tp
    with np.errstate(divide="ignore"):
        fit = np.where(k.kv_per_device > 0, np.floor(free / np.maximum(k.kv_per_device, 1e-300)), 1 << 30)
    max_batch = np.where(free > 0, fit, 0).astype(np.int64)
    ridge_batch = _ridge_batch(k, ridge)
    b_op = np.minimum(b, max_batch[:, None])
    oi_op = _oi(k, np.maximum(b_op, 1.0))
    rb = ridge_batch[:, None]
    capacity = (b_op == max_batch[:, None]) & ((rb == 0) | (max_batch[:, None] < rb))
    regime = np.where(
        max_batch[:, None] < 1,
        3,
        np.where(oi_op >= ridge, 0, np.where(capacity, 2, 1)),
    ).astype(np.int64)
    # A capacity-bound step runs at the batch that fits (analysis.analyze).
    figures = np.where((regime == 2) & (b_op >= 1) & (b_op < b), b_op, b)
    seconds, flops, dram = _step(k, hw, eff, figures)
    cf = k.cost.weight_resident_bytes / b + k.kv_per_request[:, None]
    return PhaseGrid(
        step_seconds=seconds,
        flops=flops,
        dram_bytes=dram,
        operational_intensity=flops / dram,
        capacity_footprint_bytes=cf,
        kv_bytes_per_request=k.kv_per_request,
        max_batch=max_batch,
        ridge_batch=ridge_batch,
        figures_batch=figures.astype(np.int64),
        regime=regime,
        mfu=flops / (seconds * peak),
        mbu=dram / (seconds * bandwidth),
    )


def analyze_grid(
    model: ModelConfig,
    hardware: HardwareSpec,
    *,
    batches: Sequence[int],
    contexts: Sequence[int],
    prompt_tokens: int,
    cached_tokens: int = 0,
    precisions: Precisions | None = None,
    tp: int = 1,
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> GridAnalysis:
    """``analyze(model, hardware, Scenario(b, prompt_tokens, cached_tokens, c, ·))`` for every
    batch ``b`` and decode context ``c``, as arrays (rows: contexts, columns: batches)."""
    if not batches or not contexts or min(batches) < 1 or min(contexts) < 1 or prompt_tokens < 1:
        raise ValueError("batches, contexts and prompt_tokens must be ≥ 1 (and not empty)")
    prec = precisions or Precisions.native(model)
    eff = hardware.efficiency if efficiency is None else efficiency
    b = np.asarray(batches, dtype=np.int64)
    prefill = _phase(
        model, hardware, Phase.PREFILL, prompt_tokens, [cached_tokens], b, prec, tp, eff, utilization
    )
    decode = _phase(
        model, hardware, Phase.DECODE, 1, [c - 1 for c in contexts], b, prec, tp, eff, utilization
    )
    return GridAnalysis(
        batches=b,
        contexts=np.asarray(contexts, dtype=np.int64),
        prefill=_broadcast(prefill, len(contexts)),
        decode=decode,
    )


def _broadcast(p: PhaseGrid, rows: int) -> PhaseGrid:
    """The prefill (one row: it does not depend on the decode context) on every context's row."""

    def floats(a: Array) -> Array:
        return np.broadcast_to(a, (rows, *a.shape[1:]))

    def ints(a: IntArray) -> IntArray:
        return np.broadcast_to(a, (rows, *a.shape[1:]))

    return PhaseGrid(
        step_seconds=floats(p.step_seconds),
        flops=floats(p.flops),
        dram_bytes=floats(p.dram_bytes),
        operational_intensity=floats(p.operational_intensity),
        capacity_footprint_bytes=floats(p.capacity_footprint_bytes),
        kv_bytes_per_request=floats(p.kv_bytes_per_request),
        max_batch=ints(p.max_batch),
        ridge_batch=ints(p.ridge_batch),
        figures_batch=ints(p.figures_batch),
        regime=ints(p.regime),
        mfu=floats(p.mfu),
        mbu=floats(p.mbu),
    )
