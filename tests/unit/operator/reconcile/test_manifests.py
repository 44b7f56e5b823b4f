"""Engine Deployments are pure functions of the workload and its placement: the image for the
pool's hardware, the device resource, CPU sizing, the P/D wiring, the workload's overrides."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.manifests import PhaseDeployment, TaintRef, WorkloadRef
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.engines.pairing import kv_path
from hetsched.scheduler.engines.platform import PoolServing, ServingChoice, platform_of
from hetsched.scheduler.spec import ServingSpec
from hetsched.scheduler.units import GIB

GPU_TAINT = TaintRef("nvidia.com/gpu", "present", "NoSchedule")
L4 = platform_of(get_hardware("l4"))
T4 = platform_of(get_hardware("t4"))
MI300X = platform_of(get_hardware("mi300x"))
XEON = platform_of(get_hardware("xeon-6980p"))


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
        "platform": L4,
    }
    base.update(kw)
    return PhaseDeployment(**base)  # type: ignore[arg-type]


def _cpu_plan(phase: str = "decode", **kw: object) -> PhaseDeployment:
    base: dict[str, object] = {
        "pool": "cpu-amx",
        "node_selector": {"hetsched.io/pool": "cpu-amx"},
        "gpu": False,
        "tp": 1,
        "taints": (),
        "platform": XEON,
        "max_batch": 8,
        "max_model_len": 4096,
        "weight_bytes": 16e9,
        "kv_bytes_per_request": 0.5 * GIB,
        "cpus_per_device": 256.0,
    }
    base.update(kw)
    return _plan(phase, **base)


SERVING = ServingSpec.model_validate(
    {
        "prefill": {
            "image": "registry.local/vllm-custom:1",
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
            "env": [{"name": "HF_HOME", "value": "/cache"}, {"name": "UCX_TLS", "value": "rc"}],
            "resources": {"requests": {"cpu": "4", "memory": "32Gi"}},
        },
        "decode": {"image": "decode:1", "args": ["--tp", "{tp}"]},
    }
)
REF = WorkloadRef(
    name="chat", namespace="team-a", uid="u-1", model="meta-llama/Llama-3.1-8B-Instruct", serving=SERVING
)
DEFAULT = WorkloadRef(name="chat", namespace="team-a", uid="u-1", model="meta-llama/Llama-3.1-8B-Instruct")


def _container(d: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = d["spec"]["template"]["spec"]["containers"][0]
    return c


def _env(d: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(d)["env"]}


def test_deployment_targets_the_pool_and_requests_tp_gpus() -> None:
    d = manifests.deployment(REF, _plan("prefill"), kv_path(ServingChoice(), L4, T4))
    assert d["metadata"]["name"] == "chat-prefill"
    assert d["metadata"]["namespace"] == "team-a"
    assert d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"hetsched.io/pool": "l4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "effect": "NoSchedule", "operator": "Equal", "value": "present"}
    ]
    c = _container(d)
    assert c["image"] == "registry.local/vllm-custom:1"  # the workload's image wins
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "2"}
    # The workload's args, with the P/D wiring appended (they use none of its placeholders).
    assert c["args"][:8] == [
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "-tp=2",
        "--max-num-seqs=64",
        "--len=8192",
        "--role=prefill",
        "--port=9000",
        "{literal}",
    ]
    assert c["args"][8] == "--kv-transfer-config"
    assert json.loads(c["args"][9])["kv_role"] == "kv_producer"
    assert c["ports"][0] == {"name": "http", "containerPort": 9000, "protocol": "TCP"}
    env = _env(d)
    assert env["HETSCHED_PHASE"] == "prefill" and env["HETSCHED_TP"] == "2" and env["HF_HOME"] == "/cache"
    assert env["UCX_TLS"] == "rc"  # the workload's own variable wins over the wiring's


def test_default_engine_on_a_gpu_pool() -> None:
    """No spec.serving: the registry's CUDA image, its command and arguments from the plan."""
    d = manifests.deployment(DEFAULT, _plan("colocated"))
    c = _container(d)
    assert d["metadata"]["name"] == "chat-serve"
    assert c["image"] == "vllm/vllm-openai:v0.32.0"
    assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert c["args"] == [
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--tensor-parallel-size",
        "2",
        "--max-num-seqs",
        "64",
        "--max-model-len",
        "8192",
        "--host",
        "0.0.0.0",  # colocated: the Service reaches it directly, and so does kubectl port-forward
        "--port",
        "8000",
    ]
    assert "kv-transfer-config" not in " ".join(c["args"])
    assert [p["name"] for p in c["ports"]] == ["http"]
    annotations = d["spec"]["template"]["metadata"]["annotations"]
    assert annotations["hetsched.io/image-source"] == "registry: vLLM cuda build"
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels["hetsched.io/engine"] == "vllm" and labels["hetsched.io/pool"] == "l4"


