"""The reconciler (children, status, events) with a planning loop and a fake API: no cluster, no
Kopf."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.operator.planning.intake import Key
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.children import ChildState
from hetsched.operator.reconcile.reconciler import Reconciler
from support.builders import CHAT, HUGE, FakeApi, fast_planning_loop, pools_input, registration


# ---- the reconciler -----------------------------------------------------------------------------
class Harness:
    def __init__(self, unschedulable_grace: float = 60.0) -> None:
        self.api = FakeApi()
        self.state = OperatorState()
        self.metrics = Metrics(self.state)
        self.planning_loop = fast_planning_loop()
        self.index: dict[Key, dict[tuple[str, str], ChildState]] = {}
        self.reconciler = Reconciler(
            self.api,
            self.state,
            self.metrics,
            self.planning_loop,
            lambda k: self.index.get(k, {}),
            self.api.post_event,
            unschedulable_grace=unschedulable_grace,
        )

    def sync_index(self, ready: bool = True) -> None:
        """What the watch would bring back: the applied objects, available if ``ready``."""
        live = {(o["kind"], o["metadata"]["name"]): o for o in self.api.applied}
        for kind, _ns, name in self.api.deleted:
            live.pop((kind, name), None)
        self.index = {}
        for (kind, name), o in live.items():
            key = (o["metadata"]["namespace"], o["metadata"]["labels"][manifests.WORKLOAD_LABEL])
            replicas = o["spec"].get("replicas", 0) if kind == "Deployment" else 0
            self.index.setdefault(key, {})[(kind, name)] = ChildState(
                kind,
                name,
                o["metadata"]["annotations"][manifests.HASH_ANNOTATION],
                o["metadata"]["ownerReferences"][0]["uid"],
                replicas,
                1,
                1,
                replicas if ready else 0,
                replicas,
            )


def test_converge_is_idempotent_and_reports_ready() -> None:
    h = Harness()
    key = ("default", "chat")

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        h.planning_loop.register(registration("chat", CHAT))
        await h.planning_loop.plan_for(key, 1, timeout=30)
        assert await h.reconciler.converge(key) == "placed"
        n_applied = len(h.api.applied)
        # colocated: engine Deployment + Service; disaggregated: 2 engines + Service + the router's
        # Deployment, ServiceAccount, Role and RoleBinding
        assert n_applied in (2, 7)
        kinds = sorted({o["kind"] for o in h.api.applied})
        assert kinds in (
            ["Deployment", "Service"],
            ["Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"],
        )
        assert status["endpoint"] if (status := h.api.status_patches[-1][2]) else False
        assert status["endpoint"] == "http://chat.default.svc:8000/v1"
        assert len(h.api.status_patches) == 1
        status = h.api.status_patches[-1][2]
        assert status["conditions"][2]["type"] == "Ready" and status["conditions"][2]["status"] == "False"
        assert await h.reconciler.converge(key) == "unchanged"  # nothing new: no writes at all
        assert len(h.api.applied) == n_applied and len(h.api.status_patches) == 1
        h.sync_index(ready=True)
        assert await h.reconciler.converge(key) == "placed"  # Ready flips: one status patch
        assert h.api.status_patches[-1][2]["conditions"][0]["status"] == "True"
        assert len(h.api.applied) == n_applied
        await asyncio.sleep(0.05)  # events are posted in the background
        assert [e[2] for e in h.api.events] == ["Placed"]
        snap = h.state.snapshot()
        assert snap.workloads[key]["prefill"]["pool"] == status["prefill"]["pool"]
        await h.planning_loop.stop()

    asyncio.run(main())


def test_mode_switch_deletes_stale_children() -> None:
    h = Harness()
    key = ("default", "chat")

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        for gen, mode in ((1, "always"), (2, "never")):
            h.planning_loop.register(registration("chat", {**CHAT, "disaggregation": mode}, generation=gen))
            await h.planning_loop.plan_for(key, gen, timeout=30)
            await h.reconciler.converge(key)
            h.sync_index()
        deleted = {(kind, name) for kind, ns, name in h.api.deleted}
        assert deleted == {
            ("Deployment", "chat-prefill"),
            ("Deployment", "chat-decode"),
            ("Deployment", "chat-router"),
            ("ServiceAccount", "chat-router"),
            ("Role", "chat-router"),
            ("RoleBinding", "chat-router"),
        }
        # The workload's Service stays (it now selects the colocated engine pods).
        assert {k[1] for k in h.index[key]} == {"chat-serve", "chat"}
        await asyncio.sleep(0.05)
        assert [e[2] for e in h.api.events] == ["Placed", "Replaced"]
        await h.planning_loop.stop()

    asyncio.run(main())


def test_infeasible_and_invalid_workloads() -> None:
    h = Harness()

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        h.planning_loop.register(registration("huge", HUGE))
        await h.planning_loop.plan_for(("default", "huge"), 1, timeout=30)
        assert await h.reconciler.converge(("default", "huge")) == "infeasible"
        assert h.api.applied == []
        status = h.api.status_patches[-1][2]
        assert status["conditions"][3]["type"] == "Degraded" and status["conditions"][3]["status"] == "True"
        await h.reconciler.report_problem(
            ("default", "bad"), 1, "u", "InvalidSpec", "spec.model: unknown model 'x'"
        )
        await h.reconciler.report_problem(
            ("default", "bad"), 1, "u", "InvalidSpec", "spec.model: unknown model 'x'"
        )
        assert sum(1 for ns, n, _ in h.api.status_patches if n == "bad") == 1
        await asyncio.sleep(0.05)
        assert ("bad", "Warning", "InvalidSpec", "spec.model: unknown model 'x'") in h.api.events
        assert h.metrics.reconcile_total.labels(result="infeasible")._value.get() == 1
        h.reconciler.forget(("default", "huge"))
        assert ("default", "huge") not in h.state.snapshot().workloads
        await h.planning_loop.stop()

    asyncio.run(main())


def _stuck_index(h: Harness, since: float) -> None:
    """The applied Deployments exist, none available, no rollout progress since ``since``."""
    h.sync_index(ready=False)
    for children in h.index.values():
        for k, c in list(children.items()):
            if c.kind == "Deployment":
                phase = c.name.rsplit("-", 1)[1]
                phase = {"serve": "colocated"}.get(phase, phase)
                sel = ",".join(f"{a}={b}" for a, b in sorted(manifests.selector("chat", phase).items()))
                children[k] = replace(c, selector=sel, progress_time=since)


def _pending_pod(name: str, phase: str, since: float) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    return {
        "metadata": {"name": name, "namespace": "default", "labels": manifests.selector("chat", phase)},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": stamp,
                    "message": "0/10 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: ...",
                }
            ],
        },
    }


def _degraded(h: Harness) -> dict[str, Any]:
    patched = [p for _ns, _n, p in h.api.status_patches if "conditions" in p]
    return next(c for c in patched[-1]["conditions"] if c["type"] == "Degraded")


def test_unschedulable_child_degrades_once_and_recovers() -> None:
    h = Harness(unschedulable_grace=60)
    key = ("default", "chat")

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        h.planning_loop.register(registration("chat", {**CHAT, "disaggregation": "always"}))
        await h.planning_loop.plan_for(key, 1, timeout=30)
        await h.reconciler.converge(key)
        assert h.api.pod_lists == []  # nothing is stalled yet: no pod list
        long_ago = time.time() - 300
        _stuck_index(h, since=time.time())  # stuck, but for less than the grace: no pod list
        await h.reconciler.converge(key)
        assert h.api.pod_lists == [] and _degraded(h)["status"] == "False"
        h.api.pods = [_pending_pod("chat-decode-1", "decode", long_ago)]
        _stuck_index(h, since=long_ago)
        await h.reconciler.converge(key)
        degraded = _degraded(h)
        assert (degraded["status"], degraded["reason"]) == ("True", "Unschedulable")
        assert degraded["message"] == (
            "chat-decode: pod chat-decode-1 unschedulable: 0/10 nodes are available: 2 Insufficient nvidia.com/gpu"
        )
        # One list per stalled Deployment, by its selector.
        assert sorted(s for _ns, s in h.api.pod_lists) == [
            "hetsched.io/phase=decode,hetsched.io/workload=chat",
            "hetsched.io/phase=prefill,hetsched.io/workload=chat",
            "hetsched.io/phase=router,hetsched.io/workload=chat",
        ]
        patches = len(h.api.status_patches)
        assert await h.reconciler.converge(key) == "unchanged"  # same verdict: no write, cached pods
        assert len(h.api.status_patches) == patches and len(h.api.pod_lists) == 3
        await asyncio.sleep(0.05)
        assert [e[2] for e in h.api.events].count("Unschedulable") == 1
        # The pod gets a node, the Deployments become available: Degraded False, no pod list.
        h.sync_index(ready=True)
        lists = len(h.api.pod_lists)
        await h.reconciler.converge(key)
        degraded = _degraded(h)
        assert (degraded["status"], degraded["reason"]) == ("False", "AsPlanned")
        assert len(h.api.pod_lists) == lists
        await asyncio.sleep(0.05)
        assert [e[2] for e in h.api.events] == ["Placed", "Unschedulable"]
        await h.planning_loop.stop()

    asyncio.run(main())


def test_unschedulable_is_rechecked_when_the_grace_period_ends() -> None:
    """No watch event comes when a stall passes the grace period: a timer re-converges."""
    h = Harness(unschedulable_grace=1.0)
    key = ("default", "chat")

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        h.planning_loop.register(registration("chat", {**CHAT, "disaggregation": "always"}))
        await h.planning_loop.plan_for(key, 1, timeout=30)
        await h.reconciler.converge(key)
        now = time.time()
        h.api.pods = [_pending_pod("chat-prefill-1", "prefill", now)]
        _stuck_index(h, since=now)
        h.reconciler.start()
        await h.reconciler.converge(key)
        assert _degraded(h)["status"] == "False"
        for _ in range(100):  # the timer fires ~1.5 s after the stall began
            if _degraded(h)["status"] == "True":
                break
            await asyncio.sleep(0.1)
        assert _degraded(h)["reason"] == "Unschedulable"
        assert "chat-prefill-1" in _degraded(h)["message"]
        await h.reconciler.stop()
        await h.planning_loop.stop()

    asyncio.run(main())


def test_queue_retries_failures() -> None:
    h = Harness()
    key = ("default", "chat")

    async def main() -> None:
        h.planning_loop.start()
        h.reconciler.start()
        h.planning_loop.on_changed = h.reconciler.enqueue
        h.api.fail_apply = True
        h.planning_loop.set_pools(pools_input())
        h.planning_loop.register(registration("chat", CHAT))
        await h.planning_loop.plan_for(key, 1, timeout=30)
        await asyncio.sleep(0.2)
        assert h.api.applied == [] and h.metrics.reconcile_total.labels(result="error")._value.get() >= 1
        h.api.fail_apply = False
        for _ in range(100):
            if h.api.applied:
                break
            await asyncio.sleep(0.05)
        assert h.api.applied
        await h.reconciler.stop()
        await h.planning_loop.stop()

    asyncio.run(main())
