"""The Helm chart against the local control plane: lint, render, server-side dry-run with every
option, install (CRDs Established, operator Deployment available on a KWOK node), least-privilege
RBAC (`kubectl auth can-i` as the chart's ServiceAccount), an operator run with that identity
placing the example workloads, and uninstall.

The ServiceMonitor and PrometheusRule kinds come from minimal structural copies of the Prometheus
Operator's CRDs written here (only the fields the chart uses plus a few common ones, with the
upstream types and duration pattern): enough for the API server to validate the chart's objects.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO
from support.chart import (
    CHART,
    RBAC_DENIAL,
    OperatorProcess,
    can_i,
    condition_status,
    docs,
    http_status,
    sa_kubeconfig,
    workload_docs,
)
from support.cluster import LocalCluster

ALL_ON = [
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
    "leaderElection.enabled=true",
]
RELEASE = "hs"

pytestmark = pytest.mark.integration

# ---- minimal monitoring.coreos.com CRDs --------------------------------------------------------
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
SERVICE_MONITOR_SPEC = {
    "type": "object",
    "required": ["selector"],
    "properties": {
        "jobLabel": {"type": "string"},
        "targetLabels": {"type": "array", "items": {"type": "string"}},
        "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "sampleLimit": {"type": "integer", "format": "int64"},
        "selector": LABEL_SELECTOR,
        "namespaceSelector": {
            "type": "object",
            "properties": {
                "any": {"type": "boolean"},
                "matchNames": {"type": "array", "items": {"type": "string"}},
            },
        },
        "endpoints": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "port": {"type": "string"},
                    "targetPort": {
                        "x-kubernetes-int-or-string": True,
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                    },
                    "path": {"type": "string"},
                    "scheme": {"type": "string", "enum": ["http", "https"]},
                    "interval": {"type": "string", "pattern": DURATION},
                    "scrapeTimeout": {"type": "string", "pattern": DURATION},
                    "honorLabels": {"type": "boolean"},
                    "honorTimestamps": {"type": "boolean"},
                    "params": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SPEC = {
    "type": "object",
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string", "pattern": DURATION},
                    "limit": {"type": "integer"},
                    "partial_response_strategy": {"type": "string"},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["expr"],
                            "properties": {
                                "alert": {"type": "string"},
                                "record": {"type": "string"},
                                "expr": {
                                    "x-kubernetes-int-or-string": True,
                                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                                },
                                "for": {"type": "string", "pattern": DURATION},
                                "keep_firing_for": {"type": "string", "minLength": 1, "pattern": DURATION},
                                "labels": STRING_MAP,
                                "annotations": STRING_MAP,
                            },
                        },
                    },
                },
            },
        }
    },
}


def monitoring_crd(kind: str, plural: str, spec_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


# ---- helpers -----------------------------------------------------------------------------------


def template(cluster: LocalCluster, *sets: str, namespace: str = "hetsched-system") -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    return docs(cluster.helm(*args).stdout)


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


# ---- static: lint and render -------------------------------------------------------------------


def test_helm_lint_strict(cluster: LocalCluster) -> None:
    for sets in ([], ALL_ON, [*ALL_ON, "operator.watchNamespaces={a,b}"]):
        args = ["lint", str(CHART), "--strict"]
        for s in sets:
            args += ["--set", s]
        result = cluster.helm(*args)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("operator.policy=fastest", "at '/operator/policy': value must be one of 'stable', 'joint'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("serviceMonitor.interval=often", "at '/serviceMonitor/interval': 'often' does not match pattern"),
    ],
)
def test_helm_rejects_values_outside_the_schema(cluster: LocalCluster, value: str, message: str) -> None:
    result = cluster.helm("template", RELEASE, str(CHART), "--set", value, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_default_render(cluster: LocalCluster) -> None:
    objs = template(cluster)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "hetsched", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/part-of"] == "hetsched"

    deployment = one(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "hs-hetsched"
    (container,) = pod["containers"]
    assert container["image"] == "hetsched:0.1.0"
    assert container["args"][:2] == ["operator", "run"]
    assert "--port=8080" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]

    service = one(objs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]

    text = yaml.safe_dump_all(by_kind(objs, "ClusterRole"))
    assert "secrets" not in text and "'*'" not in text


def test_everything_enabled_render(cluster: LocalCluster) -> None:
    objs = template(cluster, *ALL_ON, "prometheusRule.labels.release=kps", "operator.networkGbps.default=25")
    rule = one(objs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    source = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == source, "the PrometheusRule's spec must be files/prometheus-rules.yaml verbatim"

    monitor = one(objs, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job="hetsched", as the rules expect
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    service = one(objs, "Service")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "hetsched"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    dashboard = one(objs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["hetsched.json"]) == json.loads(
        (CHART / "dashboards" / "hetsched.json").read_text()
    )
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--network-gbps=default=25" in args
    assert {
        "--leader-elect",
        "--leader-elect-name=hs-hetsched",
        "--leader-elect-identity=$(POD_NAME)",
    } <= set(args)
    role = one(objs, "Role")
    assert role["metadata"]["name"] == "hs-hetsched-leader-election"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["hs-hetsched"],
            "verbs": ["get", "update"],
        },
    ]


def test_namespaced_render_grants_workload_rights_per_namespace_only(cluster: LocalCluster) -> None:
    objs = template(cluster, "operator.watchNamespaces={team-a,team-b}", namespace="ops")
    cluster_rules = one(objs, "ClusterRole")["rules"]
    cluster_resources = {r for rule in cluster_rules for r in rule["resources"]}
    assert cluster_resources == {
        "nodes",
        "acceleratorprofiles",
        "acceleratorprofiles/status",
        "customresourcedefinitions",
        "namespaces",
        "pods",  # list/watch: GPUs held outside the watched namespaces count as used
    }
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}
    assert set(roles) == {"team-a", "team-b", "ops"}
    assert {r for rule in roles["ops"]["rules"] for r in rule["resources"]} == {"events"}
    assert "agentworkloads" in {r for rule in roles["team-a"]["rules"] for r in rule["resources"]}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objs, "RoleBinding")}
    assert set(bindings) == set(roles)
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_existing_service_account_and_no_rbac(cluster: LocalCluster) -> None:
    objs = template(cluster, "serviceAccount.create=false", "serviceAccount.name=ops-sa", "rbac.create=false")
    assert sorted(o["kind"] for o in objs) == ["Deployment", "Service"]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    result = cluster.helm(
        "template", RELEASE, str(CHART), "--set", "serviceAccount.create=false", check=False
    )
    assert result.returncode != 0
    assert "serviceAccount.name is required when serviceAccount.create is false" in result.stderr


def test_image_digest_and_overrides(cluster: LocalCluster) -> None:
    digest = "sha256:" + "ab" * 32
    objs = template(
        cluster,
        "image.repository=registry.example.com/hetsched",
        f"image.digest={digest}",
        "fullnameOverride=hetsched",
        "operator.logLevel=debug",
        "operator.extraArgs={--max-body-bytes=2048}",
    )
    deployment = one(objs, "Deployment")
    assert deployment["metadata"]["name"] == "hetsched"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.example.com/hetsched@{digest}"
    assert container["args"][-2:] == ["--debug", "--max-body-bytes=2048"]


# ---- against the API server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_crds(cluster: LocalCluster) -> None:
    crds = [
        monitoring_crd("ServiceMonitor", "servicemonitors", SERVICE_MONITOR_SPEC),
        monitoring_crd("PrometheusRule", "prometheusrules", PROMETHEUS_RULE_SPEC),
    ]
    cluster.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}),
    )
    for crd in crds:
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/" + crd["metadata"]["name"]
        )


@pytest.mark.parametrize(
    "sets",
    [[], ALL_ON, [*ALL_ON, "operator.watchNamespaces={default}"]],
    ids=["defaults", "all", "namespaced"],
)
def test_server_side_dry_run(cluster: LocalCluster, monitoring_crds: None, sets: list[str]) -> None:
    namespace = "chart-dry-run"  # must exist: the dry-run checks namespaced objects against it
    cluster.kubectl("create", "namespace", namespace, check=False)
    text = cluster.helm(
        "template", RELEASE, str(CHART), "--namespace", namespace, *[a for s in sets for a in ("--set", s)]
    ).stdout
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--field-manager=test", "-f", "-", input=text
    )
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(docs(text)), result.stdout
    assert all("serverside-applied (server dry run)" in line for line in applied), result.stdout
    # Client-side apply too (what `kubectl apply -f` users run): strict field validation.
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text)
    assert "(server dry run)" in result.stdout


def test_server_side_dry_run_rejects_a_typo(
    cluster: LocalCluster, monitoring_crds: None, namespace: str
) -> None:
    """The minimal monitoring CRDs are strict enough to catch a misspelt field."""
    objs = template(cluster, "serviceMonitor.enabled=true", namespace=namespace)
    monitor = one(objs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(monitor), check=False
    )
    assert result.returncode != 0 and "honourLabels" in result.stderr


# ---- install, RBAC, operator run with the chart's identity, uninstall --------------------------


class Release:
    def __init__(self, namespace: str, install_seconds: float) -> None:
        self.namespace = namespace
        self.name = RELEASE
        self.fullname = f"{RELEASE}-hetsched"
        self.install_seconds = install_seconds

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, monitoring_crds: None) -> Iterator[Release]:
    namespace = "hetsched-chart"
    t0 = time.monotonic()
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", namespace, "--create-namespace",
        *[a for s in ALL_ON for a in ("--set", s)], "--wait", "--timeout", "100s",
    )  # fmt: skip
    rel = Release(namespace, time.monotonic() - t0)
    print(f"helm install --wait: {rel.install_seconds:.1f} s")
    try:
        yield rel
    finally:
        cluster.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def test_install_establishes_crds_and_runs_the_operator(cluster: LocalCluster, release: Release) -> None:
    for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
        obj = cluster.kubectl_json("get", "crd", crd)
        conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
        chart_copy = yaml.safe_load((CHART / "crds" / f"{crd}.yaml").read_text())
        assert obj["spec"]["versions"][0]["schema"] == chart_copy["spec"]["versions"][0]["schema"]
    deployment = cluster.kubectl_json("get", "deployment", release.fullname, "-n", release.namespace)
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True"
    assert deployment["status"]["readyReplicas"] == 1
    pods = cluster.kubectl_json(
        "get", "pods", "-n", release.namespace, "-l", f"app.kubernetes.io/instance={RELEASE}"
    )
    (pod,) = pods["items"]
    assert pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    node = cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
    for kind in ("servicemonitor", "prometheusrule", "configmap"):
        name = release.fullname + ("-dashboard" if kind == "configmap" else "")
        cluster.kubectl("get", kind, name, "-n", release.namespace)
    status = cluster.helm("status", RELEASE, "-n", release.namespace, "-o", "json").stdout
    assert json.loads(status)["info"]["status"] == "deployed"


# (verb, resource, extra args): what the operator does (handlers.py, kube.py, Kopf).
ALLOWED = [
    ("list", "nodes", ()),
    ("watch", "nodes", ()),
    ("list", "agentworkloads.hetsched.io", ("-A",)),
    ("watch", "agentworkloads.hetsched.io", ("-A",)),
    ("patch", "agentworkloads.hetsched.io", ("-n", "default")),
    ("patch", "agentworkloads.hetsched.io", ("-n", "default", "--subresource=status")),
    ("update", "agentworkloads.hetsched.io", ("-n", "default", "--subresource=finalizers")),
    ("list", "acceleratorprofiles.hetsched.io", ()),
    ("watch", "acceleratorprofiles.hetsched.io", ()),
    ("patch", "acceleratorprofiles.hetsched.io", ()),
    ("patch", "acceleratorprofiles.hetsched.io", ("--subresource=status",)),
    ("get", "deployments.apps", ("-n", "default")),
    ("list", "deployments.apps", ("-A",)),
    ("watch", "deployments.apps", ("-A",)),
    ("create", "deployments.apps", ("-n", "default")),
    ("patch", "deployments.apps", ("-n", "default")),
    ("delete", "deployments.apps", ("-n", "default")),
    ("get", "services", ("-n", "default")),
    ("list", "services", ("-A",)),
    ("watch", "services", ("-A",)),
    ("create", "services", ("-n", "default")),
    ("patch", "services", ("-n", "default")),
    ("delete", "services", ("-n", "default")),
    ("get", "serviceaccounts", ("-n", "default")),
    ("list", "serviceaccounts", ("-A",)),
    ("watch", "serviceaccounts", ("-A",)),
    ("create", "serviceaccounts", ("-n", "default")),
    ("patch", "serviceaccounts", ("-n", "default")),
    ("delete", "serviceaccounts", ("-n", "default")),
    # The P/D router's Role and RoleBinding (docs/serving.md).
    ("get", "roles.rbac.authorization.k8s.io", ("-n", "default")),
    ("list", "roles.rbac.authorization.k8s.io", ("-A",)),
    ("watch", "roles.rbac.authorization.k8s.io", ("-A",)),
    ("create", "roles.rbac.authorization.k8s.io", ("-n", "default")),
    ("patch", "roles.rbac.authorization.k8s.io", ("-n", "default")),
    ("delete", "roles.rbac.authorization.k8s.io", ("-n", "default")),
    ("get", "rolebindings.rbac.authorization.k8s.io", ("-n", "default")),
    ("list", "rolebindings.rbac.authorization.k8s.io", ("-A",)),
    ("watch", "rolebindings.rbac.authorization.k8s.io", ("-A",)),
    ("create", "rolebindings.rbac.authorization.k8s.io", ("-n", "default")),
    ("patch", "rolebindings.rbac.authorization.k8s.io", ("-n", "default")),
    ("delete", "rolebindings.rbac.authorization.k8s.io", ("-n", "default")),
    ("get", "configmaps", ("-n", "default")),
    ("list", "configmaps", ("-A",)),
    ("watch", "configmaps", ("-A",)),
    ("list", "pods", ("-A",)),
    ("list", "pods", ("-n", "default")),
    # What the router's Role grants, which the operator may grant only holding it.
    ("get", "pods", ("-n", "default")),
    ("watch", "pods", ("-A",)),
    ("create", "events", ("-n", "default")),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ()),
    # leaderElection.enabled: its own Lease in the release namespace
    ("create", "leases.coordination.k8s.io", ("-n", "hetsched-chart")),
    ("get", "leases.coordination.k8s.io/hs-hetsched", ("-n", "hetsched-chart")),
    ("update", "leases.coordination.k8s.io/hs-hetsched", ("-n", "hetsched-chart")),
]
DENIED = [
    ("get", "secrets", ("-n", "default")),
    ("list", "secrets", ("-A",)),
    ("watch", "secrets", ("-A",)),
    ("get", "secrets", ("-n", "hetsched-chart")),
    ("create", "configmaps", ("-n", "default")),
    ("delete", "pods", ("-n", "default")),
    # Subresources need --subresource: "pods/log" alone would ask about a pod named "log".
    ("get", "pods", ("-n", "default", "--subresource=log")),
    ("create", "agentworkloads.hetsched.io", ("-n", "default")),
    ("delete", "agentworkloads.hetsched.io", ("-n", "default")),
    ("update", "deployments.apps", ("-n", "default")),
    ("patch", "nodes", ()),
    ("delete", "nodes", ()),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("create", "clusterroles.rbac.authorization.k8s.io", ()),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ()),
    ("escalate", "roles.rbac.authorization.k8s.io", ("-n", "default")),
    ("bind", "roles.rbac.authorization.k8s.io", ("-n", "default")),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ()),
    ("create", "pods", ("-n", "default")),
    ("impersonate", "serviceaccounts", ("-n", "default")),
    ("create", "serviceaccounts", ("-n", "hetsched-chart", "--subresource=token")),
    ("create", "pods", ("-n", "default", "--subresource=exec")),
    ("*", "*", ("-A",)),
    ("update", "leases.coordination.k8s.io/kube-scheduler", ("-n", "hetsched-chart")),
    ("get", "leases.coordination.k8s.io", ("-n", "kube-system")),
    ("delete", "leases.coordination.k8s.io/hs-hetsched", ("-n", "hetsched-chart")),
]


def test_service_account_can_do_the_operators_job(cluster: LocalCluster, release: Release) -> None:
    missing = [(v, r, a) for v, r, a in ALLOWED if not can_i(cluster, release.subject, v, r, *a)]
    assert missing == []


def test_service_account_cannot_read_secrets_or_escalate(cluster: LocalCluster, release: Release) -> None:
    granted = [(v, r, a) for v, r, a in DENIED if can_i(cluster, release.subject, v, r, *a)]
    assert granted == []


def test_cluster_role_is_exactly_the_documented_table(cluster: LocalCluster, release: Release) -> None:
    role = cluster.kubectl_json("get", "clusterrole", release.fullname)
    rules = {
        (g, r): sorted(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    text = (REPO / "docs" / "helm.md").read_text()
    table = text.split("<!-- rbac-table -->")[1]
    documented = {}
    for m in re.finditer(r"^\| (core|`[^`]+`) \| `([^`]+)` \| ([a-z, ]+) \|", table, re.M):
        group = "" if m.group(1) == "core" else m.group(1).strip("`")
        documented[(group, m.group(2))] = sorted(v.strip() for v in m.group(3).split(","))
    assert rules == documented


@pytest.fixture(scope="module")
def sa_operator(
    cluster: LocalCluster, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorProcess, str]]:
    """The operator, run here with the chart's ServiceAccount token, serving a fresh namespace."""
    tmp = tmp_path_factory.mktemp("sa-operator")
    kubeconfig = sa_kubeconfig(cluster, release.namespace, release.fullname, tmp / "kubeconfig")
    namespace = "chart-workloads"
    cluster.kubectl("create", "namespace", namespace)
    op = OperatorProcess(kubeconfig, tmp / "operator.log")
    try:
        op.wait_ready(cluster)
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": workload_docs(namespace)}),
        )
        yield op, namespace
    finally:
        op.stop()
        print(op.log_text()[-3000:])
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_operator_with_the_chart_identity_places_the_examples(
    cluster: LocalCluster, sa_operator: tuple[OperatorProcess, str]
) -> None:
    op, namespace = sa_operator
    names = [d["metadata"]["name"] for d in workload_docs(namespace)]

    def all_placed() -> list[dict[str, Any]] | None:
        items = cluster.kubectl_json("get", "agentworkloads", "-n", namespace)["items"]
        placed = [w for w in items if condition_status(w, "Placed") == "True"]
        return items if len(placed) == len(names) else None

    t0 = time.monotonic()
    items = cluster.wait_for(all_placed, timeout=120, what=f"{names} Placed")
    print(
        f"{len(names)} example workloads Placed in {time.monotonic() - t0:.1f} s with the chart's ServiceAccount"
    )
    for w in items:
        assert w["status"]["decode"]["pool"], w["metadata"]["name"]
    # The children exist (server-side apply as the ServiceAccount) and are owned by the workloads.
    deployments = cluster.kubectl_json(
        "get", "deployments", "-n", namespace, "-l", "app.kubernetes.io/managed-by=hetsched"
    )
    assert deployments["items"]
    for d in deployments["items"]:
        assert d["metadata"]["ownerReferences"][0]["kind"] == "AgentWorkload"
    # Events were posted (kopf.event) with the ServiceAccount.
    events = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=AgentWorkload"
    )
    assert events["items"]
    # No RBAC denial (the API server's message names the user) and no Kopf fallback for lack of
    # permissions. (Other 403s, e.g. writing into a namespace being deleted, are not RBAC.)
    log = op.log_text()
    assert not RBAC_DENIAL.search(log), log[-4000:]