def test_amd_pool_gets_the_rocm_image_and_amd_gpus() -> None:
    plan = _plan(
        "colocated", pool="mi300x", node_selector={"hetsched.io/pool": "mi300x"}, taints=(), platform=MI300X
    )
    c = _container(manifests.deployment(DEFAULT, plan))
    assert c["image"].startswith("rocm/vllm:")
    assert c["resources"] == {"requests": {"amd.com/gpu": "2"}, "limits": {"amd.com/gpu": "2"}}
    assert "nvidia.com/gpu" not in json.dumps(c)


def test_pool_override_image_and_device_resource() -> None:
    custom = platform_of(
        get_hardware("mi300x"),
        PoolServing(images={"vllm": "mirror.local/vllm-rocm:0.32"}, deviceResource="amd.com/gpu-partition"),
    )
    c = _container(manifests.deployment(DEFAULT, _plan("colocated", platform=custom)))
    assert c["image"] == "mirror.local/vllm-rocm:0.32"
    assert c["resources"]["limits"] == {"amd.com/gpu-partition": "2"}


def test_cpu_pool_gets_the_cpu_build_guaranteed_qos_and_sized_memory() -> None:
    plan = _cpu_plan("colocated")
    d = manifests.deployment(DEFAULT, plan)
    pod = d["spec"]["template"]["spec"]
    c = _container(d)
    assert c["image"] == "vllm/vllm-openai-cpu:v0.32.0"
    assert "tolerations" not in pod
    # Whole cores: a socket's 256 CPUs less 2 for the node's agents; requests = limits.
    kv_gib = 4  # 8 requests × 0.5 GiB
    weights_gib = 16e9 / GIB
    expected = weights_gib + kv_gib + 4 + 0.1 * weights_gib + 2  # + overhead + /dev/shm (TP 1)
    assert (
        c["resources"]["requests"]
        == c["resources"]["limits"]
        == {
            "cpu": "254",
            "memory": f"{int(-(-expected // 1))}Gi",
        }
    )
    env = _env(d)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(kv_gib)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    assert c["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert not any(k.endswith("/gpu") for part in c["resources"].values() for k in part)


def test_cpu_pool_keeps_the_workloads_own_cpu_and_memory() -> None:
    serving = ServingSpec.model_validate(
        {"prefill": {"resources": {"limits": {"cpu": "16", "memory": "64Gi"}}}}
    )
    ref = WorkloadRef("chat", "ns", "u", "m", serving)
    c = _container(manifests.deployment(ref, _cpu_plan("colocated")))
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "16", "memory": "64Gi"}


def test_cpu_tp_gets_a_larger_shm() -> None:
    pod = manifests.deployment(DEFAULT, _cpu_plan("colocated", tp=2))["spec"]["template"]["spec"]
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "4Gi"
    assert (
        _container(manifests.deployment(DEFAULT, _cpu_plan("colocated", tp=2)))["resources"]["limits"]["cpu"]
        == "508"
    )


def test_vllm_pd_wiring_between_two_gpu_generations() -> None:
    """NixlConnector on both sides, side channel on the pod IP (downward API), its port exposed,
    KV staged through host memory between an Ada and a Turing pool, UCX over TCP without RDMA."""
    path = kv_path(ServingChoice(), L4, T4)
    assert path.ok and path.staged
    pre = manifests.deployment(DEFAULT, _plan("prefill", tp=1), path)
    dec = manifests.deployment(DEFAULT, _plan("decode", pool="t4", platform=T4), path)
    for d, role in ((pre, "kv_producer"), (dec, "kv_consumer")):
        c = _container(d)
        flag = c["args"].index("--kv-transfer-config")
        assert json.loads(c["args"][flag + 1]) == {
            "kv_connector": "NixlConnector",
            "kv_role": role,
            "kv_buffer_device": "cpu",
        }
        assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"  # port-forward works too
        env = _env(d)
        assert c["env"][0] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "$(POD_IP)"
        assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5600"
        assert env["UCX_TLS"] == "tcp,self,sm"
        assert {"name": "kv-side", "containerPort": 5600, "protocol": "TCP"} in c["ports"]


