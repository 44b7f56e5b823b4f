"""Dense against MoE (the paper's Figure 4): CF at batch 1 and 16, decode OI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.plots._figure import (
    figure_row,
)
from hetsched.scheduler.units import GB, fmt_tokens

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    fig, axes = figure_row(n_b + 1, 4.6 * (n_b + 1), 5.0)
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
