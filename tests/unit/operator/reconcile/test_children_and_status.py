"""Pure reconciliation: status from plan and children, conditions, patches, events, actions."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from hetsched.operator.planning.plans import WorkloadPlan, plan_workloads
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.children import (
    ChildState,
    Conflict,
    PodScheduling,
    conflict_message,
    desired_children,
    parse_time,
    plan_actions,
    readiness,
    scheduler_reason,
    stalled_children,
    unschedulable_pods,
)
from hetsched.operator.reconcile.status import (
    AgentWorkloadStatus,
    camel,
    comparable,
    degraded_event,
    get_condition,
    placed_status,
    placement_event,
    problem_status,
    round_sig,
    set_condition,
    status_patch,
    unplaced_status,
)
from support.builders import CHAT, CODER, HUGE, pools_input, registration

HASH = manifests.HASH_ANNOTATION
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def _plans() -> dict[str, WorkloadPlan]:
    regs = [registration("chat", CHAT), registration("coder", CODER), registration("huge", HUGE)]
    plans = plan_workloads(regs, pools_input())
    return {k[1]: v for k, v in plans.items()}


PLANS = _plans()


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    c = get_condition(status["conditions"], type_)
    assert c is not None
    return dict(c)


def test_placed_status_has_every_figure() -> None:
    plan = PLANS["chat"]
    s = placed_status(
        plan, 3, None, (False, "chat-decode: not created yet"), namespace_name=("default", "chat"), now=NOW
    )
    AgentWorkloadStatus.model_validate(s)
    assert s["observedGeneration"] == 3
    assert _cond(s, "Estimated")["status"] == "True" and "OI" in _cond(s, "Estimated")["message"]
    assert _cond(s, "Placed")["status"] == "True"
    assert _cond(s, "Ready") == {
        "type": "Ready",
        "status": "False",
        "reason": "Progressing",
        "message": "chat-decode: not created yet",
        "lastTransitionTime": NOW,
        "observedGeneration": 3,
    }
    assert _cond(s, "Degraded")["status"] == "False"
    for phase in ("prefill", "decode"):
        ph = s[phase]
        for key in (
            "pool",
            "tp",
            "batch",
            "replicas",
            "operationalIntensity",
            "capacityFootprintBytes",
            "regime",
            "tokensPerSecond",
            "deployment",
        ):
            assert ph[key] not in (None, ""), (phase, key)
        assert ph["regime"] in ("compute-bound", "bandwidth-bound", "capacity-bound")
    assert s["prefill"]["ttftSeconds"] is not None and s["decode"]["tpotSeconds"] is not None
    assert s["dollarsPerMillionTokens"] == round_sig(plan.dollars_per_million_tokens)
    assert 0 < len(s["rejectedPools"]) <= 24
    assert [c["type"] for c in s["conditions"]] == ["Estimated", "Placed", "Ready", "Degraded"]


def test_colocated_status_points_both_phases_at_the_serve_deployment() -> None:
    plan = next(p for p in PLANS.values() if p.mode == "colocated")
    name = plan.key[1]
    s = placed_status(plan, 1, None, (True, "ok"), namespace_name=plan.key, now=NOW)
    assert s["prefill"]["deployment"] == s["decode"]["deployment"] == f"{name}-serve"
    assert s["prefill"]["pool"] == s["decode"]["pool"]


def test_unplaced_status_is_degraded_with_the_reason() -> None:
    plan = PLANS["huge"]
    s = unplaced_status(plan, 1, None, now=NOW)
    AgentWorkloadStatus.model_validate(s)
    placed = _cond(s, "Placed")
    assert placed["status"] == "False" and placed["reason"] == camel(plan.reason)
    degraded = _cond(s, "Degraded")
    assert (
        degraded["status"] == "True"
        and degraded["reason"] == "Infeasible"
        and plan.message in degraded["message"]
    )
    assert s["prefill"] is None and s["mode"] is None


def test_problem_status() -> None:
    s = problem_status(4, None, "InvalidSpec", "spec.model: unknown model 'x'", now=NOW)
    assert _cond(s, "Estimated")["status"] == "False"
    assert _cond(s, "Degraded") == {
        "type": "Degraded",
        "status": "True",
        "reason": "InvalidSpec",
        "message": "spec.model: unknown model 'x'",
        "lastTransitionTime": NOW,
        "observedGeneration": 4,
    }
    waiting = problem_status(1, None, "ConfigMapNotFound", "waiting", estimated=None, now=NOW)
    assert _cond(waiting, "Estimated")["status"] == "Unknown"


def test_transition_time_moves_only_on_status_change() -> None:
    conds = set_condition([], "Ready", False, "Progressing", "a", now=NOW)
    conds = set_condition(conds, "Ready", False, "Progressing", "b", now=LATER)
    assert conds[0]["lastTransitionTime"] == NOW and conds[0]["message"] == "b"
    conds = set_condition(conds, "Ready", True, "Available", "c", now=LATER)
    assert conds[0]["lastTransitionTime"] == LATER
    long = set_condition([], "Degraded", True, "X", "m" * 5000, now=NOW)
    assert len(long[0]["message"]) == 1024


def test_status_patch_writes_only_changes_and_nulls_removed_keys() -> None:
    plan = PLANS["chat"]
    s1 = placed_status(plan, 1, None, (True, "ok"), namespace_name=("default", "chat"), now=NOW)
    stored = comparable(s1)
    assert status_patch(stored, s1) is None  # re-planning to the same result writes nothing
    s2 = placed_status(plan, 1, stored, (True, "ok"), namespace_name=("default", "chat"), now=LATER)
    assert status_patch(stored, s2) is None  # nor does time passing
    bad = unplaced_status(PLANS["huge"], 2, stored, now=LATER)
    patch = status_patch(stored, bad)
    assert patch is not None
    assert patch["prefill"] is None and patch["mode"] is None and patch["observedGeneration"] == 2
    stale = dict(stored, extraKey="x")
    assert status_patch(stale, s1) == {"extraKey": None}


def test_events_on_placement_change_only() -> None:
    plan = PLANS["chat"]
    assert placement_event(None, plan, set())[:2] == ("Normal", "Placed")
    stored = comparable(
        placed_status(plan, 1, None, (True, "ok"), namespace_name=("default", "chat"), now=NOW)
    )
    assert placement_event(stored, plan, set()) is None
    assert plan.prefill is not None
    moved = placement_event(stored, PLANS["coder"], set())
    assert moved is not None and moved[1] == "Replaced"
    lost = placement_event(stored, PLANS["coder"], {plan.prefill.pool})
    assert lost is not None and lost[:2] == ("Warning", "PoolLost")
    assert placement_event(stored, PLANS["huge"], set())[:2] == ("Warning", "Infeasible")
    unplaced = comparable(unplaced_status(PLANS["huge"], 1, None, now=NOW))
    assert placement_event(unplaced, PLANS["huge"], set()) is None


def _live(o: dict[str, Any], available: int | None = None, **meta: Any) -> ChildState:
    """The child ``o`` as the API server returns it once applied (a uid, a version, defaults)."""
    body = copy.deepcopy(o)
    body["metadata"].update(uid=f"uid-{o['metadata']['name']}", resourceVersion="7", generation=1, **meta)
    body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"  # not ours: no drift
    if o["kind"] == "Deployment":
        r = o["spec"]["replicas"]
        body["spec"]["revisionHistoryLimit"] = 10
        body["spec"]["template"]["spec"].update(restartPolicy="Always", dnsPolicy="ClusterFirst")
        body["status"] = {
            "observedGeneration": 1,
            "updatedReplicas": r,
            "availableReplicas": r if available is None else available,
        }
    elif o["kind"] == "Service":
        body["spec"]["clusterIP"] = "10.0.0.7"
    return ChildState.from_body(o["kind"], body)


def _index(desired: list[dict[str, Any]], **kw: Any) -> dict[tuple[str, str], ChildState]:
    return {(o["kind"], o["metadata"]["name"]): _live(o, **kw) for o in desired}


def test_actions_create_only_after_a_lookup_and_write_nothing_when_in_sync() -> None:
    reg = registration("chat", CHAT)
    desired = desired_children(reg, PLANS["chat"])
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in desired)
    # The engines and the router are named after the workload; its Service is the workload's name.
    assert all(name.startswith("chat-") for kind, name in kinds if kind != "Service")
    assert [name for kind, name in kinds if kind == "Service"] == ["chat"]
    a = plan_actions(desired, {}, {}, workload="chat", uid=reg.uid)
    assert a.writes == () and a.conflicts == () and a.delete == ()
    assert [o["metadata"]["name"] for o in a.lookups] == [o["metadata"]["name"] for o in desired]
    # Created, not in the index yet: neither a lookup nor a second write.
    created = {(o["kind"], o["metadata"]["name"]): (o["metadata"]["annotations"][HASH], "") for o in desired}
    assert plan_actions(desired, {}, created, workload="chat", uid=reg.uid).lookups == ()
    # The index holds them, defaults and other controllers' annotations added: no write at all.
    same = plan_actions(desired, _index(desired), {}, workload="chat", uid=reg.uid)
    assert same.writes == () and same.lookups == () and same.conflicts == () and same.delete == ()


def test_actions_repair_drift_once() -> None:
    reg = registration("chat", {**CHAT, "disaggregation": "always"})
    desired = desired_children(reg, plan_workloads([reg], pools_input())[reg.key])
    deployment = next(o for o in desired if o["kind"] == "Deployment")
    key = ("Deployment", deployment["metadata"]["name"])
    scaled = copy.deepcopy(deployment)
    scaled["spec"]["replicas"] += 3  # kubectl scale
    existing = {**_index(desired), key: _live(scaled)}
    a = plan_actions(desired, existing, {}, workload="chat", uid=reg.uid)
    assert [(w.key, w.uid, w.live_version, w.why) for w in a.writes] == [
        (key, f"uid-{key[1]}", "7", "spec.replicas")
    ]
    # Written; the index still shows the version before the write: not written again.
    in_flight = {key: (deployment["metadata"]["annotations"][HASH], "7")}
    assert plan_actions(desired, existing, in_flight, workload="chat", uid=reg.uid).writes == ()


def test_actions_never_take_over_or_delete_what_the_workload_does_not_control() -> None:
    reg = registration("chat", CHAT)
    desired = desired_children(reg, PLANS["chat"])
    foreign = {
        k: replace(c, controller_uid="uid-other", holder="controlled by ConfigMap x (uid uid-other)")
        for k, c in _index(desired).items()
    }
    a = plan_actions(desired, foreign, {}, workload="chat", uid=reg.uid)
    assert a.writes == () and a.delete == ()
    assert [(c.kind, c.name) for c in a.conflicts] == [(o["kind"], o["metadata"]["name"]) for o in desired]
    assert (
        a.conflicts[0].message().endswith("is not this workload's: controlled by ConfigMap x (uid uid-other)")
    )
    assert "Nothing was written" in conflict_message(a.conflicts)
    # A leftover of a deleted workload of the same name: the garbage collector will remove it.
    leftover = _live(
        desired[0],
        ownerReferences=[{"kind": "AgentWorkload", "name": "chat", "uid": "old", "controller": True}],
    )
    msg = Conflict.of("chat", leftover).message()
    assert "AgentWorkload chat (uid old)" in msg and "garbage collector" in msg
    # Not desired any more: ours are deleted (by uid), another's labelled like ours are not.
    ours = _live(desired[0], name="chat-old")
    stale = {
        ("Deployment", "chat-old"): replace(ours, name="chat-old", controller_uid=reg.uid),
        ("Service", "chat-theirs"): replace(ours, kind="Service", name="chat-theirs", controller_uid=""),
    }
    a = plan_actions(desired, {**_index(desired), **stale}, {}, workload="chat", uid=reg.uid)
    assert a.delete == (("Deployment", "chat-old", ours.uid),)


def test_holder_names_the_controller_or_the_writer() -> None:
    body = {"metadata": {"name": "s", "managedFields": [{"manager": "kubectl-create"}]}, "spec": {}}
    assert (
        ChildState.from_body("Service", body).holder
        == "not controlled by any object (written by kubectl-create)"
    )
    owned = {"metadata": {"name": "s", "ownerReferences": [{"kind": "ConfigMap", "name": "c", "uid": "1"}]}}
    assert (
        ChildState.from_body("Service", owned).holder == "owned by ConfigMap c, none of them its controller"
    )


def test_readiness_from_child_states() -> None:
    reg = registration("chat", CHAT)
    plan = PLANS["chat"]
    desired = desired_children(reg, plan)
    deployments = [o for o in desired if o["kind"] == "Deployment"]
    ready = _index(desired)
    assert readiness(plan, desired, ready)[0] is True
    first = deployments[0]
    partial = dict(ready)
    partial[("Deployment", first["metadata"]["name"])] = _live(first, available=0)
    ok, why = readiness(plan, desired, partial)
    assert not ok and "available" in why
    assert readiness(plan, desired, {})[1].count("not created yet") == len(deployments)
    assert readiness(PLANS["huge"], [], {}) == (False, "not placed")
    # Drifted (scaled by hand): not ready until repaired.
    scaled = copy.deepcopy(first)
    scaled["spec"]["replicas"] += 1
    drifted = {**ready, ("Deployment", first["metadata"]["name"]): _live(scaled)}
    ok, why = readiness(plan, desired, drifted)
    assert not ok and f"{first['metadata']['name']}: update in progress" in why
    # Zero replicas are never ready.
    zero = copy.deepcopy(first)
    zero["spec"]["replicas"] = 0
    assert _live(zero).ready() == (False, f"{first['metadata']['name']}: 0 replicas")


def test_child_state_from_body() -> None:
    body = {
        "metadata": {
            "name": "d",
            "generation": 2,
            "annotations": {manifests.HASH_ANNOTATION: "h"},
            "ownerReferences": [{"uid": "u"}],
        },
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, "availableReplicas": 3, "updatedReplicas": 3},
    }
    c = ChildState.from_body("Deployment", body)
    assert (c.hash, c.controller_uid, c.replicas, c.available) == ("h", "", 3, 3)  # no controller
    body["metadata"]["ownerReferences"][0]["controller"] = True
    assert ChildState.from_body("Deployment", body).controller_uid == "u"
    assert c.ready()[0]


def test_camel_and_rounding() -> None:
    assert camel("no-free-devices") == "NoFreeDevices"
    assert camel(None) == "Unknown"
    assert round_sig(123456.789) == 123460.0
    assert round_sig(float("inf")) is None and round_sig(0.0) == 0.0 and round_sig(None) is None


def test_bad_serving_args_raise_value_error() -> None:
    spec = {**CHAT, "serving": {"prefill": {"image": "x", "args": ["{nope}"]}}}
    reg = registration("chat", spec)
    try:
        desired_children(reg, PLANS["chat"])
    except ValueError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected ValueError")


# ---- unschedulable children -----------------------------------------------------------------
T0 = parse_time("2026-01-01T00:00:00Z")
assert T0 is not None
SCHEDULER_MESSAGE = (
    "0/10 nodes are available: 2 Insufficient nvidia.com/gpu, 8 node(s) didn't match Pod's node "
    "affinity/selector. no new claims to deallocate, preemption: 0/10 nodes are available: "
    "2 No preemption victims found for incoming pod, 8 Preemption is not helpful for scheduling."
)


def _deployment_body(available: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "chat-decode",
            "generation": 1,
            "creationTimestamp": "2025-12-31T23:59:00Z",
            "annotations": {manifests.HASH_ANNOTATION: "h"},
            "ownerReferences": [{"uid": "u"}],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"hetsched.io/workload": "chat", "hetsched.io/phase": "decode"}},
        },
        "status": {"observedGeneration": 1, "availableReplicas": available, "updatedReplicas": 2, **status},
    }


def _progressing(update: str, status: str = "True", reason: str = "ReplicaSetUpdated") -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {
                "type": "Progressing",
                "status": status,
                "reason": reason,
                "lastUpdateTime": update,
                "lastTransitionTime": "2025-12-31T23:59:00Z",
            },
        ]
    }


def test_whole_second_timestamps_read_as_the_end_of_their_second() -> None:
    """A pod unschedulable at 00:00:00.7 is stamped 00:00:00Z; counting from 00:00:00 would end a
    5 s grace period at 4.3 s."""
    fine = parse_time("2026-01-01T00:00:00.250000Z")
    assert fine is not None and T0 is not None
    assert T0 - fine == 0.75
    assert parse_time("2026-01-01T00:00:00+00:00") == T0
    assert parse_time("not a time") is None and parse_time(None) is None


def test_child_state_reads_selector_and_last_progress() -> None:
    c = ChildState.from_body("Deployment", _deployment_body(1, **_progressing("2026-01-01T00:00:00Z")))
    assert c.selector == "hetsched.io/phase=decode,hetsched.io/workload=chat"
    assert c.progress_time == T0 and not c.progress_deadline_exceeded
    # No Progressing condition yet: the creation time.
    fresh = ChildState.from_body("Deployment", _deployment_body(0))
    assert fresh.progress_time == T0 - 60
    dead = ChildState.from_body(
        "Deployment",
        _deployment_body(0, **_progressing("2026-01-01T00:10:00Z", "False", "ProgressDeadlineExceeded")),
    )
    assert dead.progress_deadline_exceeded
    svc = ChildState.from_body("Service", {"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"}}})
    assert svc.selector == "" and svc.progress_time is None


def test_stalled_for() -> None:
    ready = ChildState.from_body("Deployment", _deployment_body(2, **_progressing("2026-01-01T00:00:00Z")))
    assert ready.stalled_for(T0 + 1000) is None
    stuck = ChildState.from_body("Deployment", _deployment_body(1, **_progressing("2026-01-01T00:00:00Z")))
    assert stuck.stalled_for(T0 + 42) == 42
    assert stuck.stalled_for(T0 - 5) == 0  # clock skew never gives a negative stall
    dead = ChildState.from_body(
        "Deployment",
        _deployment_body(1, **_progressing("2026-01-01T00:10:00Z", "False", "ProgressDeadlineExceeded")),
    )
    assert dead.stalled_for(T0) == float("inf")
    assert ChildState("Deployment", "x", "h", "u", 1).stalled_for(T0) is None  # progress unknown


def test_stalled_children_only_at_the_desired_content() -> None:
    reg = registration("chat", {**CHAT, "disaggregation": "always"})
    plan = plan_workloads([reg], pools_input())[reg.key]
    desired = desired_children(reg, plan)
    deployments = [o for o in desired if o["kind"] == "Deployment" and "router" not in o["metadata"]["name"]]
    assert [o["metadata"]["name"] for o in deployments] == ["chat-decode", "chat-prefill"]
    desired = [o for o in desired if o in deployments]
    h = manifests.HASH_ANNOTATION

    def child(o: dict[str, Any], since: float, available: int = 0, hash_: str | None = None) -> ChildState:
        return ChildState(
            "Deployment",
            o["metadata"]["name"],
            hash_ or o["metadata"]["annotations"][h],
            reg.uid,
            1,
            1,
            1,
            available,
            1,
            selector="a=b",
            progress_time=since,
        )

    first, second = deployments
    k1, k2 = ("Deployment", first["metadata"]["name"]), ("Deployment", second["metadata"]["name"])
    existing = {k1: child(first, T0 - 100), k2: child(second, T0 - 10)}
    stalled, wait = stalled_children(desired, existing, T0, grace=60)
    assert [c.name for c in stalled] == [first["metadata"]["name"]] and wait == 50
    # Ready, or an update on its way (old content): nothing to look at.
    existing = {k1: child(first, T0 - 100, available=1), k2: child(second, T0 - 100, hash_="old")}
    assert stalled_children(desired, existing, T0, grace=60) == ([], None)
    assert stalled_children(desired, {}, T0, grace=60) == ([], None)


def _pod(name: str, since: str | None, reason: str = "Unschedulable", **meta: Any) -> dict[str, Any]:
    conditions = []
    if since is not None:
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "lastTransitionTime": since,
                "message": SCHEDULER_MESSAGE,
            }
        ]
    return {"metadata": {"name": name, **meta}, "status": {"phase": "Pending", "conditions": conditions}}


def test_pod_scheduling_from_body() -> None:
    p = PodScheduling.from_body(_pod("a", "2026-01-01T00:00:00Z"))
    assert p.unschedulable_since == T0 and p.message == SCHEDULER_MESSAGE
    for body in (
        _pod("b", None),  # not tried yet
        _pod("c", "2026-01-01T00:00:00Z", reason="SchedulingGated"),
        _pod("d", "2026-01-01T00:00:00Z", deletionTimestamp="2026-01-01T00:00:01Z"),
        {
            "metadata": {"name": "e"},
            "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        },
    ):
        assert PodScheduling.from_body(body).unschedulable_since is None, body["metadata"]["name"]


def test_unschedulable_pods_after_the_grace_period() -> None:
    pods = [
        PodScheduling.from_body(_pod("d-2", "2026-01-01T00:00:30Z")),
        PodScheduling.from_body(_pod("d-1", "2026-01-01T00:00:10Z")),
        PodScheduling.from_body({"metadata": {"name": "d-3"}, "status": {"phase": "Running"}}),
    ]
    assert unschedulable_pods("d", [], T0 + 100, 60) == (None, None)
    assert unschedulable_pods("d", pods[2:], T0 + 100, 60) == (None, None)
    assert unschedulable_pods("d", pods, T0 + 40, 60) == (None, 30)  # d-1 in 30 s
    message, recheck = unschedulable_pods("d", pods, T0 + 70, 60)
    assert recheck is None
    assert message == (
        "d: pod d-1 unschedulable: 0/10 nodes are available: 2 Insufficient nvidia.com/gpu, "
        "8 node(s) didn't match Pod's node affinity/selector"
    )
    assert scheduler_reason("") == "Unschedulable"
    assert scheduler_reason("0/3 nodes are available: 3 Insufficient cpu.") == (
        "0/3 nodes are available: 3 Insufficient cpu"
    )


def test_unschedulable_status_and_event_once() -> None:
    plan = PLANS["chat"]
    why = "chat-decode: pod chat-decode-x unschedulable: 0/10 nodes are available: 2 Insufficient nvidia.com/gpu"
    ready = (False, "chat-decode: 0/1 replicas available")
    fine = placed_status(plan, 1, None, ready, namespace_name=("default", "chat"), now=NOW)
    assert _cond(fine, "Degraded")["status"] == "False"
    s = placed_status(
        plan, 1, fine, ready, namespace_name=("default", "chat"), degraded=("Unschedulable", why), now=LATER
    )
    AgentWorkloadStatus.model_validate(s)
    degraded = _cond(s, "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("True", "Unschedulable", why)
    assert degraded["lastTransitionTime"] == LATER
    assert _cond(s, "Ready")["status"] == "False" and _cond(s, "Placed")["status"] == "True"
    assert degraded_event(fine, ("Unschedulable", why)) == ("Warning", "Unschedulable", why)
    assert degraded_event(s, ("Unschedulable", why)) is None  # already reported
    assert degraded_event(s, ("Unschedulable", why + " (other pod)")) is None
    assert degraded_event(s, None) is None
    # Recovered: Degraded False again, AsPlanned.
    back = placed_status(plan, 1, s, (True, "ok"), namespace_name=("default", "chat"), now=LATER)
    assert (_cond(back, "Degraded")["status"], _cond(back, "Degraded")["reason"]) == ("False", "AsPlanned")
