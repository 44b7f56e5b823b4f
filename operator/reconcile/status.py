"""The ``status`` of AgentWorkload and AcceleratorProfile: pydantic models (the CRD's status schema
is generated from them), pure helpers for Kubernetes-style conditions, and a workload's status
built from its plan and its children (:func:`placed_status`, :func:`unplaced_status`,
:func:`problem_status`), the minimal patch to write, and the Events a change is worth.

AgentWorkload conditions:

* ``Estimated`` — the spec resolved (model, agent, precision) and the OI/CF estimate ran;
* ``Placed`` — every phase has a pool, TP, batch and replica count;
* ``Ready`` — the child Deployments have all their replicas available;
* ``Degraded`` — the spec is invalid, the demand/SLO cannot be met on the live pools, a pool
  the placement used was lost, a child's name is held by an object the workload does not control
  (``ChildConflict``), the API server refused a child (``ChildRejected``), or the kube-scheduler
  has found no node for a child's pod for the unschedulable grace period. ``True`` means something
  is wrong.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.endpoint import endpoint_url
from hetsched.scheduler.units import GIB
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from hetsched.operator.planning.plans import PhasePlan, WorkloadPlan

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
    endpoint: str | None = Field(
        default=None,
        max_length=512,
        description="OpenAI-compatible base URL of the workload's Service (http://<name>.<namespace>.svc:8000/v1)",
    )
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
    model_config_hash: str | None = Field(
        default=None, max_length=64, description="hash of the model ConfigMap's config the plan used"
    )


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


# ---- conditions from the plan and the children ---------------------------------------------------
UNSCHEDULABLE = "Unschedulable"
CHILD_CONFLICT = "ChildConflict"  # a child's name is held by an object the workload does not control
CHILD_REJECTED = "ChildRejected"  # the API server refused a child's write


def camel(reason: str | None) -> str:
    """``no-free-devices`` → ``NoFreeDevices`` (condition reasons are CamelCase)."""
    if not reason:
        return "Unknown"
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", reason) if p)


def degraded_event(
    previous: Mapping[str, Any] | None, degraded: tuple[str, str] | None
) -> tuple[str, str, str] | None:
    """The Warning to post when a placed workload becomes Degraded (``degraded``: reason, message):
    once, not per reconcile. A new refusal or conflict message is a new Event; a new message of the
    same unschedulable pod is not (the scheduler's counts change as pods come and go)."""
    if degraded is None:
        return None
    reason, message = degraded
    for c in (previous or {}).get("conditions") or ():
        same = c.get("type") == "Degraded" and c.get("status") == "True" and c.get("reason") == reason
        if same and (reason == UNSCHEDULABLE or c.get("message") == _clip(message)):
            return None
    return "Warning", reason, message


def _phase_status(p: PhasePlan, deployment: str) -> dict[str, Any]:
    return {
        "pool": p.pool,
        "hardware": p.hardware,
        "deployment": deployment,
        "tp": p.tp,
        "batch": p.batch,
        "maxBatch": p.max_batch,
        "replicas": p.replicas,
        "devices": p.devices,
        "operationalIntensity": round_sig(p.operational_intensity),
        "ridgePoint": round_sig(p.ridge_point),
        "capacityFootprintBytes": round_sig(p.capacity_footprint_bytes),
        "regime": p.regime,
        "ttftSeconds": round_sig(p.ttft_seconds),
        "tpotSeconds": round_sig(p.tpot_seconds),
        "tokensPerSecond": round_sig(p.tokens_per_second),
        "dollarsPerMillionTokens": round_sig(p.dollars_per_million_tokens),
        "pricePerHour": round_sig(p.cost_per_hour),
    }


def _estimate_message(plan: WorkloadPlan) -> str:
    parts = []
    for p in (plan.prefill, plan.decode):
        if p is not None:
            parts.append(
                f"{p.phase}: OI {p.operational_intensity:.3g} FLOP/B (ridge {p.ridge_point:.3g}), "
                f"CF {p.capacity_footprint_bytes / GIB:.3g} GiB/request, {p.regime}"
            )
    return "; ".join(parts) or f"model {plan.model}, agent {plan.agent}"


def _base(previous: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [dict(c) for c in (previous or {}).get("conditions") or []]


def _clean(status: dict[str, Any]) -> dict[str, Any]:
    """Validated against the status model (so the CRD schema will not prune anything)."""
    AgentWorkloadStatus.model_validate(status)
    return status


def placed_status(
    plan: WorkloadPlan,
    generation: int,
    previous: Mapping[str, Any] | None,
    ready: tuple[bool, str],
    *,
    namespace_name: tuple[str, str],
    degraded: tuple[str, str] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Status of a workload whose plan placed it (``ready``: its Deployments' availability;
    ``degraded``: (reason, message) of what keeps the children from being as planned — a
    conflict, a refused write, a pod the scheduler finds no node for — or of a model config that
    went away or turned invalid while the placement stays)."""
    now = now or now_rfc3339()
    name = namespace_name[1]
    conds = _base(previous)
    conds = set_condition(
        conds,
        ConditionType.ESTIMATED,
        True,
        "Estimated",
        _estimate_message(plan),
        generation=generation,
        now=now,
    )
    conds = set_condition(
        conds, ConditionType.PLACED, True, "Placed", plan.describe(), generation=generation, now=now
    )
    if degraded is not None and degraded[0] in (CHILD_CONFLICT, CHILD_REJECTED):
        # The children are not what the plan asks for: not Ready, whatever runs.
        ready = (False, degraded[1])
        ready_reason = degraded[0]
    else:
        ready_reason = "Available" if ready[0] else "Progressing"
    conds = set_condition(
        conds, ConditionType.READY, ready[0], ready_reason, ready[1], generation=generation, now=now
    )
    if degraded is not None:
        conds = set_condition(
            conds, ConditionType.DEGRADED, True, degraded[0], degraded[1], generation=generation, now=now
        )
    else:
        conds = set_condition(
            conds, ConditionType.DEGRADED, False, "AsPlanned", "", generation=generation, now=now
        )
    assert plan.prefill is not None and plan.decode is not None
    if plan.mode == "colocated":
        pre = _phase_status(plan.prefill, manifests.child_name(name, "colocated"))
        dec = _phase_status(plan.decode, manifests.child_name(name, "colocated"))
    else:
        pre = _phase_status(plan.prefill, manifests.child_name(name, "prefill"))
        dec = _phase_status(plan.decode, manifests.child_name(name, "decode"))
    status = {
        "observedGeneration": generation,
        "conditions": conds,
        "mode": plan.mode,
        "endpoint": endpoint_url(name, namespace_name[0]),
        "model": plan.model,
        "agent": plan.agent,
        "prefill": pre,
        "decode": dec,
        "ttftSeconds": round_sig(plan.ttft_seconds),
        "tpotSeconds": round_sig(plan.tpot_seconds),
        "tokensPerSecond": round_sig(plan.output_tokens_per_second),
        "dollarsPerMillionTokens": round_sig(plan.dollars_per_million_tokens),
        "rejectedPools": _rejected(plan),
        "poolsFingerprint": plan.pools_fingerprint,
        "lastPlanTime": _keep_time(previous, plan, now),
        "modelConfigHash": plan.revision or None,
    }
    return _clean(status)


def unplaced_status(
    plan: WorkloadPlan, generation: int, previous: Mapping[str, Any] | None, *, now: str | None = None
) -> dict[str, Any]:
    """Status of a valid workload that cannot be placed on the live pools (Degraded)."""
    now = now or now_rfc3339()
    reason = camel(plan.reason)
    message = plan.message
    if plan.suggestions:
        message += " — would work: " + "; ".join(plan.suggestions)
    conds = _base(previous)
    conds = set_condition(
        conds,
        ConditionType.ESTIMATED,
        True,
        "Estimated",
        _estimate_message(plan),
        generation=generation,
        now=now,
    )
    conds = set_condition(conds, ConditionType.PLACED, False, reason, message, generation=generation, now=now)
    conds = set_condition(
        conds, ConditionType.READY, False, "NotPlaced", "no placement", generation=generation, now=now
    )
    conds = set_condition(
        conds, ConditionType.DEGRADED, True, "Infeasible", message, generation=generation, now=now
    )
    status = {
        "observedGeneration": generation,
        "conditions": conds,
        "mode": None,
        "endpoint": None,
        "model": plan.model,
        "agent": plan.agent,
        "prefill": None,
        "decode": None,
        "ttftSeconds": None,
        "tpotSeconds": None,
        "tokensPerSecond": None,
        "dollarsPerMillionTokens": None,
        "rejectedPools": _rejected(plan),
        "poolsFingerprint": plan.pools_fingerprint,
        "lastPlanTime": _keep_time(previous, plan, now),
    }
    return _clean(status)


def problem_status(
    generation: int,
    previous: Mapping[str, Any] | None,
    reason: str,
    message: str,
    *,
    estimated: bool | None = False,
    now: str | None = None,
) -> dict[str, Any]:
    """Status of a workload that could not be estimated: an invalid spec, a missing ConfigMap."""
    now = now or now_rfc3339()
    conds = _base(previous)
    conds = set_condition(
        conds, ConditionType.ESTIMATED, estimated, reason, message, generation=generation, now=now
    )
    conds = set_condition(conds, ConditionType.PLACED, False, reason, message, generation=generation, now=now)
    conds = set_condition(
        conds, ConditionType.READY, False, reason, "not placed", generation=generation, now=now
    )
    conds = set_condition(
        conds, ConditionType.DEGRADED, True, reason, message, generation=generation, now=now
    )
    status = {
        "observedGeneration": generation,
        "conditions": conds,
        "mode": None,
        "endpoint": None,
        "prefill": None,
        "decode": None,
        "ttftSeconds": None,
        "tpotSeconds": None,
        "tokensPerSecond": None,
        "dollarsPerMillionTokens": None,
        "rejectedPools": [],
    }
    return _clean(status)


def _rejected(plan: WorkloadPlan) -> list[dict[str, str]]:
    return [
        {"pool": pool, "phase": phase, "reason": reason[:512]}
        for pool, phase, reason in plan.rejected[:MAX_REJECTED]
    ]


def _keep_time(previous: Mapping[str, Any] | None, plan: WorkloadPlan, now: str) -> str:
    """``lastPlanTime`` moves only when the placement changes (else every resync would write)."""
    prev = previous or {}
    if prev.get("lastPlanTime") and prev.get("poolsFingerprint") == plan.pools_fingerprint:
        return str(prev["lastPlanTime"])
    return now


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning ``old`` into ``new`` (None: nothing to change).

    Keys of ``old`` missing from ``new`` are set to None (merge-patch deletion); nested objects
    are replaced wholesale so that no stale key survives.
    """
    old = comparable(old)
    stored = comparable(new)
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if old.get(key) != stored.get(key):
            patch[key] = value
    for key in old:
        if key not in new and old[key] is not None and not key.startswith("kopf"):
            patch[key] = None
    for key in ("prefill", "decode"):
        if key in patch and isinstance(patch[key], dict) and isinstance(old.get(key), dict):
            # Null out keys the new phase status does not have (merge patch merges nested maps).
            stale = {k: None for k in old[key] if k not in patch[key]}
            patch[key] = {**stale, **patch[key]}
    return patch or None


def comparable(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without None values (as the API server stores it), for equality checks."""

    def strip(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: strip(v) for k, v in x.items() if v is not None}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(dict(status or {}))  # type: ignore[no-any-return]


def placement_event(
    old: Mapping[str, Any] | None, plan: WorkloadPlan, lost_pools: set[str]
) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event to post when the placement changed, else None."""
    old = old or {}
    before = {ph: (old.get(ph) or {}).get("pool") for ph in ("prefill", "decode")}
    before_mode = old.get("mode")
    if plan.placed:
        assert plan.prefill is not None and plan.decode is not None
        after = {"prefill": plan.prefill.pool, "decode": plan.decode.pool}
        same = (
            before == after
            and before_mode == plan.mode
            and all(
                (old.get(ph) or {}).get(k) == getattr(getattr(plan, ph), k)
                for ph in ("prefill", "decode")
                for k in ("tp", "replicas", "batch")
            )
        )
        if same:
            return None
        lost = sorted({p for p in before.values() if p and p in lost_pools})
        if lost:
            return "Warning", "PoolLost", f"pool {', '.join(lost)} lost; re-placed: {plan.describe()}"
        verb = "Placed" if not before_mode else "Replaced"
        return "Normal", verb, plan.describe()
    if before_mode is None and (old.get("conditions") and _placed_reason(old) == camel(plan.reason)):
        return None
    lost = sorted({p for p in before.values() if p and p in lost_pools})
    if lost:
        return (
            "Warning",
            "PoolLost",
            f"pool {', '.join(lost)} lost and no other pool can serve it: {plan.message}",
        )
    return "Warning", "Infeasible", plan.message


def _placed_reason(status: Mapping[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "Placed":
            return str(c.get("reason"))
    return None
