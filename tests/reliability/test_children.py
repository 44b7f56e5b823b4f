"""The operator's children and its writes, against a real API server (``rel_cluster``), as a hostile
tenant and a demanding user would try them (issue 18):

* a child's name already taken (a user's own Service, an object labelled like ours): nothing is
  taken over, nothing written, nothing foreign deleted, a ``ChildConflict`` condition naming it;
* a child the API server refuses (an admission policy): a ``ChildRejected`` condition with the API
  server's message, one Event, and a bounded number of failed writes however often it resyncs;
  text beyond ASCII (emoji, CJK, U+2028) in env values and args is served as written;
* drift (``kubectl scale``, ``kubectl set image``, an edited Service selector, a status patched by
  someone else, the same while the operator was down) repaired within a resync period, and a quiet
  period costs zero writes;
* a demand far below one replica's capacity runs one replica, never 0 reported as Ready.

The operator runs with ``--resync-seconds 5``; writes and failed writes are counted by the API
server (``apiserver_request_total``). Figures are printed as ``FIGURE`` lines (``-s``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cluster import LocalCluster
from support.harness import (
    CHAT,
    Operator,
    apiserver_requests,
    apply,
    condition,
    create_namespace,
    delete_namespace,
    get_aw,
    is_current,
    manifest,
    operator_writes,
    record,
    request_delta,
    start_operator,
    stop_operator,
    tracebacks,
    wait,
    wait_condition,
)

pytestmark = pytest.mark.integration

PATTERN = "rc-*"
RESYNC = 5.0
COLOCATED = {**CHAT, "disaggregation": "never"}  # the Deployment <name>-serve, the Service <name>
POLICY = "hetsched-test-deny-images"
DENIED = "registry.invalid/denied/"


@pytest.fixture(scope="module")
def operator(rel_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("children") / "operator.log"
    op = start_operator(rel_cluster, log, "--resync-seconds", f"{RESYNC:g}", namespaces=PATTERN)
    try:
        yield op
    finally:
        stop_operator(op)
        print(f"--- operator log ({log}) ---\n{op.tail(40)}")


@pytest.fixture
def ns(rel_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = ("rc-" + request.node.name.removeprefix("test_").replace("_", "-"))[:50].rstrip("-")
    create_namespace(rel_cluster, name)
    yield name
    delete_namespace(rel_cluster, name)


def _get(cluster: LocalCluster, kind: str, ns: str, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", "--ignore-not-found")
    return json.loads(found.stdout) if found.stdout.strip() else None


def _create(cluster: LocalCluster, doc: dict[str, Any]) -> dict[str, Any]:
    """Create an object as a user would (``kubectl create``): it is not the operator's."""
    cluster.kubectl("create", "-f", "-", input=json.dumps(doc))
    found = _get(cluster, doc["kind"].lower(), doc["metadata"]["namespace"], doc["metadata"]["name"])
    assert found is not None
    return found


def _events(cluster: LocalCluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name},reason={reason}"
    )["items"]
    return list(items)


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(
        o.get("uid") == uid and o.get("controller") for o in obj["metadata"].get("ownerReferences") or []
    )


