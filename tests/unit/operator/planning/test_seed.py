"""Seeds: a status read back as a plan is the plan it was written from (same status, same
children), trusted only when the live children agree; the stable round keeps it."""

from __future__ import annotations

from dataclasses import replace

from hetsched.operator.planning.plans import plan_workloads
from hetsched.operator.planning.seed import children_disagree, seed_from_status, seeded_plan
from hetsched.operator.reconcile.children import ChildState, desired_children
from hetsched.operator.reconcile.status import comparable, placed_status
from support.builders import CHAT, CODER, pools_input, registration


def _status_of(name: str, spec: dict, colocated: bool = False) -> tuple[dict, object, object]:
    reg = registration(name, {**spec, "disaggregation": "never"} if colocated else spec)
    pools = pools_input()
    plan = plan_workloads([reg], pools)[reg.key]
    assert plan.placed
    status = placed_status(plan, reg.generation, None, (True, "ok"), namespace_name=reg.key, now="t")
    return status, reg, plan


def test_a_status_read_back_is_the_plan_it_was_written_from() -> None:
    pools = pools_input()
    for name, spec, colocated in (("chat", CHAT, False), ("coder", CODER, False), ("co", CHAT, True)):
        status, reg, plan = _status_of(name, spec, colocated)
        seed = seed_from_status(comparable(status), reg.generation)
        assert seed is not None
        again = seeded_plan(seed, reg.key, pools.cluster, max_model_len=reg.request.capacity_context)
        assert again is not None and again.signature() == plan.signature()
        assert (
            placed_status(again, reg.generation, status, (True, "ok"), namespace_name=reg.key, now="t")
            == status
        )
        assert desired_children(reg, again) == desired_children(reg, plan)


def test_no_seed_from_another_generation_or_an_unplaced_status() -> None:
    status, reg, _ = _status_of("chat", CHAT)
    assert seed_from_status(status, reg.generation + 1) is None
    placed = next(c for c in status["conditions"] if c["type"] == "Placed")
    unplaced = {**status, "conditions": [{**placed, "status": "False"}]}
    assert seed_from_status(unplaced, reg.generation) is None
    assert seed_from_status({**status, "prefill": {"pool": "x"}}, reg.generation) is None
    assert seed_from_status(None, 1) is None


def test_children_must_agree() -> None:
    status, reg, plan = _status_of("chat", CHAT)
    seed = seed_from_status(status, reg.generation)
    assert seed is not None
    live = {
        (o["kind"], o["metadata"]["name"]): ChildState.from_body(o["kind"], o)
        for o in desired_children(reg, plan)
    }
    assert children_disagree(seed, reg.uid, live) is None
    assert "not controlled" in (children_disagree(seed, "other-uid", live) or "")
    name = seed.decode.deployment
    assert "does not exist" in (
        children_disagree(seed, reg.uid, {k: v for k, v in live.items() if k[1] != name}) or ""
    )
    moved = {**live, ("Deployment", name): replace(live[("Deployment", name)], pool="elsewhere")}
    assert "runs on pool elsewhere" in (children_disagree(seed, reg.uid, moved) or "")


def test_a_stable_round_keeps_a_seeded_placement_a_fresh_one_would_not_choose() -> None:
    """The round after a restart: the seed is the previous plan; only a changed spec moves."""
    pools = pools_input()
    chat = registration("chat", CHAT)
    fresh = plan_workloads([chat], pools)[chat.key]
    # A placement elsewhere (as if made while the preferred pool was full), recorded in a status.
    other = plan_workloads([chat], pools, policy="joint")[chat.key]
    assert fresh.signature() == other.signature()  # (deterministic)
    elsewhere = {**CHAT, "pools": {"exclude": sorted({fresh.prefill.pool, fresh.decode.pool})}}
    placed_elsewhere = plan_workloads([registration("chat", elsewhere)], pools)[chat.key]
    assert placed_elsewhere.placed and placed_elsewhere.signature() != fresh.signature()
    status = placed_status(placed_elsewhere, 1, None, (True, "ok"), namespace_name=chat.key, now="t")
    seed = seed_from_status(status, 1)
    assert seed is not None
    seeded = seeded_plan(seed, chat.key, pools.cluster, max_model_len=chat.request.capacity_context)
    assert seeded is not None
    kept = plan_workloads([chat], pools, {chat.key: seeded})[chat.key]
    assert kept.signature() == placed_elsewhere.signature()
    changed = replace(chat, generation=2)
    assert plan_workloads([changed], pools, {chat.key: seeded})[chat.key].signature() == fresh.signature()
