"""Placement: pools as columns, devices used per workload phase vs free, $/h; and the cost of a
plan against baselines (the report's comparison).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.plots._figure import (
    PALETTE,
    figure,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    fig, ax = figure(max(6.5, 1.5 * len(series.columns) + 3.5), 5.4)
    idx = list(range(len(series.columns)))
    keys: list[tuple[str, str]] = []
    for col in series.columns:
        for s in col.segments:
            if (s.workload, s.phase) not in keys:
                keys.append((s.workload, s.phase))
    colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}
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
    fig, ax = figure(max(7.0, 1.6 * len(groups) + 3.0), 4.6)
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