# ---- 1. ownership ---------------------------------------------------------------------------------------
def test_a_taken_name_is_a_conflict_and_nothing_is_taken_over(
    rel_cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    theirs = _create(
        rel_cluster,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "x", "namespace": ns},
            "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    apply(rel_cluster, manifest("x", COLOCATED, ns))
    obj = wait_condition(rel_cluster, ns, "x", "Degraded", "True", reason="ChildConflict")
    message = condition(obj, "Degraded")["message"]  # type: ignore[index]
    assert "Service x exists and is not this workload's: not controlled by any object" in message
    assert "kubectl-create" in message and "Nothing was written" in message
    assert condition(obj, "Ready")["reason"] == "ChildConflict"  # type: ignore[index]
    # Several resyncs later: the user's Service is untouched, no partial set was written.
    t0 = time.monotonic()
    wait(lambda: time.monotonic() - t0 > 2 * RESYNC, 3 * RESYNC, "two resyncs")
    now = _get(rel_cluster, "service", ns, "x")
    assert now is not None and now["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert now["spec"]["selector"] == {"app": "mine"} and not now["metadata"].get("ownerReferences")
    assert _get(rel_cluster, "deployment", ns, "x-serve") is None
    assert len(_events(rel_cluster, ns, "x", "ChildConflict")) == 1

    # Deleting the workload leaves the user's Service alone (the garbage collector has no reason).
    uid = get_aw(rel_cluster, ns, "x")["metadata"]["uid"]
    rel_cluster.kubectl("delete", "agentworkload", "x", "-n", ns, "--wait=true", "--timeout=60s")
    apply(rel_cluster, manifest("x", COLOCATED, ns))
    wait_condition(rel_cluster, ns, "x", "Degraded", "True", reason="ChildConflict")
    assert get_aw(rel_cluster, ns, "x")["metadata"]["uid"] != uid
    assert _get(rel_cluster, "service", ns, "x")["spec"]["selector"] == {"app": "mine"}  # type: ignore[index]

    # The user frees the name: the children follow within a resync period.
    rel_cluster.kubectl("delete", "service", "x", "-n", ns)
    t0 = time.monotonic()
    obj = wait_condition(rel_cluster, ns, "x", "Degraded", "False", timeout=60)
    record("name freed -> the workload's children created", time.monotonic() - t0)
    uid = obj["metadata"]["uid"]
    for kind, child_name in (("deployment", "x-serve"), ("service", "x")):
        child = _get(rel_cluster, kind, ns, child_name)
        assert child is not None and _owned_by(child, uid), kind


def test_objects_labelled_like_children_are_neither_adopted_nor_deleted(
    rel_cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    """A Deployment carrying the operator's labels for workload ``lab`` but not controlled by it: under
    a name the workload needs it is a conflict; under another name it is left alone (it used to be
    deleted as a stale child)."""
    labels = {"app.kubernetes.io/managed-by": "hetsched", "hetsched.io/workload": "lab", "app": "mine"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "lab-extra", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "mine"}},
            "template": {
                "metadata": {"labels": {"app": "mine"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    extra = _create(rel_cluster, deployment)
    serve = _create(rel_cluster, {**deployment, "metadata": {**deployment["metadata"], "name": "lab-serve"}})
    apply(rel_cluster, manifest("lab", COLOCATED, ns))
    obj = wait_condition(rel_cluster, ns, "lab", "Degraded", "True", reason="ChildConflict")
    assert "Deployment lab-serve exists and is not this workload's" in condition(obj, "Degraded")["message"]  # type: ignore[index]
    # The user removes the object under the needed name; the other one stays theirs.
    rel_cluster.kubectl("delete", "deployment", "lab-serve", "-n", ns)
    obj = wait_condition(rel_cluster, ns, "lab", "Degraded", "False", timeout=60)
    t0 = time.monotonic()
    wait(lambda: time.monotonic() - t0 > 2 * RESYNC, 3 * RESYNC, "two resyncs")
    now = _get(rel_cluster, "deployment", ns, "lab-extra")
    assert now is not None, "the operator deleted a Deployment it does not control"
    assert now["metadata"]["resourceVersion"] == extra["metadata"]["resourceVersion"]
    created = _get(rel_cluster, "deployment", ns, "lab-serve")
    assert created is not None and _owned_by(created, obj["metadata"]["uid"])
    assert created["metadata"]["uid"] != serve["metadata"]["uid"]


# ---- 3. refused writes ------------------------------------------------------------------------------------
@pytest.fixture
def deny_policy(rel_cluster: LocalCluster, ns: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy refusing Deployments with images from registry.invalid/denied/ in
    namespaces labelled for it (an admin's image policy, as docs/security.md suggests)."""
    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"object.spec.template.spec.containers.all(c, !c.image.startsWith('{DENIED}'))",
                        "message": f"images from {DENIED} are not allowed here",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {
                "policyName": POLICY,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"hetsched-test/deny-images": "true"}}
                },
            },
        },
    ]
    apply(rel_cluster, *docs)
    rel_cluster.kubectl("label", "namespace", ns, "hetsched-test/deny-images=true")
    # The policy takes effect once the API server has loaded it: probe with a dry run.
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": DENIED + "x"}]},
            },
        },
    }
    wait(
        lambda: (
            rel_cluster.kubectl(
                "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe), check=False
            ).returncode
            != 0
        ),
        60,
        "the admission policy to be loaded",
    )
    yield POLICY
    rel_cluster.kubectl(
        "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", POLICY, check=False
    )


