"""The operator's own state and what it depends on, against a real control plane (``rel_cluster``):
a restart or failover moves nothing; a referenced ConfigMap edited re-plans and deleted keeps the
placement; the AgentWorkload CRD going away makes the operator forget its workloads and stop
writing; a namespace-scoped operator counts GPUs held outside its namespaces as used.

Each test prints what it measured (``FIGURE ...``; appended to ``$HETSCHED_FIGURES`` when set).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import REPO
from support.cluster import LocalCluster
from support.harness import (
    CHAT,
    CODER,
    Operator,
    apply,
    children,
    condition,
    get_aw,
    manifest,
    record,
    start_operator,
    stop_operator,
    tracebacks,
    wait,
    wait_condition,
    workloads,
)

pytestmark = pytest.mark.integration


def placement(w: dict[str, Any]) -> tuple[Any, ...]:
    """What a move would change: mode, and per phase the pool, TP, batch and replicas."""
    s = w.get("status") or {}
    phases = tuple(
        tuple((s.get(p) or {}).get(k) for k in ("pool", "tp", "batch", "replicas", "deployment"))
        for p in ("prefill", "decode")
    )
    return (s.get("mode"), *phases)


def child_ids(cluster: LocalCluster, ns: str) -> dict[tuple[str, str], tuple[str, int, str]]:
    """(kind, name) → (uid, generation, resourceVersion of a Service; spec-hash of a Deployment)."""
    out = {}
    for c in children(cluster, ns):
        meta = c["metadata"]
        mark = (
            meta["resourceVersion"]
            if c["kind"] == "Service"
            else meta["annotations"]["hetsched.io/spec-hash"]
        )
        out[(c["kind"], meta["name"])] = (meta["uid"], int(meta.get("generation") or 0), mark)
    return out


def reconciles(op: Operator) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(op.get("/metrics").text):
        for s in family.samples:
            if s.name == "hetsched_reconcile_total":
                out[s.labels["result"]] = s.value
    return out


def _cordon(cluster: LocalCluster, pools: set[str], on: bool) -> None:
    for pool in sorted(pools):
        cluster.kubectl("cordon" if on else "uncordon", "-l", f"hetsched.io/pool={pool}")


# ---- restarts and failovers -------------------------------------------------------------------------
MIX = {
    "chat-a": CHAT,
    "chat-b": {**CHAT, "demand": {"requestsPerSecond": 6}},
    "chat-co": {**CHAT, "disaggregation": "never"},
    "coder": CODER,
}


# Leader election with short timings: a failover is a standby taking the Lease of a killed leader.
LEASE = (
    "--leader-elect",
    "--leader-elect-lease-duration",
    "8",
    "--leader-elect-renew-deadline",
    "5",
    "--leader-elect-retry-period",
    "1",
)


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "failover"])
def test_restart_moves_nothing(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path, how: str
) -> None:
    """Placed one by one while the pools a fresh plan prefers were cordoned, then uncordoned: the
    stable policy keeps them where they are. A restart (SIGTERM, SIGKILL) or a failover (the
    leader SIGKILLed, a standby replica takes the Lease) must too: every placement, child uid and
    child spec unchanged, no write. (Before, the new process planned all of them afresh and moved
    them to the pools it preferred.)"""
    cluster = rel_cluster
    ns = make_namespace(f"hs-st-restart-{how}")
    failover = how == "failover"
    sig = signal.SIGTERM if how == "sigterm" else signal.SIGKILL
    lease = (*LEASE, "--leader-elect-namespace", ns) if failover else ()
    op = start_operator(
        cluster, tmp_path / "first.log", *lease, namespaces=ns, identity="first" if failover else ""
    )
    standby: Operator | None = None
    cordoned: set[str] = set()
    try:
        fresh = op.post(
            "/v1/plan",
            json={"workloads": [manifest(n, s, ns) for n, s in MIX.items()], "includeExisting": False},
        ).json()
        preferred = {ph["pool"] for w in fresh["workloads"] for ph in w["phases"].values() if ph.get("pool")}
        assert preferred, fresh
        cordoned = preferred
        _cordon(cluster, cordoned, True)
        wait(
            lambda: all(
                p["nodes"] == 0 for p in op.get("/v1/pools").json()["pools"] if p["name"] in cordoned
            ),
            60,
            "the preferred pools cordoned",
        )
        for name, spec in MIX.items():  # one at a time, as tenants would
            apply(cluster, manifest(name, spec, ns))
            wait_condition(cluster, ns, name, "Placed", "True")
        _cordon(cluster, cordoned, False)
        cordoned = set()
        wait(
            lambda: all(p["nodes"] == p["totalNodes"] for p in op.get("/v1/pools").json()["pools"]),
            60,
            "every pool uncordoned",
        )
        time.sleep(3)  # the stable re-round after the pools changed: it keeps them
        before = {n: placement(w) for n, w in workloads(cluster, ns).items()}
        assert all(p[0] for p in before.values()), before
        moved_while_running = {n for n, p in before.items() if any(ph[0] in preferred for ph in p[1:])}
        ids = child_ids(cluster, ns)
        assert len(ids) >= 2 * len(MIX), ids
        if failover:  # a standby waits for the Lease while the leader runs
            standby = start_operator(
                cluster, tmp_path / "second.log", *lease, namespaces=ns, wait_ready=False, identity="second"
            )
            time.sleep(2)
            if standby.ready():
                stop_operator(standby)
                raise AssertionError("the standby is ready while the leader holds the Lease")
    finally:
        if cordoned:
            _cordon(cluster, cordoned, False)
        stop_operator(op, sig)
    t0 = time.monotonic()
    if standby is not None:
        op = standby
        wait(op.ready, 90, "the standby leading and ready", interval=0.2)
    else:
        op = start_operator(cluster, tmp_path / "second.log", namespaces=ns)
    try:
        ready = time.monotonic() - t0
        # Every workload went through the intake, and every one was converged since.
        wait(lambda: len(op.get("/v1/workloads").json()["workloads"]) == len(MIX), 60, "the workloads read")
        wait(lambda: sum(reconciles(op).values()) >= len(MIX), 60, "every workload converged once")
        time.sleep(3)
        after = {n: placement(w) for n, w in workloads(cluster, ns).items()}
        moved = sorted(n for n in MIX if after[n] != before[n])
        print(f"preferred pools {sorted(preferred)}; before {before}; after {after}")
        record(f"restart ({how}): workloads moved", len(moved), "workloads")
        record(f"restart ({how}): operator ready after", ready)
        assert not moved, {n: (before[n], after[n]) for n in moved}
        assert child_ids(cluster, ns) == ids
        counts = reconciles(op)
        assert counts.get("placed", 0) == 0, counts  # "placed" = wrote a child or a status
        assert not moved_while_running  # the test's premise: nothing ran on a preferred pool
        assert not tracebacks(op)
    finally:
        stop_operator(op)


# ---- ConfigMaps -------------------------------------------------------------------------------------
LLAMA_1B = {
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


def _config_map(name: str, ns: str, config: dict[str, Any] | str) -> dict[str, Any]:
    text = config if isinstance(config, str) else json.dumps(config)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"config.json": text},
    }


def test_configmap_edit_replans_and_deletion_keeps_the_placement(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    cluster = rel_cluster
    ns = make_namespace("hs-st-configmap")
    spec = {**CHAT, "model": {"configMap": {"name": "my-model"}}}
    op = start_operator(cluster, tmp_path / "operator.log", namespaces=ns)
    try:
        apply(cluster, _config_map("my-model", ns, LLAMA_1B))
        apply(cluster, manifest("custom", spec, ns))
        first = wait_condition(cluster, ns, "custom", "Placed", "True")
        ids = child_ids(cluster, ns)
        # An edit that changes the model (32 layers instead of 16): planned again, as a new spec would be.
        t0 = time.monotonic()
        apply(
            cluster, _config_map("my-model", ns, {**LLAMA_1B, "num_hidden_layers": 32, "hidden_size": 4096})
        )

        def replanned() -> dict[str, Any] | None:
            w = get_aw(cluster, ns, "custom")
            s = w.get("status") or {}
            return w if s.get("modelConfigHash") != first["status"].get("modelConfigHash") else None

        edited = wait(replanned, 60, "the edit planned")
        record("ConfigMap edit → re-planned", time.monotonic() - t0)
        assert condition(edited, "Placed")["status"] == "True"  # type: ignore[index]
        assert (
            edited["status"]["prefill"]["capacityFootprintBytes"]
            != first["status"]["prefill"]["capacityFootprintBytes"]
        )
        # Deleted: the placement and the children stay; Degraded says why.
        placed = placement(edited)
        ids = child_ids(cluster, ns)
        t0 = time.monotonic()
        cluster.kubectl("delete", "configmap", "my-model", "-n", ns)
        gone = wait_condition(
            cluster, ns, "custom", "Degraded", "True", timeout=60, reason="ConfigMapNotFound"
        )
        record("ConfigMap deleted → Degraded", time.monotonic() - t0)
        assert condition(gone, "Placed")["status"] == "True"  # type: ignore[index]
        assert placement(gone) == placed
        assert "my-model" in condition(gone, "Degraded")["message"]  # type: ignore[index]
        time.sleep(3)
        assert {k: v[0] for k, v in child_ids(cluster, ns).items()} == {k: v[0] for k, v in ids.items()}
        # ... and a restart while it is gone keeps them too (before: the children were deleted).
        stop_operator(op)
        op = start_operator(cluster, tmp_path / "second.log", namespaces=ns)
        wait(lambda: len(op.get("/v1/workloads").json()["workloads"]) == 1, 60, "the workload read")
        time.sleep(4)
        kept = get_aw(cluster, ns, "custom")
        assert placement(kept) == placed
        assert (condition(kept, "Degraded") or {}).get("reason") == "ConfigMapNotFound"
        assert {k: v[0] for k, v in child_ids(cluster, ns).items()} == {k: v[0] for k, v in ids.items()}
        # Back: Degraded clears, same placement (the same config as before).
        apply(
            cluster, _config_map("my-model", ns, {**LLAMA_1B, "num_hidden_layers": 32, "hidden_size": 4096})
        )
        back = wait_condition(cluster, ns, "custom", "Degraded", "False", timeout=60)
        assert placement(back) == placed
        assert not tracebacks(op)
    finally:
        stop_operator(op)


# ---- the CRD going away -----------------------------------------------------------------------------
def _established(cluster: LocalCluster) -> bool:
    """Whether the AgentWorkload CRD is served (``kubectl wait`` fails instead of waiting on a CRD
    just created, whose status has no conditions yet)."""
    r = cluster.kubectl("get", "crd", "agentworkloads.hetsched.io", "-o", "json", check=False)
    if r.returncode != 0:
        return False
    conds = (json.loads(r.stdout).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


def test_crd_removal_forgets_the_workloads_without_a_write_storm(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    cluster = rel_cluster
    ns = make_namespace("hs-st-crd")
    crd = REPO / "crds" / "agentworkloads.hetsched.io.yaml"
    op = start_operator(cluster, tmp_path / "operator.log", "--resync-seconds", "2", namespaces=ns)
    try:
        apply(cluster, manifest("chat", CHAT, ns), manifest("coder", CODER, ns))
        wait_condition(cluster, ns, "chat", "Placed", "True")
        wait_condition(cluster, ns, "coder", "Placed", "True")
        t0 = time.monotonic()
        cluster.kubectl("delete", "-f", str(crd), "--wait=true", "--timeout=60s")
        body = wait(
            lambda: (r := op.get("/readyz")).status_code == 503 and r.json(),
            30,
            "/readyz 503 without the CRD",
        )
        record("CRD deleted → not ready", time.monotonic() - t0)
        assert "agentworkloads.hetsched.io" in body["reason"], body
        wait(lambda: op.get("/v1/workloads").json()["workloads"] == [], 30, "the workloads forgotten")
        before = sum(reconciles(op).values())
        log_before = len(op.text())
        time.sleep(10)  # 5 resyncs
        assert sum(reconciles(op).values()) == before
        new_log = op.text()[log_before:]
        failures = sum(1 for line in new_log.splitlines() if "(will retry)" in line or "Not Found" in line)
        record("CRD deleted: failed writes in 10 s", failures, "lines")
        assert failures == 0, new_log[-3000:]
        wait(lambda: not children(cluster, ns), 60, "the children garbage-collected (and not re-created)")
        time.sleep(3)
        assert not children(cluster, ns)
        # Back: ready again, and a workload created now is placed with a whole status.
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        wait(lambda: _established(cluster), 60, "the CRD established")
        wait(lambda: op.get("/readyz").status_code == 200, 60, "ready again")
        apply(cluster, manifest("chat", CHAT, ns))
        w = wait_condition(cluster, ns, "chat", "Placed", "True", timeout=120)
        for key in ("mode", "model", "agent", "prefill", "decode", "poolsFingerprint", "conditions"):
            assert w["status"].get(key), (key, w["status"])
        assert not tracebacks(op)
    finally:
        stop_operator(op)
        cluster.kubectl("apply", "--server-side", "-f", str(crd), check=False)
        wait(lambda: _established(cluster), 60, "the CRD established")


# ---- devices held outside the watched namespaces ----------------------------------------------------
def _hog(name: str, namespace: str, pool: str, gpus: int) -> dict[str, Any]:
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


def test_namespaced_operator_counts_devices_held_outside_its_namespaces(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    cluster = rel_cluster
    ns = make_namespace("hs-st-mine")
    other = make_namespace("hs-st-other-team")
    nodes = [
        n["metadata"]["name"]
        for n in cluster.kubectl_json("get", "nodes", "-l", "hetsched.io/pool=l4")["items"]
    ]
    op = start_operator(cluster, tmp_path / "operator.log", namespaces=ns)
    try:
        apply(cluster, *[_hog(f"hog-{i}", other, "l4", 4) for i in range(len(nodes))])
        wait(
            lambda: (
                all(
                    p["status"].get("phase") == "Running"
                    for p in cluster.kubectl_json("get", "pods", "-n", other)["items"]
                )
                and len(cluster.kubectl_json("get", "pods", "-n", other)["items"]) == len(nodes)
            ),
            120,
            "the other team's pods Running on l4",
        )
        t0 = time.monotonic()

        def l4() -> dict[str, Any] | None:
            pool = {p["name"]: p for p in op.get("/v1/pools").json()["pools"]}["l4"]
            return pool if pool.get("devicesHeldOutside") == 4 * len(nodes) else None

        pool = wait(l4, 60, "l4's devices counted as held outside")
        record("pods outside the namespaces → counted", time.monotonic() - t0)
        assert pool["devicesFree"] == 0, pool
        pinned = {**CHAT, "demand": {"requestsPerSecond": 1}, "pools": {"prefill": ["l4"], "decode": ["l4"]}}
        apply(cluster, manifest("on-l4", pinned, ns))
        w = wait_condition(cluster, ns, "on-l4", "Placed", "False", timeout=60)
        assert condition(w, "Placed")["reason"] == "NoFreeDevices", condition(w, "Placed")  # type: ignore[index]
        assert not children(cluster, ns)
        # Freed: placed there.
        cluster.kubectl("delete", "pods", "--all", "-n", other, "--wait=true", "--timeout=60s")
        w = wait_condition(cluster, ns, "on-l4", "Placed", "True", timeout=60)
        assert w["status"]["decode"]["pool"] == "l4"
        assert not tracebacks(op)
    finally:
        stop_operator(op)
