"""The reconciler (children, status, events) with a planning loop and a fake API: no cluster, no
Kopf."""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import replace
from typing import Any

from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.operator.kube import ApiError
from hetsched.operator.planning.intake import Key
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.children import ChildState
from hetsched.operator.reconcile.reconciler import Reconciler
from hetsched.operator.reconcile.writes import Refusals
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
        """What the watch would bring back: the objects labelled as ours, available if ``ready``."""
        self.index = self.api.index(ready)

    async def placed(self, name: str, spec: dict[str, Any], generation: int = 1) -> Key:
        key = ("default", name)
        self.planning_loop.register(registration(name, spec, generation=generation))
        await self.planning_loop.plan_for(key, generation, timeout=30)
        return key


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


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_name_held_by_another_object_is_a_conflict_and_nothing_is_written() -> None:
    h = Harness()

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        key = await h.placed("chat", {**CHAT, "disaggregation": "never"})
        # The user's own Service has the name the workload's Service (its endpoint) needs.
        theirs = h.api.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "chat",
                    "namespace": "default",
                    "managedFields": [{"manager": "kubectl-create", "operation": "Update"}],
                },
                "spec": {"selector": {"app": "mine"}},
            }
        )
        for _ in range(3):  # resyncs: the same verdict, one status write, one Event
            assert await h.reconciler.converge(key) == "conflict"
        assert h.api.applied == [] and h.api.deleted == []  # no partial set, nothing deleted
        assert h.api.objects[("default", "Service", "chat")] == theirs
        status = h.api.status_patches[-1][2]
        degraded, ready = _condition(status, "Degraded"), _condition(status, "Ready")
        assert (degraded["status"], degraded["reason"]) == ("True", "ChildConflict")
        assert degraded["message"].startswith(
            "Service chat exists and is not this workload's: not controlled by any object "
            "(written by kubectl-create)"
        )
        assert (ready["status"], ready["reason"]) == ("False", "ChildConflict")
        assert len(h.api.status_patches) == 1
        await asyncio.sleep(0.05)
        assert [e[2] for e in h.api.events] == ["Placed", "ChildConflict"]
        assert h.metrics.reconcile_total.labels(result="conflict")._value.get() == 3
        # The user removes their Service: the children are created (after a look that the names are free).
        await h.api.delete("Service", "default", "chat")
        assert await h.reconciler.converge(key) == "placed"
        assert {(o["kind"], o["metadata"]["name"]) for o in h.api.applied} == {
            ("Deployment", "chat-serve"),
            ("Service", "chat"),
        }
        assert _condition(h.api.status_patches[-1][2], "Degraded")["reason"] == "AsPlanned"
        await h.planning_loop.stop()

    asyncio.run(main())


def test_refused_writes_are_a_condition_an_event_and_a_bounded_retry() -> None:
    h = Harness()
    h.reconciler._refusals = Refusals(first=0.3, cap=0.6)
    message = 'Deployment.apps "chat-serve" is invalid: denied by policy deny-images'
    h.api.refuse = lambda o: message if o["kind"] == "Deployment" else None

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        key = await h.placed("chat", {**CHAT, "disaggregation": "never"})
        for _ in range(20):  # resyncs and watch events: no new attempt before the back-off
            assert await h.reconciler.converge(key) == "rejected"
        assert len(h.api.refused) == 1
        assert [o["kind"] for o in h.api.applied] == ["Service"]  # the rest is written
        status = h.api.status_patches[-1][2]
        degraded = _condition(status, "Degraded")
        assert (degraded["reason"], degraded["message"]) == (
            "ChildRejected",
            f"Deployment chat-serve: {message}",
        )
        assert _condition(status, "Ready")["reason"] == "ChildRejected"
        assert len(h.api.status_patches) == 1
        # The back-off doubles (0.3 s, 0.6 s, then the cap): over ~2 s, a handful of attempts.
        h.reconciler.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            h.reconciler.enqueue([key])  # a resync every 0.1 s
            await asyncio.sleep(0.1)
        assert 3 <= len(h.api.refused) <= 5, len(h.api.refused)
        await asyncio.sleep(0.05)
        assert [e[2] for e in h.api.events].count("ChildRejected") == 1
        # A new spec is a new write: tried at once, and accepted.
        h.api.refuse = None
        spec = {**CHAT, "disaggregation": "never", "serving": {"prefill": {"image": "vllm/vllm-openai:v1"}}}
        await h.placed("chat", spec, generation=2)
        assert await h.reconciler.converge(key) == "placed"
        assert (
            h.api.objects[("default", "Deployment", "chat-serve")]["spec"]["template"]["spec"]["containers"][
                0
            ]["image"]
            == "vllm/vllm-openai:v1"
        )
        assert _condition(h.api.status_patches[-1][2], "Degraded")["reason"] == "AsPlanned"
        await h.reconciler.stop()
        await h.planning_loop.stop()

    asyncio.run(main())


