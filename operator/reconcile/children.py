"""The children a workload should have, their state as the Kopf indices hold it, and what to
write or delete: pure functions (``reconciler.py`` calls them and performs the writes).

Also the unschedulable check: a child Deployment's pod the scheduler finds no node for, for
longer than a grace period, makes the workload Degraded (reason ``Unschedulable``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hetsched.operator.planning.intake import Registration
from hetsched.operator.planning.plans import WorkloadPlan
from hetsched.operator.reconcile import endpoint, manifests
from hetsched.operator.reconcile.status import (
    UNSCHEDULABLE,
    get_condition,
)
from hetsched.scheduler.spec import ServingSpec


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


def workload_ref(reg: Registration, options: manifests.RenderOptions | None = None) -> manifests.WorkloadRef:
    """What the manifests need of a registered workload: names, owner, model, serving choices."""
    serving_doc = reg.spec.get("serving")
    serving = ServingSpec.model_validate(serving_doc) if serving_doc else None
    return manifests.WorkloadRef(
        name=reg.key[1],
        namespace=reg.key[0],
        uid=reg.uid,
        model=(serving.model if serving is not None and serving.model else None) or reg.model_id,
        serving=serving,
        served_model_name=reg.model_id,
        choice=reg.request.serving,
        options=options or manifests.RenderOptions(),
    )


def desired_children(
    reg: Registration, plan: WorkloadPlan, options: manifests.RenderOptions | None = None
) -> list[dict[str, Any]]:
    """Every object the plan asks for (``endpoint.children``); ValueError naming the field when the
    serving containers do not render."""
    if not plan.placed:
        return []
    return endpoint.children(workload_ref(reg, options), manifests.phase_deployments(plan))


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