def test_a_refused_child_is_a_condition_an_event_and_a_bounded_retry(
    rel_cluster: LocalCluster, operator: Operator, ns: str, deny_policy: str
) -> None:
    spec = {**COLOCATED, "serving": {"prefill": {"image": DENIED + "vllm:1"}}}
    apply(rel_cluster, manifest("z", spec, ns))
    obj = wait_condition(rel_cluster, ns, "z", "Degraded", "True", reason="ChildRejected")
    message = condition(obj, "Degraded")["message"]  # type: ignore[index]
    assert (
        message.startswith("Deployment z-serve: ") and f"images from {DENIED} are not allowed here" in message
    )
    assert condition(obj, "Ready")["reason"] == "ChildRejected"  # type: ignore[index]
    assert condition(obj, "Placed")["status"] == "True"  # type: ignore[index]
    # A minute of resyncs (every 5 s): failed writes stay few (the back-off: 5, 10, 20, 40 s).
    before = apiserver_requests(rel_cluster)
    t0 = time.monotonic()
    wait(lambda: time.monotonic() - t0 >= 60, 90, "a minute", interval=5)
    delta = request_delta(apiserver_requests(rel_cluster), before)
    failed = operator_writes(delta, failed=True)
    record("refused child: failed writes in the minute after the first refusal", failed, "writes")
    assert failed <= 5, delta
    events = _events(rel_cluster, ns, "z", "ChildRejected")
    assert len(events) == 1 and events[0].get("count", 1) == 1, events
    assert events[0]["type"] == "Warning" and f"images from {DENIED}" in events[0]["message"]
    # A spec the policy allows is written at once (no back-off for new content).
    t0 = time.monotonic()
    rel_cluster.kubectl(
        "patch",
        "aw",
        "z",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"serving": {"prefill": {"image": "registry.k8s.io/pause:3.10"}}}}),
    )
    wait_condition(rel_cluster, ns, "z", "Degraded", "False", timeout=60)
    record("refused child: spec fixed -> Degraded False", time.monotonic() - t0)
    assert _get(rel_cluster, "deployment", ns, "z-serve") is not None
    assert not tracebacks(operator), tracebacks(operator)[0]


UNICODE = "héllo wörld 😀 中文 🚀 \u2028 line-separator \\ud83d (a literal backslash-u)"


def test_unicode_in_env_values_and_args_is_served_as_written(
    rel_cluster: LocalCluster, operator: Operator, ns: str
) -> None:
    container = {
        "image": "vllm/vllm-openai:v0.11.0",
        "args": ["--model", "{model}", "--served-model-name", "chat 😀", "--port", "{port}"],
        "env": [{"name": "GREETING", "value": UNICODE}],
    }
    apply(rel_cluster, manifest("u", {**COLOCATED, "serving": {"prefill": container}}, ns))
    wait_condition(rel_cluster, ns, "u", "Placed", "True")
    deployment = wait(lambda: _get(rel_cluster, "deployment", ns, "u-serve"), 60, "the Deployment u-serve")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in c["env"]}["GREETING"] == UNICODE
    assert "chat 😀" in c["args"]
    obj = get_aw(rel_cluster, ns, "u")
    assert condition(obj, "Degraded")["reason"] == "AsPlanned", condition(obj, "Degraded")  # type: ignore[index]


# ---- 4. drift -------------------------------------------------------------------------------------------
# In a quiet period only the operator could apply children or patch AgentWorkloads; deletions and
# Events may also come from the garbage collector and the namespace controller cleaning up earlier
# tests, so those are checked on the workload itself (its children's uids, its Events).
QUIET_VERBS = {("APPLY", "deployments"), ("APPLY", "services"), ("PATCH", "agentworkloads")}


def _quiet_writes(cluster: LocalCluster, ns: str, name: str, seconds: float) -> float:
    """The operator's writes for workload ``name`` over ``seconds`` (a few resyncs)."""

    def snapshot() -> tuple[dict[tuple[str, str, str], float], dict[str, str], int]:
        kids = {
            f"{kind}/{c['metadata']['name']}": c["metadata"]["resourceVersion"]
            for kind, child in (("deployment", f"{name}-serve"), ("service", name))
            for c in [_get(cluster, kind, ns, child)]
            if c is not None
        }
        events = cluster.kubectl_json(
            "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}"
        )
        return apiserver_requests(cluster), kids, len(events["items"])

    before, kids0, events0 = snapshot()
    t0 = time.monotonic()
    wait(lambda: time.monotonic() - t0 >= seconds, seconds + 30, f"{seconds:g} quiet seconds", interval=2)
    after, kids1, events1 = snapshot()
    delta = request_delta(after, before)
    applies = sum(v for (verb, resource, _), v in delta.items() if (verb, resource) in QUIET_VERBS)
    assert (kids1, events1) == (kids0, events0), "children rewritten or Events posted in a quiet period"
    return applies


