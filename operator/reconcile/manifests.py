"""Child objects of an AgentWorkload, as pure functions of the workload and its placement.

Every workload gets one endpoint, a Service named after it (``endpoint.py``). Colocated: one engine
Deployment ``<name>-serve`` behind it. Disaggregated: ``<name>-prefill`` and ``<name>-decode``
engine Deployments wired by the engine's KV connector, and the P/D router ``<name>-router`` behind
the Service, which finds the engine pods through the API (its own ServiceAccount and a Role to
get/list/watch pods). docs/serving.md describes each object per engine and vendor.

An engine Deployment runs on its pool (``nodeSelector``, the pool's taints tolerated), with the
engine's image for the pool's hardware (``scheduler.engines``: CUDA, ROCm or CPU build; the pool's
and the workload's images win), the vendor's device resource = TP on accelerator pools, whole
cores and sized memory (Guaranteed QoS) on CPU pools, and a memory-backed ``/dev/shm``. Every
object carries an owner reference to the workload (garbage collection deletes children with it)
and a content hash, so the reconciler writes only when something changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.catalog.hardware import DeviceKind
from hetsched.scheduler.engines.pairing import KvPath
from hetsched.scheduler.engines.platform import Platform, ServingChoice
from hetsched.scheduler.engines.registry import registry
from hetsched.scheduler.engines.render import ContainerInput, EngineContainer, PhaseTarget, engine_container
from hetsched.scheduler.pools import POOL_LABEL
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND, ContainerSpec, ServingSpec
from hetsched.scheduler.units import GIB

if TYPE_CHECKING:
    from hetsched.operator.planning.plans import PhasePlan, WorkloadPlan

MANAGER = "hetsched"
WORKLOAD_LABEL = "hetsched.io/workload"
PHASE_LABEL = "hetsched.io/phase"
ENGINE_LABEL = "hetsched.io/engine"  # on engine pods only (not the router's): vllm, sglang
HASH_ANNOTATION = "hetsched.io/spec-hash"
TP_ANNOTATION = "hetsched.io/tp"  # on the pod template: the placement's TP and batch
MAX_BATCH_ANNOTATION = "hetsched.io/max-batch"
SUFFIX = {"prefill": "prefill", "decode": "decode", "colocated": "serve", "router": "router"}
SERVICE_PORT = 8000  # the workload Service's port (OpenAI API): http://<name>.<namespace>.svc:8000/v1
# Model loading can take many minutes: the startup probe allows 30 (180 × 10 s) before liveness starts.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURES = 180


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
    gpu: bool  # False on CPU pools: no device request
    tp: int
    replicas: int
    max_batch: int
    max_model_len: int
    taints: tuple[TaintRef, ...] = ()
    # A pool named after a GPU product selects nodes by nvidia.com/gpu.product; it must not land on
    # nodes of the same product that belong to a labelled pool.
    avoid_labelled_pools: bool = False
    platform: Platform | None = None  # None: NVIDIA CUDA for a GPU pool, an x86 CPU otherwise
    weight_bytes: float = 0.0
    kv_bytes_per_request: float = 0.0
    cpus_per_device: float = 0.0

    def target(self) -> PhaseTarget:
        return PhaseTarget(
            phase=self.phase,
            pool=self.pool,
            platform=self.platform or default_platform(self.gpu),
            tp=self.tp,
            max_batch=self.max_batch,
            max_model_len=self.max_model_len,
            weight_bytes=self.weight_bytes,
            kv_bytes_per_request=self.kv_bytes_per_request,
            cpus_per_device=self.cpus_per_device,
        )


def default_platform(gpu: bool) -> Platform:
    """The platform of a pool whose hardware is not given (tests, old plans): NVIDIA or x86 CPU."""
    if gpu:
        v = registry().vendors["nvidia"]
        return Platform("gpu", "nvidia", "", v.build, v.device_resource, False, 32e9)
    return Platform(DeviceKind.CPU.value, "", "", "cpu", None, False, 32e9)


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Cluster-wide choices of the operator (settings) that change the children."""

    # Render an InferencePool (Gateway API Inference Extension) naming this endpoint-picker Service;
    # None: no InferencePool (the operator sets it only when the CRD is installed).
    inference_pool_epp: str | None = None
    inference_pool_epp_port: int = 9002


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    name: str
    namespace: str
    uid: str
    model: str  # what {model} renders to: spec.serving.model, else the Hugging Face id or catalog name
    serving: ServingSpec | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    served_model_name: str = ""  # what clients name the model (default: ``model``)
    choice: ServingChoice = field(default_factory=ServingChoice)
    options: RenderOptions = field(default_factory=RenderOptions)

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model


def child_name(workload: str, phase: str) -> str:
    return f"{workload}-{SUFFIX[phase]}"


