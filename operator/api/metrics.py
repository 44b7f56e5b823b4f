"""Prometheus metrics of the operator, on its own registry (served at ``/metrics``).

Workload and pool gauges are produced at scrape time from the shared :class:`OperatorState`
snapshot (a custom collector), so they always equal the status that was last patched and the
series of a deleted workload disappear with it. Reconcile counters and the duration histogram are
ordinary prometheus-client objects. Labels are bounded: namespace, name, phase, pool, regime,
condition (the four AgentWorkload condition types), status (True/False/Unknown), result.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from typing import Any

from hetsched.operator.api.state import OperatorState
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGIMES = ("compute-bound", "bandwidth-bound", "capacity-bound")
CONDITIONS = ("Estimated", "Placed", "Ready", "Degraded")
CONDITION_STATUSES = ("True", "False", "Unknown")
RESULTS = ("placed", "unchanged", "infeasible", "invalid", "waiting", "error", "conflict", "rejected")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def condition_statuses(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(condition type, status) of each AgentWorkload condition; a missing or malformed one is
    ``Unknown`` (the Kubernetes reading of an absent condition)."""
    current: dict[str, str] = {}
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("status") in CONDITION_STATUSES:
            current[str(cond.get("type"))] = str(cond["status"])
    return [(c, current.get(c, "Unknown")) for c in CONDITIONS]


