"""One endpoint per workload: the Service named after it, the P/D router behind it when the phases
are disaggregated (Deployment, ServiceAccount, Role, RoleBinding), an optional InferencePool, and
:func:`children` — every object a workload's plan asks for, in a stable order (pure functions).

* colocated: the Service selects the engine pods (``<name>-serve``);
* disaggregated: the Service selects the router's pods. The router (``vllm-router``, SGLang's
  router) discovers the prefill and decode pods by their labels in the workload's namespace through
  the API, so its ServiceAccount gets a Role to get, list and watch pods there and nothing more; it
  runs as non-root on a read-only root filesystem. Engines and NIXL address pods by IP: no
  per-phase Service (a ClusterIP in front of one phase would let clients bypass the router, and
  then decode recomputes the prompt instead of receiving its KV).
* InferencePool (Gateway API Inference Extension, ``inference.networking.k8s.io/v1``): rendered
  when the operator is given an endpoint picker (``RenderOptions.inference_pool_epp``) and the CRD
  is installed; it selects the workload's engine pods for a Gateway whose endpoint picker (for
  example llm-d's, with its P/D profile) hetsched does not deploy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.manifests import (
    ENGINE_LABEL,
    SERVICE_PORT,
    PhaseDeployment,
    WorkloadRef,
    child_name,
    metadata,
    selector,
    stamp,
)
from hetsched.scheduler.engines.pairing import kv_path
from hetsched.scheduler.engines.render import router_container

INFERENCE_POOL_API = "inference.networking.k8s.io/v1"
ROUTER_USER = 65532  # a non-root UID/GID (the distroless "nonroot" one)
ROUTER_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
#: Kinds in the order a GitOps tool (and ``hetsched render``) lists them: identities and RBAC
#: before what uses them, the Service before the Deployments.
KIND_ORDER = ("ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "InferencePool")


def endpoint_url(name: str, namespace: str) -> str:
    """The OpenAI-compatible base URL of a workload's Service (``status.endpoint``)."""
    return f"http://{name}.{namespace}.svc:{SERVICE_PORT}/v1"


def service(ref: WorkloadRef, disaggregated: bool) -> dict[str, Any]:
    """The workload's Service: the router's pods (disaggregated) or the engine pods (colocated)."""
    target = "router" if disaggregated else "colocated"
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ref, ref.name, "endpoint"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(ref.name, target),
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
    return stamp(obj)


def router_objects(ref: WorkloadRef) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding and Deployment of the P/D router (``<name>-router``)."""
    profile = ref.choice.profile
    if profile is None:
        raise ValueError(f"engine {ref.choice.engine} has no P/D router in hetsched's registry")
    name = child_name(ref.name, "router")
    router_spec = ref.serving.router if ref.serving is not None else None
    engine_port = next(
        (c.port for c in (manifests.container_for(ref.serving, p) for p in ("prefill", "decode")) if c),
        profile.port,
    )
    rc = router_container(
        profile,
        ref.choice,
        namespace=ref.namespace,
        prefill_selector=selector(ref.name, "prefill"),
        decode_selector=selector(ref.name, "decode"),
        engine_port=engine_port,
        image=router_spec.image if router_spec is not None else None,
    )
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(ref, name, "router"),
        "automountServiceAccountToken": True,
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(ref, name, "router"),
        # Pod discovery by label (the phases' pods and their IPs), in this namespace only.
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(ref, name, "router"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ref.namespace}],
    }
    resources = {k: dict(v) for k, v in ROUTER_RESOURCES.items()}
    if router_spec is not None:
        for k, v in router_spec.resources.items():
            resources[k] = dict(v)
    meta = metadata(ref, name, "router")
    container: dict[str, Any] = {
        "name": "router",
        "image": rc.image,
        "command": list(rc.command),
        "args": list(rc.args),
        "ports": [
            {"name": "http", "containerPort": rc.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": rc.metrics_port, "protocol": "TCP"},
        ],
        # Ready once it answers; a router with no healthy engine yet is not a broken router.
        "readinessProbe": {"httpGet": {"path": rc.health_path, "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 20, "failureThreshold": 3},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": ROUTER_USER,
            "runAsGroup": ROUTER_USER,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": router_spec.replicas if router_spec is not None else 1,
            "selector": {"matchLabels": selector(ref.name, "router")},
            # No devices: bring the new router up before the old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(meta["labels"])},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    return [stamp(account), stamp(role), stamp(binding), stamp(deployment)]


def inference_pool(ref: WorkloadRef, engine_port: int) -> dict[str, Any]:
    """An InferencePool over the workload's engine pods for the endpoint picker ``ref.options`` names."""
    epp = ref.options.inference_pool_epp
    assert epp is not None
    obj = {
        "apiVersion": INFERENCE_POOL_API,
        "kind": "InferencePool",
        "metadata": metadata(ref, ref.name, "endpoint"),
        "spec": {
            "selector": {
                "matchLabels": {manifests.WORKLOAD_LABEL: ref.name, ENGINE_LABEL: ref.choice.engine}
            },
            "targetPorts": [{"number": engine_port}],
            "endpointPickerRef": {
                "name": epp,
                "port": {"number": ref.options.inference_pool_epp_port},
                "failureMode": "FailClose",
            },
        },
    }
    return stamp(obj)


def children(ref: WorkloadRef, phases: Sequence[PhaseDeployment]) -> list[dict[str, Any]]:
    """Every object of a placed workload, ordered by kind (:data:`KIND_ORDER`) then name.

    ValueError naming the field when a container does not render or the engine cannot serve the
    pair of pools (the planner rules such pairs out; a stale plan or a direct call can still ask)."""
    if not phases:
        return []
    disaggregated = len(phases) == 2
    path = None
    if disaggregated:
        pre, dec = phases
        path = kv_path(ref.choice, pre.target().platform, dec.target().platform)
        if not path.ok:
            raise ValueError(f"prefill on {pre.pool}, decode on {dec.pool}: {path.detail}")
    out = [manifests.deployment(ref, p, path) for p in phases]
    out.append(service(ref, disaggregated))
    if disaggregated:
        out += router_objects(ref)
    if ref.options.inference_pool_epp:
        port = next((p for n, p in manifests.engine_of(ref, phases[-1], path).ports if n == "http"), 8000)
        out.append(inference_pool(ref, port))
    return sorted(out, key=lambda o: (KIND_ORDER.index(o["kind"]), o["metadata"]["name"]))