def labels(workload: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "agent-inference",
        "app.kubernetes.io/instance": workload,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "hetsched",
        "app.kubernetes.io/managed-by": MANAGER,
        WORKLOAD_LABEL: workload,
        PHASE_LABEL: component,
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


def metadata(ref: WorkloadRef, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": {**ref.extra_labels, **labels(ref.name, component)},
        "annotations": {},
        "ownerReferences": [owner_reference(ref)],
    }


def container_for(serving: ServingSpec | None, phase: str) -> ContainerSpec | None:
    """The workload's container of a phase (``decode`` defaults to ``prefill``, ``colocated`` to
    ``decode``); None: the engine's image and arguments."""
    if serving is None:
        return None
    if phase == "prefill":
        return serving.prefill
    if phase == "decode":
        return serving.decode or serving.prefill
    return serving.colocated or serving.decode or serving.prefill


def container_input(spec: ContainerSpec | None) -> ContainerInput:
    if spec is None:
        return ContainerInput()
    return ContainerInput(
        image=spec.image,
        args=tuple(spec.args),
        extra_args=tuple(spec.extra_args),
        port=spec.port,
        env=tuple((e.name, e.value) for e in spec.env),
        resources={k: dict(v) for k, v in spec.resources.items()},
    )


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


def gib(n: float) -> str:
    """Bytes as a whole-GiB Kubernetes quantity (rounded up)."""
    return f"{max(1, int(-(-n // GIB)))}Gi"


def _resources(c: EngineContainer) -> dict[str, Any]:
    """The user's requests/limits, the devices (= TP) and, on CPU pools, whole cores and memory
    with requests = limits (Guaranteed QoS) unless the workload set them itself."""
    res: dict[str, dict[str, str]] = {
        k: dict(v) for k, v in c.resources.items() if k in ("requests", "limits")
    }
    for kind in ("requests", "limits"):
        part = res.setdefault(kind, {})
        for r in registry().device_resources():
            part.pop(r, None)
        if c.device_resource and c.devices > 0:
            part[c.device_resource] = str(c.devices)
    if c.cpu is not None or c.memory_bytes is not None:
        mine = {"cpu": str(c.cpu) if c.cpu is not None else None, "memory": gib(c.memory_bytes or 0)}
        for name, value in mine.items():
            if value is None:
                continue
            given = res["limits"].get(name) or res["requests"].get(name)
            res["requests"][name] = res["limits"][name] = given or value
    return {k: v for k, v in res.items() if v}


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Content hash of a manifest (without its own hash annotation)."""
    body = json.loads(json.dumps(obj, sort_keys=True, default=str))
    body.get("metadata", {}).get("annotations", {}).pop(HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = spec_hash(obj)
    return obj


def engine_of(ref: WorkloadRef, plan: PhaseDeployment, path: KvPath | None = None) -> EngineContainer:
    """The engine container of one phase (ValueError naming the field when it does not render)."""
    spec = container_for(ref.serving, plan.phase)
    try:
        return engine_container(
            choice=ref.choice,
            target=plan.target(),
            given=container_input(spec),
            model=ref.model,
            served_model_name=ref.served_name,
            path=path,
        )
    except ValueError as exc:
        raise ValueError(f"{plan.phase} on {plan.pool}: {exc}") from None


def _probe(path: str, **extra: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **extra}


def deployment(ref: WorkloadRef, plan: PhaseDeployment, path: KvPath | None = None) -> dict[str, Any]:
    """The engine Deployment of one phase (``path``: the P/D pair's KV path; None when colocated)."""
    c = engine_of(ref, plan, path)
    meta = metadata(ref, child_name(ref.name, plan.phase), plan.phase)
    pod_labels = {**meta["labels"], POOL_LABEL: plan.pool, ENGINE_LABEL: ref.choice.engine}
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path_}}} for name, path_ in c.field_env
    ]
    ours = [
        ("HETSCHED_PHASE", plan.phase),
        ("HETSCHED_POOL", plan.pool),
        ("HETSCHED_TP", str(plan.tp)),
        ("HETSCHED_MAX_BATCH", str(plan.max_batch)),
        ("HETSCHED_MAX_MODEL_LEN", str(plan.max_model_len)),
    ]
    fixed = {n for n, _ in ours} | {n for n, _ in c.field_env}
    env += [{"name": n, "value": v} for n, v in ours]
    env += [{"name": n, "value": v} for n, v in c.env if n not in fixed]
    container: dict[str, Any] = {"name": SUFFIX[plan.phase], "image": c.image}
    if c.command:
        container["command"] = list(c.command)
    if c.args:
        container["args"] = list(c.args)
    container["ports"] = [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in c.ports]
    container["env"] = env
    resources = _resources(c)
    if resources:
        container["resources"] = resources
    container.update(
        {
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
            "startupProbe": _probe(
                c.health_path, periodSeconds=STARTUP_PERIOD_SECONDS, failureThreshold=STARTUP_FAILURES
            ),
            "readinessProbe": _probe(c.health_path, periodSeconds=10, failureThreshold=3),
            "livenessProbe": _probe(c.health_path, periodSeconds=30, timeoutSeconds=10, failureThreshold=3),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {
                    "drop": ["ALL"],
                    **({"add": list(c.capabilities)} if c.capabilities else {}),
                },
            },
        }
    )
    pod_spec: dict[str, Any] = {
        # The serving engine never calls the Kubernetes API: no ServiceAccount token in its pods.
        "automountServiceAccountToken": False,
        # Service links would put <SERVICE>_PORT variables in the environment; vLLM reads VLLM_PORT.
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": dict(plan.node_selector),
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": gib(c.shm_bytes)}}],
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
    pod_annotations = {
        TP_ANNOTATION: str(plan.tp),
        MAX_BATCH_ANNOTATION: str(plan.max_batch),
        "hetsched.io/image-source": c.image_source[:256],
        **dict(c.annotations),
    }
    if path is not None:
        pod_annotations["hetsched.io/kv-path"] = path.detail[:256]
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": selector(ref.name, plan.phase)},
            # Devices are the scarce resource: replace pods without surging past the plan.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
    return stamp(obj)


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
        platform=p.platform,
        weight_bytes=p.weight_bytes,
        kv_bytes_per_request=p.kv_bytes_per_request,
        cpus_per_device=p.cpus_per_device,
    )


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