def test_drift_is_repaired_once_and_a_quiet_resync_writes_nothing() -> None:
    h = Harness()

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        key = await h.placed("chat", {**CHAT, "disaggregation": "never"})
        await h.reconciler.converge(key)
        h.sync_index()
        await h.reconciler.converge(key)  # Ready
        writes = len(h.api.applied), len(h.api.status_patches)
        for _ in range(5):
            assert await h.reconciler.converge(key) == "unchanged"
        assert (len(h.api.applied), len(h.api.status_patches)) == writes
        # kubectl scale and kubectl set image on the Deployment:
        live = h.api.objects[("default", "Deployment", "chat-serve")]
        uid = live["metadata"]["uid"]
        edited = copy.deepcopy(live)
        edited["spec"]["replicas"] = 7
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:1"
        h.api.put(edited)
        h.sync_index()
        assert await h.reconciler.converge(key) == "placed"
        assert len(h.api.applied) == writes[0] + 1  # one write, onto that object
        repaired = h.api.objects[("default", "Deployment", "chat-serve")]
        assert repaired["metadata"]["uid"] == uid and repaired["spec"]["replicas"] != 7
        assert repaired["spec"]["template"]["spec"]["containers"][0]["image"] != "someone/else:1"
        assert await h.reconciler.converge(key) == "unchanged"  # the index still shows the edit: in flight
        h.sync_index()
        await h.reconciler.converge(key)  # Ready again (it was not while the child had drifted)
        assert _condition(h.api.status_patches[-1][2], "Ready")["status"] == "True"
        assert await h.reconciler.converge(key) == "unchanged"
        assert len(h.api.applied) == writes[0] + 1
        await h.planning_loop.stop()

    asyncio.run(main())


def test_a_status_written_by_someone_else_is_written_back() -> None:
    h = Harness()

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        key = await h.placed("chat", {**CHAT, "disaggregation": "never"})
        await h.reconciler.converge(key)
        ours = h.api.status_patches[-1][2]
        h.reconciler.observe_status(key, ours)  # our own write coming back: nothing to do
        assert key not in h.reconciler._queued
        tampered = copy.deepcopy(ours)
        tampered["prefill"]["replicas"] = 99
        tampered["conditions"] = [c for c in tampered["conditions"] if c["type"] != "Degraded"]
        tampered["note"] = "edited"
        h.reconciler.observe_status(key, tampered)
        assert key in h.reconciler._queued
        assert await h.reconciler.converge(key) == "placed"
        patch = h.api.status_patches[-1][2]
        assert patch["prefill"]["replicas"] == ours["prefill"]["replicas"] and patch["note"] is None
        assert [c["type"] for c in patch["conditions"]] == ["Estimated", "Placed", "Ready", "Degraded"]
        assert await h.reconciler.converge(key) == "unchanged"
        await h.planning_loop.stop()

    asyncio.run(main())


def test_refused_deletions_and_status_patches_are_reported() -> None:
    h = Harness()

    async def main() -> None:
        h.planning_loop.start()
        h.planning_loop.set_pools(pools_input())
        key = await h.placed("chat", {**CHAT, "disaggregation": "always"})
        await h.reconciler.converge(key)
        h.sync_index()
        # A mode switch whose deletions RBAC refuses: the new children are written, the refusal is
        # the condition, and it is not retried on every converge.
        h.api.refuse_delete = 'deployments.apps "chat-prefill" is forbidden: no delete'
        await h.placed("chat", {**CHAT, "disaggregation": "never"}, generation=2)
        assert await h.reconciler.converge(key) == "rejected"
        degraded = _condition(h.api.status_patches[-1][2], "Degraded")
        assert degraded["reason"] == "ChildRejected" and "(deletion): deployments.apps" in degraded["message"]
        assert ("Deployment", "chat-serve") in {(o["kind"], o["metadata"]["name"]) for o in h.api.applied}
        h.sync_index()
        patches = len(h.api.status_patches)
        assert await h.reconciler.converge(key) == "rejected"
        assert len(h.api.status_patches) == patches
        # The status itself refused: an Event (once), and the converge fails (retried with back-off).
        h.api.refuse_delete = None
        h.api.refuse_status = "status.prefill.tp: Invalid value"
        await h.placed(
            "chat", {**CHAT, "disaggregation": "never", "demand": {"requestsPerSecond": 1}}, generation=3
        )
        for _ in range(2):
            try:
                await h.reconciler.converge(key)
            except ApiError as exc:
                assert exc.status == 422
            else:
                raise AssertionError("a refused status patch must fail the converge")
        await asyncio.sleep(0.05)
        assert [e[2] for e in h.api.events].count("StatusRejected") == 1
        await h.planning_loop.stop()

    asyncio.run(main())
