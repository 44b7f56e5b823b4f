"""One endpoint per workload: the Service, the P/D router with its RBAC, the InferencePool, and the
whole set of children in a stable order (pure builders, plain asserts on the manifests)."""

from __future__ import annotations

from typing import Any

import pytest
from hetsched.operator.reconcile import endpoint, manifests
from hetsched.operator.reconcile.manifests import PhaseDeployment, RenderOptions, WorkloadRef
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.engines.platform import ServingChoice, platform_of
from hetsched.scheduler.spec import ServingSpec

L4 = platform_of(get_hardware("l4"))
T4 = platform_of(get_hardware("t4"))
XEON = platform_of(get_hardware("xeon-6980p"))
REF = WorkloadRef(name="chat", namespace="team-a", uid="u-1", model="meta-llama/Llama-3.1-8B-Instruct")


def _phase(phase: str, pool: str = "l4", platform: Any = L4, tp: int = 1) -> PhaseDeployment:
    return PhaseDeployment(
        phase=phase,
        pool=pool,
        node_selector={"hetsched.io/pool": pool},
        gpu=not platform.is_cpu,
        tp=tp,
        replicas=2,
        max_batch=16,
        max_model_len=4096,
        platform=platform,
        weight_bytes=16e9,
        kv_bytes_per_request=1e9,
        cpus_per_device=64,
    )


PD = [_phase("prefill"), _phase("decode", "t4", T4, tp=2)]
COLOCATED = [_phase("colocated")]


def _kinds(objs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objs]