def _serving(cluster: LocalCluster, ns: str, name: str, replicas: int, image: str) -> bool:
    d = _get(cluster, "deployment", ns, f"{name}-serve")
    s = _get(cluster, "service", ns, name)
    if d is None or s is None:
        return False
    c = d["spec"]["template"]["spec"]["containers"][0]
    return bool(
        d["spec"]["replicas"] == replicas
        and c["image"] == image
        and set(s["spec"]["selector"]) == {"hetsched.io/workload", "hetsched.io/phase"}
    )


def test_drift_is_repaired_and_a_quiet_period_writes_nothing(
    rel_cluster: LocalCluster, operator: Operator, ns: str, tmp_path: Path
) -> None:
    apply(rel_cluster, manifest("d", COLOCATED, ns))
    obj = wait_condition(rel_cluster, ns, "d", "Ready", "True", timeout=180)
    replicas = obj["status"]["decode"]["replicas"]
    image = _get(rel_cluster, "deployment", ns, "d-serve")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]  # type: ignore[index]
    status = obj["status"]

    quiet = _quiet_writes(rel_cluster, ns, "d", 4 * RESYNC)
    record("quiet period (4 resyncs): operator writes", quiet, "writes")
    assert quiet == 0

    def tamper() -> None:
        rel_cluster.kubectl("scale", "deployment", "d-serve", "-n", ns, f"--replicas={replicas + 3}")
        rel_cluster.kubectl("set", "image", "deployment/d-serve", "-n", ns, "serve=busybox:1.36")
        rel_cluster.kubectl(
            "patch",
            "service",
            "d",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            '{"spec":{"selector":{"app":"x"}}}',
        )

    def repaired() -> bool:
        aw = get_aw(rel_cluster, ns, "d")
        return _serving(rel_cluster, ns, "d", replicas, image) and aw["status"]["decode"] == status["decode"]

    tamper()
    rel_cluster.kubectl(
        "patch",
        "aw",
        "d",
        "-n",
        ns,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        json.dumps({"status": {"decode": {"replicas": 99}, "mode": "disaggregated"}}),
    )
    t0 = time.monotonic()
    wait(repaired, 30, "the children and the status repaired")
    record("drift (scale, set image, Service selector, status) -> repaired", time.monotonic() - t0)
    assert get_aw(rel_cluster, ns, "d")["status"]["mode"] == "colocated"

    # The same while the operator is down: repaired once it is back.
    stop_operator(operator, signal.SIGTERM)
    tamper()
    restarted = start_operator(
        rel_cluster, tmp_path / "op2.log", "--resync-seconds", f"{RESYNC:g}", namespaces=PATTERN
    )
    # The module's fixture stops the operator it handed out: from now on, this one.
    operator.process, operator.url, operator.log = restarted.process, restarted.url, restarted.log
    t0 = time.monotonic()
    wait(repaired, 30, "the children repaired after a restart")
    record("drift while the operator was down: restart ready -> repaired", time.monotonic() - t0)
    wait_condition(rel_cluster, ns, "d", "Ready", "True", timeout=180)
    quiet = _quiet_writes(rel_cluster, ns, "d", 4 * RESYNC)
    record("quiet period after the repairs (4 resyncs): operator writes", quiet, "writes")
    assert quiet == 0
    assert not tracebacks(operator), tracebacks(operator)[0]


# ---- 8. a tiny demand -----------------------------------------------------------------------------------
def test_a_tiny_demand_runs_one_replica(rel_cluster: LocalCluster, operator: Operator, ns: str) -> None:
    spec = {**COLOCATED, "demand": {"requestsPerSecond": 1e-9}}
    apply(rel_cluster, manifest("t", spec, ns))
    obj = wait_condition(rel_cluster, ns, "t", "Placed", "True")
    assert obj["status"]["decode"]["replicas"] >= 1 and obj["status"]["dollarsPerMillionTokens"] > 0
    deployment = wait(lambda: _get(rel_cluster, "deployment", ns, "t-serve"), 60, "the Deployment t-serve")
    assert deployment["spec"]["replicas"] >= 1
    obj = wait_condition(rel_cluster, ns, "t", "Ready", "True", timeout=180)
    d = _get(rel_cluster, "deployment", ns, "t-serve")
    assert d is not None and d["status"].get("availableReplicas", 0) >= 1
    assert is_current(obj)
