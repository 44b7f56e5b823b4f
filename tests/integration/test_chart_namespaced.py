"""The chart with `operator.watchNamespaces`: workload permissions come from a Role in each watched
namespace only, and an operator run with the chart's ServiceAccount (namespaced, as the chart runs
it) still places the examples and accepts an AcceleratorProfile (cluster-scoped: its status and
Events go through the ClusterRole and the release namespace's Role).

A separate module from test_chart.py so that its cluster-wide operator has stopped: two operators
must never serve the same workloads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.chart import (
    CHART,
    RBAC_DENIAL,
    OperatorProcess,
    can_i,
    condition_status,
    sa_kubeconfig,
    workload_docs,
)
from support.cluster import LocalCluster

RELEASE = "hsns"
FULLNAME = f"{RELEASE}-hetsched"
RELEASE_NS = "hetsched-ns-mode"
WATCHED = "chart-ns-watched"
OTHER = "chart-ns-other"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def namespaced_release(cluster: LocalCluster) -> Iterator[str]:
    for ns in (WATCHED, OTHER):
        cluster.kubectl("create", "namespace", ns)
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--create-namespace",
        "--set", f"operator.watchNamespaces={{{WATCHED}}}", "--set", "leaderElection.enabled=true",
        "--wait", "--timeout", "100s",
    )  # fmt: skip
    try:
        yield f"system:serviceaccount:{RELEASE_NS}:{FULLNAME}"
    finally:
        cluster.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", check=False)
        for ns in (WATCHED, OTHER, RELEASE_NS):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_workload_rights_only_in_the_watched_namespace(
    cluster: LocalCluster, namespaced_release: str
) -> None:
    subject = namespaced_release
    for verb, resource in (
        ("patch", "agentworkloads.hetsched.io"),
        ("create", "deployments.apps"),
        ("get", "configmaps"),
        ("watch", "configmaps"),
    ):
        assert can_i(cluster, subject, verb, resource, "-n", WATCHED), (verb, resource)
        assert not can_i(cluster, subject, verb, resource, "-n", OTHER), (verb, resource)
    # GPUs held by pods outside the watched namespaces count as used: pods are read everywhere.
    assert can_i(cluster, subject, "list", "pods", "-A") and can_i(cluster, subject, "watch", "pods", "-A")
    assert not can_i(cluster, subject, "get", "pods/log", "-n", OTHER)
    assert not can_i(cluster, subject, "list", "agentworkloads.hetsched.io", "-A")
    assert can_i(cluster, subject, "list", "nodes")
    assert can_i(cluster, subject, "list", "namespaces")
    assert can_i(cluster, subject, "create", "events", "-n", RELEASE_NS)
    assert not can_i(cluster, subject, "create", "events", "-n", OTHER)
    assert not can_i(cluster, subject, "get", "secrets", "-n", WATCHED)
    roles = cluster.kubectl_json("get", "roles", "-A", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert {r["metadata"]["namespace"] for r in roles} == {WATCHED, RELEASE_NS}


def test_namespaced_operator_with_the_chart_identity(
    cluster: LocalCluster, namespaced_release: str, tmp_path: Path
) -> None:
    kubeconfig = sa_kubeconfig(cluster, RELEASE_NS, FULLNAME, tmp_path / "kubeconfig")
    # Exactly the chart's arguments (leader election, --namespace), on a loopback port here.
    deployment = cluster.kubectl_json("get", "deployment", FULLNAME, "-n", RELEASE_NS)
    chart_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert chart_args[:2] == ["operator", "run"]
    args = [
        a.replace("$(POD_NAMESPACE)", RELEASE_NS).replace("$(POD_NAME)", "local-test-pod")
        for a in chart_args[2:]
        if not a.startswith(("--port=", "--host="))  # here: a loopback port of its own
    ]
    assert f"--namespace={WATCHED}" in args and "--leader-elect" in args
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", *args)
    profile = {
        "apiVersion": "hetsched.io/v1alpha1",
        "kind": "AcceleratorProfile",
        "metadata": {"name": "chart-ns-l4-price"},
        "spec": {"matchPool": "l4", "pricePerHour": 0.8},
    }
    try:
        op.wait_ready(cluster)
        docs = workload_docs(WATCHED)
        items = {"apiVersion": "v1", "kind": "List", "items": [*docs, profile]}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(items))

        def all_placed() -> bool:
            got = cluster.kubectl_json("get", "agentworkloads", "-n", WATCHED)["items"]
            return sum(condition_status(w, "Placed") == "True" for w in got) == len(docs)

        t0 = time.monotonic()
        cluster.wait_for(all_placed, timeout=120, what="the examples Placed in the watched namespace")
        print(f"namespaced: {len(docs)} examples Placed in {time.monotonic() - t0:.1f} s")
        cluster.wait_for(
            lambda: (
                condition_status(
                    cluster.kubectl_json("get", "acceleratorprofile", profile["metadata"]["name"]), "Accepted"
                )
                == "True"
            ),
            timeout=60,
            what="the AcceleratorProfile Accepted",
        )
        # Kopf's Events about the cluster-scoped profile land in the release namespace.
        cluster.wait_for(
            lambda: cluster.kubectl_json(
                "get",
                "events",
                "-n",
                RELEASE_NS,
                "--field-selector",
                "involvedObject.kind=AcceleratorProfile",
            )["items"],
            timeout=30,
            what="an Event about the AcceleratorProfile",
        )
        lease = cluster.kubectl_json("get", "lease", FULLNAME, "-n", RELEASE_NS)
        assert lease["spec"]["holderIdentity"] == "local-test-pod"
        assert not RBAC_DENIAL.search(op.log_text()), op.log_text()[-4000:]
    finally:
        op.stop()
        cluster.kubectl(
            "delete", "acceleratorprofile", profile["metadata"]["name"], "--ignore-not-found", check=False
        )