def phases_of(status: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(phase label, phase status) pairs: ``prefill`` and ``decode`` (also when colocated)."""
    out = []
    for phase in ("prefill", "decode"):
        ph = status.get(phase)
        if isinstance(ph, Mapping) and ph.get("pool"):
            out.append((phase, ph))
    return out


class StateCollector(Collector):
    """Gauges derived from the state snapshot at each scrape."""

    def __init__(self, state: OperatorState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # values come at collect time; no duplicate-name check needed

    def collect(self) -> Iterator[Metric]:
        snap = self.state.snapshot()
        phase_labels = ["namespace", "name", "phase", "pool"]
        oi = GaugeMetricFamily(
            "hetsched_phase_operational_intensity_flops_per_byte",
            "Operational intensity of one step of the phase at its operating batch (FLOPs per DRAM byte)",
            labels=phase_labels,
        )
        ridge = GaugeMetricFamily(
            "hetsched_phase_ridge_point_flops_per_byte",
            "Ridge point of the roofline of the phase's hardware at its precision: the operational "
            "intensity above which a step is compute-bound (FLOPs per DRAM byte)",
            labels=phase_labels,
        )
        cf = GaugeMetricFamily(
            "hetsched_phase_capacity_footprint_bytes",
            "Capacity footprint per request of the phase on its replica (bytes)",
            labels=phase_labels,
        )
        regime = GaugeMetricFamily(
            "hetsched_phase_regime",
            "Roofline regime of the phase: 1 for the current regime, 0 for the others",
            labels=[*phase_labels, "regime"],
        )
        tps = GaugeMetricFamily(
            "hetsched_phase_predicted_tokens_per_second",
            "Predicted tokens per second of all replicas of the phase (prompt tokens for prefill)",
            labels=phase_labels,
        )
        ttft = GaugeMetricFamily(
            "hetsched_phase_predicted_ttft_seconds",
            "Predicted time to first token (seconds)",
            labels=phase_labels,
        )
        tpot = GaugeMetricFamily(
            "hetsched_phase_predicted_tpot_seconds",
            "Predicted time per output token (seconds)",
            labels=phase_labels,
        )
        replicas = GaugeMetricFamily(
            "hetsched_phase_replicas", "Replicas the plan gives the phase", labels=phase_labels
        )
        tp = GaugeMetricFamily(
            "hetsched_phase_tensor_parallel",
            "Devices per replica (tensor-parallel degree)",
            labels=phase_labels,
        )
        cost = GaugeMetricFamily(
            "hetsched_workload_cost_dollars_per_million_tokens",
            "Predicted serving cost of the workload (USD per million output tokens)",
            labels=["namespace", "name"],
        )
        slo_ttft = GaugeMetricFamily(
            "hetsched_workload_slo_ttft_seconds",
            "Time-to-first-token SLO of the workload (spec.slo.ttftSeconds)",
            labels=["namespace", "name"],
        )
        slo_tpot = GaugeMetricFamily(
            "hetsched_workload_slo_tpot_seconds",
            "Time-per-output-token SLO of the workload (spec.slo.tpotSeconds)",
            labels=["namespace", "name"],
        )
        condition = GaugeMetricFamily(
            "hetsched_workload_condition",
            "Current status (True, False or Unknown) of each condition of the workload "
            "(Estimated, Placed, Ready, Degraded): one series per condition, always 1",
            labels=["namespace", "name", "condition", "status"],
        )
        for (ns, name), status in sorted(snap.workloads.items()):
            for phase, ph in phases_of(status):
                lv = [ns, name, phase, str(ph["pool"])]
                oi.add_metric(lv, float(ph.get("operationalIntensity") or 0.0))
                if ph.get("ridgePoint") is not None:
                    ridge.add_metric(lv, float(ph["ridgePoint"]))
                cf.add_metric(lv, float(ph.get("capacityFootprintBytes") or 0.0))
                current = str(ph.get("regime") or "")
                for r in REGIMES:
                    regime.add_metric([*lv, r], 1.0 if r == current else 0.0)
                tps.add_metric(lv, float(ph.get("tokensPerSecond") or 0.0))
                if ph.get("ttftSeconds") is not None:
                    ttft.add_metric(lv, float(ph["ttftSeconds"]))
                if ph.get("tpotSeconds") is not None:
                    tpot.add_metric(lv, float(ph["tpotSeconds"]))
                replicas.add_metric(lv, float(ph.get("replicas") or 0))
                tp.add_metric(lv, float(ph.get("tp") or 0))
            if status.get("dollarsPerMillionTokens") is not None:
                cost.add_metric([ns, name], float(status["dollarsPerMillionTokens"]))
            for cond, value in condition_statuses(status):
                condition.add_metric([ns, name, cond, value], 1.0)
            slo = snap.slos.get((ns, name))
            if slo is not None:
                slo_ttft.add_metric([ns, name], slo.ttft_seconds)
                slo_tpot.add_metric([ns, name], slo.tpot_seconds)
        yield from (oi, ridge, cf, regime, tps, ttft, tpot, replicas, tp, cost, slo_ttft, slo_tpot, condition)

        total = GaugeMetricFamily("hetsched_pool_devices", "Usable devices of the pool", labels=["pool"])
        allocated = GaugeMetricFamily(
            "hetsched_pool_devices_allocated", "Devices of the pool the placed workloads use", labels=["pool"]
        )
        memory = GaugeMetricFamily(
            "hetsched_pool_memory_bytes",
            "Device memory of the pool's usable devices (CPU pools: node memory), bytes",
            labels=["pool"],
        )
        nodes = GaugeMetricFamily(
            "hetsched_pool_nodes", "Ready, schedulable nodes of the pool", labels=["pool"]
        )
        used = snap.allocated()
        for view in snap.pools:
            name = view.pool.name
            total.add_metric([name], float(view.pool.devices))
            allocated.add_metric([name], float(used.get(name, 0)))
            memory.add_metric([name], float(view.memory_bytes))
            nodes.add_metric([name], float(view.pool.nodes))
        yield from (total, allocated, memory, nodes)


class Metrics:
    """The registry and the instruments the reconciler updates."""

    def __init__(self, state: OperatorState) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(state))
        self.reconcile_total = Counter(
            "hetsched_reconcile",
            "Reconciliations of AgentWorkloads by result",
            labelnames=["result"],
            registry=self.registry,
        )
        for result in RESULTS:
            self.reconcile_total.labels(result=result)  # export zeros from the start
        self.reconcile_duration = Histogram(
            "hetsched_reconcile_duration_seconds",
            "Time to reconcile one AgentWorkload (plan, children, status)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.plan_duration = Histogram(
            "hetsched_plan_duration_seconds",
            "Time to plan all workloads together on the live pools",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        build = Gauge(
            "hetsched_build_info",
            "hetsched build information (always 1)",
            labelnames=["version", "python", "kopf"],
            registry=self.registry,
        )
        build.labels(
            version=_version("hetsched"), python=platform.python_version(), kopf=_version("kopf")
        ).set(1)

    def count(self, result: str) -> None:
        self.reconcile_total.labels(result=result).inc()
