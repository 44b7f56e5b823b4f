"""Fault injection against a real control plane (``rel_cluster``): the operator killed mid-reconcile,
the API server and etcd restarted under it, a pool's nodes lost and deleted, concurrent edits of
one workload, and two operator replicas with leader election. Each test checks convergence (no
duplicate, stale or orphaned children; ``observedGeneration`` current) and prints the recovery
times it measured (``FIGURE ...`` lines; also appended to ``$HETSCHED_FIGURES`` when set).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hetsched.operator.devcluster.nodes import load_pools, node_names
from hetsched.scheduler import catalog
from support import DEMO_POOLS
from support.cluster import LocalCluster
from support.harness import (
    CHAT,
    CODER,
    Operator,
    apply,
    children,
    condition,
    consistency_problems,
    converged,
    get_aw,
    is_current,
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


def _variant(i: int) -> dict[str, Any]:
    """Twelve feasible specs on the demo pools (models × agents × demand)."""
    model = ("llama-3.1-8b", "qwen3-32b", "qwen3-30b-a3b")[i % 3]
    agent = ("chatbot", "coding")[(i // 3) % 2]
    return {
        "model": {"name": model},
        "agent": {"profile": agent},
        "demand": {"requestsPerSecond": 1 + 2 * ((i // 6) % 2)},
        "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
    }


def _placed_count(cluster: LocalCluster, ns: str) -> int:
    return sum(
        1
        for w in workloads(cluster, ns).values()
        if (condition(w, "Placed") or {}).get("status") == "True" and is_current(w)
    )


def _assert_converged(cluster: LocalCluster, ns: str, names: list[str], timeout: float, what: str) -> float:
    """Wait until converged; returns the seconds it took. On timeout, the problems are in the message."""
    t0 = time.monotonic()
    try:
        wait(lambda: converged(cluster, ns, names), timeout, what, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; problems: {consistency_problems(cluster, ns)}") from None
    return time.monotonic() - t0


# ---- the operator killed mid-reconcile --------------------------------------------------------------
def test_sigkill_mid_reconcile_then_restart_converges(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    ns = make_namespace("rf-kill")
    names = [f"w{i:02d}" for i in range(12)]
    op = start_operator(rel_cluster, tmp_path / "op1.log", namespaces="rf-kill*")
    try:
        apply(rel_cluster, *(manifest(n, _variant(i), ns) for i, n in enumerate(names)))
        # Kill as soon as the first child exists: the reconciler is writing children and statuses.
        wait(lambda: children(rel_cluster, ns) or None, 120, "the first child", interval=0.1)
        stop_operator(op, signal.SIGKILL)
    finally:
        stop_operator(op)
    at_kill = _placed_count(rel_cluster, ns), len(children(rel_cluster, ns))
    print(f"at SIGKILL: {at_kill[0]}/12 workloads Placed, {at_kill[1]} children")

    op = start_operator(rel_cluster, tmp_path / "op2.log", namespaces="rf-kill*")
    try:
        took = _assert_converged(rel_cluster, ns, names, 240, "convergence after the restart")
        record("SIGKILL during first placement of 12 workloads: restart ready -> converged", took)
        listed = {w["name"] for w in op.get("/v1/workloads").json()["workloads"] if w["namespace"] == ns}
        assert listed == set(names)

        # Again, while every workload switches between colocated and disaggregated serving: the
        # children to delete and to create are both in flight when the operator dies.
        before = {n: get_aw(rel_cluster, ns, n)["status"]["mode"] for n in names}
        for n in names:
            target = "always" if before[n] == "colocated" else "never"
            rel_cluster.kubectl(
                "patch",
                "aw",
                n,
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                json.dumps({"spec": {"disaggregation": target}}),
            )

        def switching() -> bool:
            now = {c["metadata"]["name"] for c in children(rel_cluster, ns) if c["kind"] == "Deployment"}
            return any(n + ("-prefill" if before[n] == "colocated" else "-serve") in now for n in names)

        wait(switching, 120, "the first new child of a mode switch", interval=0.1)
        stop_operator(op, signal.SIGKILL)
    finally:
        stop_operator(op)
    op = start_operator(rel_cluster, tmp_path / "op3.log", namespaces="rf-kill*")
    try:
        took = _assert_converged(rel_cluster, ns, names, 240, "convergence after the mode switches")
        record("SIGKILL during 12 mode switches: restart ready -> converged", took)
        for n in names:
            w = get_aw(rel_cluster, ns, n)
            assert w["metadata"]["generation"] == 2 and w["status"]["observedGeneration"] == 2
            assert w["status"]["mode"] != before[n], n
        assert not tracebacks(op), tracebacks(op)[0]
    finally:
        stop_operator(op)


# ---- kube-apiserver and etcd restarts -----------------------------------------------------------------
def _apiserver_ready(cluster: LocalCluster) -> bool:
    return bool(cluster.handle._apiserver_ready())


def test_apiserver_and_etcd_restarts_are_survived(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    ns = make_namespace("rf-api")
    op = start_operator(rel_cluster, tmp_path / "op.log", namespaces="rf-api*")
    try:
        apply(rel_cluster, manifest("before", CHAT, ns))
        _assert_converged(rel_cluster, ns, ["before"], 120, "the first workload")
        first = get_aw(rel_cluster, ns, "before")
        first_children = {
            (c["kind"], c["metadata"]["name"]): c["metadata"]["uid"] for c in children(rel_cluster, ns)
        }
        names = ["before"]
        modes = [first["status"]["mode"]]  # a demand change may switch colocated <-> disaggregated
        for step, (component, down) in enumerate((("kube-apiserver", 60.0), ("etcd", 8.0)), start=1):
            rel_cluster.handle.stop_component(component)
            time.sleep(down)
            assert op.alive(), op.tail()
            assert op.get("/healthz").status_code == 200  # the HTTP side serves on
            rel_cluster.handle.start_component(component)
            up = time.monotonic()
            wait(lambda: _apiserver_ready(rel_cluster), 120, "the API server ready again")
            name = f"after-{component}"
            names.append(name)
            # The first writes after the restart may still be refused for a moment.
            wait(lambda n=name: apply(rel_cluster, manifest(n, CODER, ns)), 60, f"creating {name}")
            rps = 2 + step
            patch = {"spec": {"demand": {"requestsPerSecond": rps}}}
            rel_cluster.kubectl("patch", "aw", "before", "-n", ns, "--type", "merge", "-p", json.dumps(patch))
            _assert_converged(rel_cluster, ns, names, 180, f"changes after the {component} restart")
            record(
                f"{component} down {down:g} s: back -> new workload and spec change handled",
                time.monotonic() - up,
            )
            # Nodes whose Leases went stale during the outage may turn NotReady only now, so a
            # re-plan can still follow; the state that counts is the one it settles in.
            _assert_converged(rel_cluster, ns, names, 180, f"settling after the {component} restart")
            status = get_aw(rel_cluster, ns, "before")["status"]
            modes.append(status.get("mode"))
            assert status["observedGeneration"] == 1 + step
        assert op.alive(), op.tail()
        # Nothing the operator wrote was lost: same workload, same children (updated in place).
        after = get_aw(rel_cluster, ns, "before")
        assert after["metadata"]["uid"] == first["metadata"]["uid"]
        now_children = {
            (c["kind"], c["metadata"]["name"]): c["metadata"]["uid"] for c in children(rel_cluster, ns)
        }
        reasons = rel_cluster.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.name=before",
            "-o",
            "jsonpath={.items[*].reason}",
        ).stdout.split()
        replanned = bool({"PoolLost", "Replaced", "Infeasible"} & set(reasons))
        for key, uid in first_children.items():
            # A re-plan that switched the serving mode or moved a phase to another pool replaces those
            # children. That happens here when the nodes' heartbeats lapse during the outage and the node
            # controller marks them NotReady (the operator then reports PoolLost/Replaced); otherwise the
            # children are updated in place.
            if key in now_children and len(set(modes)) == 1 and not replanned:
                assert now_children[key] == uid, key
        _assert_converged(rel_cluster, ns, names, 120, "the end state")
    finally:
        stop_operator(op)
        print(f"--- operator log ---\n{op.tail(30)}")


def _placement(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj["status"].items() if k != "conditions"}


def test_every_node_not_ready_keeps_the_placements(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    """All nodes NotReady at once is a control-plane or network disruption: nothing is re-planned
    and no child is replaced, however long it lasts beyond the grace period."""
    ns = make_namespace("rf-all")
    every_node = [n.name for n in rel_cluster.handle.nodes()]
    op = start_operator(rel_cluster, tmp_path / "op.log", namespaces="rf-all*")
    try:
        apply(rel_cluster, manifest("roaming", ROAMING, ns))
        _assert_converged(rel_cluster, ns, ["roaming"], 120, "placed")
        before = get_aw(rel_cluster, ns, "roaming")
        uids = {c["metadata"]["name"]: c["metadata"]["uid"] for c in children(rel_cluster, ns)}
        rel_cluster.handle.stop_heartbeats(every_node)
        try:
            wait(
                lambda: not any(n.ready for n in rel_cluster.handle.nodes()),
                180,
                "every node NotReady",
                interval=0.5,
            )
            time.sleep(15)  # three times the operator's NotReady grace in these tests (5 s)
            during = get_aw(rel_cluster, ns, "roaming")
            # The placement stands; only the Ready/Degraded conditions may follow the pods.
            assert _placement(during) == _placement(before)
            assert (condition(during, "Placed") or {}).get("status") == "True"
            assert {c["metadata"]["name"]: c["metadata"]["uid"] for c in children(rel_cluster, ns)} == uids
            assert "every node is NotReady" in op.tail(200)
        finally:
            rel_cluster.handle.resume_heartbeats(every_node)
        wait(lambda: all(n.ready for n in rel_cluster.handle.nodes()), 120, "every node Ready again")
        _assert_converged(rel_cluster, ns, ["roaming"], 60, "after the nodes came back")
        assert _placement(get_aw(rel_cluster, ns, "roaming")) == _placement(before)
        assert op.alive() and not tracebacks(op), tracebacks(op)[:1]
    finally:
        stop_operator(op)


# ---- a pool's nodes lost (NotReady) or deleted --------------------------------------------------------
PINNED = {**CHAT, "disaggregation": "never", "pools": {"prefill": ["a100"], "decode": ["a100"]}}
ROAMING = {**CHAT, "demand": {"requestsPerSecond": 5}}


def _uses(obj: dict[str, Any], pool: str) -> bool:
    status = obj.get("status") or {}
    return any((status.get(p) or {}).get("pool") == pool for p in ("prefill", "decode"))


def _degraded_with_reason(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any] | None:
    obj = get_aw(cluster, ns, name)
    d, p = condition(obj, "Degraded"), condition(obj, "Placed")
    if d and p and d["status"] == "True" and p["status"] == "False" and is_current(obj):
        return obj
    return None


def _check_lost(cluster: LocalCluster, ns: str, pool: str, t0: float, how: str) -> None:
    pinned = wait(lambda: _degraded_with_reason(cluster, ns, "pinned"), 180, "pinned Degraded", interval=0.5)
    record(f"{how}: loss -> pinned workload Degraded", time.monotonic() - t0)
    degraded = condition(pinned, "Degraded")
    assert degraded is not None and degraded["reason"] and degraded["message"]
    assert pool in degraded["message"] or pool in json.dumps(pinned["status"].get("rejectedPools")), degraded
    moved = wait(
        lambda: (
            (o := get_aw(cluster, ns, "roaming"))
            and (condition(o, "Placed") or {}).get("status") == "True"
            and not _uses(o, pool)
            and o
        ),
        180,
        f"roaming re-planned off {pool}",
        interval=0.5,
    )
    record(f"{how}: loss -> roaming workload re-planned", time.monotonic() - t0)
    assert moved
    wait(lambda: not consistency_problems(cluster, ns), 60, "children following the new plan")
    assert not any(
        c["kind"] == "Deployment"
        and c["spec"]["template"]["spec"].get("nodeSelector", {}).get("hetsched.io/pool") == pool
        for c in children(cluster, ns)
    )


def _check_restored(cluster: LocalCluster, ns: str, t0: float, how: str) -> None:
    wait_condition(cluster, ns, "pinned", "Placed", "True", timeout=180)
    obj = wait_condition(cluster, ns, "pinned", "Degraded", "False", timeout=60)
    record(f"{how}: nodes back -> pinned workload Placed again", time.monotonic() - t0)
    assert _uses(obj, "a100")
    _assert_converged(cluster, ns, ["pinned", "roaming"], 120, "convergence after the nodes came back")


def test_lost_pool_replans_or_degrades_and_recovers(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    ns = make_namespace("rf-nodes")
    pools = load_pools(DEMO_POOLS)
    a100 = pools.model_copy(update={"pools": [p for p in pools.pools if p.name == "a100"]})
    nodes = node_names(a100.pools[0])
    op = start_operator(rel_cluster, tmp_path / "op.log", namespaces="rf-nodes*")
    try:
        apply(rel_cluster, manifest("pinned", PINNED, ns), manifest("roaming", ROAMING, ns))
        _assert_converged(rel_cluster, ns, ["pinned", "roaming"], 120, "both placed")
        assert _uses(get_aw(rel_cluster, ns, "pinned"), "a100")

        # 1. Heartbeats stop: NotReady after the node grace period, then the operator's own grace.
        t0 = time.monotonic()
        rel_cluster.handle.stop_heartbeats(nodes)
        try:
            _check_lost(rel_cluster, ns, "a100", t0, "a100 nodes NotReady")
        finally:
            t1 = time.monotonic()
            rel_cluster.handle.resume_heartbeats(nodes)
        _check_restored(rel_cluster, ns, t1, "a100 heartbeats resumed")

        # 2. The nodes are deleted, then created again.
        t0 = time.monotonic()
        rel_cluster.handle.delete_nodes(a100)
        try:
            _check_lost(rel_cluster, ns, "a100", t0, "a100 nodes deleted")
        finally:
            t1 = time.monotonic()
            rel_cluster.handle.apply_nodes(a100)
        _check_restored(rel_cluster, ns, t1, "a100 nodes re-created")
        assert op.alive() and not tracebacks(op), tracebacks(op)[:1]
    finally:
        stop_operator(op)
        rel_cluster.handle.apply_nodes(a100)  # whatever happened, leave the pool as it was


# ---- concurrent edits -------------------------------------------------------------------------------
def test_concurrent_edits_last_spec_wins(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    ns = make_namespace("rf-edit")
    op = start_operator(rel_cluster, tmp_path / "op.log", namespaces="rf-edit*")
    try:
        apply(rel_cluster, manifest("edit", _variant(0), ns))
        _assert_converged(rel_cluster, ns, ["edit"], 120, "placed")

        def patch(i: int) -> int:
            body = json.dumps({"spec": _variant(i)})
            return rel_cluster.kubectl(
                "patch", "aw", "edit", "-n", ns, "--type", "merge", "-p", body
            ).returncode

        with ThreadPoolExecutor(6) as pool:
            for burst in range(3):  # three bursts of six concurrent writers, a little apart
                assert list(pool.map(patch, range(burst * 6 + 1, burst * 6 + 7))) == [0] * 6
                time.sleep(0.3 * burst)
        done = time.monotonic()
        final = get_aw(rel_cluster, ns, "edit")  # whichever write the API server applied last
        took = _assert_converged(rel_cluster, ns, ["edit"], 180, "the last spec")
        record("18 concurrent spec edits: last write -> its plan converged", time.monotonic() - done)
        del took
        obj = get_aw(rel_cluster, ns, "edit")
        assert obj["metadata"]["generation"] == final["metadata"]["generation"]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        spec = obj["spec"]
        assert obj["status"]["model"] == spec["model"]["name"]
        assert obj["status"]["agent"] == spec["agent"]["profile"]
        hf_id = catalog.get_model(spec["model"]["name"]).hf_id or spec["model"]["name"]
        for c in children(rel_cluster, ns):
            if c["kind"] == "Deployment" and c["metadata"]["labels"].get("hetsched.io/phase") != "router":
                args = c["spec"]["template"]["spec"]["containers"][0].get("args") or []
                assert hf_id in args, (hf_id, args)

        # Optimistic concurrency: a write based on a stale resourceVersion is refused (409), so
        # "last spec wins" means the last *successful* write. Made stale by one more write after
        # the read (the operator may already be quiet, so its status writes cannot be relied on).
        stale = get_aw(rel_cluster, ns, "edit")
        assert patch(19) == 0
        stale["spec"] = {**stale["spec"], "demand": {"requestsPerSecond": 7}}
        result = rel_cluster.kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
        assert result.returncode != 0 and "modified" in result.stderr, result.stderr
        assert not tracebacks(op), tracebacks(op)[:1]
    finally:
        stop_operator(op)


# ---- two replicas, leader election ------------------------------------------------------------------
LEASE = (
    "--leader-elect",
    "--leader-elect-lease-duration",
    "8",
    "--leader-elect-renew-deadline",
    "5",
    "--leader-elect-retry-period",
    "1",
)


class ReadySampler(threading.Thread):
    """Polls every replica's /readyz; records any moment at which more than one was ready."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.replicas: list[Operator] = []
        self.overlaps: list[tuple[float, list[str]]] = []
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            ready = [r.identity for r in list(self.replicas) if r.alive() and r.ready()]
            self.samples += 1
            if len(ready) > 1:
                self.overlaps.append((time.monotonic(), ready))
            time.sleep(0.2)


