"""Child Deployments and Services are pure functions of the workload and its placement."""

from __future__ import annotations

import pytest
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.manifests import PhaseDeployment, TaintRef, WorkloadRef
from hetsched.scheduler.spec import ServingSpec

GPU_TAINT = TaintRef("nvidia.com/gpu", "present", "NoSchedule")


def _plan(phase: str = "decode", **kw: object) -> PhaseDeployment:
    base: dict[str, object] = {
        "phase": phase,
        "pool": "l4",
        "node_selector": {"hetsched.io/pool": "l4"},
        "gpu": True,
        "tp": 2,
        "replicas": 3,
        "max_batch": 64,
        "max_model_len": 8192,
        "taints": (GPU_TAINT,),
    }
    base.update(kw)
    return PhaseDeployment(**base)  # type: ignore[arg-type]


SERVING = ServingSpec.model_validate(
    {
        "prefill": {
            "image": "vllm/vllm-openai:v0.11.0",
            "args": [
                "--model",
                "{model}",
                "-tp={tp}",
                "--max-num-seqs={max_batch}",
                "--len={max_model_len}",
                "--role={phase}",
                "--port={port}",
                "{{literal}}",
            ],
            "port": 9000,
            "env": [{"name": "HF_HOME", "value": "/cache"}],
            "resources": {"requests": {"cpu": "4", "memory": "32Gi"}},
        },
        "decode": {"image": "decode:1", "args": ["--tp", "{tp}"]},
    }
)
REF = WorkloadRef(
    name="chat", namespace="team-a", uid="u-1", model="meta-llama/Llama-3.1-8B-Instruct", serving=SERVING
)


def test_deployment_targets_the_pool_and_requests_tp_gpus() -> None:
    d = manifests.deployment(REF, _plan("prefill"))
    assert d["metadata"]["name"] == "chat-prefill"
    assert d["metadata"]["namespace"] == "team-a"
    assert d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"hetsched.io/pool": "l4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "effect": "NoSchedule", "operator": "Equal", "value": "present"}
    ]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert c["args"] == [
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "-tp=2",
        "--max-num-seqs=64",
        "--len=8192",
        "--role=prefill",
        "--port=9000",
        "{literal}",
    ]
    assert c["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HETSCHED_PHASE"] == "prefill" and env["HETSCHED_TP"] == "2" and env["HF_HOME"] == "/cache"


def test_labels_selector_and_owner() -> None:
    d = manifests.deployment(REF, _plan("decode"))
    labels = d["metadata"]["labels"]
    assert labels["hetsched.io/workload"] == "chat"
    assert labels["hetsched.io/phase"] == "decode"
    assert labels["app.kubernetes.io/managed-by"] == "hetsched"
    assert labels["app.kubernetes.io/instance"] == "chat"
    assert labels["app.kubernetes.io/component"] == "decode"
    assert d["spec"]["selector"] == {
        "matchLabels": {"hetsched.io/workload": "chat", "hetsched.io/phase": "decode"}
    }
    template_labels = d["spec"]["template"]["metadata"]["labels"]
    assert template_labels["hetsched.io/pool"] == "l4"
    assert set(d["spec"]["selector"]["matchLabels"].items()) <= set(template_labels.items())
    (owner,) = d["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "hetsched.io/v1alpha1",
        "kind": "AgentWorkload",
        "name": "chat",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_decode_defaults_to_its_own_container_and_colocated_falls_back() -> None:
    assert (
        manifests.deployment(REF, _plan("decode"))["spec"]["template"]["spec"]["containers"][0]["image"]
        == "decode:1"
    )
    serve = manifests.deployment(REF, _plan("colocated"))
    assert serve["metadata"]["name"] == "chat-serve"
    assert serve["spec"]["template"]["spec"]["containers"][0]["image"] == "decode:1"
    only_prefill = WorkloadRef("w", "ns", "u", "m", ServingSpec.model_validate({"prefill": {"image": "p:1"}}))
    assert manifests.container_for(only_prefill.serving, "colocated").image == "p:1"
    default = manifests.container_for(None, "decode")
    assert default.image == manifests.DEFAULT_IMAGE and "{tp}" in default.args


def test_cpu_pool_requests_no_gpu_and_no_tolerations() -> None:
    d = manifests.deployment(
        REF,
        _plan("prefill", gpu=False, taints=(), pool="cpu-amx", node_selector={"hetsched.io/pool": "cpu-amx"}),
    )
    pod = d["spec"]["template"]["spec"]
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in str(pod["containers"][0].get("resources", {}))


def test_taint_without_value_tolerated_with_exists() -> None:
    assert manifests.tolerations([TaintRef("dedicated", "", "NoExecute")]) == [
        {"key": "dedicated", "effect": "NoExecute", "operator": "Exists"}
    ]


def test_service_selects_the_phase_pods() -> None:
    s = manifests.service(REF, _plan("prefill"))
    assert s["metadata"]["name"] == "chat-prefill"
    assert s["spec"]["selector"] == {"hetsched.io/workload": "chat", "hetsched.io/phase": "prefill"}
    assert s["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": 9000, "protocol": "TCP"}]
    assert s["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_children_order_and_names() -> None:
    objs = manifests.children(REF, [_plan("prefill"), _plan("decode")])
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Deployment", "chat-prefill"),
        ("Deployment", "chat-decode"),
        ("Service", "chat-prefill"),
        ("Service", "chat-decode"),
    ]


