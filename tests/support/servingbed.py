"""A serving test bed: a real local control plane (no KWOK nodes) whose nodes are served by the local
kubelet (:mod:`support.kubelet`), so rendered manifests run as real engines on this machine. Shared
by the real-engine tests (``tests/serving``) and ``benchmarks/bench_serving.py``.

    bed = ServingBed(workdir, engine_env, pools, host_cpus={"cpu-prefill": (0,), ...}).up()
    bed.apply(objects)                         # what `hetsched render -o json` printed
    bed.wait_ready("ns", {"hetsched.io/workload": "tiny"}, count=3)
    url = bed.endpoint("ns", "tiny")           # a ready pod behind the workload Service
    bed.down()
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hetsched.operator.devcluster.cluster import Cluster
from hetsched.operator.devcluster.nodes import KWOK_ANNOTATION, PoolFile, node_manifest

from support.engines import EngineEnv
from support.kubelet import KubeApi, MiniKubelet, NodeSpec, PodRun

SYSTEM_NODE = "system-0"  # where pods without a pool go (the router)


def host_cpus() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def pool_nodes(pools: PoolFile, cpus: Mapping[str, Sequence[int]]) -> list[NodeSpec]:
    """The pool file's nodes, labelled as the devcluster labels them (without KWOK), each backed by the
    host cores ``cpus[pool]``; plus a system node on every core for pods without a pool."""
    out = []
    for pool in pools.pools:
        for i in range(pool.nodes):
            manifest = node_manifest(pool, i)
            labels = {k: v for k, v in manifest["metadata"]["labels"].items() if k != "type"}
            assert KWOK_ANNOTATION in manifest["metadata"]["annotations"]  # the one thing left out
            out.append(
                NodeSpec(
                    manifest["metadata"]["name"],
                    labels,
                    manifest["status"]["capacity"],
                    tuple(cpus.get(pool.name, host_cpus())),
                    tuple(manifest["spec"].get("taints", ())),
                )
            )
    system_labels = {
        "kubernetes.io/hostname": SYSTEM_NODE,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    out.append(
        NodeSpec(SYSTEM_NODE, system_labels, {"cpu": "4", "memory": "8Gi", "pods": "110"}, host_cpus())
    )
    return out


class ServingBed:
    def __init__(
        self,
        workdir: Path,
        engines: EngineEnv,
        pools: PoolFile,
        cpus: Mapping[str, Sequence[int]],
        cpu_manager_policy: str = "static",
    ) -> None:
        self.workdir = workdir
        self.cluster = Cluster(workdir / "cluster", log=print)
        self.engines = engines
        self.nodes = pool_nodes(pools, cpus)
        self.cpu_manager_policy = cpu_manager_policy
        self.kubelet: MiniKubelet | None = None
        self.api: KubeApi | None = None

    def up(self) -> ServingBed:
        self.cluster.up(None)
        pki = self.cluster.pki
        self.api = KubeApi(
            self.cluster.server, pki.ca_cert, pki.client_cert("admin"), pki.client_key("admin")
        )
        self.kubelet = MiniKubelet(
            self.api, self.nodes, self.engines.interpreters, self.workdir / "kubelet"
        ).start()
        return self

    def down(self) -> None:
        try:
            if self.kubelet is not None:
                self.kubelet.stop()
        finally:
            self.cluster.down()

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl(*args, input=input).stdout

    def apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        namespaces = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})
        for ns in namespaces:
            if self.cluster.kubectl("get", "namespace", ns, check=False).returncode != 0:
                self.kubectl("create", "namespace", ns)
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        )

    def pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        assert self.api is not None
        selector = urllib.parse.quote(",".join(f"{k}={v}" for k, v in labels.items()))
        items: list[dict[str, Any]] = self.api.get(
            f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
        )["items"]
        return items

    @staticmethod
    def is_ready(pod: Mapping[str, Any]) -> bool:
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(
        self, namespace: str, labels: Mapping[str, str], count: int, timeout: float = 900
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` pods matching ``labels`` are Ready; the logs' tails on timeout."""
        deadline = time.monotonic() + timeout
        pods: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            pods = self.pods(namespace, labels)
            if len([p for p in pods if self.is_ready(p)]) >= count:
                return pods
            time.sleep(1)
        assert self.kubelet is not None
        runs = self.kubelet.find(namespace, labels)
        raise AssertionError(
            f"timed out after {timeout:g} s waiting for {count} ready pods {dict(labels)} in {namespace}: "
            + ", ".join(
                f"{p['metadata']['name']} ready={self.is_ready(p)} node={p['spec'].get('nodeName')}"
                for p in pods
            )
            + "\nkubelet events:\n"
            + "\n".join(self.kubelet.events[-30:])
            + "\n"
            + self.kubelet.log_tail(runs)
        )

    def endpoint(self, namespace: str, service: str, port: str = "http") -> str:
        """``http://IP:PORT`` of a ready pod behind the Service: its selector and target port, resolved
        as the EndpointSlice controller would (which itself refuses loopback addresses: pod IPs here)."""
        assert self.api is not None
        svc = self.api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
        ports = [p for p in svc["spec"].get("ports") or [] if p.get("name", "") == port]
        assert ports, f"Service {namespace}/{service} has no port named {port!r}"
        target = ports[0].get("targetPort", ports[0]["port"])
        for pod in self.pods(namespace, svc["spec"].get("selector") or {}):
            if not self.is_ready(pod):
                continue
            for container in pod["spec"]["containers"]:
                for cp in container.get("ports") or []:
                    if target in (cp.get("name"), cp["containerPort"]):
                        return f"http://{pod['status']['podIP']}:{cp['containerPort']}"
        raise LookupError(f"Service {namespace}/{service}: no ready pod serves its port {port!r}")

    def run(self, namespace: str, labels: Mapping[str, str]) -> PodRun:
        """The one local pod matching ``labels``."""
        assert self.kubelet is not None
        runs = self.kubelet.find(namespace, labels)
        assert len(runs) == 1, f"expected one pod {dict(labels)}, found {[r.key for r in runs]}"
        return runs[0]
