"""The ``status`` of AgentWorkload and AcceleratorProfile: pydantic models (the CRD's status schema
is generated from them) and pure helpers for Kubernetes-style conditions.

AgentWorkload conditions:

* ``Estimated`` — the spec resolved (model, agent, precision) and the OI/CF estimate ran;
* ``Placed`` — every phase has a pool, TP, batch and replica count;
* ``Ready`` — the child Deployments have all their replicas available;
* ``Degraded`` — the spec is invalid, the demand/SLO cannot be met on the live pools, a pool
  the placement used was lost, or the kube-scheduler has found no node for a child's pod for the
  unschedulable grace period. ``True`` means something is wrong.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_REJECTED = 24  # rejected-pool entries kept in status (per workload)
MAX_MESSAGE = 1024  # condition messages are cut here (full text in the operator log and events)


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ConditionType(StrEnum):
    ESTIMATED = "Estimated"
    PLACED = "Placed"
    READY = "Ready"
    DEGRADED = "Degraded"
    ACCEPTED = "Accepted"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Status):
    """A Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=64)
    status: ConditionStatus
    reason: str = Field(max_length=128, description="CamelCase reason")
    message: str = Field(default="", max_length=MAX_MESSAGE)
    last_transition_time: str = Field(max_length=64, description="RFC 3339")
    observed_generation: int | None = Field(default=None, ge=0)


class RejectedPool(_Status):
    pool: str = Field(max_length=253)
    phase: str = Field(max_length=16, description="prefill, decode or colocated")
    reason: str = Field(max_length=512)


class PhaseStatus(_Status):
    """Placement and prediction of one phase (``colocated``: both phases in one Deployment)."""

    pool: str = Field(max_length=253)
    hardware: str = Field(default="", max_length=253)
    deployment: str = Field(default="", max_length=253)
    tp: int = Field(ge=0, description="tensor-parallel degree: devices per replica")
    batch: int = Field(ge=0, description="operating batch per replica")
    max_batch: int = Field(default=0, ge=0, description="largest batch that fits per replica")
    replicas: int = Field(ge=0)
    devices: int = Field(default=0, ge=0, description="tp × replicas")
    operational_intensity: float = Field(default=0.0, description="FLOPs per DRAM byte of one step")
    ridge_point: float = Field(default=0.0, description="FLOPs per byte where the roofline turns")
    capacity_footprint_bytes: float = Field(default=0.0, description="bytes per request on the replica")
    regime: str = Field(max_length=32, description="compute-bound, bandwidth-bound or capacity-bound")
    ttft_seconds: float | None = Field(default=None, description="predicted time to first token")
    tpot_seconds: float | None = Field(default=None, description="predicted time per output token")
    tokens_per_second: float = Field(default=0.0, description="predicted tokens/s of all replicas")
    dollars_per_million_tokens: float | None = None
    price_per_hour: float | None = Field(default=None, description="all replicas, USD per hour")


class AgentWorkloadStatus(_Status):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    mode: str | None = Field(default=None, max_length=16, description="disaggregated or colocated")
    model: str | None = Field(default=None, max_length=253, description="resolved model name")
    agent: str | None = Field(default=None, max_length=63)
    prefill: PhaseStatus | None = None
    decode: PhaseStatus | None = None
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    tokens_per_second: float | None = Field(default=None, description="predicted output tokens/s")
    dollars_per_million_tokens: float | None = None
    rejected_pools: list[RejectedPool] = Field(default_factory=list, max_length=MAX_REJECTED)
    pools_fingerprint: str | None = Field(default=None, max_length=64)
    last_plan_time: str | None = Field(default=None, max_length=64)


class AcceleratorProfileStatus(_Status):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=4)
    hardware: str | None = Field(default=None, max_length=253, description="resolved hardware name")
    price_per_device_hour: float | None = None


# ---- conditions --------------------------------------------------------------------------------


def now_rfc3339(now: dt.datetime | None = None) -> str:
    t = now or dt.datetime.now(dt.UTC)
    return t.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set; ``lastTransitionTime`` changes only when the status does."""
    value = (
        ConditionStatus.UNKNOWN
        if status is None
        else (ConditionStatus.TRUE if status else ConditionStatus.FALSE)
    )
    out: list[dict[str, Any]] = []
    found = False
    stamp = now or now_rfc3339()
    for cond in conditions:
        c = dict(cond)
        if c.get("type") == type_:
            found = True
            transition = c.get("lastTransitionTime") if c.get("status") == value.value else None
            c = {
                "type": type_,
                "status": value.value,
                "reason": reason,
                "message": _clip(message),
                "lastTransitionTime": transition or stamp,
            }
            if generation is not None:
                c["observedGeneration"] = generation
        out.append(c)
    if not found:
        c = {
            "type": type_,
            "status": value.value,
            "reason": reason,
            "message": _clip(message),
            "lastTransitionTime": stamp,
        }
        if generation is not None:
            c["observedGeneration"] = generation
        out.append(c)
    order = {t.value: i for i, t in enumerate(ConditionType)}
    out.sort(key=lambda c: order.get(str(c.get("type")), len(order)))
    return out


def get_condition(conditions: Iterable[Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_`` in a ``status.conditions`` list (of any object), or None."""
    for cond in conditions or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def round_sig(x: float | None, digits: int = 5) -> float | None:
    """Round to significant digits, so that re-planning to the same result writes nothing.

    Non-finite values (an infinite TTFT of an infeasible phase) become None: JSON has no infinity.
    """
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return float(f"{x:.{digits}g}")
