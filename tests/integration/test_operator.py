"""The operator against the real local control plane (etcd, kube-apiserver, controller-manager,
scheduler, KWOK pools): placement, children on the chosen pool's nodes, re-planning on spec and
pool changes, garbage collection, schema validation, conditions, and /metrics and /v1/* agreeing
with the status.

The operator runs as a subprocess (``python -m hetsched.operator operator run``) watching only the
namespaces ``hs-op-*`` this module creates, so other tests' objects are never touched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from hetsched.operator.devcluster.nodes import load_pools
from hetsched.operator.kube import KubeApi
from hetsched.scheduler.nodes import project_node
from prometheus_client.parser import text_string_to_metric_families
from support import REPO
from support.cluster import LocalCluster
from support.harness import (
    Operator,
    apply,
    condition,
    create_namespace,
    delete_namespace,
    get_aw,
    manifest,
    start_operator,
    stop_operator,
    wait,
)

pytestmark = pytest.mark.integration

DEMO_POOLS = REPO / "examples" / "pools" / "demo.yaml"
T = TypeVar("T")

CHAT = {
    "model": {"name": "llama-3.1-8b"},
    "agent": {"profile": "chatbot"},
    "demand": {"requestsPerSecond": 5},
    "slo": {"ttftSeconds": 1, "tpotSeconds": 0.05},
}
CODER = {
    "model": {"name": "llama-3.1-70b"},
    "agent": {"profile": "coding"},
    "demand": {"concurrentSessions": 16},
    "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
}


@pytest.fixture(scope="module")
def crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = start_operator(cluster, log, namespaces="hs-op-*")
    try:
        yield op
    finally:
        stop_operator(op)
        print(f"--- operator log ({log}) ---\n{op.tail(40)}")


@pytest.fixture
def ns(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "hs-op-" + request.node.name.lower().replace("_", "-").removeprefix("test-")[:40].strip("-")
    yield create_namespace(cluster, name)
    delete_namespace(cluster, name)


def wait_condition(
    cluster: LocalCluster,
    ns: str,
    name: str,
    type_: str,
    status: str,
    generation: int | None = None,
    timeout: float = 90,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_aw(cluster, ns, name)
        c = condition(obj, type_)
        gen = generation if generation is not None else obj["metadata"]["generation"]
        if c is not None and c["status"] == status and (obj["status"].get("observedGeneration") or 0) >= gen:
            return obj
        return None

    return wait(check, timeout, f"{ns}/{name} {type_}={status}")


def deployments(cluster: LocalCluster, ns: str, workload: str) -> dict[str, dict[str, Any]]:
    items = cluster.kubectl_json("get", "deployments", "-n", ns, "-l", f"hetsched.io/workload={workload}")[
        "items"
    ]
    return {d["metadata"]["name"]: d for d in items}


def pods_running_on_pool(cluster: LocalCluster, ns: str, workload: str, phase: str, pool: str) -> bool:
    pods = cluster.kubectl_json(
        "get", "pods", "-n", ns, "-l", f"hetsched.io/workload={workload},hetsched.io/phase={phase}"
    )["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if not live or any(p["status"].get("phase") != "Running" for p in live):
        return False
    nodes = {n["metadata"]["name"]: n for n in cluster.kubectl_json("get", "nodes")["items"]}
    return all(
        nodes[p["spec"]["nodeName"]]["metadata"]["labels"].get("hetsched.io/pool") == pool for p in live
    )


def router_objects(cluster: LocalCluster, ns: str, workload: str) -> set[tuple[str, str]]:
    """(kind, name) of the workload's ServiceAccounts, Roles and RoleBindings."""
    items = cluster.kubectl_json(
        "get", "serviceaccounts,roles,rolebindings", "-n", ns, "-l", f"hetsched.io/workload={workload}"
    )["items"]
    return {(o["kind"], o["metadata"]["name"]) for o in items}


def events(cluster: LocalCluster, ns: str, name: str) -> list[str]:
    items = cluster.kubectl_json(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.kind=AgentWorkload,involvedObject.name={name}",
    )["items"]
    return [e["reason"] for e in items]


