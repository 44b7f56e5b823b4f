"""The assignment: MILP against brute force, greedy feasibility, tie-breaking, pruning exactness."""

from __future__ import annotations

import random

import pytest
from hetsched.scheduler.placement import PlanOptions, plan
from hetsched.scheduler.placement.candidates import CandidateGenerator
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.options import prune_dominated
from hetsched.scheduler.placement.planner import build_problem
from hetsched.scheduler.placement.solver import (
    Problem,
    better,
    canonical,
    key,
    solve,
    solve_brute_force,
    solve_greedy,
    solve_independent,
    solve_milp,
)
from support.placement import BIG, CHEAP, FAST, MID, OLD, SMALL, TINY, check_plan, cluster, pool, request


def random_problem(rng: random.Random, workloads: int, pools: int, options: int) -> Problem:
    costs: list[tuple[float, ...]] = []
    usage: list[tuple[tuple[tuple[int, int], ...], ...]] = []
    for _ in range(workloads):
        opts = []
        for _ in range(rng.randint(0, options)):
            used = rng.sample(range(pools), rng.randint(1, min(2, pools)))
            devices = tuple(sorted((p, rng.randint(1, 6)) for p in used))
            price = sum(n * (1 + p) * rng.choice((0.5, 1.0, 1.5)) for p, n in devices)
            opts.append((round(price, 2), devices))
        opts.sort()
        costs.append(tuple(c for c, _ in opts))
        usage.append(tuple(u for _, u in opts))
    capacity = tuple(rng.randint(0, 10) for _ in range(pools))
    return Problem(tuple(costs), tuple(usage), capacity)


@pytest.mark.parametrize("seed", range(60))
def test_milp_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    problem = random_problem(rng, rng.randint(1, 5), rng.randint(1, 3), 4)
    exact = solve_brute_force(problem)
    chosen, _ = solve(problem, time_limit=10)
    assert problem.feasible(chosen.choice)
    ke, kc = key(problem, exact.choice), key(problem, chosen.choice)
    assert kc[0] == ke[0], "same number of workloads placed"
    assert kc[1] == pytest.approx(ke[1], rel=1e-6, abs=1e-9)
    milp = solve_milp(problem, 10)
    assert milp is not None and key(problem, milp.choice)[1] == pytest.approx(ke[1], rel=1e-6, abs=1e-9)
    greedy = solve_greedy(problem)
    assert problem.feasible(greedy.choice)
    assert not better(problem, greedy.choice, exact.choice)


def test_independent_when_no_contention() -> None:
    problem = Problem(((1.0, 2.0), (3.0,)), ((((0, 1),), ((1, 1),)), (((0, 1),),)), (5, 5))
    sol = solve_independent(problem)
    assert sol is not None and sol.choice == (0, 0) and sol.optimal
    tight = Problem(problem.costs, problem.usage, (1, 5))
    assert solve_independent(tight) is None
    chosen, report = solve(tight)
    assert chosen.choice == (1, 0) and chosen.method == "milp" and report["greedy_gap"] is not None


def test_count_first_then_cost() -> None:
    """Placing more workloads beats any cost saving."""
    problem = Problem(
        costs=((1.0, 100.0), (1.0,)),
        usage=((((0, 2),), ((1, 1),)), (((0, 2),),)),
        capacity=(2, 1),
    )
    chosen, _ = solve(problem)
    assert chosen.choice == (1, 0)
    assert solve_brute_force(problem).choice == (1, 0)


def test_workloads_without_options_stay_unplaced() -> None:
    problem = Problem(((), (2.0,)), ((), (((0, 1),),)), (1,))
    chosen, _ = solve(problem)
    assert chosen.choice == (None, 0)


def test_canonical_tie_break_keeps_cost_and_prefers_earlier_options() -> None:
    problem = Problem(((5.0, 5.0), (5.0, 5.0)), ((((0, 1),), ((1, 1),)), (((0, 1),), ((1, 1),))), (1, 1))
    out = canonical(problem, (1, 0))
    assert out == (1, 0)  # pool 0 is taken by workload 1: workload 0 cannot move
    out = canonical(problem, (1, 1))
    assert problem.feasible(out) and problem.cost(out) == 10.0 and out == (0, 1)


def test_time_limit_still_returns_a_plan() -> None:
    rng = random.Random(7)
    problem = random_problem(rng, 60, 4, 8)
    chosen, _ = solve(problem, time_limit=0.01)
    assert problem.feasible(chosen.choice)


def test_greedy_method_option() -> None:
    rng = random.Random(3)
    problem = random_problem(rng, 8, 3, 5)
    chosen, _ = solve(problem, method="greedy")
    assert problem.feasible(chosen.choice)
    assert chosen.method in ("greedy", "independent")


# ---- on real candidates: the whole chain against brute force over the unpruned options ---------------------
SCENARIOS = [
    (
        [pool("fast", FAST, 1, 4), pool("cheap", CHEAP, 1, 4)],
        [request("a", SMALL, rps=8), request("b", MID, rps=2)],
    ),
    (
        [pool("old", OLD, 1, 8, free=6), pool("tiny", TINY, 1, 4)],
        [request("a", MID, sessions=24), request("b", MID, rps=1, tpot=0.1), request("c", SMALL, rps=12)],
    ),
    (
        [pool("fast", FAST, 1, 8, free=4), pool("old", OLD, 1, 8, free=8), pool("cheap", CHEAP, 2, 4)],
        [
            request("a", BIG, sessions=8, ttft=3, tpot=0.1),
            request("b", MID, rps=4),
            request("c", SMALL, rps=20),
        ],
    ),
]


@pytest.mark.parametrize("index", range(len(SCENARIOS)))
def test_plan_is_optimal_over_all_generated_options(index: int) -> None:
    pools, reqs = SCENARIOS[index]
    cl = cluster(*pools)
    opts = PlanOptions(suggestions=False)
    result = plan(reqs, cl, opts, cache=EstimateCache())
    check_plan(result, reqs, cl, opts)
    gen = CandidateGenerator(cl, opts, EstimateCache())
    cands = [gen.generate(r) for r in sorted(reqs, key=lambda r: r.name)]
    for c in cands:  # brute force over every option generated, not the pruned ones
        c.options = list(c.all_options)
    problem, _ = build_problem(cands, cl)
    exact = solve_brute_force(problem)
    assert result.placed == exact.placed()
    assert result.total_cost_per_hour == pytest.approx(problem.cost(exact.choice), rel=1e-9)


def test_pruning_keeps_the_cheapest_per_pool_set() -> None:
    cl = cluster(pool("fast", FAST, 1), pool("old", OLD, 1), pool("cheap", CHEAP, 2, 4))
    gen = CandidateGenerator(cl, PlanOptions(), EstimateCache())
    c = gen.generate(request("w", MID, rps=3))
    assert c.options == prune_dominated(c.all_options)
    for o in c.all_options:
        if o in c.options:
            continue
        need = dict(o.devices)
        assert any(
            k.cost_per_hour <= o.cost_per_hour and all(n <= need.get(p, 0) for p, n in k.devices)
            for k in c.options
        )
