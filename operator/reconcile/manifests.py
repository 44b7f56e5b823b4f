"""Child objects of an AgentWorkload, as pure functions of the workload and its placement.

Per phase a Deployment and a Service: ``<name>-prefill`` and ``<name>-decode`` when the phases are
disaggregated, ``<name>-serve`` when colocated. The Deployment runs on the chosen pool
(``nodeSelector``), tolerates the pool's taints, requests ``nvidia.com/gpu`` = TP on GPU pools
and renders the serving arguments from the plan. Every object carries an owner reference to the
workload (garbage collection deletes children with it) and a content hash, so the reconciler
writes only when something changed.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.pools import GPU_RESOURCE, POOL_LABEL
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND, ContainerSpec, ServingSpec

if TYPE_CHECKING:
    from hetsched.operator.planning.plans import PhasePlan, WorkloadPlan

MANAGER = "hetsched"
WORKLOAD_LABEL = "hetsched.io/workload"
PHASE_LABEL = "hetsched.io/phase"
HASH_ANNOTATION = "hetsched.io/spec-hash"
TP_ANNOTATION = "hetsched.io/tp"  # on the pod template: the placement's TP and batch
MAX_BATCH_ANNOTATION = "hetsched.io/max-batch"
DEFAULT_IMAGE = "vllm/vllm-openai:v0.11.0"
DEFAULT_ARGS = (
    "--model",
    "{model}",
    "--tensor-parallel-size",
    "{tp}",
    "--max-num-seqs",
    "{max_batch}",
    "--max-model-len",
    "{max_model_len}",
    "--port",
    "{port}",
)
PLACEHOLDERS = ("model", "tp", "max_batch", "max_model_len", "phase", "port")
SUFFIX = {"prefill": "prefill", "decode": "decode", "colocated": "serve"}


@dataclass(frozen=True, slots=True)
class TaintRef:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class PhaseDeployment:
    """What the plan decided for one phase, in the terms a Deployment needs."""

    phase: str  # prefill, decode or colocated
    pool: str
    node_selector: Mapping[str, str]
    gpu: bool  # False on CPU pools: no nvidia.com/gpu request
    tp: int
    replicas: int
    max_batch: int
    max_model_len: int
    taints: tuple[TaintRef, ...] = ()
    # A pool named after a GPU product selects nodes by nvidia.com/gpu.product; it must not land on
    # nodes of the same product that belong to a labelled pool.
    avoid_labelled_pools: bool = False


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    name: str
    namespace: str
    uid: str
    model: str  # what {model} renders to: the Hugging Face id when known, else the catalog name
    serving: ServingSpec | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)


def child_name(workload: str, phase: str) -> str:
    return f"{workload}-{SUFFIX[phase]}"


def labels(workload: str, phase: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "agent-inference",
        "app.kubernetes.io/instance": workload,
        "app.kubernetes.io/component": phase,
        "app.kubernetes.io/part-of": "hetsched",
        "app.kubernetes.io/managed-by": MANAGER,
        WORKLOAD_LABEL: workload,
        PHASE_LABEL: phase,
    }


def selector(workload: str, phase: str) -> dict[str, str]:
    return {WORKLOAD_LABEL: workload, PHASE_LABEL: phase}


def owner_reference(ref: WorkloadRef) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def container_for(serving: ServingSpec | None, phase: str) -> ContainerSpec:
    """The phase's container: ``decode`` defaults to ``prefill``, ``colocated`` to ``decode``."""
    if serving is None:
        return ContainerSpec(image=DEFAULT_IMAGE, args=list(DEFAULT_ARGS))
    if phase == "prefill":
        return serving.prefill
    if phase == "decode":
        return serving.decode or serving.prefill
    return serving.colocated or serving.decode or serving.prefill


