"""Agents (the paper's Figure 2): tokens, CF against one device's capacity, decode OI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hetsched.scheduler.catalog.agents import AgentProfile
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.roofline import (
    DEFAULT_MEMORY_UTILIZATION,
)
from hetsched.scheduler.plots._figure import (
    figure_row,
)
from hetsched.scheduler.units import GB, fmt_tokens

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    fig, axes = figure_row(3, 13.5, 5.2)
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