def test_without_the_charts_rbac_the_operator_is_denied(
    cluster: LocalCluster, release: Release, tmp_path: Path
) -> None:
    """The check above is not vacuous: a ServiceAccount without the chart's roles gets denied."""
    cluster.kubectl("create", "serviceaccount", "no-rbac", "-n", release.namespace)
    kubeconfig = sa_kubeconfig(cluster, release.namespace, "no-rbac", tmp_path / "kubeconfig")
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log")
    try:
        cluster.wait_for(lambda: RBAC_DENIAL.search(op.log_text()), timeout=60, what="an RBAC denial")
        assert http_status(op.url + "/readyz") != 200  # never sees the nodes
    finally:
        op.stop()
        cluster.kubectl("delete", "serviceaccount", "no-rbac", "-n", release.namespace, check=False)


def test_helm_uninstall_cleans_up(
    cluster: LocalCluster, release: Release, sa_operator: tuple[OperatorProcess, str]
) -> None:
    cluster.helm("uninstall", RELEASE, "--namespace", release.namespace, "--wait", "--timeout", "60s")
    for kind, name, ns in (
        ("deployment", release.fullname, release.namespace),
        ("service", release.fullname, release.namespace),
        ("serviceaccount", release.fullname, release.namespace),
        ("servicemonitor", release.fullname, release.namespace),
        ("prometheusrule", release.fullname, release.namespace),
        ("configmap", release.fullname + "-dashboard", release.namespace),
        ("clusterrole", release.fullname, None),
        ("clusterrolebinding", release.fullname, None),
        ("role", release.fullname + "-leader-election", release.namespace),
        ("rolebinding", release.fullname + "-leader-election", release.namespace),
    ):
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"] + (["-n", ns] if ns else [])
        assert cluster.kubectl(*args).stdout.strip() == "", f"{kind}/{name} left behind"
    cluster.wait_for(
        lambda: (
            not cluster.kubectl_json(
                "get", "pods", "-n", release.namespace, "-l", f"app.kubernetes.io/instance={RELEASE}"
            )["items"]
        ),
        timeout=60,
        what="the operator pod to go",
    )
    # CRDs stay (Helm never deletes crds/): the workloads survive an uninstall.
    cluster.kubectl("get", "crd", "agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io")
    assert "hs" not in cluster.helm("list", "-n", release.namespace, "-q").stdout.split()
