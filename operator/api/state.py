"""What the operator knows, shared between the Kopf event loop and the HTTP thread.

The Kopf side writes (pools after each observation, a workload's status after each patch); the
HTTP side (``/metrics``, ``/v1/*``) reads immutable snapshots. A single ``threading.Lock`` guards
the swap; readers never see a half-written update and never block the event loop for long.

``/metrics`` and ``/v1/workloads`` render the very status dicts that were patched to the API
server, so they report the same numbers as ``kubectl get aw -o yaml``. Beside each status the
state keeps the SLO of the spec it was planned for (``/metrics`` exports it next to the predicted
latencies).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hetsched.scheduler.nodes import LivePool


@dataclass(frozen=True, slots=True)
class PoolView:
    """A live pool with what the planner knows about it."""

    pool: LivePool
    hardware: str | None  # resolved hardware name (None: unknown hardware, pool unusable)
    hardware_source: str  # "AcceleratorProfile/<name>", "catalog (label)", "catalog (GPU product)", ...
    device_memory_bytes: float
    price_per_device_hour: float | None
    problem: str = ""  # why the pool is unusable, if it is
    held_outside: int = 0  # devices held by pods outside the operator's namespaces

    def to_dict(self, allocated: int) -> dict[str, Any]:
        d: dict[str, Any] = self.pool.to_dict()
        d.update(
            hardware=self.hardware,
            hardwareSource=self.hardware_source,
            deviceMemoryBytes=self.device_memory_bytes,
            memoryBytes=self.memory_bytes,
            pricePerDeviceHour=self.price_per_device_hour,
            devicesAllocated=allocated,
            devicesHeldOutside=self.held_outside,
            devicesFree=max(0, self.pool.devices - self.held_outside - allocated),
        )
        if self.problem:
            d["problem"] = self.problem
        return d

    @property
    def memory_bytes(self) -> float:
        """Device memory of the pool's usable devices (CPU pools: the nodes' allocatable memory)."""
        if self.device_memory_bytes > 0:
            return float(self.pool.devices * self.device_memory_bytes)
        return float(self.pool.memory_bytes)


@dataclass(frozen=True, slots=True)
class Slo:
    """``spec.slo`` of a workload the operator planned."""

    ttft_seconds: float
    tpot_seconds: float

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Slo | None:
        """The SLO of a spec as the API server returned it (None when it has none)."""
        slo = spec.get("slo")
        if not isinstance(slo, Mapping):
            return None
        try:
            return cls(float(slo["ttftSeconds"]), float(slo["tpotSeconds"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    pools: tuple[PoolView, ...] = ()
    pools_fingerprint: str = ""
    workloads: Mapping[tuple[str, str], Mapping[str, Any]] = field(
        default_factory=dict
    )  # (ns, name) → status
    taken_at: float = 0.0
    slos: Mapping[tuple[str, str], Slo] = field(default_factory=dict)  # (ns, name) → SLO, if planned

    def allocated(self) -> dict[str, int]:
        """Devices per pool used by the placed workloads (the planner's view: tp × replicas)."""
        out: dict[str, int] = {}
        for status in self.workloads.values():
            for phase in ("prefill", "decode"):
                ph = status.get(phase)
                if not isinstance(ph, Mapping) or not ph.get("pool"):
                    continue
                if phase == "decode" and status.get("mode") == "colocated":
                    continue  # one Deployment serves both phases
                out[ph["pool"]] = out.get(ph["pool"], 0) + int(ph.get("devices") or 0)
        return out


class OperatorState:
    """Thread-safe holder of the latest snapshot plus liveness/readiness flags."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._workloads: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._slos: dict[tuple[str, str], Slo] = {}
        self.started = threading.Event()  # Kopf's startup handler ran
        self.pools_observed = threading.Event()  # the node index was read at least once
        self.planner: Any = None  # set by the operator: what-if planning for the HTTP API

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def set_pools(self, pools: tuple[PoolView, ...], fingerprint: str) -> None:
        with self._lock:
            s = self._snapshot
            self._snapshot = Snapshot(pools, fingerprint, s.workloads, time.time(), s.slos)
        self.pools_observed.set()

    def set_workload(
        self, namespace: str, name: str, status: Mapping[str, Any], slo: Slo | None = None
    ) -> None:
        """The status last written; ``slo``: the SLO of the spec it was planned for (None: the spec
        was not planned, e.g. invalid, and no SLO is reported)."""
        key = (namespace, name)
        with self._lock:
            self._workloads[key] = MappingProxyType(dict(status))
            if slo is None:
                self._slos.pop(key, None)
            else:
                self._slos[key] = slo
            self._publish()

    def drop_workload(self, namespace: str, name: str) -> None:
        with self._lock:
            self._slos.pop((namespace, name), None)
            if self._workloads.pop((namespace, name), None) is not None:
                self._publish()

    def _publish(self) -> None:
        s = self._snapshot
        self._snapshot = Snapshot(
            s.pools,
            s.pools_fingerprint,
            MappingProxyType(dict(self._workloads)),
            time.time(),
            MappingProxyType(dict(self._slos)),
        )

    @property
    def ready(self) -> bool:
        return self.started.is_set() and self.pools_observed.is_set()