def render_args(args: Sequence[str], values: Mapping[str, Any]) -> list[str]:
    """Fill ``{model}``, ``{tp}``, ... in each argument; ``{{`` and ``}}`` are literal braces.

    An unknown placeholder or a format spec is a ValueError naming the argument.
    """
    out = []
    formatter = string.Formatter()
    for i, arg in enumerate(args):
        try:
            fields = [f for _, f, spec, conv in formatter.parse(arg) if f is not None]
            specs = [(spec, conv) for _, f, spec, conv in formatter.parse(arg) if f is not None]
        except ValueError as exc:
            raise ValueError(f"args[{i}] {arg!r}: {exc}") from None
        for name in fields:
            if name not in values:
                raise ValueError(
                    f"args[{i}] {arg!r}: unknown placeholder {{{name}}} (known: "
                    + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                    + ")"
                )
        if any(spec or conv for spec, conv in specs):
            raise ValueError(f"args[{i}] {arg!r}: placeholders take no format spec or conversion")
        out.append(arg.format_map(values))
    return out


def placeholder_values(ref: WorkloadRef, plan: PhaseDeployment, port: int) -> dict[str, Any]:
    return {
        "model": ref.model,
        "tp": plan.tp,
        "max_batch": plan.max_batch,
        "max_model_len": plan.max_model_len,
        "phase": plan.phase,
        "port": port,
    }


def tolerations(taints: Sequence[TaintRef]) -> list[dict[str, Any]]:
    out = []
    for t in taints:
        tol: dict[str, Any] = {"key": t.key, "effect": t.effect}
        if t.value:
            tol.update(operator="Equal", value=t.value)
        else:
            tol["operator"] = "Exists"
        out.append(tol)
    return out


def _resources(container: ContainerSpec, plan: PhaseDeployment) -> dict[str, Any]:
    res: dict[str, dict[str, str]] = {
        k: dict(v) for k, v in container.resources.items() if k in ("requests", "limits")
    }
    if plan.gpu and plan.tp > 0:
        for kind in ("requests", "limits"):
            res.setdefault(kind, {})[GPU_RESOURCE] = str(plan.tp)
    else:
        for kind in ("requests", "limits"):
            res.get(kind, {}).pop(GPU_RESOURCE, None)
    return {k: v for k, v in res.items() if v}


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Content hash of a manifest (without its own hash annotation)."""
    body = json.loads(json.dumps(obj, sort_keys=True, default=str))
    body.get("metadata", {}).get("annotations", {}).pop(HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _stamp(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = spec_hash(obj)
    return obj


def deployment(ref: WorkloadRef, plan: PhaseDeployment) -> dict[str, Any]:
    """The Deployment of one phase."""
    container = container_for(ref.serving, plan.phase)
    name = child_name(ref.name, plan.phase)
    meta_labels = {**ref.extra_labels, **labels(ref.name, plan.phase)}
    pod_labels = {**meta_labels, POOL_LABEL: plan.pool}
    args = render_args(container.args, placeholder_values(ref, plan, container.port))
    env = [
        {"name": "HETSCHED_PHASE", "value": plan.phase},
        {"name": "HETSCHED_POOL", "value": plan.pool},
        {"name": "HETSCHED_TP", "value": str(plan.tp)},
        {"name": "HETSCHED_MAX_BATCH", "value": str(plan.max_batch)},
        {"name": "HETSCHED_MAX_MODEL_LEN", "value": str(plan.max_model_len)},
    ]
    ours = {e["name"] for e in env}
    env += [{"name": e.name, "value": e.value} for e in container.env if e.name not in ours]
    spec_container: dict[str, Any] = {
        "name": SUFFIX[plan.phase],
        "image": container.image,
        "ports": [{"name": "http", "containerPort": container.port, "protocol": "TCP"}],
        "env": env,
    }
    if args:
        spec_container["args"] = args
    resources = _resources(container, plan)
    if resources:
        spec_container["resources"] = resources
    pod_spec: dict[str, Any] = {
        # The serving engine never calls the Kubernetes API: no ServiceAccount token in its pods.
        "automountServiceAccountToken": False,
        "nodeSelector": dict(plan.node_selector),
        "containers": [spec_container],
    }
    tol = tolerations(plan.taints)
    if tol:
        pod_spec["tolerations"] = tol
    if plan.avoid_labelled_pools:
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": POOL_LABEL, "operator": "DoesNotExist"}]}
                    ]
                }
            }
        }
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ref.namespace,
            "labels": meta_labels,
            "annotations": {},
            "ownerReferences": [owner_reference(ref)],
        },
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": selector(ref.name, plan.phase)},
            # Devices are the scarce resource: replace pods without surging past the plan.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        TP_ANNOTATION: str(plan.tp),
                        MAX_BATCH_ANNOTATION: str(plan.max_batch),
                    },
                },
                "spec": pod_spec,
            },
        },
    }
    return _stamp(obj)


def service(ref: WorkloadRef, plan: PhaseDeployment) -> dict[str, Any]:
    """A ClusterIP Service in front of one phase's pods."""
    container = container_for(ref.serving, plan.phase)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_name(ref.name, plan.phase),
            "namespace": ref.namespace,
            "labels": {**ref.extra_labels, **labels(ref.name, plan.phase)},
            "annotations": {},
            "ownerReferences": [owner_reference(ref)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ref.name, plan.phase),
            "ports": [
                {"name": "http", "port": container.port, "targetPort": container.port, "protocol": "TCP"}
            ],
        },
    }
    return _stamp(obj)


