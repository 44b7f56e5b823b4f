"""The local control plane: KWOK pools Ready with GFD labels, real scheduling onto a pool,
kubectl/helm at the server's version, the CLI, and `down` leaving no process behind."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hetsched.operator.devcluster.cluster import Cluster, NodeStatus
from hetsched.operator.devcluster.nodes import PoolFile, load_pools, node_names, parse_pools
from hetsched.operator.devcluster.processes import http_get
from support import REPO
from support.cluster import LocalCluster

DEMO_POOLS = REPO / "examples" / "pools" / "demo.yaml"

pytestmark = pytest.mark.integration

L4_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: decode-l4}
spec:
  replicas: 3
  selector: {matchLabels: {app: decode-l4}}
  template:
    metadata: {labels: {app: decode-l4}}
    spec:
      nodeSelector: {hetsched.io/pool: l4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers:
        - name: server
          image: registry.k8s.io/pause:3.10   # never pulled: KWOK fakes the kubelet
          resources:
            limits: {nvidia.com/gpu: 1, cpu: "4", memory: 16Gi}
"""


def test_every_pool_has_ready_nodes_with_gfd_labels(cluster: LocalCluster) -> None:
    pools = load_pools(DEMO_POOLS)
    nodes = {n["metadata"]["name"]: n for n in cluster.kubectl_json("get", "nodes")["items"]}
    for pool in pools.pools:
        for name in node_names(pool):
            node = nodes[name]
            labels = node["metadata"]["labels"]
            conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
            assert conditions["Ready"] == "True", name
            assert labels["hetsched.io/pool"] == pool.name
            assert labels["type"] == "kwok"
            allocatable = node["status"]["allocatable"]
            if pool.gpu_product:
                assert labels["nvidia.com/gpu.product"] == pool.gpu_product
                assert labels["nvidia.com/gpu.memory"] == str(pool.gpu_memory_mib)
                assert labels["nvidia.com/gpu.count"] == str(pool.devices_per_node)
                assert allocatable["nvidia.com/gpu"] == str(pool.devices_per_node)
                assert node["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
            else:
                assert "nvidia.com/gpu" not in allocatable
            assert allocatable["cpu"] == pool.node_cpu


def test_deployment_runs_on_the_l4_pool_only(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=L4_DEPLOYMENT)

    def running_pods() -> list[dict[str, object]] | None:
        pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=decode-l4")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return pods if len(running) == 3 and len(pods) == 3 else None

    pods = cluster.wait_for(running_pods, timeout=90, what="3 Running decode-l4 pods")
    l4_pool = next(p for p in load_pools(DEMO_POOLS).pools if p.name == "l4")
    l4_nodes = set(node_names(l4_pool))
    assert {p["spec"]["nodeName"] for p in pods} <= l4_nodes  # type: ignore[index]
    cluster.wait_for(
        lambda: (
            cluster.kubectl_json("get", "deployment", "decode-l4", "-n", namespace)["status"].get(
                "readyReplicas"
            )
            == 3
        ),
        what="Deployment decode-l4 ready",
    )


def test_more_gpus_than_a_node_has_stays_pending(cluster: LocalCluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {
            "nodeSelector": {"hetsched.io/pool": "l4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": 5}},
                }
            ],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))

    def failed_scheduling() -> str | None:
        events = cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector", "reason=FailedScheduling"
        )
        messages = [e["message"] for e in events["items"]]
        return next((m for m in messages if "nvidia.com/gpu" in m), None)

    message = cluster.wait_for(failed_scheduling, what="a FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in message
    assert cluster.kubectl_json("get", "pod", "too-big", "-n", namespace)["status"]["phase"] == "Pending"


def _gpu_pod_spec(gpus: int) -> dict[str, object]:
    return {
        "nodeSelector": {"hetsched.io/pool": "l4"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
        ],
        "containers": [
            {
                "name": "c",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {
                    "requests": {"cpu": "8", "memory": "64Gi"},
                    "limits": {"nvidia.com/gpu": gpus},
                },
            }
        ],
    }


def _pods_on(cluster: LocalCluster, nodes: set[str]) -> list[str]:
    pods = cluster.kubectl_json("get", "pods", "-A")["items"]
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods
        if p["spec"].get("nodeName") in nodes
    ]


