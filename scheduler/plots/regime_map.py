"""Regime map (the paper's Figure 1): OI against memory per device, regions for one hardware."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.estimator.roofline import (
    DEFAULT_MEMORY_UTILIZATION,
    Regime,
    evaluate,
    max_batch_that_fits,
)
from hetsched.scheduler.plots._figure import (
    figure,
    times,
)
from hetsched.scheduler.plots.roofline import BLOCKS, block_operational_intensity
from hetsched.scheduler.units import GB, fmt_tokens

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    fig, ax = figure(11.5, 6.2)
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
        f"{series.hardware}{times(series.devices)}: {cap:.0f} GB usable per device",
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
        f"Regime map (paper Fig. 1): {series.model} on {series.hardware}{times(series.devices)}",
        fontsize=10,
        pad=16,
    )
    fig.tight_layout()
    return fig
