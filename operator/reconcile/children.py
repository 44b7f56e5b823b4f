"""The children a workload should have, their state as the Kopf indices hold it, and what to
write or delete: pure functions (``reconciler.py`` calls them and performs the writes).

Ownership: a child is this workload's when its controller owner reference carries the workload's
uid. A desired child whose name another object holds (a user's own Service, a leftover of a deleted
workload of the same name, an object labelled like ours) is a :class:`Conflict`: the workload then
writes nothing at all, and nothing it does not control is ever deleted. Drift: a child of ours whose
live fields no longer hold what the operator sets (``drift.py``) is written again.

Also the unschedulable check: a child Deployment's pod the scheduler finds no node for, for
longer than a grace period, makes the workload Degraded (reason ``Unschedulable``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hetsched.operator.planning.intake import Registration
from hetsched.operator.planning.plans import WorkloadPlan
from hetsched.operator.reconcile import endpoint, manifests
from hetsched.operator.reconcile.drift import drift
from hetsched.operator.reconcile.status import (
    UNSCHEDULABLE,
    get_condition,
)
from hetsched.scheduler.placement.request import serving_choice
from hetsched.scheduler.pools import POOL_LABEL
from hetsched.scheduler.spec import AgentWorkloadSpec, ServingSpec


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


def _count(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class ChildState:
    """A child as the Kopf index projects it (or as a GET returned it)."""

    kind: str
    name: str
    hash: str
    controller_uid: str  # uid of the controller owner reference ("": none)
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
    uid: str = ""
    resource_version: str = ""
    # Who holds the object, for conflict messages: its controller (``Kind name``), or its owners,
    # or the field manager that created it.
    holder: str = ""
    # The object without status and managed fields (compact JSON): what drift is checked against.
    live: str = ""
    # Deployments only: the placement its pods carry (pool label, TP and batch annotations), which
    # a status read back at start-up must agree with (``planning.seed``).
    pool: str = ""
    tp: int = 0
    max_batch: int = 0

    @staticmethod
    def from_body(kind: str, body: Mapping[str, Any]) -> ChildState:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, Mapping)]
        controller = next((o for o in owners if o.get("controller")), None)
        match = ((spec.get("selector") or {}).get("matchLabels") or {}) if kind == "Deployment" else {}
        progressing = get_condition(status.get("conditions"), "Progressing") or {}
        template = (spec.get("template") or {}).get("metadata") or {}
        pod_annotations = template.get("annotations") or {}
        progress_time = parse_time(progressing.get("lastUpdateTime")) or parse_time(
            meta.get("creationTimestamp")
        )
        live = {k: v for k, v in body.items() if k != "status"}
        live["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        return ChildState(
            kind=kind,
            name=str(meta.get("name")),
            hash=str((meta.get("annotations") or {}).get(manifests.HASH_ANNOTATION, "")),
            controller_uid=str(controller.get("uid", "")) if controller else "",
            replicas=int(spec.get("replicas", 0) or 0),
            generation=int(meta.get("generation", 0) or 0),
            observed_generation=int(status.get("observedGeneration", 0) or 0),
            available=int(status.get("availableReplicas", 0) or 0),
            updated=int(status.get("updatedReplicas", 0) or 0),
            selector=",".join(f"{k}={v}" for k, v in sorted(match.items())),
            progress_time=progress_time if kind == "Deployment" else None,
            progress_deadline_exceeded=progressing.get("status") == "False"
            and progressing.get("reason") == "ProgressDeadlineExceeded",
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            holder=_holder(controller, owners, meta.get("managedFields") or []),
            live=json.dumps(live, separators=(",", ":"), sort_keys=True, default=str),
            pool=str((template.get("labels") or {}).get(POOL_LABEL, "")),
            tp=_count(pod_annotations.get(manifests.TP_ANNOTATION)),
            max_batch=_count(pod_annotations.get(manifests.MAX_BATCH_ANNOTATION)),
        )

    def drift(self, desired: Mapping[str, Any]) -> str | None:
        """The first field of ``desired`` this child does not hold (None: none; "." if unknown)."""
        if not self.live:
            return "."
        return drift(json.loads(self.live), desired)

    def ready(self) -> tuple[bool, str]:
        if self.kind == "Deployment" and self.replicas < 1:
            return False, f"{self.name}: 0 replicas"
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
        # A workload kept at its recorded placement without a readable model config has no
        # request: the serving choice comes from its spec alone.
        choice=reg.request.serving
        if reg.request is not None
        else serving_choice(AgentWorkloadSpec.model_validate(reg.spec)),
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


def _holder(controller: Mapping[str, Any] | None, owners: Sequence[Mapping[str, Any]], managed: Any) -> str:
    """Who holds an object, in words."""
    if controller is not None:
        return (
            f"controlled by {controller.get('kind')} {controller.get('name')} (uid {controller.get('uid')})"
        )
    if owners:
        names = ", ".join(f"{o.get('kind')} {o.get('name')}" for o in owners)
        return f"owned by {names}, none of them its controller"
    managers = sorted({str(m.get("manager")) for m in managed if isinstance(m, Mapping) and m.get("manager")})
    return "not controlled by any object" + (f" (written by {', '.join(managers)})" if managers else "")


@dataclass(frozen=True, slots=True)
class Conflict:
    """A desired child whose name an object this workload does not control holds."""

    kind: str
    name: str
    holder: str  # see _holder

    @staticmethod
    def of(workload: str, child: ChildState) -> Conflict:
        holder = child.holder
        if holder.startswith(f"controlled by AgentWorkload {workload} "):
            holder += (
                ", an earlier AgentWorkload of this name: waiting for the garbage collector to remove it"
            )
        return Conflict(child.kind, child.name, holder)

    def message(self) -> str:
        return f"{self.kind} {self.name} exists and is not this workload's: {self.holder}"


def conflict_message(conflicts: Sequence[Conflict]) -> str:
    return (
        "; ".join(c.message() for c in conflicts)
        + ". Nothing was written: remove or rename that object, or rename the workload"
    )


@dataclass(frozen=True, slots=True)
class Write:
    """An apply: a create (``uid`` empty, the object must not exist) or an update of the child with
    ``uid`` (``live_version``: the index's version of it when the write was decided; ``why``: the
    first field that differs)."""

    obj: Mapping[str, Any]
    uid: str = ""
    live_version: str = ""
    why: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return str(self.obj["kind"]), str(self.obj["metadata"]["name"])

    @property
    def hash(self) -> str:
        return str(self.obj["metadata"]["annotations"][manifests.HASH_ANNOTATION])


@dataclass(frozen=True, slots=True)
class Actions:
    writes: tuple[Write, ...]
    # Desired children the index does not have: look each up (it may exist without our labels)
    # before creating it.
    lookups: tuple[Mapping[str, Any], ...]
    conflicts: tuple[Conflict, ...]
    delete: tuple[tuple[str, str, str], ...]  # (kind, name, uid) of our children not desired any more


def key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj["kind"]), str(obj["metadata"]["name"])


def plan_actions(
    desired: Sequence[Mapping[str, Any]],
    existing: Mapping[tuple[str, str], ChildState],
    in_flight: Mapping[tuple[str, str], tuple[str, str]],
    *,
    workload: str,
    uid: str,
) -> Actions:
    """What to do about the workload's children (``existing``: those the index holds under the
    workload's label; ``in_flight``: (kind, name) → (hash, the index's version when we wrote it),
    for our writes the index has not caught up with)."""
    writes: list[Write] = []
    lookups: list[Mapping[str, Any]] = []
    conflicts: list[Conflict] = []
    for obj in desired:
        key = key_of(obj)
        want = obj["metadata"]["annotations"][manifests.HASH_ANNOTATION]
        have = existing.get(key)
        written = in_flight.get(key)
        if have is None:
            if written is not None and written == (want, ""):
                continue  # just created; the watch has not brought it back yet
            lookups.append(obj)
            continue
        if have.controller_uid != uid:
            conflicts.append(Conflict.of(workload, have))
            continue
        why = have.drift(obj)
        if why is None:
            continue
        if written is not None and written == (want, have.resource_version):
            continue  # written; the index still shows the version before our write
        writes.append(Write(obj, have.uid, have.resource_version, why))
    want_keys = {key_of(o) for o in desired}
    delete = tuple(
        sorted(
            (k[0], k[1], c.uid) for k, c in existing.items() if k not in want_keys and c.controller_uid == uid
        )
    )
    return Actions(tuple(writes), tuple(lookups), tuple(conflicts), delete)


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
        if have is None:
            ok = False
            notes.append(f"{name}: not created yet")
            continue
        if have.drift(d) is not None:
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