def test_hash_is_stable_and_tracks_content() -> None:
    a = manifests.deployment(REF, _plan())
    b = manifests.deployment(REF, _plan())
    c = manifests.deployment(REF, _plan(replicas=4))
    h = manifests.HASH_ANNOTATION
    assert a["metadata"]["annotations"][h] == b["metadata"]["annotations"][h]
    assert a["metadata"]["annotations"][h] != c["metadata"]["annotations"][h]
    assert manifests.spec_hash(a) == a["metadata"]["annotations"][h]


def test_needs_write() -> None:
    d = manifests.deployment(REF, _plan())
    assert manifests.needs_write(None, d)
    assert not manifests.needs_write(d, d)
    assert manifests.needs_write(manifests.deployment(REF, _plan(replicas=1)), d)
    foreign = {**d, "metadata": {**d["metadata"], "ownerReferences": [{"uid": "other"}]}}
    assert manifests.needs_write(foreign, d)


def test_stale_children_after_mode_switch() -> None:
    before = manifests.children(REF, [_plan("prefill"), _plan("decode")])
    after = manifests.children(REF, [_plan("colocated")])
    assert manifests.stale_children(before, after) == [
        ("Deployment", "chat-decode"),
        ("Deployment", "chat-prefill"),
        ("Service", "chat-decode"),
        ("Service", "chat-prefill"),
    ]
    assert manifests.stale_children(after, after) == []


@pytest.mark.parametrize(
    ("arg", "fragment"),
    [
        ("{gpus}", "unknown placeholder {gpus}"),
        ("{tp:03d}", "format spec"),
        ("{tp!r}", "format spec"),
        ("{", "args[0]"),
    ],
)
def test_bad_placeholders(arg: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("{", r"\{").replace("[", r"\[")):
        manifests.render_args([arg], {"tp": 1})


def test_deployment_available() -> None:
    d = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2},
    }
    assert manifests.deployment_available(d) == (True, "2/2 replicas available")
    d["status"]["availableReplicas"] = 1
    assert manifests.deployment_available(d)[0] is False
    d["status"]["observedGeneration"] = 1
    assert "not observed" in manifests.deployment_available(d)[1]
    assert manifests.deployment_available(None) == (False, "not created yet")


def test_gpu_product_pool_avoids_labelled_nodes() -> None:
    plan = _plan(
        pool="gpu-nvidia-l4", node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"}, avoid_labelled_pools=True
    )
    pod = manifests.deployment(REF, plan)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchExpressions": [{"key": "hetsched.io/pool", "operator": "DoesNotExist"}]}]
    assert "affinity" not in manifests.deployment(REF, _plan())["spec"]["template"]["spec"]


@pytest.mark.parametrize("phase", ["prefill", "decode", "colocated"])
def test_serving_pods_do_not_mount_a_service_account_token(phase: str) -> None:
    """vLLM never calls the Kubernetes API: its pods get no ServiceAccount token (GPU and CPU)."""
    for plan in (_plan(phase), _plan(phase, gpu=False, taints=(), pool="cpu-amx")):
        pod = manifests.deployment(REF, plan)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod and "serviceAccount" not in pod
        assert "volumes" not in pod  # no projected token volume either
