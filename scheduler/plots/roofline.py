"""Roofline per hardware, with a workload's prefill and decode placed on it; the operators of a
step grouped into the paper's blocks (Decode-FFN, Decode-Attention).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.analysis import Scenario, analyze_phase
from hetsched.scheduler.estimator.cost import OperatorCost, Phase, PhaseCost, Precisions
from hetsched.scheduler.estimator.roofline import (
    DEFAULT_MEMORY_UTILIZATION,
    Regime,
)
from hetsched.scheduler.plots._figure import (
    PALETTE,
    figure,
    logspace,
)
from hetsched.scheduler.units import fmt_tokens

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Operators of a step grouped into the transformer blocks the paper names (Decode-FFN, ...).
FFN_OPERATORS = frozenset({"ffn", "router", "shared_experts", "experts"})
ATTENTION_OPERATORS = frozenset({"attention"})  # the attention core: QKᵀ and PV over the KV cache
BLOCKS: dict[str, str] = {"step": "", "ffn": "FFN", "attention": "Attention"}


def _block_cost(cost: PhaseCost, block: str) -> tuple[float, float]:
    """FLOPs and DRAM bytes of a block of the step ("step": all operators)."""
    if block == "step":
        return cost.flops, cost.dram_bytes
    names = FFN_OPERATORS if block == "ffn" else ATTENTION_OPERATORS
    ops: list[OperatorCost] = [op for op in cost.operators if op.name in names]
    if not ops:
        raise ValueError(f"the step has no {block} operators")
    return sum(op.flops for op in ops), sum(op.dram_bytes for op in ops)


def block_operational_intensity(cost: PhaseCost, block: str) -> float:
    flops, dram = _block_cost(cost, block)
    return flops / dram if dram else 0.0


@dataclass(frozen=True, slots=True)
class Roof:
    hardware: str
    devices: int
    peak_flops: float  # all devices of the replica, at the workload's compute format
    memory_bandwidth: float  # bytes/s, all devices
    memory_bytes: float  # one device
    ridge_point: float  # FLOP/byte


@dataclass(frozen=True, slots=True)
class RooflinePoint:
    hardware: str
    phase: str
    operational_intensity: float
    attainable_flops: float  # min(peak, OI × bandwidth) on that hardware
    regime: str
    capacity_footprint_bytes: float
    max_batch: int


@dataclass(frozen=True, slots=True)
class RooflineSeries:
    model: str
    agent: str
    batch: int  # decode
    prefill_batch: int
    prompt_tokens: int
    decode_context: int
    compute_class: str
    roofs: tuple[Roof, ...]
    points: tuple[RooflinePoint, ...]


def roofline_series(
    model: ModelConfig,
    hardware: Sequence[HardwareSpec],
    scenario: Scenario,
    *,
    agent: str = "",
    precisions: Precisions | None = None,
    tp: int | Mapping[str, int] = 1,
    prefill_batch: int | None = None,
    efficiency: Efficiency | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> RooflineSeries:
    """Each hardware's roof (``tp`` devices: one int, or per hardware name) and both phases on it.

    Decode runs at ``scenario.batch``, prefill at ``prefill_batch`` (default: the same), exactly as
    :func:`~hetsched.scheduler.estimator.analysis.analyze` does.
    """
    if not hardware:
        raise ValueError("roofline: give at least one hardware entry")
    prec = precisions or Precisions.native(model)
    roofs: list[Roof] = []
    points: list[RooflinePoint] = []
    for hw in hardware:
        n = tp if isinstance(tp, int) else tp.get(hw.name, 1)
        common: dict[str, Any] = dict(precisions=prec, tp=n, efficiency=efficiency, utilization=utilization)
        prefill = analyze_phase(
            model,
            hw,
            Phase.PREFILL,
            batch=prefill_batch or scenario.batch,
            new_tokens=scenario.prompt_tokens,
            context_tokens=scenario.cached_tokens,
            **common,
        )
        decode = analyze_phase(
            model,
            hw,
            Phase.DECODE,
            batch=scenario.batch,
            new_tokens=1,
            context_tokens=scenario.decode_context - 1,
            **common,
        )
        perf = prefill.performance
        roofs.append(
            Roof(hw.name, n, perf.peak_flops, perf.memory_bandwidth, hw.memory_bytes, perf.ridge_point)
        )
        for pa in (prefill, decode):
            points.append(
                RooflinePoint(
                    hardware=hw.name,
                    phase=pa.phase.value,
                    operational_intensity=pa.cost.operational_intensity,
                    attainable_flops=pa.performance.attainable_flops,
                    regime=pa.performance.regime.value,
                    capacity_footprint_bytes=pa.cost.capacity_footprint_bytes,
                    max_batch=pa.performance.max_batch,
                )
            )
    return RooflineSeries(
        model=model.name,
        agent=agent,
        batch=scenario.batch,
        prefill_batch=prefill_batch or scenario.batch,
        prompt_tokens=scenario.prompt_tokens,
        decode_context=scenario.decode_context,
        compute_class=prec.compute_class,
        roofs=tuple(roofs),
        points=tuple(points),
    )


def render_roofline(series: RooflineSeries) -> Figure:
    fig, ax = figure(8.5, 5.6)
    ois = [p.operational_intensity for p in series.points] + [r.ridge_point for r in series.roofs]
    x_lo = 10 ** math.floor(math.log10(max(min(ois) / 3, 1e-3)))
    x_hi = 10 ** math.ceil(math.log10(max(ois) * 3))
    xs = logspace(x_lo, x_hi, 200)
    markers = {"prefill": "o", "decode": "s"}
    for i, roof in enumerate(series.roofs):
        color = PALETTE[i % len(PALETTE)]
        ys = [min(roof.peak_flops, x * roof.memory_bandwidth) for x in xs]
        tp = f" ×{roof.devices}" if roof.devices > 1 else ""
        regimes = ", ".join(f"{p.phase} {p.regime}" for p in series.points if p.hardware == roof.hardware)
        ax.plot(
            xs,
            ys,
            color=color,
            lw=1.8,
            label=f"{roof.hardware}{tp}: ridge {roof.ridge_point:.0f} FLOP/B — {regimes}",
        )
        ax.plot([roof.ridge_point], [roof.peak_flops], marker="|", ms=12, mew=2, color=color)
        for p in series.points:
            if p.hardware != roof.hardware:
                continue
            hollow = p.regime in (Regime.CAPACITY_BOUND.value, Regime.DOES_NOT_FIT.value)
            ax.plot(
                [p.operational_intensity],
                [p.attainable_flops],
                marker=markers[p.phase],
                ms=8,
                color=color,
                mfc="white" if hollow else color,
                mew=1.6,
                ls="none",
                zorder=5,
            )
    # One vertical guide per phase OI (the OI is a property of the workload, not of the hardware).
    seen: set[str] = set()
    for p in series.points:
        if p.phase in seen:
            continue
        seen.add(p.phase)
        ax.axvline(p.operational_intensity, color="0.55", ls=":", lw=1)
        left_half = math.log(p.operational_intensity / x_lo) < 0.5 * math.log(x_hi / x_lo)
        ax.annotate(
            f"{p.phase} OI {p.operational_intensity:.3g}",
            (p.operational_intensity, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3 if left_half else -3, -4),
            textcoords="offset points",
            va="top",
            ha="left" if left_half else "right",
            fontsize=8,
            color="0.3",
        )
    for phase, m in markers.items():
        ax.plot(
            [],
            [],
            marker=m,
            color="0.3",
            ls="none",
            label=f"{phase} (hollow: capacity-bound / does not fit)" if phase == "decode" else phase,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    peaks = [r.peak_flops for r in series.roofs]
    ax.set_ylim(min(x_lo * r.memory_bandwidth for r in series.roofs), max(peaks) * 6)
    ax.set_xlabel("operational intensity (FLOP/byte)")
    ax.set_ylabel(f"attainable performance ({series.compute_class} FLOP/s)")
    batch = (
        str(series.batch)
        if series.batch == series.prefill_batch
        else f"{series.prefill_batch}/{series.batch}"
    )
    ax.set_title(
        f"Roofline: {series.model}, {series.agent or 'workload'} — batch "
        f"{batch}, "
        f"prompt {fmt_tokens(series.prompt_tokens)}, decode at context {fmt_tokens(series.decode_context)}",
        fontsize=10,
    )
    ax.grid(True, which="major", color="0.9")
    ax.legend(loc="lower right", fontsize=7.5, framealpha=0.95)
    fig.tight_layout()
    return fig
