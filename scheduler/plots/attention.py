"""Attention kinds (the paper's Figure 3): CF against context length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.plots._figure import (
    PALETTE,
    figure,
)
from hetsched.scheduler.units import GB, fmt_tokens

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    fig, ax = figure(8.0, 5.2)
    colors = {"mha": "#cc0000", "gqa": "#e69138", "mqa": "#bf9000", "mla": "#3c78d8"}
    xs = list(series.contexts)
    for i, line in enumerate(series.lines):
        color = colors.get(line.attention, PALETTE[i % len(PALETTE)])
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