def phase_deployments(plan: WorkloadPlan) -> list[PhaseDeployment]:
    """A plan's phases as Deployments: one ``colocated`` or a ``prefill`` and a ``decode``."""
    if not plan.placed or plan.prefill is None or plan.decode is None:
        return []
    if plan.mode == "colocated":
        return [_deployment("colocated", plan.decode, plan.max_model_len)]
    return [
        _deployment("prefill", plan.prefill, plan.max_model_len),
        _deployment("decode", plan.decode, plan.max_model_len),
    ]


def _deployment(phase: str, p: PhasePlan, max_model_len: int) -> PhaseDeployment:
    return PhaseDeployment(
        phase=phase,
        pool=p.pool,
        node_selector=dict(p.node_selector),
        gpu=p.gpu,
        tp=p.tp,
        replicas=p.replicas,
        max_batch=p.batch,
        max_model_len=max_model_len,
        taints=p.taints,
        avoid_labelled_pools=POOL_LABEL not in p.node_selector,
    )


def children(ref: WorkloadRef, phases: Sequence[PhaseDeployment]) -> list[dict[str, Any]]:
    """Deployments then Services of every phase."""
    deployments = [deployment(ref, p) for p in phases]
    services = [service(ref, p) for p in phases]
    return deployments + services


def stale_children(
    existing: Sequence[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """(kind, name) of existing children that the desired set no longer has (e.g. after a mode switch)."""
    want = {(d["kind"], d["metadata"]["name"]) for d in desired}
    out = []
    for obj in existing:
        key = (str(obj.get("kind")), str(obj.get("metadata", {}).get("name")))
        if key not in want:
            out.append(key)
    return sorted(out)


def needs_write(existing: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether ``desired`` must be applied: absent, hash differs, or our owner reference is missing."""
    if existing is None:
        return True
    meta = existing.get("metadata") or {}
    if (meta.get("annotations") or {}).get(HASH_ANNOTATION) != desired["metadata"]["annotations"][
        HASH_ANNOTATION
    ]:
        return True
    want_uid = desired["metadata"]["ownerReferences"][0]["uid"]
    return not any(o.get("uid") == want_uid for o in meta.get("ownerReferences") or [])


def deployment_available(obj: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(ready, why not) of a Deployment from its status."""
    if obj is None:
        return False, "not created yet"
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    want = int(spec.get("replicas", 1) or 0)
    meta_gen = int((obj.get("metadata") or {}).get("generation", 0) or 0)
    observed = int(status.get("observedGeneration", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    if observed < meta_gen:
        return False, "rollout not observed yet"
    if updated < want:
        return False, f"{updated}/{want} replicas updated"
    if available < want:
        return False, f"{available}/{want} replicas available"
    return True, f"{available}/{want} replicas available"
