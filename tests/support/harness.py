"""Helpers of the integration and reliability tests: the operator as a subprocess, waiting,
AgentWorkload manifests and conditions, and the checks that a workload's children and status agree
(no duplicates, no orphans, right ``observedGeneration``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from support import REPO
from support.cluster import LocalCluster

T = TypeVar("T")

CHAT: dict[str, Any] = {
    "model": {"name": "llama-3.1-8b"},
    "agent": {"profile": "chatbot"},
    "demand": {"requestsPerSecond": 2},
    "slo": {"ttftSeconds": 1, "tpotSeconds": 0.05},
}
CODER: dict[str, Any] = {
    "model": {"name": "qwen3-32b"},
    "agent": {"profile": "coding"},
    "demand": {"concurrentSessions": 4},
    "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
}
MANAGED = "app.kubernetes.io/managed-by=hetsched"


def wait(
    check: Callable[[], T | None], timeout: float = 60, what: str = "a condition", interval: float = 0.3
) -> T:
    """Poll ``check`` until it returns something other than None/False (exceptions: not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (subprocess.SubprocessError, httpx.HTTPError, KeyError, json.JSONDecodeError, OSError) as exc:
            last = exc
        except Exception as exc:  # ClusterError from kubectl while the API server restarts
            if type(exc).__name__ != "ClusterError":
                raise
            last = exc
        if last not in (None, False) and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def manifest(name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "hetsched.io/v1alpha1", "kind": "AgentWorkload", "metadata": meta, "spec": spec}


def apply(cluster: LocalCluster, *docs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def get_aw(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = cluster.kubectl_json("get", "agentworkload", name, "-n", ns)
    return doc


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def is_current(obj: dict[str, Any]) -> bool:
    """The status was written for the current spec."""
    return bool((obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation"))


def wait_condition(
    cluster: LocalCluster,
    ns: str,
    name: str,
    type_: str,
    status: str,
    timeout: float = 120,
    reason: str | None = None,
) -> dict[str, Any]:
    """The workload's condition ``type_`` has ``status`` (and ``reason``) for its current generation."""

    def check() -> dict[str, Any] | None:
        obj = get_aw(cluster, ns, name)
        c = condition(obj, type_)
        if c is None or c["status"] != status or not is_current(obj):
            return None
        if reason is not None and c.get("reason") != reason:
            return None
        return obj

    return wait(check, timeout, f"{ns}/{name} {type_}={status}" + (f" ({reason})" if reason else ""))


def workloads(cluster: LocalCluster, ns: str) -> dict[str, dict[str, Any]]:
    items = cluster.kubectl_json("get", "agentworkloads", "-n", ns)["items"]
    return {w["metadata"]["name"]: w for w in items}


#: The kinds of child the operator writes (docs/serving.md), as ``kubectl get`` names them.
CHILD_KINDS = "deployments,services,serviceaccounts,roles,rolebindings"
ROUTER_KINDS = ("Deployment", "ServiceAccount", "Role", "RoleBinding")


def children(cluster: LocalCluster, ns: str) -> list[dict[str, Any]]:
    """The operator's children in ``ns`` (those not being deleted)."""
    items = cluster.kubectl_json("get", CHILD_KINDS, "-n", ns, "-l", MANAGED)["items"]
    return [i for i in items if not i["metadata"].get("deletionTimestamp")]


def expected_children(status: dict[str, Any]) -> set[str]:
    """Engine Deployment names the status says a placed workload has."""
    return {
        str(status[phase]["deployment"])
        for phase in ("prefill", "decode")
        if isinstance(status.get(phase), dict) and status[phase].get("deployment")
    }


def expected_objects(name: str, status: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every child a placed workload has: its engine Deployments, the Service named
    after it, and when disaggregated the router's Deployment, ServiceAccount, Role and RoleBinding."""
    out = {("Deployment", d) for d in expected_children(status)} | {("Service", name)}
    if status.get("mode") == "disaggregated":
        out |= {(kind, f"{name}-router") for kind in ROUTER_KINDS}
    return out


def consistency_problems(cluster: LocalCluster, ns: str) -> list[str]:
    """Everything wrong with the workloads of ``ns`` and their children (empty when converged).

    Converged means: every workload's status is for its current generation; a placed one has
    exactly the children its status implies (``expected_objects``: one each, owned by it, engine
    Deployments with the replicas and pool of the status); an unplaced one has none; and no child exists whose owner
    is gone or is not one of these workloads (orphan) or that its owner does not name (stale).
    """
    problems: list[str] = []
    aws = workloads(cluster, ns)
    by_uid = {w["metadata"]["uid"]: name for name, w in aws.items()}
    want: dict[tuple[str, str], str] = {}  # (kind, name) -> owner
    for name, w in aws.items():
        status = w.get("status") or {}
        if not is_current(w):
            problems.append(
                f"{name}: observedGeneration {status.get('observedGeneration')} != "
                f"generation {w['metadata'].get('generation')}"
            )
        placed = condition(w, "Placed")
        if placed is not None and placed["status"] == "True":
            for key in expected_objects(name, status):
                want[key] = name
    seen: dict[tuple[str, str], int] = {}
    for c in children(cluster, ns):
        kind, cname = c["kind"], c["metadata"]["name"]
        seen[(kind, cname)] = seen.get((kind, cname), 0) + 1
        owners = [o for o in c["metadata"].get("ownerReferences") or [] if o.get("kind") == "AgentWorkload"]
        owner = by_uid.get(owners[0]["uid"]) if len(owners) == 1 else None
        if owner is None:
            problems.append(f"orphan {kind} {cname} (owners {owners})")
            continue
        if (kind, cname) not in want:
            problems.append(f"stale {kind} {cname} of {owner}")
            continue
        if want[(kind, cname)] != owner:
            problems.append(f"{kind} {cname} owned by {owner}, expected {want[(kind, cname)]}")
        if kind == "Deployment":
            status = aws[owner]["status"]
            phases = [
                status[p] for p in ("prefill", "decode") if (status.get(p) or {}).get("deployment") == cname
            ]
            pod = c["spec"]["template"]["spec"]
            if phases and c["spec"].get("replicas") != phases[0]["replicas"]:
                problems.append(f"{cname}: replicas {c['spec'].get('replicas')} != {phases[0]['replicas']}")
            if phases and pod.get("nodeSelector", {}).get("hetsched.io/pool") != phases[0]["pool"]:
                problems.append(f"{cname}: pool {pod.get('nodeSelector')} != {phases[0]['pool']}")
    for key in want:
        if key not in seen:
            problems.append(f"missing {key[0]} {key[1]} of {want[key]}")
    problems += [f"duplicate {k[0]} {k[1]}" for k, n in seen.items() if n > 1]
    return problems


def converged(cluster: LocalCluster, ns: str, names: Iterable[str]) -> bool:
    """Every named workload is Placed for its current generation and the namespace is consistent."""
    aws = workloads(cluster, ns)
    for name in names:
        w = aws.get(name)
        if w is None or not is_current(w):
            return False
        placed = condition(w, "Placed")
        if placed is None or placed["status"] != "True":
            return False
    return not consistency_problems(cluster, ns)


# ---- the operator as a subprocess ---------------------------------------------------------------
@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    identity: str = ""

    def get(self, path: str, timeout: float = 10) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def post(self, path: str, timeout: float = 60, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=timeout, **kw)

    def ready(self) -> bool:
        try:
            return self.get("/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_operator(
    cluster: LocalCluster,
    log: Path,
    *extra: str,
    namespaces: str,
    wait_ready: bool = True,
    identity: str = "",
) -> Operator:
    """``python -m hetsched.operator operator run`` watching ``namespaces`` (a glob), HTTP on a free port."""
    argv, env, port = cluster.operator_command(*extra, namespaces=namespaces)
    if identity:
        argv += ["--leader-elect-identity", identity]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    op = Operator(proc, f"http://127.0.0.1:{port}", log, identity)
    if not wait_ready:
        wait(lambda: op.get("/healthz").status_code == 200 or _exited(op), 60, "the operator's /healthz")
        return op

    def ready() -> bool:
        _exited(op)
        return op.get("/readyz").status_code == 200

    try:
        wait(ready, 90, "the operator's /readyz")
    except BaseException:
        stop_operator(op)
        print(f"--- operator log ({log}) ---\n{op.tail()}")
        raise
    return op


def _exited(op: Operator) -> bool:
    if op.process.poll() is not None:
        raise AssertionError(f"operator exited with {op.process.returncode}:\n{op.tail()}")
    return False


def stop_operator(op: Operator, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop the operator (SIGTERM: graceful; SIGKILL: a crash) and reap it."""
    if op.process.poll() is None:
        op.process.send_signal(sig)
        try:
            op.process.wait(timeout)
        except subprocess.TimeoutExpired:
            op.process.kill()
            op.process.wait(10)


def tracebacks(op: Operator) -> list[str]:
    """Python tracebacks in the operator's log, with what precedes them (an unexpected crash)."""
    lines = op.text().splitlines()
    return ["\n".join(lines[max(0, i - 3) : i + 25]) for i, ln in enumerate(lines) if "Traceback" in ln]


def create_namespace(cluster: LocalCluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name)
    wait(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        60,
        f"ServiceAccount default in {name}",
    )
    return name


def delete_namespace(cluster: LocalCluster, name: str) -> None:
    cluster.kubectl("delete", "agentworkloads", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def record(name: str, value: float, unit: str = "s") -> None:
    """Print a measured figure (``-s`` shows it) and append it to ``$HETSCHED_FIGURES`` if set."""
    line = {"figure": name, "value": round(value, 3), "unit": unit, "at": time.time()}
    print(f"FIGURE {name}: {value:.2f} {unit}")
    path = os.environ.get("HETSCHED_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


# ---- what the API server counted ------------------------------------------------------------------
# Writes the operator makes (and no controller of the test cluster makes to these resources): applies
# of its children, patches of AgentWorkloads (status, Kopf's annotations), deletions of children,
# Events. Counted by the API server itself (``apiserver_request_total``), so old and new operator
# code are measured the same way.
OPERATOR_WRITES = {
    ("APPLY", "deployments"),
    ("APPLY", "services"),
    ("PATCH", "deployments"),
    ("PATCH", "services"),
    ("PATCH", "agentworkloads"),
    ("DELETE", "deployments"),
    ("DELETE", "services"),
    ("POST", "events"),
}


def apiserver_requests(cluster: LocalCluster) -> dict[tuple[str, str, str], float]:
    """``apiserver_request_total`` by (verb, resource, code), summed over subresources."""
    from prometheus_client.parser import text_string_to_metric_families

    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if s.name == "apiserver_request_total":
                key = (s.labels.get("verb", ""), s.labels.get("resource", ""), s.labels.get("code", ""))
                out[key] = out.get(key, 0.0) + s.value
    return out


def request_delta(
    after: dict[tuple[str, str, str], float], before: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}


def operator_writes(delta: dict[tuple[str, str, str], float], *, failed: bool | None = None) -> float:
    """Writes of the kinds the operator makes in ``delta`` (``failed``: only refused ones, or only
    accepted ones; None: all)."""
    total = 0.0
    for (verb, resource, code), n in delta.items():
        if (verb, resource) not in OPERATOR_WRITES:
            continue
        if failed is not None and (code.startswith("2") == failed):
            continue
        total += n
    return total
