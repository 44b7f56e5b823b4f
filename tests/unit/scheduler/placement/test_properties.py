"""Properties of the optimum (hypothesis): more pools never cost more, tighter SLOs never cost less,
the same input gives the same plan (in any workload order)."""

from __future__ import annotations

import json
from dataclasses import replace

from hetsched.scheduler.placement import PlanOptions, WorkloadRequest, plan
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.result import Plan
from hetsched.scheduler.pools import Pool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.placement import CHEAP, FAST, MID, OLD, SMALL, TINY, check_plan, cluster, pool, request

OPTS = PlanOptions(suggestions=False)
CACHE = EstimateCache()  # shared across examples: estimates depend only on shape and hardware
HARDWARE = {"fast": FAST, "old": OLD, "cheap": CHEAP, "tiny": TINY}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pools(draw: st.DrawFn) -> list[Pool]:
    names = draw(st.lists(st.sampled_from(sorted(HARDWARE)), min_size=1, max_size=3, unique=True))
    out = []
    for n in names:
        per_node = draw(st.sampled_from([1, 2, 4, 8]))
        nodes = draw(st.integers(1, 2))
        free = draw(st.integers(0, nodes * per_node))
        out.append(pool(n, HARDWARE[n], nodes, per_node, free=free))
    return out


@st.composite
def workloads(draw: st.DrawFn) -> list[WorkloadRequest]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        m = draw(st.sampled_from([SMALL, MID]))
        sessions = draw(st.one_of(st.none(), st.integers(1, 40)))
        rps = None if sessions is not None else draw(st.sampled_from([0.5, 2.0, 8.0]))
        out.append(
            request(
                f"w{i}",
                m,
                rps=rps,
                sessions=sessions,
                ttft=draw(st.sampled_from([0.5, 1.0, 3.0])),
                tpot=draw(st.sampled_from([0.03, 0.06, 0.12])),
                prompt=draw(st.sampled_from([500, 2000])),
                cached=draw(st.sampled_from([0, 4000])),
            )
        )
    return out


def objective(p: Plan) -> tuple[int, float]:
    return (len(p.workloads) - p.placed, p.total_cost_per_hour)


def not_worse(a: tuple[int, float], b: tuple[int, float]) -> bool:
    """a is at least as good as b (lexicographic: fewer unplaced, then cheaper), up to rounding."""
    return a[0] < b[0] or (a[0] == b[0] and a[1] <= b[1] * (1 + 1e-6) + 1e-6)


@SETTINGS
@given(pools(), workloads(), st.sampled_from(sorted(HARDWARE)), st.integers(1, 8))
def test_adding_a_pool_never_raises_the_optimum(
    base: list[Pool], reqs: list[WorkloadRequest], extra_hw: str, devices: int
) -> None:
    before_cl = cluster(*base)
    before = plan(reqs, before_cl, OPTS, cache=CACHE)
    check_plan(before, reqs, before_cl, OPTS)
    after_cl = cluster(*base, pool("extra", HARDWARE[extra_hw], 1, devices))
    after = plan(reqs, after_cl, OPTS, cache=CACHE)
    check_plan(after, reqs, after_cl, OPTS)
    assert not_worse(objective(after), objective(before))


@SETTINGS
@given(pools(), workloads(), st.floats(0.3, 1.0), st.floats(0.3, 1.0), st.integers(0, 2))
def test_tightening_an_slo_never_lowers_the_optimum(
    base: list[Pool], reqs: list[WorkloadRequest], ttft_factor: float, tpot_factor: float, which: int
) -> None:
    cl = cluster(*base)
    loose = plan(reqs, cl, OPTS, cache=CACHE)
    target = reqs[which % len(reqs)]
    tight_req = replace(
        target,
        ttft_slo_seconds=target.ttft_slo_seconds * ttft_factor,
        tpot_slo_seconds=target.tpot_slo_seconds * tpot_factor,
    )
    tight_reqs = [tight_req if r is target else r for r in reqs]
    tight = plan(tight_reqs, cl, OPTS, cache=CACHE)
    check_plan(tight, tight_reqs, cl, OPTS)
    assert not_worse(objective(loose), objective(tight))


@SETTINGS
@given(pools(), workloads(), st.randoms(use_true_random=False))
def test_same_input_same_plan_in_any_order(
    base: list[Pool], reqs: list[WorkloadRequest], rnd: object
) -> None:
    cl = cluster(*base)
    first = plan(reqs, cl, OPTS, cache=EstimateCache())
    again = plan(reqs, cl, OPTS, cache=CACHE)
    shuffled = list(reqs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    third = plan(shuffled, cl, OPTS, cache=CACHE)

    def canon(p: Plan) -> str:
        d = p.to_dict()
        d.pop("solver")  # timings
        return json.dumps(d, sort_keys=True)

    assert canon(first) == canon(again) == canon(third)
