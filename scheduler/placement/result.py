"""What the planner returns: per workload and phase, where it runs and why other pools were not used.

``Plan.to_dict()`` is the JSON of ``hetsched plan -o json`` (docs/placement.md has the schema):
``{"workloads": [{"name", "mode", "phases": {"prefill": {...}, "decode": {...}}, ...}],
"total_cost_per_hour": ...}``. Costs per million tokens are per million *output* tokens at the
workload's demand (the prefill phase's figure is its share of that cost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hetsched.scheduler.placement.options import Rejection


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A change that was re-estimated: would the workload then be placed, and at what cost."""

    action: str  # kv-cache-fp8, weights-fp8, lower-context, relax-slo, add-devices, bigger-nodes
    detail: str
    feasible: bool  # the re-run places it within the capacity left by the other workloads
    cost_per_hour: float | None = None
    changes: dict[str, Any] = field(default_factory=dict)  # spec fields (camelCase paths) or pools

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "detail": self.detail,
            "feasible": self.feasible,
            "cost_per_hour": self.cost_per_hour,
            "changes": dict(self.changes),
        }


@dataclass(frozen=True, slots=True)
class PhasePlacement:
    """One phase of a workload: its pool (None when the workload is not placed) and settings."""

    phase: str  # "prefill" | "decode"
    pool: str | None
    hardware: str | None = None
    tp: int | None = None
    batch: int | None = None
    replicas: int | None = None
    devices: int = 0
    regime: str | None = None
    step_seconds: float | None = None
    ttft_seconds: float | None = None  # prefill only (includes KV transfer when disaggregated)
    tpot_seconds: float | None = None  # decode only
    kv_transfer_seconds: float | None = None  # prefill only, disaggregated
    cost_per_hour: float = 0.0
    cost_per_million_tokens: float | None = None
    shared_replicas: bool = False  # colocated: the same replicas serve both phases (cost counted once)
    node_selector: dict[str, str] = field(default_factory=dict)
    rejected: tuple[Rejection, ...] = ()
    #: On a CPU (calibrated): the held-out median |predicted/measured − 1| of this phase's figure
    #: (TTFT for prefill, TPOT for decode), from the CPU fit's leave-one-shape-out validation
    #: (``efficiency.CPU_ERROR_BAND``); None elsewhere.
    error_band: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "pool": self.pool,
            "hardware": self.hardware,
            "tp": self.tp,
            "batch": self.batch,
            "replicas": self.replicas,
            "devices": self.devices,
            "regime": self.regime,
            "step_seconds": self.step_seconds,
        }
        if self.phase == "prefill":
            d["ttft_seconds"] = self.ttft_seconds
            d["kv_transfer_seconds"] = self.kv_transfer_seconds
        else:
            d["tpot_seconds"] = self.tpot_seconds
        d["error_band"] = self.error_band
        d.update(
            cost_per_hour=self.cost_per_hour,
            cost_per_million_tokens=self.cost_per_million_tokens,
            shared_replicas=self.shared_replicas,
            node_selector=dict(self.node_selector),
            rejected=[r.to_dict() for r in self.rejected],
        )
        return d


@dataclass(frozen=True, slots=True)
class WorkloadPlacement:
    name: str
    namespace: str
    model: str
    agent: str
    mode: str | None  # "colocated" | "disaggregated" | None (not placed)
    prefill: PhasePlacement
    decode: PhasePlacement
    requests_per_second: float | None = None  # λ served (demand, or derived from sessions)
    concurrent_sessions: int | None = None
    concurrency: int | None = None  # disaggregated: requests in flight the TTFT (queueing) assumes
    max_model_len: int = 0  # C + P + O: what memory is sized for
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    output_tokens_per_second: float | None = None  # λ · O
    cost_per_hour: float = 0.0
    cost_per_million_tokens: float | None = None
    reason: str | None = None  # not placed: the machine-readable reason
    detail: str | None = None
    closest_miss: Rejection | None = None
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def placed(self) -> bool:
        return self.mode is not None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "model": self.model,
            "agent": self.agent,
            "mode": self.mode,
            "feasible": self.placed,
            "requests_per_second": self.requests_per_second,
            "concurrent_sessions": self.concurrent_sessions,
            "requests_in_flight": self.concurrency,
            "max_model_len": self.max_model_len,
            "ttft_seconds": self.ttft_seconds,
            "tpot_seconds": self.tpot_seconds,
            "output_tokens_per_second": self.output_tokens_per_second,
            "cost_per_hour": self.cost_per_hour,
            "cost_per_million_tokens": self.cost_per_million_tokens,
            "phases": {"prefill": self.prefill.to_dict(), "decode": self.decode.to_dict()},
        }
        if not self.placed:
            miss = self.closest_miss
            d["infeasible"] = {
                "reason": self.reason,
                "detail": self.detail,
                "closest_miss": None
                if miss is None
                else {
                    "pool": miss.pool,
                    "phase": miss.kind,
                    "reason": miss.reason.value,
                    "detail": miss.detail,
                },
                "suggestions": [s.to_dict() for s in self.suggestions],
            }
        return d


@dataclass(frozen=True, slots=True)
class PoolUsage:
    name: str
    hardware: str
    free_devices: int
    used_devices: int
    price_per_device_hour: float

    @property
    def cost_per_hour(self) -> float:
        return self.used_devices * self.price_per_device_hour

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hardware": self.hardware,
            "free_devices": self.free_devices,
            "used_devices": self.used_devices,
            "price_per_device_hour": self.price_per_device_hour,
            "cost_per_hour": self.cost_per_hour,
        }


@dataclass(frozen=True, slots=True)
class SolverReport:
    method: str  # independent | milp | greedy
    status: str
    optimal: bool
    workloads: int
    options: int  # after pruning, offered to the solver
    options_generated: int
    candidates_evaluated: int
    candidate_seconds: float
    solve_seconds: float
    greedy_cost_per_hour: float | None = None
    greedy_gap: float | None = None  # (greedy − chosen) / chosen; None: greedy placed fewer
    milp_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "status": self.status,
            "optimal": self.optimal,
            "workloads": self.workloads,
            "options": self.options,
            "options_generated": self.options_generated,
            "candidates_evaluated": self.candidates_evaluated,
            "candidate_seconds": self.candidate_seconds,
            "solve_seconds": self.solve_seconds,
            "milp_seconds": self.milp_seconds,
            "greedy_cost_per_hour": self.greedy_cost_per_hour,
            "greedy_gap": self.greedy_gap,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    workloads: tuple[WorkloadPlacement, ...]
    pools: tuple[PoolUsage, ...]
    solver: SolverReport
    unavailable_pools: tuple[Rejection, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def total_cost_per_hour(self) -> float:
        return sum(w.cost_per_hour for w in self.workloads)

    @property
    def placed(self) -> int:
        return sum(w.placed for w in self.workloads)

    def workload(self, name: str, namespace: str | None = None) -> WorkloadPlacement:
        for w in self.workloads:
            if w.name == name and (namespace is None or w.namespace == namespace):
                return w
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workloads": [w.to_dict() for w in self.workloads],
            "total_cost_per_hour": self.total_cost_per_hour,
            "placed": self.placed,
            "unplaced": len(self.workloads) - self.placed,
            "pools": [p.to_dict() for p in self.pools],
            "unavailable_pools": [r.to_dict() for r in self.unavailable_pools],
            "solver": self.solver.to_dict(),
            "warnings": list(self.warnings),
        }
