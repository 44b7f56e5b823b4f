"""Figures from the estimator's and the planner's output: the paper's Figures 1–4, rooflines, placements.

Each figure is two functions:

* a pure *series* function (``*_series``) that calls the estimator (or takes a plan) and returns a
  frozen dataclass of plain numbers — what is plotted, testable without looking at pixels;
* a *render* function (``render_*``) that draws that series with matplotlib (imported lazily, Agg
  canvas, no pyplot state) and returns the ``Figure``.

``save_figure`` writes PNG and SVG deterministically (no timestamps, fixed SVG ids) so that
``make figures`` only changes ``docs/figures/`` when the numbers change.

Units: memory in GB (10⁹ bytes, as datasheets state capacities), OI in FLOP/byte, compute in
FLOP/s. Every number comes from :func:`~hetsched.scheduler.estimator.estimate_phase` and
:func:`~hetsched.scheduler.roofline.evaluate`; nothing is re-derived here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.analysis import Scenario, analyze, analyze_phase
from hetsched.scheduler.catalog.agents import AgentProfile
from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator import OperatorCost, Phase, PhaseCost, Precisions, estimate_phase
from hetsched.scheduler.roofline import DEFAULT_MEMORY_UTILIZATION, Regime, evaluate, max_batch_that_fits
from hetsched.scheduler.units import GB, fmt_tokens

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


PLOT_NAMES: tuple[str, ...] = ("roofline", "regime-map", "agents", "attention", "moe", "placement")

# Operators of a step grouped into the transformer blocks the paper names (Decode-FFN, ...).
FFN_OPERATORS = frozenset({"ffn", "router", "shared_experts", "experts"})
ATTENTION_OPERATORS = frozenset({"attention"})  # the attention core: QKᵀ and PV over the KV cache
BLOCKS: dict[str, str] = {"step": "", "ffn": "FFN", "attention": "Attention"}

REGIME_COLORS: dict[str, str] = {
    Regime.COMPUTE_BOUND.value: "#3c78d8",
    Regime.BANDWIDTH_BOUND.value: "#e69138",
    Regime.CAPACITY_BOUND.value: "#cc0000",
    Regime.DOES_NOT_FIT.value: "#666666",
}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


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


# =================================================================================================
# 1. Roofline per hardware, with a workload's prefill and decode placed on it
# =================================================================================================


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
    :func:`~hetsched.scheduler.analysis.analyze` does.
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
    fig, ax = _figure(8.5, 5.6)
    ois = [p.operational_intensity for p in series.points] + [r.ridge_point for r in series.roofs]
    x_lo = 10 ** math.floor(math.log10(max(min(ois) / 3, 1e-3)))
    x_hi = 10 ** math.ceil(math.log10(max(ois) * 3))
    xs = _logspace(x_lo, x_hi, 200)
    markers = {"prefill": "o", "decode": "s"}
    for i, roof in enumerate(series.roofs):
        color = _PALETTE[i % len(_PALETTE)]
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


# =================================================================================================
# 2. Regime map (the paper's Figure 1): OI against memory per device, regions for one hardware
# =================================================================================================


@dataclass(frozen=True, slots=True)
class RegimePoint:
    phase: str
    block: str  # "step", "ffn" or "attention"
    label: str  # e.g. "Decode-FFN"
    batch: int  # requested
    context: int  # tokens in the cache after the step
    operating_batch: int  # min(batch, largest batch that fits); 0 when not even one request fits
    memory_per_device_bytes: float  # needed at the requested batch: weights/N + B·KV per device
    capacity_footprint_bytes: float  # CF per request at the requested batch (whole replica)
    operational_intensity: float  # of the block, at the operating batch
    regime: str  # of the whole phase step, from roofline.evaluate at the requested batch


@dataclass(frozen=True, slots=True)
class RegimeMapSeries:
    model: str
    hardware: str
    devices: int
    memory_bytes: float  # one device
    usable_bytes: float  # one device × utilization: the capacity boundary
    ridge_point: float
    batches: tuple[int, int]
    contexts: tuple[int, int]
    points: tuple[RegimePoint, ...]

    def region(self, memory_per_device: float, oi: float) -> str:
        """The region of the map a point lies in (what the shading shows)."""
        if memory_per_device > self.usable_bytes:
            regime = Regime.CAPACITY_BOUND if oi < self.ridge_point else Regime.COMPUTE_BOUND
        else:
            regime = Regime.COMPUTE_BOUND if oi >= self.ridge_point else Regime.BANDWIDTH_BOUND
        return str(regime.value)


def regime_map_series(
    model: ModelConfig,
    hardware: HardwareSpec,
    *,
    batches: tuple[int, int] = (1, 128),
    contexts: tuple[int, int] = (2048, 131072),
    blocks: Sequence[str] = ("ffn", "attention"),
    precisions: Precisions | None = None,
    tp: int = 1,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> RegimeMapSeries:
    """Prefill and decode blocks at (low, high) batch × (short, long) context on one hardware.

    Prefill processes ``context`` prompt tokens from an empty cache; decode adds one token to a
    cache of ``context − 1``. A point's x is the memory the requested batch needs per device; its
    y the block's OI at the batch that actually fits (capped by capacity).
    """
    for b in batches:
        if b < 1:
            raise ValueError(f"batches must be ≥ 1, got {b}")
    for c in contexts:
        if c < 2:
            raise ValueError(f"contexts must be ≥ 2, got {c}")
    for block in blocks:
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r} (choose from {', '.join(BLOCKS)})")
    prec = precisions or Precisions.native(model)
    points: list[RegimePoint] = []
    for phase in (Phase.PREFILL, Phase.DECODE):
        for context in contexts:
            for batch in batches:
                if phase is Phase.PREFILL:
                    shape = {"new_tokens": context, "context_tokens": 0}
                else:
                    shape = {"new_tokens": 1, "context_tokens": context - 1}
                cost = estimate_phase(model, phase, batch=batch, precisions=prec, tp=tp, **shape)
                perf = evaluate(cost, hardware, compute_class=prec.compute_class, utilization=utilization)
                b_max = max_batch_that_fits(cost, hardware, tp, utilization)
                b_op = min(batch, b_max)
                at_op = cost
                if 1 <= b_op < batch:
                    at_op = estimate_phase(model, phase, batch=b_op, precisions=prec, tp=tp, **shape)
                memory = cost.weight_resident_bytes / tp + batch * cost.kv_bytes_per_request_per_device
                for block in blocks:
                    name = phase.value.capitalize() + (f"-{BLOCKS[block]}" if BLOCKS[block] else "")
                    points.append(
                        RegimePoint(
                            phase=phase.value,
                            block=block,
                            label=name,
                            batch=batch,
                            context=context,
                            operating_batch=max(b_op, 0),
                            memory_per_device_bytes=memory,
                            capacity_footprint_bytes=cost.capacity_footprint_bytes,
                            operational_intensity=block_operational_intensity(at_op, block),
                            regime=perf.regime.value,
                        )
                    )
    return RegimeMapSeries(
        model=model.name,
        hardware=hardware.name,
        devices=tp,
        memory_bytes=hardware.memory_bytes,
        usable_bytes=hardware.memory_bytes * utilization,
        ridge_point=hardware.ridge_point(prec.compute_class),
        batches=(min(batches), max(batches)),
        contexts=(min(contexts), max(contexts)),
        points=tuple(points),
    )


def render_regime_map(series: RegimeMapSeries) -> Figure:
    fig, ax = _figure(11.5, 6.2)
    xs = [p.memory_per_device_bytes / GB for p in series.points] + [series.usable_bytes / GB]
    ys = [p.operational_intensity for p in series.points if p.operational_intensity > 0] + [
        series.ridge_point
    ]
    x_lo, x_hi = min(xs) / 2.5, max(xs) * 2.5
    y_lo = 10 ** math.floor(math.log10(min(ys) / 2))
    y_hi = 10 ** math.ceil(math.log10(max(ys) * 3))
    cap = series.usable_bytes / GB
    ridge = series.ridge_point
    # Regions: a legend names them all; a label also sits on the outer edge of each region wide
    # enough to hold it (away from the points, which cluster near the middle).
    from matplotlib.patches import Patch

    regions = (
        ((x_lo, cap), (ridge, y_hi), "#cfe2f3", "compute-bound (high MFU)", "top"),
        ((x_lo, cap), (y_lo, ridge), "#fff2cc", "bandwidth-bound (high MBU)", "bottom"),
        (
            (cap, x_hi),
            (y_lo, ridge),
            "#f4cccc",
            "capacity-bound: batch capped by memory,\nMFU and MBU both low",
            "bottom",
        ),
        ((cap, x_hi), (ridge, y_hi), "#e8eef7", "batch capped by memory,\nstill compute-bound", "top"),
    )
    span = math.log(x_hi / x_lo)
    for (x0, x1), (y0, y1), color, text, edge in regions:
        ax.fill_between([x0, x1], y0, y1, color=color, lw=0, zorder=0)
        if math.log(x1 / x0) >= 0.3 * span:
            ax.annotate(
                text,
                (math.sqrt(x0 * x1), y1 if edge == "top" else y0),
                xytext=(0, -5 if edge == "top" else 5),
                textcoords="offset points",
                ha="center",
                va="top" if edge == "top" else "bottom",
                fontsize=8.5,
                color="0.3",
                zorder=1,
            )
    region_handles = [
        Patch(facecolor=c, edgecolor="0.6", label=t.replace(": ", ":\n")) for _, _, c, t, _ in regions
    ]
    ax.axvline(cap, color="#990000", lw=1.5, ls="--")
    ax.annotate(
        f"{series.hardware}{_times(series.devices)}: {cap:.0f} GB usable per device",
        (cap, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(0, 3),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=8,
        color="#990000",
    )
    ax.axhline(ridge, color="#1c4587", lw=1.5, ls="--")
    ax.annotate(
        f"ridge point {ridge:.0f} FLOP/B",
        (x_lo, ridge),
        xytext=(4, 3),
        textcoords="offset points",
        fontsize=8,
        color="#1c4587",
    )
    order = [p.label for p in series.points]
    labels = sorted(set(order), key=order.index)
    palette = ("#0b5394", "#6fa8dc", "#b45f06", "#f6b26b", "#38761d", "#93c47d")
    colors = dict(zip(labels, palette, strict=False))
    b_lo, b_hi = series.batches
    c_lo, c_hi = series.contexts
    shapes = {(b_lo, c_lo): "o", (b_lo, c_hi): "s", (b_hi, c_lo): "^", (b_hi, c_hi): "D"}
    for p in series.points:
        fits = p.operating_batch >= 1
        ax.plot(
            [p.memory_per_device_bytes / GB],
            [max(p.operational_intensity, y_lo)],
            marker=shapes[(p.batch, p.context)],
            ms=9,
            ls="none",
            color=colors[p.label],
            mfc=colors[p.label] if fits else "white",
            mec="black" if fits else colors[p.label],
            mew=0.8 if fits else 1.8,
            zorder=5,
        )
    handles_c = [
        ax.plot([], [], marker="o", ls="none", color=colors[k], mec="black", mew=0.8, ms=8)[0] for k in labels
    ]
    handles_s = [
        ax.plot([], [], marker=m, ls="none", color="0.6", mec="black", mew=0.8, ms=8)[0]
        for m in shapes.values()
    ]
    names_s = [
        f"{'low' if b == b_lo else 'high'} B={b}, {'short' if c == c_lo else 'long'} L={fmt_tokens(c)}"
        for b, c in shapes
    ]
    leg1 = ax.legend(
        handles_c,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="block",
        fontsize=8,
        title_fontsize=8,
    )
    ax.add_artist(leg1)
    leg2 = ax.legend(
        handles_s,
        names_s,
        loc="upper left",
        bbox_to_anchor=(1.01, 0.66),
        title="batch B, context L\n(hollow: even B=1 does not fit)",
        fontsize=8,
        title_fontsize=8,
    )
    ax.add_artist(leg2)
    ax.legend(
        handles=region_handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 0.3),
        title="region",
        fontsize=7.5,
        title_fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("memory needed per device at batch B: weights / N + B × KV cache (GB)")
    ax.set_ylabel("operational intensity at the batch that fits (FLOP/byte)")
    ax.set_title(
        f"Regime map (paper Fig. 1): {series.model} on {series.hardware}{_times(series.devices)}",
        fontsize=10,
        pad=16,
    )
    fig.tight_layout()
    return fig


# =================================================================================================
# 3. Agents (the paper's Figure 2): tokens, CF against one device's capacity, decode OI
# =================================================================================================


@dataclass(frozen=True, slots=True)
class AgentBar:
    agent: str
    turns: int
    prefill_tokens_per_task: float  # Σ over turns of the input sent (history re-sent each turn)
    decode_tokens_per_task: float
    decode_context: int  # tokens in the cache at the last turn's decode
    weight_bytes_per_request: float  # resident weights / B
    kv_cache_bytes: float
    capacity_footprint_bytes: float  # of the decode step at the last turn (= weights/B + KV)
    prefill_oi: float
    decode_oi: float
    decode_regime: str


@dataclass(frozen=True, slots=True)
class AgentsSeries:
    model: str
    hardware: str
    capacity_bytes: float  # one device
    ridge_point: float
    batch: int
    agents: tuple[AgentBar, ...]


def agent_task_tokens(agent: AgentProfile) -> tuple[float, float]:
    """Prefill (input) and decode (output) tokens of one task: Σ_t context(t) and T × output."""
    turns = agent.turns_per_task
    prefill = sum(agent.context_at_turn(t) for t in range(1, turns + 1))
    return float(prefill), float(turns * agent.output_tokens)


def agents_series(
    model: ModelConfig,
    hardware: HardwareSpec,
    agents: Sequence[AgentProfile],
    *,
    batch: int = 1,
    context: int | None = None,
    precisions: Precisions | None = None,
    utilization: float = DEFAULT_MEMORY_UTILIZATION,
) -> AgentsSeries:
    prec = precisions or Precisions.native(model)
    bars: list[AgentBar] = []
    for agent in agents:
        scenario = Scenario.from_agent(agent, batch=batch, context=context)
        result = analyze(model, hardware, scenario, precisions=prec, utilization=utilization)
        dec = result.decode.cost
        prefill_tokens, decode_tokens = agent_task_tokens(agent)
        bars.append(
            AgentBar(
                agent=agent.name,
                turns=agent.turns_per_task,
                prefill_tokens_per_task=prefill_tokens,
                decode_tokens_per_task=decode_tokens,
                decode_context=scenario.decode_context,
                weight_bytes_per_request=dec.weight_resident_bytes / dec.batch,
                kv_cache_bytes=dec.kv_bytes_per_request,
                capacity_footprint_bytes=dec.capacity_footprint_bytes,
                prefill_oi=result.prefill.cost.operational_intensity,
                decode_oi=dec.operational_intensity,
                decode_regime=result.decode.performance.regime.value,
            )
        )
    return AgentsSeries(
        model=model.name,
        hardware=hardware.name,
        capacity_bytes=hardware.memory_bytes,
        ridge_point=hardware.ridge_point(prec.compute_class),
        batch=batch,
        agents=tuple(bars),
    )


def render_agents(series: AgentsSeries) -> Figure:
    fig, axes = _figure_row(3, 13.5, 5.2)
    names = [a.agent for a in series.agents]
    idx = list(range(len(names)))
    w = 0.38
    # (a) tokens per task.
    ax = axes[0]
    ax.bar(
        [i - w / 2 for i in idx],
        [a.prefill_tokens_per_task for a in series.agents],
        w,
        color="#3c78d8",
        label="prefill (input) tokens",
    )
    ax.bar(
        [i + w / 2 for i in idx],
        [a.decode_tokens_per_task for a in series.agents],
        w,
        color="#e69138",
        label="decode (output) tokens",
    )
    for i, a in zip(idx, series.agents, strict=True):
        ax.annotate(
            fmt_tokens(a.prefill_tokens_per_task),
            (i - w / 2, a.prefill_tokens_per_task),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )
        ax.annotate(
            fmt_tokens(a.decode_tokens_per_task),
            (i + w / 2, a.decode_tokens_per_task),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )
    ax.set_yscale("log")
    ax.set_ylabel("tokens per task (input re-sends the history)")
    ax.set_title("Token usage per task", fontsize=10)
    ax.margins(y=0.15)
    # (b) CF at the last turn against one device.
    ax = axes[1]
    cap = series.capacity_bytes / GB
    weights = [a.weight_bytes_per_request / GB for a in series.agents]
    kv = [a.kv_cache_bytes / GB for a in series.agents]
    top = max(max(wt + k for wt, k in zip(weights, kv, strict=True)), cap) * 1.12
    ax.axhspan(0, cap, color="0.85", zorder=0, label=f"one {series.hardware}: {cap:.0f} GB")
    ax.bar(
        idx,
        weights,
        0.6,
        color="#999999",
        hatch="//",
        edgecolor="0.3",
        lw=0.5,
        label=f"weights / B (B={series.batch})",
    )
    ax.bar(idx, kv, 0.6, bottom=weights, color="#cc4125", edgecolor="0.3", lw=0.5, label="KV cache")
    for i, a in zip(idx, series.agents, strict=True):
        cf = a.capacity_footprint_bytes / GB
        ax.annotate(
            f"{cf:.0f} GB\nL={fmt_tokens(a.decode_context)}",
            (i, cf),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_ylim(0, top)
    ax.set_ylabel("capacity footprint per request (GB)")
    ax.set_title(f"CF at the last turn vs one {series.hardware}", fontsize=10)
    # (c) OI of prefill and decode.
    ax = axes[2]
    ax.bar(
        [i - w / 2 for i in idx], [a.prefill_oi for a in series.agents], w, color="#3c78d8", label="prefill"
    )
    ax.bar([i + w / 2 for i in idx], [a.decode_oi for a in series.agents], w, color="#e69138", label="decode")
    for i, a in zip(idx, series.agents, strict=True):
        ax.annotate(
            f"{a.decode_oi:.2g}",
            (i + w / 2, a.decode_oi),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )
        ax.annotate(
            f"{a.prefill_oi:.0f}",
            (i - w / 2, a.prefill_oi),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )
    ax.axhline(
        series.ridge_point,
        color="#1c4587",
        ls="--",
        lw=1.2,
        label=f"{series.hardware} ridge {series.ridge_point:.0f} FLOP/B",
    )
    ax.set_yscale("log")
    ax.set_ylabel("operational intensity (FLOP/byte)")
    ax.set_title(f"OI at batch {series.batch}", fontsize=10)
    ax.margins(y=0.2)
    for ax in axes:
        ax.set_xticks(idx, names, fontsize=8.5)
        ax.grid(True, axis="y", color="0.92")
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    fig.suptitle(f"Agents on {series.model} (paper Fig. 2)", fontsize=11)
    fig.tight_layout()
    return fig


# =================================================================================================
# 4. Attention kinds (the paper's Figure 3): CF against context length
# =================================================================================================


@dataclass(frozen=True, slots=True)
class AttentionLine:
    model: str
    attention: str  # mha, gqa, mla
    kv_bytes_per_token: float
    weight_bytes: float
    capacity_footprint_bytes: tuple[float, ...]  # per context in AttentionSeries.contexts


@dataclass(frozen=True, slots=True)
class AttentionSeries:
    contexts: tuple[int, ...]
    batch: int
    lines: tuple[AttentionLine, ...]
    capacities: tuple[tuple[str, float], ...]  # (hardware, bytes of one device)


def default_contexts(lo: int = 1024, hi: int = 1 << 20) -> tuple[int, ...]:
    out: list[int] = []
    c = lo
    while c <= hi:
        out.append(c)
        c *= 2
    return tuple(out)


def attention_series(
    models: Sequence[ModelConfig],
    capacities: Sequence[HardwareSpec],
    *,
    contexts: Sequence[int] | None = None,
    batch: int = 1,
    precisions: Precisions | None = None,
) -> AttentionSeries:
    """CF of one decode request (weights / B + KV at ``context`` tokens) per model and context."""
    ctx = tuple(contexts) if contexts else default_contexts()
    lines: list[AttentionLine] = []
    for model in models:
        prec = precisions or Precisions.native(model)
        cfs: list[float] = []
        weight = 0.0
        for c in ctx:
            cost = estimate_phase(
                model, Phase.DECODE, batch=batch, new_tokens=1, context_tokens=c - 1, precisions=prec
            )
            cfs.append(cost.capacity_footprint_bytes)
            weight = cost.weight_resident_bytes
        kv_tok = (cfs[-1] - weight / batch) / ctx[-1]
        lines.append(AttentionLine(model.name, model.attention_kind.value, kv_tok, weight, tuple(cfs)))
    return AttentionSeries(ctx, batch, tuple(lines), tuple((hw.name, hw.memory_bytes) for hw in capacities))


def render_attention(series: AttentionSeries) -> Figure:
    fig, ax = _figure(8.0, 5.2)
    colors = {"mha": "#cc0000", "gqa": "#e69138", "mqa": "#bf9000", "mla": "#3c78d8"}
    xs = list(series.contexts)
    for i, line in enumerate(series.lines):
        color = colors.get(line.attention, _PALETTE[i % len(_PALETTE)])
        ax.plot(
            xs,
            [v / GB for v in line.capacity_footprint_bytes],
            marker="o",
            ms=4,
            lw=2,
            color=color,
            label=f"{line.attention.upper()} ({line.model}): KV {line.kv_bytes_per_token / 1024:.0f} "
            f"KiB/token, weights {line.weight_bytes / GB:.1f} GB",
        )
    for j, (hw, cap) in enumerate(series.capacities):
        ax.axhline(cap / GB, color="0.25", ls=("--", ":", "-.")[j % 3], lw=1.2)
        ax.annotate(
            f"{hw}: {cap / GB:.0f} GB",
            (xs[0], cap / GB),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=8,
            color="0.25",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs[::2], [fmt_tokens(x) for x in xs[::2]])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(f"capacity footprint per request at batch {series.batch} (GB)")
    ax.set_title(
        "Attention kinds (paper Fig. 3): CF against context, 48 layers, hidden 2048, 16-bit", fontsize=10
    )
    ax.grid(True, which="major", color="0.9")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# =================================================================================================
# 5. Dense against MoE (the paper's Figure 4): CF at batch 1 and 16, decode OI
# =================================================================================================


@dataclass(frozen=True, slots=True)
class MoEBar:
    model: str
    moe: bool
    total_params: float
    active_params: float
    weight_bytes: float  # resident (all experts)
    kv_cache_bytes: float  # one request at the context
    capacity_footprint_bytes: tuple[float, ...]  # per batch in MoESeries.batches
    decode_oi: tuple[float, ...]  # per batch


@dataclass(frozen=True, slots=True)
class MoESeries:
    context: int
    batches: tuple[int, ...]
    models: tuple[MoEBar, ...]


def moe_series(
    models: Sequence[ModelConfig],
    *,
    context: int = 32768,
    batches: Sequence[int] = (1, 16),
    precisions: Mapping[str, Precisions] | None = None,
) -> MoESeries:
    """Decode at ``context`` tokens for each model and batch (native precision unless given per model)."""
    bars: list[MoEBar] = []
    for model in models:
        prec = (precisions or {}).get(model.name) or Precisions.native(model)
        cfs: list[float] = []
        ois: list[float] = []
        weight = kv = 0.0
        for b in batches:
            cost = estimate_phase(
                model, Phase.DECODE, batch=b, new_tokens=1, context_tokens=context - 1, precisions=prec
            )
            cfs.append(cost.capacity_footprint_bytes)
            ois.append(cost.operational_intensity)
            weight, kv = cost.weight_resident_bytes, cost.kv_bytes_per_request
        bars.append(
            MoEBar(
                model.name,
                model.moe is not None,
                float(model.total_params),
                float(model.active_params),
                weight,
                kv,
                tuple(cfs),
                tuple(ois),
            )
        )
    return MoESeries(context, tuple(batches), tuple(bars))


def render_moe(series: MoESeries) -> Figure:
    n_b = len(series.batches)
    fig, axes = _figure_row(n_b + 1, 4.6 * (n_b + 1), 5.0)
    names = [m.model for m in series.models]
    idx = list(range(len(names)))
    kind_color = {False: "#3c78d8", True: "#e69138"}
    for j, b in enumerate(series.batches):
        ax = axes[j]
        weights = [m.weight_bytes / b / GB for m in series.models]
        kv = [m.capacity_footprint_bytes[j] / GB - wt for m, wt in zip(series.models, weights, strict=True)]
        colors = [kind_color[m.moe] for m in series.models]
        ax.bar(idx, weights, 0.65, color=colors, alpha=0.45, hatch="//", edgecolor="0.3", lw=0.5)
        ax.bar(idx, kv, 0.65, bottom=weights, color=colors, edgecolor="0.3", lw=0.5)
        for i, m in enumerate(series.models):
            ax.annotate(
                f"{m.capacity_footprint_bytes[j] / GB:.0f}",
                (i, m.capacity_footprint_bytes[j] / GB),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
        ax.set_ylabel("capacity footprint per request (GB)")
        ax.set_title(f"CF at batch {b} (shaded: weights / {b})", fontsize=10)
        ax.margins(y=0.12)
    ax = axes[n_b]
    w = 0.8 / n_b
    for j in range(n_b):
        offs = [i - 0.4 + w * (j + 0.5) for i in idx]
        vals = [m.decode_oi[j] for m in series.models]
        ax.bar(
            offs,
            vals,
            w,
            color=[kind_color[m.moe] for m in series.models],
            alpha=0.45 + 0.55 * j / max(n_b - 1, 1),
            edgecolor="0.3",
            lw=0.5,
        )
        for x, v in zip(offs, vals, strict=True):
            ax.annotate(
                f"{v:.2g}",
                (x, v),
                ha="center",
                va="bottom",
                fontsize=6.5,
                xytext=(0, 1),
                textcoords="offset points",
            )
    ax.set_yscale("log")
    ax.set_ylabel("decode operational intensity (FLOP/byte)")
    ax.set_title(
        "Decode OI at batch " + " and ".join(str(b) for b in series.batches) + " (light → dark)", fontsize=10
    )
    ax.margins(y=0.15)
    from matplotlib.patches import Patch

    handles = [
        Patch(color=kind_color[False], label="dense"),
        Patch(color=kind_color[True], label="MoE"),
        Patch(facecolor="white", edgecolor="0.3", hatch="//", label="weights share"),
    ]
    axes[0].legend(handles=handles, fontsize=8, loc="upper left")
    for ax in axes:
        ax.set_xticks(idx, names, rotation=30, ha="right", fontsize=8)
        ax.grid(True, axis="y", color="0.92")
        ax.set_axisbelow(True)
    fig.suptitle(
        f"Dense vs MoE (paper Fig. 4): decode at context {fmt_tokens(series.context)}, native precision",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


# =================================================================================================
# 6. Placement: pools as columns, devices used per workload phase vs free, $/h
# =================================================================================================


@dataclass(frozen=True, slots=True)
class PlacementSegment:
    workload: str
    phase: str
    devices: int
    regime: str


@dataclass(frozen=True, slots=True)
class PlacementColumn:
    pool: str
    hardware: str
    total_devices: int
    free_devices_before: int  # free in the pool file
    segments: tuple[PlacementSegment, ...]
    price_per_device_hour: float

    @property
    def used_devices(self) -> int:
        return sum(s.devices for s in self.segments)

    @property
    def cost_per_hour(self) -> float:
        return self.used_devices * self.price_per_device_hour


@dataclass(frozen=True, slots=True)
class PlacementSeries:
    columns: tuple[PlacementColumn, ...]
    total_cost_per_hour: float
    unplaced: tuple[str, ...]  # "workload/phase: reason"


def placement_series(plan: Mapping[str, Any], pools: Iterable[Mapping[str, Any]]) -> PlacementSeries:
    """Devices each pool gives to each placed phase, from ``Plan.to_dict()``.

    ``pools``: ``{"name", "hardware", "total_devices", "free_devices", "price_per_device_hour"}``
    per pool (``report.PlanContext.pool_rows``). A phase uses its ``devices`` (TP × replicas);
    colocated replicas serve both phases and are counted once, as one "colocated" segment.
    """
    segments: dict[str, list[PlacementSegment]] = {}
    unplaced: list[str] = []
    for wl in plan.get("workloads", []):
        name = str(wl.get("name", "?"))
        phases: Mapping[str, Any] = wl.get("phases") or {}
        if not wl.get("feasible", wl.get("mode") is not None):
            info = wl.get("infeasible") or {}
            unplaced.append(f"{name}: {info.get('reason') or 'not placed'}")
            continue
        prefill, decode = phases.get("prefill") or {}, phases.get("decode") or {}
        if prefill.get("shared_replicas") or wl.get("mode") == "colocated":
            parts = [("colocated", prefill)]
        else:
            parts = [("prefill", prefill), ("decode", decode)]
        for phase, ph in parts:
            if ph.get("pool"):
                segments.setdefault(str(ph["pool"]), []).append(
                    PlacementSegment(name, phase, int(ph.get("devices") or 0), str(ph.get("regime") or ""))
                )
    columns = tuple(
        PlacementColumn(
            pool=str(p["name"]),
            hardware=str(p["hardware"]),
            total_devices=int(p["total_devices"]),
            free_devices_before=int(p["free_devices"]),
            segments=tuple(segments.get(str(p["name"]), ())),
            price_per_device_hour=float(p["price_per_device_hour"]),
        )
        for p in pools
    )
    return PlacementSeries(columns, sum(c.cost_per_hour for c in columns), tuple(unplaced))


def render_placement(series: PlacementSeries) -> Figure:
    fig, ax = _figure(max(6.5, 1.5 * len(series.columns) + 3.5), 5.4)
    idx = list(range(len(series.columns)))
    keys: list[tuple[str, str]] = []
    for col in series.columns:
        for s in col.segments:
            if (s.workload, s.phase) not in keys:
                keys.append((s.workload, s.phase))
    colors = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(keys)}
    hatches = {"prefill": "", "decode": "..", "colocated": "//"}
    labelled: set[tuple[str, str]] = set()
    for i, col in zip(idx, series.columns, strict=True):
        bottom = 0
        for s in col.segments:
            k = (s.workload, s.phase)
            ax.bar(
                i,
                s.devices,
                0.62,
                bottom=bottom,
                color=colors[k],
                hatch=hatches.get(s.phase, "//"),
                edgecolor="white",
                lw=0.8,
                label=f"{s.workload} / {s.phase}" if k not in labelled else None,
            )
            labelled.add(k)
            if s.devices >= 0.06 * max(c.total_devices for c in series.columns):
                ax.text(
                    i,
                    bottom + s.devices / 2,
                    f"{s.devices}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                    fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "black", "alpha": 0.45, "lw": 0},
                )
            bottom += s.devices
        already_busy = col.total_devices - col.free_devices_before
        if already_busy:
            ax.bar(
                i,
                already_busy,
                0.62,
                bottom=bottom,
                color="0.55",
                edgecolor="white",
                lw=0.8,
                label="busy before the plan" if "busy" not in {str(x) for x in labelled} else None,
            )
            labelled.add(("busy", ""))
            bottom += already_busy
        free = col.total_devices - bottom
        if free > 0:
            ax.bar(
                i,
                free,
                0.62,
                bottom=bottom,
                color="none",
                edgecolor="0.6",
                ls="--",
                lw=0.8,
                label="free" if ("free", "") not in labelled else None,
            )
            labelled.add(("free", ""))
        ax.annotate(
            f"${col.cost_per_hour:,.2f}/h\n{col.used_devices}/{col.total_devices} used",
            (i, col.total_devices),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_xticks(idx, [f"{c.pool}\n({c.hardware})" for c in series.columns], fontsize=8.5)
    ax.set_ylabel("devices")
    ax.set_xlim(-0.6, len(idx) - 0.4 + (1.4 if keys else 0.6))
    top = max([c.total_devices for c in series.columns] + [1])
    ax.set_ylim(0, top * 1.2)
    ax.set_title(f"Placement: devices per pool, total ${series.total_cost_per_hour:,.2f}/h", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    last = ("busy before the plan", "free")
    order = sorted(
        range(len(names)), key=lambda k: (names[k] in last, last.index(names[k]) if names[k] in last else 0)
    )
    ax.legend(
        [handles[k] for k in order],
        [names[k] for k in order],
        fontsize=7.5,
        loc="upper right",
        framealpha=0.95,
    )
    ax.grid(True, axis="y", color="0.92")
    ax.set_axisbelow(True)
    if series.unplaced:
        fig.text(0.01, 0.01, "not placed: " + "; ".join(series.unplaced)[:220], fontsize=7, color="#990000")
    fig.tight_layout(rect=(0, 0.04 if series.unplaced else 0, 1, 1))
    return fig


# =================================================================================================
# 7. Cost of a plan against baselines (the report's comparison)
# =================================================================================================


@dataclass(frozen=True, slots=True)
class CostComparisonSeries:
    workloads: tuple[str, ...]
    strategies: tuple[str, ...]  # the plan first, then the baselines
    cost_per_hour: tuple[tuple[float | None, ...], ...]  # [strategy][workload]; None: not placed
    where: tuple[tuple[str, ...], ...]  # [strategy][workload]: pools used, e.g. "l4 → a100"

    def total(self, strategy: int) -> float | None:
        """Total $/h over the workloads every strategy places (None when there are none)."""
        common = [w for w in range(len(self.workloads)) if all(c[w] is not None for c in self.cost_per_hour)]
        if not common:
            return None
        return sum(self.cost_per_hour[strategy][w] or 0.0 for w in common)


def render_cost_comparison(series: CostComparisonSeries) -> Figure:
    n_s = len(series.strategies)
    groups = [*series.workloads, "total (placed by all)"]
    fig, ax = _figure(max(7.0, 1.6 * len(groups) + 3.0), 4.6)
    w = 0.8 / n_s
    colors = ("#38761d", "#3c78d8", "#e69138", "#999999")
    top = 0.0
    for j, name in enumerate(series.strategies):
        values = [*series.cost_per_hour[j], series.total(j)]
        for i, v in enumerate(values):
            x = i - 0.4 + w * (j + 0.5)
            if v is None:
                ax.annotate(
                    "n/a",
                    (x, 0),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="#990000",
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
                continue
            ax.bar(x, v, w, color=colors[j % len(colors)], label=name if i == 0 else None, edgecolor="white")
            ax.annotate(
                f"${v:,.0f}" if v >= 100 else f"${v:,.2f}",
                (x, v),
                ha="center",
                va="bottom",
                fontsize=6.5,
                xytext=(0, 1),
                textcoords="offset points",
                rotation=90 if n_s > 2 else 0,
            )
            top = max(top, v)
    for j, name in enumerate(series.strategies):  # legend entry even when the first group is n/a
        if all(v is None for v in series.cost_per_hour[j][:1]):
            ax.bar([], [], color=colors[j % len(colors)], label=name)
    ax.set_xticks(range(len(groups)), groups, fontsize=8.5)
    ax.set_ylabel("cost ($ per hour)")
    ax.set_ylim(0, (top or 1.0) * 1.3)
    ax.set_title("Cost: the plan against homogeneous baselines", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", color="0.92")
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


# =================================================================================================
# Output
# =================================================================================================


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    return fig, ax


def _figure_row(n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    return fig, axes


def _logspace(lo: float, hi: float, n: int) -> list[float]:
    a, b = math.log10(lo), math.log10(hi)
    return [10 ** (a + (b - a) * i / (n - 1)) for i in range(n)]


def _times(devices: int) -> str:
    return f" ×{devices}" if devices > 1 else ""


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """The figure as PNG or SVG bytes, without timestamps (reproducible output).

    PNGs are reduced to a 256-colour palette (flat-colour charts lose nothing visible; the files
    are about a third of the size), SVG text stays text.
    """
    import matplotlib

    buf = io.BytesIO()
    metadata: dict[str, Any] = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    with matplotlib.rc_context({"svg.hashsalt": "hetsched", "svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, metadata=metadata)
    if fmt != "png":
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(
    fig: Figure, out_dir: str | Path, name: str, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        path.write_bytes(figure_bytes(fig, fmt))
        paths.append(path)
    return paths


__all__ = [
    "PLOT_NAMES",
    "AgentsSeries",
    "AttentionSeries",
    "CostComparisonSeries",
    "MoESeries",
    "PlacementSeries",
    "RegimeMapSeries",
    "RooflineSeries",
    "agents_series",
    "attention_series",
    "figure_bytes",
    "moe_series",
    "placement_series",
    "regime_map_series",
    "render_agents",
    "render_attention",
    "render_cost_comparison",
    "render_moe",
    "render_placement",
    "render_regime_map",
    "render_roofline",
    "roofline_series",
    "save_figure",
]