# ---- tests --------------------------------------------------------------------------------------
def test_apply_places_and_runs_pods_on_the_chosen_pools(
    cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    apply(cluster, manifest("chat", CHAT, ns), manifest("coder", CODER, ns))
    for name in ("chat", "coder"):
        obj = wait_condition(cluster, ns, name, "Placed", "True")
        status = obj["status"]
        assert condition(obj, "Estimated")["status"] == "True"  # type: ignore[index]
        assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]
        children = deployments(cluster, ns, name)
        if status["mode"] == "colocated":
            expected = {f"{name}-serve": ("colocated", status["decode"])}
        else:
            expected = {
                f"{name}-prefill": ("prefill", status["prefill"]),
                f"{name}-decode": ("decode", status["decode"]),
            }
        router = {f"{name}-router"} if status["mode"] == "disaggregated" else set()
        assert set(children) == set(expected) | router
        for dname, (phase, ph) in expected.items():
            d = children[dname]
            pod = d["spec"]["template"]["spec"]
            assert pod["nodeSelector"] == {"hetsched.io/pool": ph["pool"]}
            assert d["spec"]["replicas"] == ph["replicas"]
            limits = pod["containers"][0]["resources"]["limits"]
            assert limits["nvidia.com/gpu"] == str(ph["tp"])
            assert d["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
            wait(
                lambda n=name, p=phase, pool=ph["pool"]: pods_running_on_pool(cluster, ns, n, p, pool),
                90,
                f"{dname} pods Running on pool {ph['pool']}",
            )
        # One endpoint: the Service named after the workload, in front of the engine pods
        # (colocated) or of the P/D router (disaggregated); its URL in status.endpoint.
        svc = cluster.kubectl_json("get", "service", name, "-n", ns)
        target = "colocated" if status["mode"] == "colocated" else "router"
        assert svc["spec"]["selector"] == {"hetsched.io/workload": name, "hetsched.io/phase": target}
        assert status["endpoint"] == f"http://{name}.{ns}.svc:8000/v1"
        assert "Placed" in wait(lambda n=name: events(cluster, ns, n) or None, 30, f"events of {name}")
    services = {s["metadata"]["name"] for s in cluster.kubectl_json("get", "services", "-n", ns)["items"]}
    assert services == {"chat", "coder"}
    table = cluster.kubectl("get", "aw", "-n", ns).stdout
    assert "PREFILL POOL" in table and "$/MTOK" in table and "chat" in table
    assert "ENDPOINT" in table and f"http://chat.{ns}.svc:8000/v1" in table


def test_spec_update_replans_and_switches_mode(cluster: LocalCluster, operator: Operator, ns: str) -> None:
    apply(cluster, manifest("chat", {**CHAT, "disaggregation": "always"}, ns))
    obj = wait_condition(cluster, ns, "chat", "Placed", "True")
    assert obj["status"]["mode"] == "disaggregated"
    wait(
        lambda: (
            set(deployments(cluster, ns, "chat")) == {"chat-prefill", "chat-decode", "chat-router"} or None
        ),
        60,
        "two phases and the router",
    )
    assert set(router_objects(cluster, ns, "chat")) == {
        ("ServiceAccount", "chat-router"),
        ("Role", "chat-router"),
        ("RoleBinding", "chat-router"),
    }
    cluster.kubectl(
        "patch", "aw", "chat", "-n", ns, "--type", "merge", "-p", '{"spec":{"disaggregation":"never"}}'
    )
    obj = wait_condition(cluster, ns, "chat", "Placed", "True", generation=2)
    assert obj["status"]["mode"] == "colocated"
    assert obj["status"]["prefill"]["deployment"] == "chat-serve"
    wait(
        lambda: set(deployments(cluster, ns, "chat")) == {"chat-serve"} or None, 60, "stale children deleted"
    )
    services = {s["metadata"]["name"] for s in cluster.kubectl_json("get", "services", "-n", ns)["items"]}
    assert services == {"chat"}
    # The router and its identity went with the split; the Service now selects the engine pods.
    wait(lambda: not router_objects(cluster, ns, "chat"), 60, "the router's RBAC deleted")
    svc = cluster.kubectl_json("get", "service", "chat", "-n", ns)
    assert svc["spec"]["selector"] == {"hetsched.io/workload": "chat", "hetsched.io/phase": "colocated"}
    assert "Replaced" in wait(
        lambda: [r for r in events(cluster, ns, "chat") if r == "Replaced"] or None, 30, "event"
    )


def test_delete_collects_children(cluster: LocalCluster, operator: Operator, ns: str) -> None:
    apply(cluster, manifest("chat", CHAT, ns))
    wait_condition(cluster, ns, "chat", "Placed", "True")
    wait(lambda: deployments(cluster, ns, "chat") or None, 60, "children")
    cluster.kubectl("delete", "aw", "chat", "-n", ns, "--wait=true", "--timeout=60s")
    wait(lambda: not deployments(cluster, ns, "chat"), 90, "garbage collection of the Deployments")
    wait(
        lambda: not cluster.kubectl_json("get", "services", "-n", ns)["items"],
        90,
        "garbage collection of Services",
    )
    wait(
        lambda: all(w["namespace"] != ns for w in operator.get("/v1/workloads").json()["workloads"]),
        30,
        "the workload leaving /v1/workloads",
    )
    assert f'namespace="{ns}"' not in operator.get("/metrics").text


@pytest.mark.parametrize(
    ("name", "spec", "fragments"),
    [
        ("slo", {**CHAT, "slo": {"ttftSeconds": 0.01, "tpotSeconds": 0.05}}, ["spec.slo", "slo.ttftSeconds"]),
        ("demand", {**CHAT, "demand": {}}, ["spec.demand", "requestsPerSecond"]),
        ("negative", {**CHAT, "slo": {"ttftSeconds": -1, "tpotSeconds": 0.05}}, ["spec.slo.ttftSeconds"]),
        ("unknown-field", {**CHAT, "replicas": 3}, ["replicas"]),
        (
            "gpu-resource",
            {
                **CHAT,
                "serving": {"prefill": {"image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}},
            },
            ["spec.serving.prefill", "nvidia.com/gpu"],
        ),
        ("x" * 60, CHAT, ["metadata.name"]),
    ],
)
def test_schema_invalid_rejected_by_the_api_server(
    cluster: LocalCluster, crds: None, name: str, spec: dict[str, Any], fragments: list[str]
) -> None:
    result = cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(manifest(name, spec, "default")), check=False
    )
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_infeasible_and_invalid_get_conditions_others_unaffected(
    cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    huge = {**CHAT, "model": {"name": "llama-3.1-405b"}, "demand": {"requestsPerSecond": 50}}
    unknown = {**CHAT, "model": {"name": "llama-9-1t"}}
    apply(cluster, manifest("huge", huge, ns), manifest("unknown", unknown, ns), manifest("chat", CHAT, ns))
    obj = wait_condition(cluster, ns, "huge", "Degraded", "True")
    assert condition(obj, "Placed")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Degraded")["reason"] == "Infeasible"  # type: ignore[index]
    assert "no pool" in condition(obj, "Degraded")["message"] or condition(obj, "Degraded")["message"]  # type: ignore[index]
    assert obj["status"]["rejectedPools"]
    bad = wait_condition(cluster, ns, "unknown", "Degraded", "True")
    est = condition(bad, "Estimated")
    assert est is not None and est["status"] == "False" and est["reason"] == "InvalidSpec"
    assert "spec.model" in est["message"] and "llama-9-1t" in est["message"]
    wait_condition(cluster, ns, "chat", "Placed", "True")
    assert not deployments(cluster, ns, "huge") and not deployments(cluster, ns, "unknown")
    assert "Infeasible" in wait(lambda: events(cluster, ns, "huge") or None, 30, "event")


def managed_children(cluster: LocalCluster, ns: str, workload: str) -> set[tuple[str, str]]:
    """(kind, name) of every object hetsched may create for a workload."""
    items = cluster.kubectl_json(
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings",
        "-n",
        ns,
        "-l",
        f"hetsched.io/workload={workload}",
    )["items"]
    return {(o["kind"], o["metadata"]["name"]) for o in items}


def test_engine_without_kv_path_between_its_pools_gets_a_condition_and_no_children(
    cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    """A disaggregated workload pinned to a CPU prefill pool and a GPU decode pool: vLLM's NIXL
    connector has no published CPU↔GPU run, so the pair is refused by name (kv-transfer) and
    nothing is created; opting into experimental pairs places it with every child at once."""
    split = {
        **CHAT,
        "slo": {"ttftSeconds": 30, "tpotSeconds": 1},
        "disaggregation": "always",
        "pools": {"prefill": ["cpu-amx"], "decode": ["l4"]},
    }
    apply(cluster, manifest("split", split, ns), manifest("chat", CHAT, ns))
    obj = wait_condition(cluster, ns, "split", "Degraded", "True")
    placed = condition(obj, "Placed")
    assert placed is not None and placed["status"] == "False"
    message = placed["message"]
    assert "(prefill, kv-transfer)" in message, message
    assert "prefill on cpu-amx, decode on l4" in message, message
    assert "allowExperimentalPairs" in message, message
    assert obj["status"].get("endpoint") is None
    rejected = obj["status"]["rejectedPools"]
    assert any(r["pool"] == "cpu-amx" and r["reason"].startswith("kv-transfer: ") for r in rejected), rejected
    wait_condition(cluster, ns, "chat", "Placed", "True")  # the other workload is unaffected
    wait(lambda: ("Service", "chat") in managed_children(cluster, ns, "chat") or None, 60, "chat's children")
    assert managed_children(cluster, ns, "split") == set()
    # Opting in: placed, and every child of the P/D split exists (not a part of them).
    cluster.kubectl(
        "patch",
        "aw",
        "split",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"serving": {"allowExperimentalPairs": True}}}),
    )
    obj = wait_condition(cluster, ns, "split", "Placed", "True", generation=2)
    assert obj["status"]["mode"] == "disaggregated"
    assert obj["status"]["endpoint"] == f"http://split.{ns}.svc:8000/v1"
    want = {
        ("Deployment", "split-prefill"),
        ("Deployment", "split-decode"),
        ("Deployment", "split-router"),
        ("Service", "split"),
        ("ServiceAccount", "split-router"),
        ("Role", "split-router"),
        ("RoleBinding", "split-router"),
    }
    wait(lambda: managed_children(cluster, ns, "split") == want or None, 60, "every child of the split")
    role = cluster.kubectl_json("get", "role", "split-router", "-n", ns)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    prefill = cluster.kubectl_json("get", "deployment", "split-prefill", "-n", ns)
    c = prefill["spec"]["template"]["spec"]["containers"][0]
    assert c["image"].startswith("vllm/vllm-openai-cpu:")
    assert c["resources"]["requests"] == c["resources"]["limits"]
    assert '"kv_buffer_device":"cpu"' in " ".join(c["args"])


def test_configmap_model_waits_then_places(cluster: LocalCluster, operator: Operator, ns: str) -> None:
    spec = {**CHAT, "model": {"configMap": {"name": "small-llama"}}}
    apply(cluster, manifest("cm", spec, ns))
    obj = wait_condition(cluster, ns, "cm", "Degraded", "True")
    assert condition(obj, "Degraded")["reason"] == "ConfigMapNotFound"  # type: ignore[index]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 16,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
    }
    cluster.kubectl(
        "create", "configmap", "small-llama", "-n", ns, f"--from-literal=config.json={json.dumps(config)}"
    )
    obj = wait_condition(cluster, ns, "cm", "Placed", "True", timeout=120)
    assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]


