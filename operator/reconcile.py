"""Pure pieces of reconciliation: the status of a workload from its plan and its children, the
children it should have, and what to write or delete.

``reconciler.py`` calls these with what the Kopf indices hold and performs the writes.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hetsched.operator import manifests
from hetsched.operator.planning import PhasePlan, Registration, WorkloadPlan
from hetsched.operator.status import (
    MAX_REJECTED,
    AgentWorkloadStatus,
    ConditionType,
    get_condition,
    now_rfc3339,
    round_sig,
    set_condition,
)
from hetsched.scheduler.spec import ServingSpec
from hetsched.scheduler.units import GIB


def camel(reason: str | None) -> str:
    """``no-free-devices`` → ``NoFreeDevices`` (condition reasons are CamelCase)."""
    if not reason:
        return "Unknown"
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", reason) if p)


# ---- children ---------------------------------------------------------------------------------
def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp of the API server (``2026-11-22T19:02:48Z``) as epoch seconds: the
    latest instant it can stand for. The API server truncates condition times to whole seconds, so
    ``19:02:48Z`` means somewhere in [48, 49): reading it as 49 never lets a grace period end early."""
    if not value:
        return None
    text = str(value)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    seconds = (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    whole_seconds = "." not in text
    return seconds + 1.0 if whole_seconds else seconds


@dataclass(frozen=True, slots=True)
class ChildState:
    """A child as the Kopf index projects it."""

    kind: str
    name: str
    hash: str
    owner_uid: str
    replicas: int = 0
    generation: int = 0
    observed_generation: int = 0
    available: int = 0
    updated: int = 0
    # Deployments only: the pods' label selector (``k=v,...``), and when the rollout last made
    # progress: the ``Progressing`` condition's lastUpdateTime, which the deployment controller
    # moves only when replicas get updated, ready or available (else the creation time; epoch s).
    selector: str = ""
    progress_time: float | None = None
    progress_deadline_exceeded: bool = False

    @staticmethod
    def from_body(kind: str, body: Mapping[str, Any]) -> ChildState:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        owners = meta.get("ownerReferences") or []
        match = ((spec.get("selector") or {}).get("matchLabels") or {}) if kind == "Deployment" else {}
        progressing = get_condition(status.get("conditions"), "Progressing") or {}
        progress_time = parse_time(progressing.get("lastUpdateTime")) or parse_time(
            meta.get("creationTimestamp")
        )
        return ChildState(
            kind=kind,
            name=str(meta.get("name")),
            hash=str((meta.get("annotations") or {}).get(manifests.HASH_ANNOTATION, "")),
            owner_uid=str(owners[0].get("uid", "")) if owners else "",
            replicas=int(spec.get("replicas", 0) or 0),
            generation=int(meta.get("generation", 0) or 0),
            observed_generation=int(status.get("observedGeneration", 0) or 0),
            available=int(status.get("availableReplicas", 0) or 0),
            updated=int(status.get("updatedReplicas", 0) or 0),
            selector=",".join(f"{k}={v}" for k, v in sorted(match.items())),
            progress_time=progress_time if kind == "Deployment" else None,
            progress_deadline_exceeded=progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded",
        )

    def ready(self) -> tuple[bool, str]:
        if self.observed_generation < self.generation:
            return False, f"{self.name}: rollout not observed yet"
        if self.updated < self.replicas:
            return False, f"{self.name}: {self.updated}/{self.replicas} replicas updated"
        if self.available < self.replicas:
            return False, f"{self.name}: {self.available}/{self.replicas} replicas available"
        return True, f"{self.name}: {self.available}/{self.replicas} available"

    def stalled_for(self, now: float) -> float | None:
        """Seconds this Deployment has gone without progress while not every replica is
        available; None when it is ready (or its progress time is unknown)."""
        if self.ready()[0]:
            return None
        if self.progress_deadline_exceeded:
            return math.inf  # the controller's own verdict (progressDeadlineSeconds, 600 s)
        if self.progress_time is None:
            return None
        return max(0.0, now - self.progress_time)


def desired_children(reg: Registration, plan: WorkloadPlan) -> list[dict[str, Any]]:
    """Deployments and Services the plan asks for (ValueError: serving args that do not render)."""
    if not plan.placed:
        return []
    serving_doc = reg.spec.get("serving")
    serving = ServingSpec.model_validate(serving_doc) if serving_doc else None
    ref = manifests.WorkloadRef(
        name=reg.key[1], namespace=reg.key[0], uid=reg.uid, model=reg.model_id, serving=serving
    )
    out: list[dict[str, Any]] = manifests.children(ref, plan.deployments())
    return out


@dataclass(frozen=True, slots=True)
class Actions:
    apply: tuple[dict[str, Any], ...]
    delete: tuple[tuple[str, str], ...]  # (kind, name)


def plan_actions(
    desired: Sequence[Mapping[str, Any]],
    existing: Mapping[tuple[str, str], ChildState],
    applied: Mapping[tuple[str, str], str],
) -> Actions:
    """What to write: desired objects whose hash differs from both the index and our last write
    (or whose owner is not this workload); existing children not desired any more."""
    apply = []
    for obj in desired:
        key = (str(obj["kind"]), str(obj["metadata"]["name"]))
        want = obj["metadata"]["annotations"][manifests.HASH_ANNOTATION]
        uid = obj["metadata"]["ownerReferences"][0]["uid"]
        have = existing.get(key)
        if have is not None and have.hash == want and have.owner_uid == uid:
            continue
        if have is None and applied.get(key) == want:
            continue  # just written; the watch has not brought it back yet
        if have is not None and have.hash != want and applied.get(key) == want and have.owner_uid == uid:
            continue  # written; the index still shows the previous version
        apply.append(dict(obj))
    want_keys = {(str(o["kind"]), str(o["metadata"]["name"])) for o in desired}
    delete = tuple(sorted(k for k in existing if k not in want_keys))
    return Actions(tuple(apply), delete)


def readiness(
    plan: WorkloadPlan, desired: Sequence[Mapping[str, Any]], existing: Mapping[tuple[str, str], ChildState]
) -> tuple[bool, str]:
    deployments = [d for d in desired if d["kind"] == "Deployment"]
    if not plan.placed or not deployments:
        return False, "not placed"
    notes = []
    ok = True
    for d in deployments:
        name = d["metadata"]["name"]
        have = existing.get(("Deployment", name))
        want = d["metadata"]["annotations"][manifests.HASH_ANNOTATION]
        if have is None:
            ok = False
            notes.append(f"{name}: not created yet")
            continue
        if have.hash != want:
            ok = False
            notes.append(f"{name}: update in progress")
            continue
        ready, note = have.ready()
        ok = ok and ready
        notes.append(note)
    return ok, "; ".join(notes)


# ---- unschedulable children ------------------------------------------------------------------
UNSCHEDULABLE = "Unschedulable"


@dataclass(frozen=True, slots=True)
class PodScheduling:
    """What the unschedulable check needs of a pod: since when (epoch s) the scheduler has found
    no node for it (``PodScheduled=False``, reason ``Unschedulable``), and its message."""

    name: str
    unschedulable_since: float | None
    message: str = ""

    @staticmethod
    def from_body(body: Mapping[str, Any]) -> PodScheduling:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        cond = get_condition(status.get("conditions"), "PodScheduled") or {}
        stuck = (
            not meta.get("deletionTimestamp")
            and status.get("phase", "Pending") == "Pending"
            and cond.get("status") == "False"
            and cond.get("reason") == UNSCHEDULABLE
        )
        return PodScheduling(
            name=str(meta.get("name")),
            unschedulable_since=parse_time(cond.get("lastTransitionTime")) if stuck else None,
            message=str(cond.get("message") or "") if stuck else "",
        )


def scheduler_reason(message: str) -> str:
    """The scheduler's first sentence ("0/10 nodes are available: 2 Insufficient nvidia.com/gpu,
    8 node(s) didn't match Pod's node affinity/selector"); the rest is about preemption."""
    return message.split(". ")[0].strip().rstrip(".") or UNSCHEDULABLE


def stalled_children(
    desired: Sequence[Mapping[str, Any]],
    existing: Mapping[tuple[str, str], ChildState],
    now: float,
    grace: float,
) -> tuple[list[ChildState], float | None]:
    """The desired Deployments (at their desired content) that have not been fully available and
    made no rollout progress for at least ``grace`` seconds: only their pods are worth a look.
    Also the seconds until the next stalled one reaches ``grace`` (None: none is on its way)."""
    out: list[ChildState] = []
    wait: float | None = None
    for d in desired:
        if d["kind"] != "Deployment":
            continue
        have = existing.get(("Deployment", str(d["metadata"]["name"])))
        if have is None or have.hash != d["metadata"]["annotations"][manifests.HASH_ANNOTATION]:
            continue
        stalled = have.stalled_for(now)
        if stalled is None:
            continue
        if stalled >= grace:
            out.append(have)
        else:
            wait = grace - stalled if wait is None else min(wait, grace - stalled)
    return out, wait


def unschedulable_pods(
    child: str, pods: Sequence[PodScheduling], now: float, grace: float
) -> tuple[str | None, float | None]:
    """(message, recheck): the message names the pod of ``child`` that the scheduler has found no
    node for the longest, once that is at least ``grace`` seconds, else None; recheck is the
    seconds until the next unschedulable pod reaches ``grace`` (None: no pod is unschedulable)."""
    stuck = sorted(
        (p for p in pods if p.unschedulable_since is not None),
        key=lambda p: (p.unschedulable_since, p.name),
    )
    if not stuck:
        return None, None
    first = stuck[0]
    assert first.unschedulable_since is not None
    waited = now - first.unschedulable_since
    if waited >= grace:
        return f"{child}: pod {first.name} unschedulable: {scheduler_reason(first.message)}", None
    return None, grace - waited


def degraded_event(
    previous: Mapping[str, Any] | None, unschedulable: str | None
) -> tuple[str, str, str] | None:
    """The Warning to post when a workload becomes unschedulable (once, not per reconcile)."""
    if unschedulable is None:
        return None
    for c in (previous or {}).get("conditions") or ():
        if c.get("type") == "Degraded" and c.get("status") == "True" and c.get("reason") == UNSCHEDULABLE:
            return None
    return "Warning", UNSCHEDULABLE, unschedulable


# ---- status -----------------------------------------------------------------------------------
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
    unschedulable: str | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Status of a workload whose plan placed it (``ready``: its Deployments' availability;
    ``unschedulable``: why the scheduler finds no node for a child's pod, which is Degraded)."""
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
    conds = set_condition(
        conds,
        ConditionType.READY,
        ready[0],
        "Available" if ready[0] else "Progressing",
        ready[1],
        generation=generation,
        now=now,
    )
    if unschedulable:
        conds = set_condition(
            conds, ConditionType.DEGRADED, True, UNSCHEDULABLE, unschedulable, generation=generation, now=now
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
