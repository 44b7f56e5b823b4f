"""Security properties, each checked against the real thing:

* the chart's RBAC as ``helm template`` renders it (every values variant that changes RBAC): no
  Secrets, no wildcards, no escalation verbs, no cluster-admin binding, and writes only on an
  allow-list of resources (growing it is a reviewed change of this file);
* the operator's container: non-root, read-only root filesystem, no privilege escalation, all
  capabilities dropped, no host namespaces or host paths, no Secret mounted;
* the HTTP API holds no Kubernetes client (static) and, against a live operator, every POST
  endpoint of its OpenAPI document — valid, hostile and oversized bodies — writes nothing to the
  cluster (resourceVersions unchanged) and bodies over the limit get 413.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support import REPO
from support.cluster import LocalCluster
from support.harness import (
    CHAT,
    CODER,
    Operator,
    apply,
    converged,
    create_namespace,
    delete_namespace,
    manifest,
    record,
    start_operator,
    stop_operator,
    tracebacks,
    wait,
)

CHART = REPO / "charts" / "hetsched"

# Every write the operator may do: (apiGroup, resource) -> verbs. Anything else is a finding.
WRITES_ALLOWED: dict[tuple[str, str], set[str]] = {
    ("apps", "deployments"): {"create", "patch", "delete"},
    ("", "services"): {"create", "patch", "delete"},
    # The P/D router's identity and its namespaced Role (pods get/list/watch; docs/serving.md).
    # The API server accepts those only with permissions the operator holds (no escalate/bind).
    ("", "serviceaccounts"): {"create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "roles"): {"create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"create", "patch", "delete"},
    ("inference.networking.k8s.io", "inferencepools"): {"create", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("hetsched.io", "agentworkloads"): {"patch"},  # Kopf's progress annotations
    ("hetsched.io", "agentworkloads/status"): {"patch", "update"},
    ("hetsched.io", "agentworkloads/finalizers"): {"update"},  # blockOwnerDeletion on children
    ("hetsched.io", "acceleratorprofiles"): {"patch"},
    ("hetsched.io", "acceleratorprofiles/status"): {"patch", "update"},
    ("coordination.k8s.io", "leases"): {"create", "update", "patch"},  # leader election
}
READ_VERBS = {"get", "list", "watch"}
FORBIDDEN_RESOURCES = {
    "secrets",
    "serviceaccounts/token",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "nodes/proxy",
    "clusterroles",
    "clusterrolebindings",
    "certificatesigningrequests/approval",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
}
FORBIDDEN_VERBS = {"escalate", "bind", "impersonate", "*"}
VARIANTS = {
    "default": [],
    "namespaced": ["operator.watchNamespaces={team-a,team-b}"],
    "leader-election": ["leaderElection.enabled=true"],
    "everything": [
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
        "operator.logLevel=debug",
        "operator.inferencePool.endpointPicker=epp",
    ],
}


# ---- the chart --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The pinned helm binary (built into the cache if missing) and a private HELM_* environment."""
    from hetsched.operator.devcluster import build

    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    yield build.ensure_binaries(progress=print) / "helm", env


