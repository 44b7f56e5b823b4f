"""Roofline and regime of a phase step on hardware: step time, MFU/MBU, largest batch, regime.

Regimes (docs/estimator.md):

* ``B_max = floor((N · capacity · utilization − weights) / KV per request)``; below 1 the phase
  does not fit (infeasible, not a regime).
* ``B_op = min(B, B_max)``; ``B_ridge`` = smallest batch whose OI reaches the ridge point.
* ``compute-bound`` when OI(B_op) ≥ ridge; ``capacity-bound`` when memory caps the batch
  (B_op = B_max) below B_ridge — MFU and MBU both low, the paper's point; otherwise
  ``bandwidth-bound``.

Step time is the sum over operators of ``max(FLOPs / (peak·η_c), bytes / (bandwidth·η_b))``
(each operator on its own roof: the attention core at its own compute class, the routed experts'
grouped GEMMs at ``η_c·experts_compute`` and ``η_b·experts_bandwidth``), plus the tensor-parallel all-reduces and the fixed
costs: per step, and per layer (``layers × layer_overhead_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency, HardwareSpec
from hetsched.scheduler.estimator.cost import PhaseCost

DEFAULT_MEMORY_UTILIZATION = 0.9  # fraction of device memory the serving engine may use (vLLM's default)


class Regime(StrEnum):
    COMPUTE_BOUND = "compute-bound"
    BANDWIDTH_BOUND = "bandwidth-bound"
    CAPACITY_BOUND = "capacity-bound"
    DOES_NOT_FIT = "does-not-fit"


@dataclass(frozen=True, slots=True)
class PhasePerformance:
    """A phase step evaluated on ``devices`` devices of one hardware kind."""

    hardware: str
    devices: int
    compute_class: str
    peak_flops: float  # all devices together
    memory_bandwidth: float  # all devices together
    ridge_point: float  # FLOPs/byte
    attainable_flops: float  # min(peak, OI × bandwidth) for the step's aggregate OI
    compute_seconds: float
    memory_seconds: float
    communication_seconds: float
    overhead_seconds: float
    step_seconds: float
    mfu: float
    mbu: float
    max_batch: int  # largest batch that fits (0: not even one request)
    ridge_batch: int | None  # batch at which OI reaches the ridge (None: never)
    operating_batch: int
    regime: Regime
    memory_per_device_bytes: float  # used at the operating batch

    @property
    def fits(self) -> bool:
        return self.max_batch >= 1


def allreduce_seconds(cost: PhaseCost, hw: HardwareSpec, eff: Efficiency) -> float:
    """Ring all-reduce: each device sends and receives 2·(N−1)/N of the payload, per collective."""
    if cost.tp <= 1 or cost.allreduce_count == 0:
        return 0.0
    n = cost.tp
    per_collective = (
        2.0 * (n - 1) / n * cost.allreduce_bytes / (hw.intra_node_bandwidth * eff.link_efficiency)
    )
    return cost.allreduce_count * (per_collective + eff.collective_latency_seconds)


def max_batch_that_fits(
    cost: PhaseCost, hw: HardwareSpec, devices: int, utilization: float = DEFAULT_MEMORY_UTILIZATION
) -> int:
    """Largest batch whose weights and KV caches fit in the devices' usable memory."""
    usable_per_device = hw.memory_bytes * utilization
    weights_per_device = cost.weight_resident_bytes / devices
    free = usable_per_device - weights_per_device
    if free <= 0:
        return 0
    if cost.kv_bytes_per_request_per_device <= 0:
        return 1 << 30
    return int(free // cost.kv_bytes_per_request_per_device)


_PEAKS: dict[tuple[int, str], tuple[HardwareSpec, float]] = {}


def _peak(hw: HardwareSpec, compute_class: str) -> float:
    """``hw.peak_for(compute_class)``, remembered per hardware object (the hot path asks often)."""
    hit = _PEAKS.get((id(hw), compute_class))
    if hit is not None and hit[0] is hw:
        return hit[1]
    if len(_PEAKS) > 1024:
        _PEAKS.clear()
    value = hw.peak_for(compute_class)
    _PEAKS[(id(hw), compute_class)] = (hw, value)  # holding hw keeps its id from being reused
    return value


def evaluate(
    cost: PhaseCost,
    hw: HardwareSpec,
    *,
    compute_class: str = "bf16",
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> PhasePerformance:
    """Evaluate ``cost`` (one replica of ``cost.tp`` devices) on ``hw``."""
    eff = hw.efficiency if efficiency is None else efficiency
    n = cost.tp
    peak = _peak(hw, compute_class) * n
    bandwidth = hw.memory_bandwidth * n
    eff_peak = peak * eff.compute
    eff_bw = bandwidth * eff.bandwidth
    compute_s = 0.0
    memory_s = 0.0
    busy_s = 0.0
    serial = 1.0 - eff.overlap  # the share of an operator's shorter side not hidden (steps._busy)
    for name, op_flops, weights, kv_read, kv_write, act, op_class in cost.operators:
        dram_bytes = weights + kv_read + kv_write + act  # OperatorCost.dram_bytes, inlined (hot loop)
        op_peak = eff_peak if op_class is None else _peak(hw, op_class) * n * eff.compute
        if name == "experts":
            c = op_flops / (op_peak * eff.experts_compute)
            m = dram_bytes / (eff_bw * eff.experts_bandwidth)
        else:
            c = op_flops / op_peak
            m = dram_bytes / eff_bw
        compute_s += c
        memory_s += m
        busy_s += (c + serial * m) if c > m else (m + serial * c)
    comm_s = allreduce_seconds(cost, hw, eff)
    overhead_s = eff.step_overhead_seconds + cost.layers * eff.layer_overhead_seconds
    step = busy_s + comm_s + overhead_s

    flops = cost.flops
    dram = cost.dram_bytes
    oi = flops / dram
    ridge = peak / bandwidth
    b_max = max_batch_that_fits(cost, hw, n, utilization)
    b_ridge = cost.scaling.batch_to_reach(ridge)
    b_op = min(cost.batch, b_max)
    if b_max < 1:
        regime = Regime.DOES_NOT_FIT
    else:
        oi_op = oi if b_op == cost.batch else cost.scaling.operational_intensity(b_op)
        if oi_op >= ridge:
            regime = Regime.COMPUTE_BOUND
        elif b_op == b_max and (b_ridge is None or b_max < b_ridge):
            regime = Regime.CAPACITY_BOUND
        else:
            regime = Regime.BANDWIDTH_BOUND
    used = cost.weight_resident_bytes / n + max(b_op, 0) * cost.kv_bytes_per_request_per_device
    # Positional (the fields in order): this runs for every step the planner evaluates.
    return PhasePerformance(
        hw.name,  # hardware
        n,  # devices
        compute_class,  # compute_class
        peak,  # peak_flops
        bandwidth,  # memory_bandwidth
        ridge,  # ridge_point
        min(peak, oi * bandwidth),  # attainable_flops
        compute_s,  # compute_seconds
        memory_s,  # memory_seconds
        comm_s,  # communication_seconds
        overhead_s,  # overhead_seconds
        step,  # step_seconds
        flops / (step * peak),  # mfu
        dram / (step * bandwidth),  # mbu
        b_max,  # max_batch
        b_ridge,  # ridge_batch
        b_op,  # operating_batch
        regime,  # regime
        used,  # memory_per_device_bytes
    )


__all__ = [
    "DEFAULT_MEMORY_UTILIZATION",
    "IDEAL",
    "PhasePerformance",
    "Regime",
    "allreduce_seconds",
    "evaluate",
    "max_batch_that_fits",
]