def test_disaggregated_children_in_a_stable_order() -> None:
    objs = endpoint.children(REF, PD)
    assert _kinds(objs) == [
        ("ServiceAccount", "chat-router"),
        ("Role", "chat-router"),
        ("RoleBinding", "chat-router"),
        ("Service", "chat"),
        ("Deployment", "chat-decode"),
        ("Deployment", "chat-prefill"),
        ("Deployment", "chat-router"),
    ]
    for o in objs:
        assert o["metadata"]["namespace"] == "team-a"
        assert o["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert o["metadata"]["labels"]["hetsched.io/workload"] == "chat"
        assert o["metadata"]["annotations"][manifests.HASH_ANNOTATION] == manifests.spec_hash(o)
    assert endpoint.children(REF, PD) == objs  # pure: same input, same objects


def test_colocated_children_are_the_engine_and_its_service() -> None:
    objs = endpoint.children(REF, COLOCATED)
    assert _kinds(objs) == [("Service", "chat"), ("Deployment", "chat-serve")]
    service = objs[0]
    assert service["spec"]["selector"] == {"hetsched.io/workload": "chat", "hetsched.io/phase": "colocated"}
    assert endpoint.children(REF, []) == []


def test_the_workload_service_is_the_endpoint() -> None:
    s = endpoint.service(REF, disaggregated=True)
    assert s["metadata"]["name"] == "chat"
    assert s["spec"]["type"] == "ClusterIP"
    assert s["spec"]["selector"] == {"hetsched.io/workload": "chat", "hetsched.io/phase": "router"}
    assert s["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert endpoint.endpoint_url("chat", "team-a") == "http://chat.team-a.svc:8000/v1"


def test_router_discovers_the_phases_pods_in_its_namespace() -> None:
    sa, role, binding, dep = endpoint.router_objects(REF)
    assert (sa["kind"], role["kind"], binding["kind"], dep["kind"]) == (
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
    )
    # Pods get/list/watch in the workload's namespace: nothing more.
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "chat-router",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "chat-router", "namespace": "team-a"}]
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "chat-router" and pod["automountServiceAccountToken"] is True
    (c,) = pod["containers"]
    assert c["image"] == "vllm/vllm-router:v0.1.17"
    assert c["command"] == ["vllm-router"]
    args = c["args"]
    assert args[0] == "--vllm-pd-disaggregation" and "--service-discovery" in args
    assert args[args.index("--service-discovery-namespace") + 1] == "team-a"
    assert args[args.index("--service-discovery-port") + 1] == "8000"
    i = args.index("--prefill-selector")
    assert args[i + 1 : i + 4] == [
        "hetsched.io/phase=prefill",
        "hetsched.io/workload=chat",
        "--decode-selector",
    ]
    assert args[args.index("--decode-selector") + 1 : args.index("--decode-selector") + 3] == [
        "hetsched.io/phase=decode",
        "hetsched.io/workload=chat",
    ]
    assert args[args.index("--host") + 1] == "0.0.0.0" and args[args.index("--port") + 1] == "8080"
    assert args[args.index("--kv-connector") + 1] == "nixl"
    assert c["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    # Hardened: non-root, read-only root, no capabilities, probes, resources.
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert dep["spec"]["template"]["metadata"]["labels"]["hetsched.io/phase"] == "router"
    assert "hetsched.io/engine" not in dep["spec"]["template"]["metadata"]["labels"]


def test_router_overrides_and_sglang_router() -> None:
    serving = ServingSpec.model_validate(
        {
            "engine": "sglang",
            "router": {
                "image": "mirror.local/router:2",
                "replicas": 2,
                "resources": {"limits": {"cpu": "4"}},
            },
        }
    )
    ref = WorkloadRef("chat", "ns", "u", "m", serving, choice=ServingChoice(engine="sglang"))
    dep = endpoint.router_objects(ref)[-1]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 2
    assert c["image"] == "mirror.local/router:2"
    assert c["command"] == ["python3", "-m", "sglang_router.launch_router"]
    assert "--pd-disaggregation" in c["args"]
    assert c["args"][c["args"].index("--bootstrap-port-annotation") + 1] == "sglang.ai/bootstrap-port"
    assert c["resources"]["limits"] == {"cpu": "4"}


def test_engine_without_a_router_cannot_be_disaggregated() -> None:
    ref = WorkloadRef("chat", "ns", "u", "m", choice=ServingChoice(engine="trtllm"))
    with pytest.raises(ValueError, match="no prefill/decode wiring"):
        endpoint.children(ref, PD)


def test_cpu_gpu_pair_is_refused_without_the_opt_in_and_allowed_with_it() -> None:
    pairs = [_phase("prefill", "cpu-amx", XEON), _phase("decode", "l4", L4)]
    with pytest.raises(ValueError, match="allowExperimentalPairs"):
        endpoint.children(REF, pairs)
    opted = WorkloadRef("chat", "ns", "u", "m", choice=ServingChoice(experimental_pairs=True))
    kinds = _kinds(endpoint.children(opted, pairs))
    assert ("Deployment", "chat-prefill") in kinds and ("Deployment", "chat-router") in kinds


def test_stale_children_after_mode_switch() -> None:
    before = endpoint.children(REF, PD)
    after = endpoint.children(REF, COLOCATED)
    assert manifests.stale_children(before, after) == [
        ("Deployment", "chat-decode"),
        ("Deployment", "chat-prefill"),
        ("Deployment", "chat-router"),
        ("Role", "chat-router"),
        ("RoleBinding", "chat-router"),
        ("ServiceAccount", "chat-router"),
    ]
    assert manifests.stale_children(after, after) == []


def test_inference_pool_behind_an_option() -> None:
    ref = WorkloadRef("chat", "team-a", "u-1", "m", options=RenderOptions(inference_pool_epp="llm-d-epp"))
    objs = endpoint.children(ref, PD)
    pool = objs[-1]
    assert (pool["apiVersion"], pool["kind"], pool["metadata"]["name"]) == (
        "inference.networking.k8s.io/v1",
        "InferencePool",
        "chat",
    )
    assert pool["spec"]["selector"] == {
        "matchLabels": {"hetsched.io/workload": "chat", "hetsched.io/engine": "vllm"}
    }
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {
        "name": "llm-d-epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }
    # Engine pods carry the label the pool selects; the router's do not.
    engines = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] != "chat-router"]
    assert all(o["spec"]["template"]["metadata"]["labels"]["hetsched.io/engine"] == "vllm" for o in engines)
    assert "InferencePool" not in [o["kind"] for o in endpoint.children(REF, PD)]