def test_same_generation_pair_moves_device_memory() -> None:
    path = kv_path(ServingChoice(), L4, L4)
    assert path.ok and not path.staged
    c = _container(manifests.deployment(DEFAULT, _plan("decode"), path))
    config = json.loads(c["args"][c["args"].index("--kv-transfer-config") + 1])
    assert "kv_buffer_device" not in config  # vLLM's default: the device
    assert _env(manifests.deployment(DEFAULT, _plan("decode"), path))["UCX_TLS"] == "tcp,self,sm,cuda_copy"


def test_rdma_pool_leaves_ucx_to_choose_and_may_lock_memory() -> None:
    rdma = platform_of(get_hardware("l4"), PoolServing(rdma=True))
    path = kv_path(ServingChoice(), rdma, rdma)
    d = manifests.deployment(DEFAULT, _plan("decode", platform=rdma), path)
    assert "UCX_TLS" not in _env(d)
    assert _container(d)["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}


def test_sglang_pd_wiring() -> None:
    choice = ServingChoice(engine="sglang")
    ref = WorkloadRef("chat", "ns", "u", "m", choice=choice)
    h100 = platform_of(get_hardware("h100-sxm"))
    path = kv_path(choice, h100, h100)
    pre = manifests.deployment(ref, _plan("prefill", platform=h100), path)
    dec = manifests.deployment(ref, _plan("decode", platform=h100), path)
    pc, dc = _container(pre), _container(dec)
    assert pc["image"] == "lmsysorg/sglang:v0.5.18"
    assert pc["command"] == ["python3", "-m", "sglang.launch_server"]
    i = pc["args"].index("--disaggregation-mode")
    assert pc["args"][i : i + 6] == [
        "--disaggregation-mode",
        "prefill",
        "--disaggregation-transfer-backend",
        "nixl",
        "--disaggregation-bootstrap-port",
        "8998",
    ]
    assert dc["args"][dc["args"].index("--disaggregation-mode") + 1] == "decode"
    # The router reads the prefill's bootstrap port from this annotation.
    assert pre["spec"]["template"]["metadata"]["annotations"]["sglang.ai/bootstrap-port"] == "8998"
    assert "sglang.ai/bootstrap-port" not in dec["spec"]["template"]["metadata"]["annotations"]
    assert {"name": "kv-bootstrap", "containerPort": 8998, "protocol": "TCP"} in pc["ports"]


def test_user_args_with_pd_placeholders_serve_both_modes() -> None:
    """An argument list that names the wiring's placeholders keeps them where the user put them,
    and in a colocated container the flag with its placeholder is dropped."""
    serving = ServingSpec.model_validate(
        {
            "prefill": {
                "args": [
                    "--model",
                    "{model}",
                    "--kv-transfer-config",
                    "{kv_transfer_config}",
                    "--port",
                    "{port}",
                ],
                "extraArgs": ["--enable-prefix-caching"],
            }
        }
    )
    ref = WorkloadRef("chat", "ns", "u", "m", serving)
    colocated = _container(manifests.deployment(ref, _plan("colocated")))
    assert colocated["args"] == ["--model", "m", "--port", "8000", "--enable-prefix-caching"]
    decode = _container(manifests.deployment(ref, _plan("decode"), kv_path(ServingChoice(), L4, L4)))
    assert decode["args"][:3] == ["--model", "m", "--kv-transfer-config"]
    assert decode["args"].count("--kv-transfer-config") == 1  # not appended a second time
    assert decode["args"][-1] == "--enable-prefix-caching"


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
    assert _container(manifests.deployment(REF, _plan("decode")))["image"] == "decode:1"
    serve = manifests.deployment(REF, _plan("colocated"))
    assert serve["metadata"]["name"] == "chat-serve"
    assert _container(serve)["image"] == "decode:1"
    only_prefill = ServingSpec.model_validate({"prefill": {"image": "p:1"}})
    spec = manifests.container_for(only_prefill, "colocated")
    assert spec is not None and spec.image == "p:1"
    assert manifests.container_for(None, "decode") is None  # the engine's defaults


def test_a_cuda_image_on_a_cpu_pool_is_refused_by_name() -> None:
    """The planner never puts a pinned CUDA image on a CPU pool; the builder refuses it too."""
    serving = ServingSpec.model_validate({"prefill": {"image": "vllm/vllm-openai:v0.11.0"}})
    choice = ServingChoice(prefill_image="vllm/vllm-openai:v0.11.0")  # as resolve_workload makes it
    ref = WorkloadRef("chat", "ns", "u", "m", serving, choice=choice)
    with pytest.raises(ValueError) as err:
        manifests.deployment(ref, _cpu_plan("colocated"))
    message = str(err.value)
    assert message.startswith("colocated on cpu-amx: spec.serving.prefill.image vllm/vllm-openai:v0.11.0")
    assert "CUDA build" in message and "CPU build" in message


def test_engine_pods_are_hardened_and_probed() -> None:
    for plan in (_plan("prefill"), _cpu_plan("decode")):
        d = manifests.deployment(DEFAULT, plan)
        pod = d["spec"]["template"]["spec"]
        c = _container(d)
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # no VLLM_PORT from a Service named vllm
        assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800


def test_taint_without_value_tolerated_with_exists() -> None:
    assert manifests.tolerations([TaintRef("dedicated", "", "NoExecute")]) == [
        {"key": "dedicated", "effect": "NoExecute", "operator": "Exists"}
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


@pytest.mark.parametrize(
    ("arg", "fragment"),
    [
        ("{gpus}", "unknown placeholder {gpus}"),
        ("{tp:03d}", "format spec"),
        ("{tp!r}", "format spec"),
        ("{", "args[0]"),
    ],
)
def test_bad_placeholders_name_the_phase_and_argument(arg: str, fragment: str) -> None:
    ref = WorkloadRef("chat", "ns", "u", "m", ServingSpec.model_validate({"prefill": {"args": [arg]}}))
    with pytest.raises(ValueError, match=fragment.replace("{", r"\{").replace("[", r"\[")) as err:
        manifests.deployment(ref, _plan("prefill"))
    assert str(err.value).startswith("prefill on l4: ")


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
    """Engines never call the Kubernetes API: their pods get no ServiceAccount token (GPU and CPU)."""
    for plan in (_plan(phase), _cpu_plan(phase)):
        pod = manifests.deployment(REF, plan)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod and "serviceAccount" not in pod
        assert [v["name"] for v in pod["volumes"]] == ["dshm"]  # no projected token volume either


def _guaranteed_with_whole_cores(pod: dict[str, Any]) -> list[str]:
    """Why a pod would not get an exclusive cpuset from the static CPU manager (empty: it would):
    Guaranteed QoS (cpu and memory requests == limits in every container) and whole-number cpu."""
    problems = []
    for c in pod.get("initContainers", []) + pod["containers"]:
        req, lim = c["resources"].get("requests", {}), c["resources"].get("limits", {})
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r) != lim[r]:
                problems.append(f"{c['name']}: {r} requests {req.get(r)} != limits {lim.get(r)}")
        if not str(lim.get("cpu", "")).isdigit():
            problems.append(f"{c['name']}: cpu {lim.get('cpu')} is not a whole number")
    return problems


@pytest.mark.parametrize("phase", ["colocated", "prefill", "decode"])
@pytest.mark.parametrize("cpus_per_device", [1.0, 3.0, 7.5, 64.0, 256.0])
def test_cpu_engine_pods_are_guaranteed_with_whole_cores(phase: str, cpus_per_device: float) -> None:
    """vLLM's VLLM_CPU_OMP_THREADS_BIND=auto binds OpenMP to the pod's cpuset, which the kubelet's
    static CPU manager gives only to Guaranteed pods asking for whole cores."""
    path = kv_path(ServingChoice(), XEON, XEON) if phase != "colocated" else None
    d = manifests.deployment(DEFAULT, _cpu_plan(phase, cpus_per_device=cpus_per_device), path)
    pod = d["spec"]["template"]["spec"]
    assert _guaranteed_with_whole_cores(pod) == []
    assert _env(d)["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    cores = int(_container(d)["resources"]["limits"]["cpu"])
    assert 1 <= cores <= max(1, int(cpus_per_device))
    # A P/D engine reserves 2 cores (its scheduler and NIXL's thread) off the OpenMP list when it
    # has more: a node that has 3 or more cores per socket gives it at least 3.
    if cpus_per_device >= 3:
        assert cores >= 3


def test_guaranteed_check_finds_fractional_and_unequal_resources() -> None:
    pod = {
        "containers": [
            {
                "name": "a",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"cpu": "500m", "memory": "1Gi"},
                },
            },
            {
                "name": "b",
                "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi"},
                    "limits": {"cpu": "2", "memory": "1Gi"},
                },
            },
        ]
    }
    assert _guaranteed_with_whole_cores(pod) == [
        "a: cpu 500m is not a whole number",
        "b: cpu requests 1 != limits 2",
    ]