@pytest.mark.parametrize("owner", ["pods", "deployment"])
def test_gpu_bin_packing_whole_node_fits(cluster: LocalCluster, namespace: str, owner: str) -> None:
    """Four single-GPU pods, then a four-GPU pod, on the l4 pool (2 nodes x 4 GPUs): the first
    four share one node and the big one gets the other. With kube-scheduler's default scoring
    (LeastAllocated; and for a Deployment behind a Service, the system default host spreading)
    they spread 2 + 2 and the big pod stays Pending. ``deployment`` is how the operator's children
    look (a ReplicaSet selected by a Service)."""
    l4_nodes = set(node_names(next(p for p in load_pools(DEMO_POOLS).pools if p.name == "l4")))
    # Earlier tests' namespaces are deleted without waiting: let their pods leave the pool first.
    cluster.wait_for(lambda: not _pods_on(cluster, l4_nodes), timeout=120, what="no pods on the l4 pool")
    small: list[dict[str, object]]
    if owner == "pods":
        small = [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"small-{i}"}, "spec": _gpu_pod_spec(1)}
            for i in range(4)
        ]
    else:
        small = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "small"},
                "spec": {
                    "replicas": 4,
                    "selector": {"matchLabels": {"app": "small"}},
                    "template": {"metadata": {"labels": {"app": "small"}}, "spec": _gpu_pod_spec(1)},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "small"},
                "spec": {"selector": {"app": "small"}, "ports": [{"port": 8000}]},
            },
        ]
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": small}),
    )

    def running(expected: int) -> list[dict[str, object]] | None:
        pods = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
        ok = len(pods) == expected and all(p["status"].get("phase") == "Running" for p in pods)
        return pods if ok else None

    first = cluster.wait_for(lambda: running(4), timeout=90, what="4 single-GPU pods Running")
    assert len({p["spec"]["nodeName"] for p in first}) == 1, [p["spec"]["nodeName"] for p in first]  # type: ignore[index]
    big = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"}, "spec": _gpu_pod_spec(4)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(big))
    pods = cluster.wait_for(lambda: running(5), timeout=90, what="the 4-GPU pod Running beside them")
    nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}  # type: ignore[index]
    assert set(nodes.values()) == l4_nodes
    assert nodes["big"] not in {p["spec"]["nodeName"] for p in first}  # type: ignore[index]
    # Free the pool for later tests (the namespace is deleted without waiting).
    cluster.kubectl(
        "delete", "pods,deployments,services", "--all", "-n", namespace, "--wait=true", "--timeout=60s"
    )


def test_scheduler_runs_with_the_bin_packing_configuration(cluster: LocalCluster) -> None:
    """The scheduler loaded the written KubeSchedulerConfiguration (its /configz, as admin)."""
    handle = cluster.handle
    config = handle.load_config()
    assert config is not None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the scheduler's self-signed serving certificate
    context.load_cert_chain(handle.pki.client_cert("admin"), handle.pki.client_key("admin"))
    status, body = http_get(f"https://127.0.0.1:{config.ports.scheduler}/configz", context)
    assert status == 200, body[:300]
    component = json.loads(body)["componentconfig"]
    assert component["leaderElection"]["leaderElect"] is False
    assert component["clientConnection"]["kubeconfig"].endswith("kube-scheduler.kubeconfig")
    (profile,) = component["profiles"]
    args = {p["name"]: p["args"] for p in profile["pluginConfig"]}
    strategy = args["NodeResourcesFit"]["scoringStrategy"]
    assert strategy["type"] == "MostAllocated"
    assert {r["name"]: r["weight"] for r in strategy["resources"]} == {
        "nvidia.com/gpu": 10,
        "cpu": 1,
        "memory": 1,
    }
    assert args["PodTopologySpread"]["defaultingType"] == "List"
    assert not args["PodTopologySpread"].get("defaultConstraints")