def test_metrics_and_api_report_the_status_numbers(
    cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    apply(cluster, manifest("chat", CHAT, ns))
    obj = wait_condition(cluster, ns, "chat", "Placed", "True")
    status = obj["status"]

    def listed() -> dict[str, Any] | None:
        for w in operator.get("/v1/workloads").json()["workloads"]:
            if w["namespace"] == ns and w["name"] == "chat" and w["status"].get("observedGeneration") == 1:
                return dict(w["status"])
        return None

    api_status = wait(listed, 30, "/v1/workloads")
    live = get_aw(cluster, ns, "chat")["status"]
    for key in ("prefill", "decode", "dollarsPerMillionTokens", "ttftSeconds", "tpotSeconds", "mode"):
        assert api_status.get(key) == live.get(key), key
    text = operator.get("/metrics").text
    samples = {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
    }
    for phase in ("prefill", "decode"):
        ph = status[phase]
        labels = {"name": "chat", "namespace": ns, "phase": phase, "pool": ph["pool"]}
        key = tuple(sorted(labels.items()))
        assert (
            samples[("hetsched_phase_operational_intensity_flops_per_byte", key)]
            == ph["operationalIntensity"]
        )
        assert samples[("hetsched_phase_capacity_footprint_bytes", key)] == ph["capacityFootprintBytes"]
        assert samples[("hetsched_phase_predicted_tokens_per_second", key)] == ph["tokensPerSecond"]
        assert (
            samples[("hetsched_phase_regime", tuple(sorted({**labels, "regime": ph["regime"]}.items())))]
            == 1.0
        )
    cost = samples[
        ("hetsched_workload_cost_dollars_per_million_tokens", (("name", "chat"), ("namespace", ns)))
    ]
    assert cost == status["dollarsPerMillionTokens"]
    assert any(name == "hetsched_reconcile_total" for name, _ in samples)
    assert any(name == "hetsched_build_info" for name, _ in samples)
    pools = {p["name"]: p for p in operator.get("/v1/pools").json()["pools"]}
    assert pools[status["decode"]["pool"]]["devicesAllocated"] >= status["decode"]["devices"]
    # What-if planning answers without writing anything.
    before = cluster.kubectl_json("get", "aw", "-n", ns)["items"]
    r = httpx.post(operator.url + "/v1/plan", json={"workloads": [manifest("whatif", CODER, ns)]}, timeout=60)
    assert r.status_code == 200 and r.json()["workloads"][0]["name"] == "whatif"
    assert len(cluster.kubectl_json("get", "aw", "-n", ns)["items"]) == len(before)
    est = httpx.post(
        operator.url + "/v1/estimate",
        json={"model": "llama-3.1-8b", "pool": status["decode"]["pool"]},
        timeout=60,
    )
    assert est.status_code == 200 and est.json()["phases"]["decode"]["regime"]


def test_losing_a_pool_replans(cluster: LocalCluster, operator: Operator, ns: str) -> None:
    pools = load_pools(DEMO_POOLS)
    apply(cluster, manifest("chat", CHAT, ns))
    obj = wait_condition(cluster, ns, "chat", "Placed", "True")
    first = obj["status"]["decode"]["pool"]
    nodes = [
        n["metadata"]["name"]
        for n in cluster.kubectl_json("get", "nodes", "-l", f"hetsched.io/pool={first}")["items"]
    ]
    try:
        cluster.kubectl("cordon", *nodes)

        def moved() -> dict[str, Any] | None:
            o = get_aw(cluster, ns, "chat")
            return o if o["status"].get("decode", {}).get("pool") not in (None, first) else None

        obj = wait(moved, 60, f"decode to leave cordoned pool {first}")
        second = obj["status"]["decode"]["pool"]
        assert "PoolLost" in wait(
            lambda: [r for r in events(cluster, ns, "chat") if r == "PoolLost"] or None, 30, "event"
        )
        d = deployments(cluster, ns, "chat")
        assert all(
            # the router (disaggregated) runs on any node: no pool to leave
            x["spec"]["template"]["spec"].get("nodeSelector", {}).get("hetsched.io/pool") != first
            for x in d.values()
        )
        # Deleting the nodes of the new pool moves it again.
        second_nodes = [
            n["metadata"]["name"]
            for n in cluster.kubectl_json("get", "nodes", "-l", f"hetsched.io/pool={second}")["items"]
        ]
        cluster.kubectl("delete", "nodes", *second_nodes)
        wait(
            lambda: (
                get_aw(cluster, ns, "chat")["status"].get("decode", {}).get("pool")
                not in (None, first, second)
                or None
            ),
            60,
            f"decode to leave deleted pool {second}",
        )
    finally:
        cluster.kubectl("uncordon", *nodes, check=False)
        cluster.handle.apply_nodes(pools)


def test_profile_overrides_price(cluster: LocalCluster, operator: Operator, ns: str) -> None:
    profile = {
        "apiVersion": "hetsched.io/v1alpha1",
        "kind": "AcceleratorProfile",
        "metadata": {"name": "hs-op-free-h100"},
        "spec": {"matchPool": "h100", "pricePerHour": 0.01},
    }
    apply(cluster, profile)
    try:

        def accepted() -> bool:
            p = cluster.kubectl_json("get", "acceleratorprofile", "hs-op-free-h100")
            return condition(p, "Accepted") is not None and condition(p, "Accepted")["status"] == "True"  # type: ignore[index]

        wait(accepted, 60, "profile Accepted")
        wait(
            lambda: (
                {p["name"]: p for p in operator.get("/v1/pools").json()["pools"]}["h100"][
                    "pricePerDeviceHour"
                ]
                == 0.01
            ),
            30,
            "the price override in /v1/pools",
        )
        apply(cluster, manifest("cheap", CHAT, ns))
        obj = wait_condition(cluster, ns, "cheap", "Placed", "True")
        assert "h100" in (obj["status"]["prefill"]["pool"], obj["status"]["decode"]["pool"])
        bad = {**profile, "metadata": {"name": "hs-op-bad"}, "spec": {"pricePerHour": 1}}
        result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
        assert result.returncode != 0 and "matchPool" in result.stderr
    finally:
        cluster.kubectl("delete", "acceleratorprofile", "hs-op-free-h100", "--ignore-not-found", check=False)


def test_restart_resumes_without_writes(cluster: LocalCluster, crds: None, tmp_path: Path) -> None:
    # Its own namespace pattern: the module's operator (hs-op-*) must not see these objects.
    ns = "hs-rs-restart"
    cluster.kubectl("create", "namespace", ns)
    wait(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
        60,
        "SA",
    )
    op = start_operator(cluster, tmp_path / "first.log", namespaces="hs-rs-*")
    try:
        apply(cluster, manifest("chat", CHAT, ns))
        wait_condition(cluster, ns, "chat", "Placed", "True")
        wait(lambda: deployments(cluster, ns, "chat") or None, 60, "children")
        time.sleep(2)
        before = get_aw(cluster, ns, "chat")
        before_d = {k: v["metadata"]["resourceVersion"] for k, v in deployments(cluster, ns, "chat").items()}
    finally:
        stop_operator(op)
    op = start_operator(cluster, tmp_path / "second.log", namespaces="hs-rs-*")
    try:
        wait(
            lambda: any(w["namespace"] == ns for w in op.get("/v1/workloads").json()["workloads"]),
            60,
            "resume",
        )
        time.sleep(3)
        after = get_aw(cluster, ns, "chat")
        assert after["status"]["prefill"] == before["status"]["prefill"]
        assert after["status"]["decode"] == before["status"]["decode"]
        after_d = {k: v["metadata"]["resourceVersion"] for k, v in deployments(cluster, ns, "chat").items()}
        # Deployment status may be updated by the controller-manager; our spec writes would bump generation.
        assert set(after_d) == set(before_d)
        for name, d in deployments(cluster, ns, "chat").items():
            assert d["metadata"]["generation"] == 1, name
    finally:
        stop_operator(op)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _hog(name: str, namespace: str, pool: str, gpus: int) -> dict[str, Any]:
    """A pod outside the operator that takes ``gpus`` GPUs of a node of ``pool``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "gpu-hog"}},
        "spec": {
            "nodeSelector": {"hetsched.io/pool": pool},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "hog",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ],
        },
    }


def _condition_samples(operator: Operator, ns: str, name: str) -> dict[tuple[str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(operator.get("/metrics").text):
        for smp in fam.samples:
            labels = smp.labels
            if smp.name == "hetsched_workload_condition" and (labels["namespace"], labels["name"]) == (
                ns,
                name,
            ):
                out[(labels["condition"], labels["status"])] = smp.value
    return out


def test_unschedulable_children_degrade_and_recover(
    cluster: LocalCluster, crds: None, tmp_path: Path
) -> None:
    """The planner counts devices per pool and knows nothing of pods it did not create: GPUs held
    by pods outside the operator leave its children Pending. After the grace period the workload
    is Degraded (reason Unschedulable, the scheduler's message, one Event, the condition metric);
    when the GPUs are freed the pods run and Degraded goes back to False."""
    ns = "hs-us-unschedulable"  # its own operator (short grace, fast resync): not the module's
    cluster.kubectl("create", "namespace", ns)
    wait(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
        60,
        "SA",
    )
    l4_nodes = {
        n["metadata"]["name"]
        for n in cluster.kubectl_json("get", "nodes", "-l", "hetsched.io/pool=l4")["items"]
    }
    op = start_operator(
        cluster,
        tmp_path / "operator.log",
        "--unschedulable-grace-seconds",
        "5",
        "--resync-seconds",
        "2",
        namespaces="hs-us-*",
    )
    try:
        # Every GPU of the l4 pool taken by pods the operator does not know about.
        apply(cluster, *[_hog(f"hog-{i}", ns, "l4", 4) for i in range(len(l4_nodes))])

        def hogs_running() -> bool:
            pods = cluster.kubectl_json("get", "pods", "-n", ns, "-l", "app=gpu-hog")["items"]
            return len(pods) == len(l4_nodes) and all(p["status"].get("phase") == "Running" for p in pods)

        wait(hogs_running, 120, "the GPU hogs Running on the l4 pool")
        pinned = {**CHAT, "demand": {"requestsPerSecond": 1}, "disaggregation": "never"}
        pinned["pools"] = {"prefill": ["l4"], "decode": ["l4"]}
        t0 = time.monotonic()
        apply(cluster, manifest("stuck", pinned, ns))
        obj = wait_condition(cluster, ns, "stuck", "Placed", "True")
        assert obj["status"]["decode"]["pool"] == "l4"
        assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]
        obj = wait_condition(cluster, ns, "stuck", "Degraded", "True", timeout=60)
        elapsed = time.monotonic() - t0
        degraded = condition(obj, "Degraded")
        assert degraded is not None and degraded["reason"] == "Unschedulable"
        assert degraded["message"].startswith("stuck-serve: pod stuck-serve-"), degraded
        assert (
            "unschedulable: 0/" in degraded["message"]
            and "Insufficient nvidia.com/gpu" in degraded["message"]
        )
        assert "preemption" not in degraded["message"]
        assert elapsed >= 5, elapsed  # not before the grace period
        assert condition(obj, "Placed")["status"] == "True"  # type: ignore[index]
        assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
        samples = wait(
            lambda: (s := _condition_samples(op, ns, "stuck")).get(("Degraded", "True")) == 1.0 and s,
            30,
            "the Degraded condition in /metrics",
        )
        assert ("Degraded", "False") not in samples  # one series per condition: its current status
        # One Event, although the operator re-converges every 2 s meanwhile.
        wait(lambda: "Unschedulable" in events(cluster, ns, "stuck"), 30, "the Unschedulable event")
        time.sleep(5)
        assert events(cluster, ns, "stuck").count("Unschedulable") == 1
        # Free the GPUs: the pods are scheduled, the workload Ready, Degraded False.
        cluster.kubectl("delete", "pods", "-n", ns, "-l", "app=gpu-hog", "--wait=true", "--timeout=60s")
        obj = wait_condition(cluster, ns, "stuck", "Ready", "True", timeout=90)
        degraded = condition(obj, "Degraded")
        assert degraded is not None and (degraded["status"], degraded["reason"]) == ("False", "AsPlanned")
        wait(
            lambda: _condition_samples(op, ns, "stuck").get(("Degraded", "False")) == 1.0,
            30,
            "Degraded False in /metrics",
        )
        assert pods_running_on_pool(cluster, ns, "stuck", "colocated", "l4")
        assert "Forbidden" not in op.log.read_text()
    finally:
        stop_operator(op)
        print(f"--- operator log ---\n{op.tail(30)}")
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_node_list_reads_every_page_as_plain_dicts(cluster: LocalCluster) -> None:
    """``KubeApi.list_nodes`` (the pools' source until Kopf's index is complete) reads raw JSON and
    follows the continue tokens: pages of 3 give the 10 demo nodes, the same as one page."""

    async def paged_and_whole() -> tuple[list[Any], list[Any]]:
        kube = await KubeApi.from_kubeconfig(str(cluster.kubeconfig))
        try:
            return await kube.list_nodes(page_size=3), await kube.list_nodes()
        finally:
            await kube.close()

    paged, whole = asyncio.run(paged_and_whole())
    names = sorted(n.name for n in cluster.handle.nodes())
    assert len(names) == 10 and sorted(name for name, *_ in paged) == names
    assert paged == whole
    for name, labels, spec, status in paged:
        assert isinstance(labels, dict) and isinstance(status.get("conditions"), list), name
        proj = project_node(name, labels, spec, status)
        assert proj is not None and proj["ready"] and proj["pool"] == labels["hetsched.io/pool"], proj


# A stand-in for the Gateway API Inference Extension's CRD: the group, version and kind hetsched
# writes, with an open schema (what the real CRD validates is the InferencePool's own business).
INFERENCE_POOL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": "inferencepools.inference.networking.k8s.io",
        # *.k8s.io groups need it; "unapproved..." is accepted (the API server flags the CRD).
        "annotations": {"api-approved.kubernetes.io": "unapproved, a test stand-in"},
    },
    "spec": {
        "group": "inference.networking.k8s.io",
        "scope": "Namespaced",
        "names": {"plural": "inferencepools", "singular": "inferencepool", "kind": "InferencePool"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def test_inference_pool_when_its_crd_is_installed(cluster: LocalCluster, crds: None, tmp_path: Path) -> None:
    """With --inference-pool-epp and the InferencePool CRD served, each workload also gets an
    InferencePool over its engine pods naming the endpoint picker; it goes with the workload."""
    ns = "hs-ip-pool"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(INFERENCE_POOL_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/inferencepools.inference.networking.k8s.io")
    op = start_operator(cluster, tmp_path / "op.log", "--inference-pool-epp", "epp", namespaces="hs-ip-*")
    try:
        apply(cluster, manifest("chat", CHAT, ns))
        wait_condition(cluster, ns, "chat", "Placed", "True")

        def pool() -> dict[str, Any] | None:
            r = cluster.kubectl("get", "inferencepool", "chat", "-n", ns, "-o", "json", check=False)
            return json.loads(r.stdout) if r.returncode == 0 else None

        obj = wait(pool, 60, "the InferencePool")
        assert obj["spec"]["selector"] == {
            "matchLabels": {"hetsched.io/workload": "chat", "hetsched.io/engine": "vllm"}
        }
        assert obj["spec"]["targetPorts"] == [{"number": 8000}]
        assert obj["spec"]["endpointPickerRef"]["name"] == "epp"
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "AgentWorkload"
        cluster.kubectl("delete", "aw", "chat", "-n", ns, "--wait=true", "--timeout=60s")
        wait(lambda: pool() is None, 90, "garbage collection of the InferencePool")
    finally:
        stop_operator(op)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl(
            "delete", "crd", "inferencepools.inference.networking.k8s.io", "--wait=false", check=False
        )