def render(helm: tuple[Path, dict[str, str]], sets: list[str]) -> list[dict[str, Any]]:
    argv = [str(helm[0]), "template", "rel", str(CHART), "--namespace", "hetsched-system"]
    for s in sets:
        argv += ["--set", s]
    out = subprocess.run(argv, capture_output=True, text=True, env=helm[1], timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.integration
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_rbac_is_least_privilege(helm: tuple[Path, dict[str, str]], variant: str) -> None:
    objs = render(helm, VARIANTS[variant])
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    bindings = [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert roles and bindings
    own = {(r["kind"], r["metadata"]["name"]) for r in roles}
    problems = []
    for b in bindings:
        ref = (b["roleRef"]["kind"], b["roleRef"]["name"])
        if ref not in own:  # cluster-admin, admin, edit, view or anything not of this chart
            problems.append(f"{b['kind']} {b['metadata']['name']} binds {ref}")
        for subject in b["subjects"]:
            if subject["kind"] != "ServiceAccount":
                problems.append(f"{b['kind']} {b['metadata']['name']} binds {subject}")
    for role in roles:
        where = f"{role['kind']} {role['metadata']['name']}"
        for rule in role.get("rules") or []:
            if rule.get("nonResourceURLs"):
                problems.append(f"{where}: nonResourceURLs {rule['nonResourceURLs']}")
            groups, resources, verbs = rule.get("apiGroups", []), rule.get("resources", []), rule["verbs"]
            for field, values in (("apiGroups", groups), ("resources", resources), ("verbs", verbs)):
                if "*" in values:
                    problems.append(f"{where}: wildcard in {field}")
            if rule.get("resourceNames") and "*" in rule["resourceNames"]:
                problems.append(f"{where}: wildcard in resourceNames")
            if set(verbs) & FORBIDDEN_VERBS:
                problems.append(f"{where}: verbs {sorted(set(verbs) & FORBIDDEN_VERBS)}")
            for group in groups:
                for resource in resources:
                    if resource in FORBIDDEN_RESOURCES or resource.startswith("secrets"):
                        problems.append(f"{where}: {resource} ({verbs})")
                    writes = set(verbs) - READ_VERBS
                    allowed = WRITES_ALLOWED.get((group, resource), set())
                    if writes - allowed:
                        problems.append(
                            f"{where}: {sorted(writes - allowed)} on {group or 'core'}/{resource}"
                        )
    assert not problems, "\n".join(problems)


@pytest.mark.integration
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_container_is_non_root_with_a_read_only_root(helm: tuple[Path, dict[str, str]], variant: str) -> None:
    (deployment,) = [o for o in render(helm, VARIANTS[variant]) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 1) != 0
    assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    assert deployment["spec"]["replicas"] == 1  # one operator: Kopf runs standalone
    for volume in pod.get("volumes") or []:
        assert "hostPath" not in volume and "secret" not in volume, volume
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), volume  # a bounded writable /tmp
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container.get("securityContext") or {}
        assert sc.get("readOnlyRootFilesystem") is True, container["name"]
        assert sc.get("allowPrivilegeEscalation") is False, container["name"]
        assert sc.get("runAsNonRoot") is True, container["name"]
        assert not sc.get("privileged"), container["name"]
        caps = sc.get("capabilities") or {}
        assert caps.get("drop") == ["ALL"] and not caps.get("add"), container["name"]
        for env in container.get("env") or []:
            assert "secretKeyRef" not in (env.get("valueFrom") or {}), env
        assert not any("secretRef" in e for e in container.get("envFrom") or [])
        assert container.get("resources", {}).get("limits", {}).get("memory"), "no memory limit"


def test_values_harden_by_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sc, psc = values["securityContext"], values["podSecurityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0


def test_dockerfile_user_is_numeric_and_not_root() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    args = dict(ln.split()[1].split("=", 1) for ln in lines if ln.startswith("ARG ") and "=" in ln)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users, "no USER instruction: the image runs as root"
    uid = users[-1].split(":")[0]
    for name, value in args.items():
        uid = uid.replace("${" + name + "}", value).replace("$" + name, value)
    assert uid.isdigit() and int(uid) != 0, users[-1]  # numeric: runAsNonRoot can verify it


# ---- the HTTP API holds no client ---------------------------------------------------------------------
HTTP_SIDE = ("api/app.py", "api/whatif.py", "api/server.py", "api/state.py", "api/metrics.py")
KUBE_MODULES = (
    "kubernetes",
    "kubernetes_asyncio",
    "kopf",
    "hetsched.operator.kube",
    "hetsched.operator.handlers",
)


@pytest.mark.parametrize("module", HTTP_SIDE)
def test_http_side_imports_no_kubernetes_client(module: str) -> None:
    tree = ast.parse((REPO / "operator" / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {m for m in imported if any(m == k or m.startswith(k + ".") for k in KUBE_MODULES)}
    assert not bad, f"operator/{module} imports {bad}: the HTTP API could write to the cluster"


# ---- against a live operator: POSTs write nothing ---------------------------------------------------------
NS = "rs-api"
WATCHED = (NS, "default", "kube-system")


def snapshot(cluster: LocalCluster) -> dict[tuple[str, str, str], str]:
    """(kind, namespace, name) -> resourceVersion of everything the operator could write."""
    out: dict[tuple[str, str, str], str] = {}
    kinds = (
        "agentworkloads,deployments,services,configmaps,events,leases,pods,serviceaccounts,roles,rolebindings"
    )
    for ns in WATCHED:
        for item in cluster.kubectl_json("get", kinds, "-n", ns)["items"]:
            if item["kind"] in ("Pod", "Event") and ns != NS:
                continue  # other components' churn
            if item["kind"] == "Lease" and ns == "kube-system":
                continue  # controller heartbeats
            meta = item["metadata"]
            out[(item["kind"], ns, meta["name"])] = meta["resourceVersion"]
    for item in cluster.kubectl_json("get", "acceleratorprofiles,namespaces")["items"]:
        out[(item["kind"], "", item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
    return out


@pytest.fixture(scope="module")
def live(rel_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    create_namespace(rel_cluster, NS)
    log = tmp_path_factory.mktemp("security") / "operator.log"
    op = start_operator(rel_cluster, log, namespaces="rs-*")
    try:
        apply(rel_cluster, manifest("chat", CHAT, NS), manifest("coder", CODER, NS))
        wait(lambda: converged(rel_cluster, NS, ["chat", "coder"]), 120, "placed")
        wait(
            lambda: all(
                (c.get("status") == "True")
                for w in rel_cluster.kubectl_json("get", "aw", "-n", NS)["items"]
                for c in w["status"]["conditions"]
                if c["type"] == "Ready"
            ),
            120,
            "Ready",
        )
        yield op
    finally:
        stop_operator(op)
        delete_namespace(rel_cluster, NS)


def post_bodies(op: Operator) -> list[tuple[str, Any]]:
    """(path, JSON body) for every POST operation the live OpenAPI document lists."""
    spec = op.get("/openapi.json").json()
    paths = [p for p, ops in spec["paths"].items() if "post" in ops]
    assert {"/v1/estimate", "/v1/plan"} <= set(paths)
    existing = [
        manifest("chat", CHAT, NS),
        manifest("coder", {**CODER, "demand": {"concurrentSessions": 64}}, NS),
    ]
    elsewhere = [manifest("intruder", CHAT, ns) for ns in ("default", "kube-system", "rs-new")]
    hostile: list[Any] = [{}, [], None, {"workloads": []}, {"model": ""}, {"x" * 100: "y"}]
    bodies: list[tuple[str, Any]] = []
    for path in paths:
        bodies += [(path, b) for b in hostile]
    bodies += [
        ("/v1/estimate", {"model": "llama-3.1-8b", "hardware": "h100-sxm"}),
        ("/v1/estimate", {"model": "llama-3.1-70b", "pool": "a100", "tp": 4, "batch": 64}),
        ("/v1/plan", {"workloads": existing}),  # the very workloads that exist, changed
        ("/v1/plan", {"workloads": existing, "includeExisting": False}),
        ("/v1/plan", {"workloads": elsewhere}),  # other namespaces, one that does not exist
        ("/v1/plan", {"workloads": [manifest(f"w{i}", CHAT, NS) for i in range(200)]}),
    ]
    return bodies


@pytest.mark.integration
def test_post_endpoints_write_nothing(rel_cluster: LocalCluster, live: Operator) -> None:
    before = wait(
        lambda: (a := snapshot(rel_cluster)) == snapshot(rel_cluster) and a, 60, "a quiet cluster", interval=2
    )
    statuses = []
    for path, body in post_bodies(live):
        r = live.post(path, json=body, timeout=120)
        statuses.append((path, r.status_code))
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
    assert (("/v1/plan", 200) in statuses) and (("/v1/estimate", 200) in statuses), statuses
    after = snapshot(rel_cluster)
    changed = {
        k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)
    }
    assert not changed, f"the HTTP API changed the cluster: {changed}"
    assert live.alive() and not tracebacks(live)


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/plan"])
def test_live_request_bodies_are_bounded(rel_cluster: LocalCluster, live: Operator, path: str) -> None:
    """Default limit 1 MiB: a 2 MiB body is refused (declared or streamed), the operator serves on."""
    big = json.dumps({"workloads": [manifest("x", CHAT, NS)], "pad": "x" * (2 << 20)}).encode()
    r = httpx.post(live.url + path, content=big, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    r = httpx.post(
        live.url + path, content=chunks(), headers={"content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 413
    assert live.get("/healthz").status_code == 200 and live.ready()


# ---- slow and idle clients ----------------------------------------------------------------------------
def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.integration
def test_slow_clients_cannot_exhaust_the_operator(rel_cluster: LocalCluster, live: Operator) -> None:
    """600 connections that send nothing or a header byte now and then (slowloris): the operator
    keeps at most its connection limit open (the longest-waiting go first), answers /healthz at
    once throughout, keeps placing workloads, and closes the slow ones after the read timeout.
    (Before: every connection was kept forever — one descriptor each, until none were left for
    the operator's own Kubernetes calls.)"""
    import socket

    pid = live.process.pid
    host, port = live.url.removeprefix("http://").split(":")
    baseline = _fds(pid)
    slow: list[socket.socket] = []
    peak = baseline
    try:
        for i in range(600):
            s = socket.create_connection((host, int(port)), timeout=5)
            if i % 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            slow.append(s)
            if i % 100 == 99:
                peak = max(peak, _fds(pid))
                t0 = time.monotonic()
                assert live.get("/healthz", timeout=5).status_code == 200
                record(f"/healthz with {i + 1} slow connections open", time.monotonic() - t0)
        for _ in range(3):
            for s in slow[1::2]:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")
            peak = max(peak, _fds(pid))
            time.sleep(1)
        record("operator descriptors: baseline", baseline, "fds")
        record("operator descriptors: peak with 600 slow connections", peak, "fds")
        # The default limit is 100 (and the listen backlog: a burst is accepted before it is cut).
        assert peak <= baseline + 2 * 100 + 30, (baseline, peak)
        # Its own Kubernetes calls still work: a spec change is planned and converged.
        rel_cluster.kubectl(
            "patch",
            "aw",
            "chat",
            "-n",
            NS,
            "--type=merge",
            "-p",
            '{"spec":{"demand":{"requestsPerSecond":3}}}',
        )
        wait(lambda: converged(rel_cluster, NS, ["chat"]), 60, "the change converged")
        # The read timeout (10 s) closes what is left of the slow ones.
        deadline = time.monotonic() + 30
        open_ = slow
        while open_ and time.monotonic() < deadline:
            still = []
            for s in open_:
                s.settimeout(0.01)
                try:
                    if s.recv(1024) == b"":
                        continue  # closed by the server
                except TimeoutError:
                    pass
                except OSError:
                    continue
                still.append(s)
            open_ = still
            time.sleep(0.5)
        assert not open_, f"{len(open_)} slow connections still open after 30 s"
        assert _fds(pid) <= baseline + 10
    finally:
        for s in slow:
            s.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_binds_the_pod_ip_and_loopback_only(helm: tuple[Path, dict[str, str]], variant: str) -> None:
    docs = render(helm, VARIANTS[variant])
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--host=$(POD_IP)" in args and "--host=127.0.0.1" in args, args
    assert not any("0.0.0.0" in a for a in args), args
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