def test_kubectl_and_helm_talk_to_it_at_the_pinned_versions(cluster: LocalCluster, tmp_path: Path) -> None:
    versions = cluster.kubectl_json("version")
    assert versions["serverVersion"]["gitVersion"] == "v1.36.3"
    assert versions["clientVersion"]["gitVersion"] == "v1.36.3"
    assert (versions["serverVersion"]["major"], versions["serverVersion"]["minor"]) == ("1", "36")

    assert cluster.helm("version", "--short").stdout.startswith("v3.19.2")
    # A chart that only installs on Kubernetes >= 1.36: helm checks it against the live server.
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>= 1.36.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: probe}
            data: {kube: "{{ .Capabilities.KubeVersion.Version }}"}
            """
        )
    )
    cluster.helm("install", "probe", str(chart), "--namespace", "default", "--wait", "--timeout", "60s")
    try:
        config_map = cluster.kubectl_json("get", "configmap", "probe", "-n", "default")
        assert config_map["data"]["kube"] == "v1.36.3"
        assert "probe" in cluster.helm("list", "-n", "default", "-q").stdout.split()
    finally:
        cluster.helm("uninstall", "probe", "--namespace", "default")


def test_nodes_can_be_added_and_removed(cluster: LocalCluster) -> None:
    extra = parse_pools(
        {
            "pools": [
                {
                    "name": "extra-t4",
                    "hardware": "t4",
                    "nodes": 1,
                    "devicesPerNode": 4,
                    "nodeCpu": "48",
                    "nodeMemory": "192Gi",
                    "gpuProduct": "Tesla-T4",
                    "gpuMemoryMiB": 15360,
                }
            ]
        }
    )
    nodes = cluster.handle.apply_nodes(extra)
    assert [(n.name, n.ready, n.pool) for n in nodes] == [("extra-t4-0", True, "extra-t4")]
    cluster.handle.delete_nodes(extra)
    assert "extra-t4-0" not in {n.name for n in cluster.handle.nodes()}


def test_cli_status_and_env(cluster: LocalCluster) -> None:
    def hetsched(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "hetsched.operator",
                "cluster",
                *args,
                "--state-dir",
                str(cluster.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = hetsched("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["all_running"]
    assert {c["name"] for c in status["components"]} >= {"etcd", "kube-apiserver", "kwok"}
    assert all(n["ready"] for n in status["nodes"])
    assert len(status["nodes"]) >= sum(p.nodes for p in load_pools(DEMO_POOLS).pools)

    env = hetsched("env")
    assert env.returncode == 0
    assert f"export KUBECONFIG={cluster.kubeconfig}" in env.stdout


def _running(pid: int) -> bool:
    """True if the PID is a live process. A zombie (exited, not yet reaped by its parent — e.g.
    the first KWOK, stopped by the `nodes lose` subprocess but started by this test process)
    is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (our state folder appears in every component's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _up_twice_and_lose_a_node(
    session: LocalCluster, second: Cluster, pools: PoolFile
) -> dict[str, int | None]:
    """The checks on the second cluster between `up` and `down`; returns the first PIDs."""
    bin_dir = session.bin_dir
    first = second.up(pools, bin_dir=bin_dir, node_grace_period=20)
    assert first.all_running
    pids = {c.name: c.pid for c in first.components}
    assert all(pid and pid != os.getpid() for pid in pids.values())
    assert second.status().components[1].port != session.handle.status(query_api=False).components[1].port

    again = second.up(pools, bin_dir=bin_dir)  # already up: same processes, nothing restarted
    assert {c.name: c.pid for c in again.components} == pids

    kubeconfig = yaml.safe_load(second.kubeconfig.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == second.server

    # Node loss: cpu-1 stops heartbeating; the node-lifecycle controller marks it not Ready
    # (Unknown) with the `unreachable` taint after the 20 s grace period; cpu-0 stays Ready.
    lose = subprocess.run(
        [sys.executable, "-m", "hetsched.operator", "cluster", "nodes", "lose", "cpu-1"],
        env=os.environ | {"HETSCHED_CLUSTER_DIR": str(second.state_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lose.returncode == 0, lose.stderr

    def cpu_1_lost() -> dict[str, NodeStatus] | None:
        nodes = {n.name: n for n in second.nodes()}
        return None if nodes["cpu-1"].ready else nodes

    nodes = LocalCluster.wait_for(cpu_1_lost, timeout=90, what="cpu-1 to go NotReady")
    assert nodes["cpu-0"].ready
    taints = json.loads(second.kubectl("get", "node", "cpu-1", "-o", "jsonpath={.spec.taints}").stdout)
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in taints)
    second.resume_heartbeats(["cpu-1"])
    LocalCluster.wait_for(
        lambda: all(n.ready for n in second.nodes()), timeout=60, what="cpu-1 to be Ready again"
    )
    return pids


def test_second_cluster_idempotent_up_node_loss_and_clean_down(cluster: LocalCluster, tmp_path: Path) -> None:
    """A second, small cluster beside the session one (own state folder, own ports): `up` twice
    changes nothing, a node whose heartbeat stops goes NotReady, and `down` leaves no process."""
    pools = parse_pools(
        {
            "pools": [
                {
                    "name": "cpu",
                    "hardware": "xeon",
                    "nodes": 2,
                    "devicesPerNode": 1,
                    "nodeCpu": "8",
                    "nodeMemory": "32Gi",
                }
            ]
        }
    )
    second = Cluster(tmp_path / "second", log=print)
    try:
        pids = _up_twice_and_lose_a_node(cluster, second, pools)
    except BaseException:
        second.down()  # never leave a cluster running behind a failed assertion
        raise
    stopped = second.down()
    assert {r.name for r in stopped} == set(pids)
    for pid in pids.values():
        assert pid is not None
        assert not _running(pid), f"pid {pid} still running after down"
    assert _processes_mentioning(str(tmp_path / "second")) == []
    assert not (tmp_path / "second").exists()
    # The session cluster is untouched.
    assert cluster.handle.status(query_api=False).all_running