def _holder(cluster: LocalCluster, ns: str) -> str | None:
    r = cluster.kubectl("get", "lease", "hetsched-operator", "-n", ns, "-o", "json", check=False)
    if r.returncode != 0:
        return None
    holder = json.loads(r.stdout)["spec"].get("holderIdentity")
    return str(holder) if holder else None


def test_two_replicas_one_leader_and_failover(
    rel_cluster: LocalCluster, make_namespace: Any, tmp_path: Path
) -> None:
    ns = make_namespace("rf-ha")
    lease = (*LEASE, "--leader-elect-namespace", ns)
    sampler = ReadySampler()
    started: list[Operator] = []

    def replica(identity: str) -> Operator:
        op = start_operator(
            rel_cluster,
            tmp_path / f"{identity}.log",
            *lease,
            namespaces="rf-ha*",
            wait_ready=False,
            identity=identity,
        )
        started.append(op)
        sampler.replicas.append(op)
        return op

    sampler.start()
    try:
        a, b = replica("replica-a"), replica("replica-b")
        leader = wait(lambda: next((r for r in (a, b) if r.ready()), None), 120, "a leader")
        standby = b if leader is a else a
        assert _holder(rel_cluster, ns) == leader.identity
        apply(rel_cluster, manifest("one", CHAT, ns))
        _assert_converged(rel_cluster, ns, ["one"], 120, "placed by the leader")
        time.sleep(3)
        assert not standby.ready()
        assert standby.get("/v1/workloads").json()["workloads"] == []
        assert "hetsched operator started" not in standby.text()
        assert "waiting to lead" in standby.text()

        # The leader crashes: the standby takes over when the Lease expires.
        t0 = time.monotonic()
        stop_operator(leader, signal.SIGKILL)
        apply(rel_cluster, manifest("two", CODER, ns))
        wait(lambda: _holder(rel_cluster, ns) == standby.identity, 60, "the Lease to move", interval=0.1)
        record("leader SIGKILLed (lease 8 s): -> standby holds the Lease", time.monotonic() - t0)
        wait(standby.ready, 90, "the new leader ready", interval=0.1)
        record("leader SIGKILLed (lease 8 s): -> new leader ready", time.monotonic() - t0)
        _assert_converged(rel_cluster, ns, ["one", "two"], 120, "the change made during failover")
        record("leader SIGKILLed (lease 8 s): -> workload created meanwhile placed", time.monotonic() - t0)
        leader, standby = standby, replica("replica-c")  # the crashed one comes back as a candidate
        time.sleep(5)
        assert not standby.ready() and _holder(rel_cluster, ns) == leader.identity

        # A graceful stop releases the Lease: the standby need not wait for it to expire.
        t0 = time.monotonic()
        stop_operator(leader, signal.SIGTERM)
        stopped = time.monotonic()
        wait(
            lambda: _holder(rel_cluster, ns) == standby.identity,
            60,
            "the released Lease to move",
            interval=0.1,
        )
        record("leader SIGTERMed: exit -> standby holds the released Lease", time.monotonic() - stopped)
        wait(standby.ready, 90, "the new leader ready", interval=0.1)
        record("leader SIGTERMed: signal -> new leader ready", time.monotonic() - t0)
        rel_cluster.kubectl(
            "patch",
            "aw",
            "one",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            '{"spec":{"demand":{"requestsPerSecond":3}}}',
        )
        _assert_converged(rel_cluster, ns, ["one", "two"], 120, "a change after the handover")
        assert get_aw(rel_cluster, ns, "one")["status"]["observedGeneration"] == 2
    finally:
        sampler.stop.set()
        for op in started:
            stop_operator(op)
        sampler.join(5)
    assert sampler.samples > 20
    assert not sampler.overlaps, f"two replicas ready at once: {sampler.overlaps[:3]}"
    for op in started:
        assert not tracebacks(op), tracebacks(op)[:1]
