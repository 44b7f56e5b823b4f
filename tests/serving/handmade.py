"""TEMPORARY: hand-written manifests following the render contract (issue 14), until `hetsched render`
lands on branch serving. Same shape as what 14a renders: engine Deployments with NIXL wiring, router
Deployment with Kubernetes discovery, its RBAC, the workload Service."""

from __future__ import annotations

import json
from typing import Any

POOL = "hetsched.io/pool"


def _labels(name: str, phase: str) -> dict[str, str]:
    return {"hetsched.io/workload": name, "hetsched.io/phase": phase}


def _engine(
    ns: str, name: str, phase: str, pool: str, model: str, served: str, kv_role: str | None, extra_env: list
) -> dict[str, Any]:
    args = [
        "--model",
        model,
        "--served-model-name",
        served,
        "--tensor-parallel-size",
        "1",
        "--max-num-seqs",
        "16",
        "--max-model-len",
        "2048",
        "--host",
        "$(POD_IP)" if kv_role else "0.0.0.0",
        "--port",
        "8000",
    ]
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "auto"},
        {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"},
        *extra_env,
    ]
    ports = [{"name": "http", "containerPort": 8000}]
    if kv_role:
        args += [
            "--kv-transfer-config",
            json.dumps(
                {"kv_connector": "NixlConnector", "kv_role": kv_role, "kv_buffer_device": "cpu"},
                separators=(",", ":"),
            ),
        ]
        env += [
            {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "value": "$(POD_IP)"},
            {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": "5600"},
            {"name": "UCX_TLS", "value": "tcp,self,sm"},
        ]
        ports.append({"name": "kv-side", "containerPort": 5600})
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    labels = _labels(name, phase)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-{phase}", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, POOL: pool}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "nodeSelector": {POOL: pool},
                    "tolerations": [
                        {
                            "key": "hetsched.io/dedicated",
                            "operator": "Equal",
                            "value": "serving",
                            "effect": "NoSchedule",
                        }
                    ],
                    "containers": [
                        {
                            "name": phase,
                            "image": "vllm/vllm-openai-cpu:v0.32.0",
                            "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                            "args": args,
                            "env": env,
                            "ports": ports,
                            "resources": {
                                "requests": {"cpu": "1", "memory": "6Gi"},
                                "limits": {"cpu": "1", "memory": "6Gi"},
                            },
                            "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
                            "readinessProbe": {**probe, "periodSeconds": 10},
                            "livenessProbe": {**probe, "periodSeconds": 30, "timeoutSeconds": 10},
                        }
                    ],
                },
            },
        },
    }


def objects(
    ns: str, name: str, model: str, pools: dict[str, str], colocated: bool, env: list
) -> list[dict[str, Any]]:
    served = name
    if colocated:
        out = [_engine(ns, name, "serve", pools["colocated"], model, served, None, env)]
        target = "serve"
    else:
        out = [
            _engine(ns, name, "prefill", pools["prefill"], model, served, "kv_producer", env),
            _engine(ns, name, "decode", pools["decode"], model, served, "kv_consumer", env),
        ]
        target = "router"
        rl = _labels(name, "router")
        sel = lambda p: [f"hetsched.io/workload={name}", f"hetsched.io/phase={p}"]  # noqa: E731
        args = [
            "--vllm-pd-disaggregation",
            "--kv-connector",
            "nixl",
            "--service-discovery",
            "--service-discovery-namespace",
            ns,
            "--service-discovery-port",
            "8000",
            "--prefill-selector",
            *sel("prefill"),
            "--decode-selector",
            *sel("decode"),
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--prometheus-host",
            "0.0.0.0",
            "--prometheus-port",
            "29000",
            "--health-check-interval-secs",
            "5",
        ]
        out += [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": f"{name}-router", "namespace": ns},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": f"{name}-router", "namespace": ns},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{name}-router", "namespace": ns},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": f"{name}-router",
                },
                "subjects": [{"kind": "ServiceAccount", "name": f"{name}-router", "namespace": ns}],
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"{name}-router", "namespace": ns, "labels": rl},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": rl},
                    "template": {
                        "metadata": {"labels": rl},
                        "spec": {
                            "serviceAccountName": f"{name}-router",
                            "containers": [
                                {
                                    "name": "router",
                                    "image": "vllm/vllm-router:v0.1.17",
                                    "command": ["vllm-router"],
                                    "args": args,
                                    "ports": [
                                        {"name": "http", "containerPort": 8080},
                                        {"name": "metrics", "containerPort": 29000},
                                    ],
                                    "readinessProbe": {
                                        "httpGet": {"path": "/health", "port": "http"},
                                        "periodSeconds": 5,
                                    },
                                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                                }
                            ],
                        },
                    },
                },
            },
        ]
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": _labels(name, target),
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }
    )
    return out
