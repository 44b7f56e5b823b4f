"""Choosing one option per workload under shared pool capacity: MILP, greedy, brute force.

The problem: workload ``w`` picks option ``o`` (or stays unplaced); option ``o`` uses ``u[o][p]``
devices of pool ``p`` and costs ``c[o]`` $/h; pool ``p`` has ``F[p]`` free devices. The objective
is lexicographic: place as many workloads as possible, then minimise the total cost.

``solve`` (docs/placement.md):

1. every workload on its cheapest option — optimal when those fit together (no contention);
2. a greedy (three orders, then local improvement) — an upper bound and the fallback;
3. when the greedy places every workload that has an option, one MILP
   ``min Σ c_o x_wo  s.t.  Σ_o x_wo = 1 ∀w,  Σ_wo u_op x_wo ≤ F_p ∀p,  x ∈ {0,1}``;
   otherwise two: first the largest number of placeable workloads ``N*``
   (``max Σ x``, each ``Σ_o x_wo ≤ 1``), then the cheapest plan placing ``N*``;
4. the better of MILP and greedy is kept (a time-out still yields a plan), then ties are broken
   deterministically: each workload, in order, moves to its earliest-ranked option of the same
   cost that fits beside the others (options are ranked by cost, devices, colocated first, pool
   order).

MILPs run with ``scipy.optimize.milp`` (HiGHS), relative gap ``MIP_REL_GAP`` and a time limit.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

MIP_REL_GAP = 1e-6
COST_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Problem:
    """``usage[w][o]`` = ((pool index, devices), ...); ``costs[w][o]`` in $/h, options in rank order."""

    costs: tuple[tuple[float, ...], ...]
    usage: tuple[tuple[tuple[tuple[int, int], ...], ...], ...]
    capacity: tuple[int, ...]

    @property
    def workloads(self) -> int:
        return len(self.costs)

    @property
    def variables(self) -> int:
        return sum(len(c) for c in self.costs)

    def cost(self, choice: list[int | None] | tuple[int | None, ...]) -> float:
        return sum(self.costs[w][o] for w, o in enumerate(choice) if o is not None)

    def used(self, choice: list[int | None] | tuple[int | None, ...]) -> list[int]:
        used = [0] * len(self.capacity)
        for w, o in enumerate(choice):
            if o is not None:
                for p, n in self.usage[w][o]:
                    used[p] += n
        return used

    def feasible(self, choice: list[int | None] | tuple[int | None, ...]) -> bool:
        return all(u <= c for u, c in zip(self.used(choice), self.capacity, strict=True))


@dataclass(frozen=True, slots=True)
class Solution:
    choice: tuple[int | None, ...]
    method: str  # "independent", "milp", "greedy", "brute-force"
    status: str
    optimal: bool  # proven optimal (up to MIP_REL_GAP) for the lexicographic objective
    seconds: float

    def placed(self) -> int:
        return sum(o is not None for o in self.choice)


def key(problem: Problem, choice: list[int | None] | tuple[int | None, ...]) -> tuple[int, float]:
    """Lexicographic quality: (unplaced workloads, cost). Smaller is better."""
    return (sum(o is None for o in choice), problem.cost(choice))


def better(problem: Problem, a: tuple[int | None, ...], b: tuple[int | None, ...]) -> bool:
    """``a`` strictly better than ``b`` (more placed, or cheaper beyond float noise)."""
    ka, kb = key(problem, a), key(problem, b)
    if ka[0] != kb[0]:
        return ka[0] < kb[0]
    return ka[1] < kb[1] - COST_TOLERANCE * max(1.0, abs(kb[1]))


def solve_independent(problem: Problem) -> Solution | None:
    """Every workload takes its cheapest option; optimal when these fit together (no contention)."""
    t0 = time.perf_counter()
    choice: list[int | None] = [0 if c else None for c in problem.costs]
    if not problem.feasible(choice):
        return None
    return Solution(tuple(choice), "independent", "optimal: no contention", True, time.perf_counter() - t0)


def _milp(
    problem: Problem, ws: list[int], objective: str, time_limit: float, min_placed: int | None = None
) -> tuple[list[int | None] | None, bool, str]:
    """One HiGHS solve over workloads ``ws`` ("count": max placed; "cost": min cost)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array

    nw = len(ws)
    npools = len(problem.capacity)
    c: list[float] = []
    offsets: list[int] = []
    rows_eq: list[int] = []
    rows_cap: list[int] = []
    cols_cap: list[int] = []
    vals_cap: list[float] = []
    for i, w in enumerate(ws):
        offsets.append(len(c))
        for o, cost in enumerate(problem.costs[w]):
            col = len(c)
            c.append(-1.0 if objective == "count" else cost)
            rows_eq.append(i)
            for p, n in problem.usage[w][o]:
                rows_cap.append(p)
                cols_cap.append(col)
                vals_cap.append(float(n))
    nvars = len(c)
    if nvars == 0:
        return [None] * nw, True, "optimal"
    assign = csr_array((np.ones(nvars), (rows_eq, list(range(nvars)))), shape=(nw, nvars))
    lower = np.ones(nw) if (objective == "cost" and min_placed is None) else np.zeros(nw)
    constraints = [LinearConstraint(assign, lower, np.ones(nw))]
    if rows_cap:
        constraints.append(
            LinearConstraint(
                csr_array((vals_cap, (rows_cap, cols_cap)), shape=(npools, nvars)),
                np.full(npools, -np.inf),
                np.asarray(problem.capacity, dtype=float),
            )
        )
    if min_placed is not None:
        constraints.append(LinearConstraint(np.ones((1, nvars)), min_placed, np.inf))
    res = milp(
        np.asarray(c),
        constraints=constraints,
        integrality=np.ones(nvars),
        bounds=Bounds(0, 1),
        options={
            "time_limit": max(0.01, time_limit),
            "mip_rel_gap": 0.0 if objective == "count" else MIP_REL_GAP,
            "presolve": True,
            "disp": False,
        },
    )
    if res.x is None:
        return None, False, f"no solution ({res.message})"
    choice: list[int | None] = []
    for i, w in enumerate(ws):
        k = len(problem.costs[w])
        picked = [o for o in range(k) if res.x[offsets[i] + o] > 0.5]
        choice.append(picked[0] if picked else None)
    optimal = bool(res.status == 0)
    return choice, optimal, "optimal" if optimal else f"time limit ({res.message})"


def solve_milp(
    problem: Problem, time_limit: float = 10.0, *, all_placeable: bool | None = None
) -> Solution | None:
    """The exact lexicographic optimum with HiGHS (None when HiGHS returns no solution).

    ``all_placeable``: known that every workload with options can be placed (skips the count stage).
    """
    t0 = time.perf_counter()
    ws = [w for w in range(problem.workloads) if problem.costs[w]]
    deadline = t0 + time_limit
    status = "optimal"
    min_placed: int | None = None
    optimal = True
    if not all_placeable:
        counted, ok, st = _milp(problem, ws, "count", time_limit)
        if counted is None:
            return None
        n = sum(o is not None for o in counted)
        optimal, status = ok, st
        if n < len(ws):
            min_placed = n
    sub, ok, st = _milp(problem, ws, "cost", max(0.01, deadline - time.perf_counter()), min_placed)
    if sub is None:
        return None
    optimal = optimal and ok
    status = status if status != "optimal" else st
    choice: list[int | None] = [None] * problem.workloads
    for w, o in zip(ws, sub, strict=True):
        choice[w] = o
    if not problem.feasible(choice):
        return None
    return Solution(tuple(choice), "milp", status, optimal, time.perf_counter() - t0)


def _greedy_once(problem: Problem, order: list[int], max_passes: int) -> list[int | None]:
    free = list(problem.capacity)
    choice: list[int | None] = [None] * problem.workloads

    def first_fit(w: int) -> int | None:
        for o in range(len(problem.costs[w])):  # options are sorted by cost: first fit = cheapest
            if all(free[p] >= n for p, n in problem.usage[w][o]):
                return o
        return None

    def take(w: int, o: int | None, sign: int) -> None:
        if o is not None:
            for p, n in problem.usage[w][o]:
                free[p] -= sign * n

    for w in order:
        choice[w] = first_fit(w)
        take(w, choice[w], 1)
    for _ in range(max_passes):
        improved = False
        for w in order:
            cur = choice[w]
            take(w, cur, -1)
            new = first_fit(w)
            if cur is not None and (new is None or problem.costs[w][new] >= problem.costs[w][cur]):
                new = cur
            if new != cur:
                improved = True
            choice[w] = new
            take(w, new, 1)
        if not improved:
            break
    return choice


def _regret_order(problem: Problem, per_device: bool = False) -> list[int]:
    """Dynamic regret: repeatedly assign the workload that loses most if it cannot have its cheapest
    fitting option (cost of its second-cheapest fitting option − cheapest; ∞ with only one);
    ``per_device`` divides by the devices the cheapest option takes (savings per scarce device)."""
    free = list(problem.capacity)
    left = {w for w in range(problem.workloads) if problem.costs[w]}

    def fits(w: int, o: int) -> bool:
        return all(free[p] >= n for p, n in problem.usage[w][o])

    def best_two(w: int) -> tuple[int | None, int | None]:
        first: int | None = None
        for o in range(len(problem.costs[w])):
            if fits(w, o):
                if first is None:
                    first = o
                else:
                    return first, o
        return first, None

    cache = {w: best_two(w) for w in left}
    order: list[int] = []
    while left:
        pick, pick_key = -1, (-math.inf, 0)
        for w in sorted(left):
            a, b = cache[w]
            if (a is not None and not fits(w, a)) or (b is not None and not fits(w, b)):
                a, b = cache[w] = best_two(w)
            if a is None:
                r = -math.inf  # cannot be placed any more: last
            elif b is None:
                r = math.inf
            else:
                r = problem.costs[w][b] - problem.costs[w][a]
                if per_device:
                    r /= max(1, sum(n for _, n in problem.usage[w][a]))
            k = (r, -w)
            if pick < 0 or k > pick_key:
                pick, pick_key = w, k
        left.discard(pick)
        order.append(pick)
        a = cache[pick][0]
        if a is not None:
            for p, n in problem.usage[pick][a]:
                free[p] -= n
    return order + [w for w in range(problem.workloads) if not problem.costs[w]]


def solve_greedy(problem: Problem, max_passes: int = 20) -> Solution:
    """The best of four greedy orders, each followed by local improvement.

    Orders: dynamic regret (see ``_regret_order``), fewest devices first (places the most
    workloads), static regret, most expensive first. Each workload takes its cheapest option that
    still fits; then passes re-pick each workload's cheapest fitting option with the others fixed
    until nothing changes.
    """
    t0 = time.perf_counter()
    nw = problem.workloads

    def devices(w: int) -> int:
        return min((sum(n for _, n in u) for u in problem.usage[w]), default=0)

    def regret(w: int) -> float:
        c = problem.costs[w]
        return (c[1] - c[0]) if len(c) > 1 else (math.inf if c else -math.inf)

    orders = [
        _regret_order(problem),
        _regret_order(problem, per_device=True),
        sorted(range(nw), key=lambda w: (devices(w), problem.costs[w][0] if problem.costs[w] else 0.0, w)),
        sorted(range(nw), key=lambda w: (-regret(w), w)),
        sorted(range(nw), key=lambda w: (-(problem.costs[w][0] if problem.costs[w] else -1.0), w)),
    ]
    best: tuple[int | None, ...] | None = None
    for order in orders:
        choice = tuple(_greedy_once(problem, order, max_passes))
        if best is None or better(problem, choice, best):
            best = choice
    assert best is not None
    return Solution(best, "greedy", "heuristic", False, time.perf_counter() - t0)


def solve_brute_force(problem: Problem, limit: int = 2_000_000) -> Solution:
    """Enumerate every combination (tests and benchmarks on small instances)."""
    t0 = time.perf_counter()
    ranges = [[*range(len(c)), None] for c in problem.costs]
    if math.prod(len(r) for r in ranges) > limit:
        raise ValueError("instance too large for brute force")
    best: tuple[int | None, ...] | None = None
    for combo in itertools.product(*ranges):
        if problem.feasible(combo) and (best is None or better(problem, combo, best)):
            best = combo
    assert best is not None  # all-unplaced is always feasible
    return Solution(best, "brute-force", "optimal", True, time.perf_counter() - t0)


def canonical(problem: Problem, choice: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """Deterministic tie-breaking: each workload (in order) moves to its earliest-ranked option of
    the same cost that fits beside the others; repeated until stable."""
    out = list(choice)
    free = [c - u for c, u in zip(problem.capacity, problem.used(out), strict=True)]
    changed = True
    while changed:
        changed = False
        for w, o in enumerate(out):
            if o is None or o == 0:
                continue
            for p, n in problem.usage[w][o]:
                free[p] += n
            target = o
            for k in range(o):
                if abs(problem.costs[w][k] - problem.costs[w][o]) <= COST_TOLERANCE * max(
                    1.0, problem.costs[w][o]
                ) and all(free[p] >= n for p, n in problem.usage[w][k]):
                    target = k
                    break
            for p, n in problem.usage[w][target]:
                free[p] -= n
            if target != o:
                out[w] = target
                changed = True
    return tuple(out)


def solve(
    problem: Problem, *, method: str = "milp", time_limit: float = 10.0
) -> tuple[Solution, dict[str, float | str | None]]:
    """Solve, returning the solution used and a report (greedy gap to the chosen plan, timings)."""
    report: dict[str, float | str | None] = {}
    independent = solve_independent(problem)
    if independent is not None:
        report.update(greedy_gap=0.0, greedy_cost_per_hour=problem.cost(independent.choice))
        return independent, report
    greedy = solve_greedy(problem)
    report["greedy_cost_per_hour"] = problem.cost(greedy.choice)
    report["greedy_seconds"] = greedy.seconds
    if method == "greedy":
        return Solution(
            canonical(problem, greedy.choice), "greedy", "heuristic", False, greedy.seconds
        ), report
    placeable = sum(1 for c in problem.costs if c)
    exact = solve_milp(problem, time_limit, all_placeable=greedy.placed() == placeable)
    if exact is None:
        report["milp_status"] = "no solution from HiGHS; greedy used"
        return Solution(
            canonical(problem, greedy.choice), "greedy", "MILP failed", False, greedy.seconds
        ), report
    report["milp_seconds"] = exact.seconds
    report["greedy_gap"] = _gap(key(problem, greedy.choice), key(problem, exact.choice))
    if better(problem, greedy.choice, exact.choice):  # only possible past the time limit
        chosen = Solution(
            greedy.choice, "greedy", f"better than MILP at {exact.status}", False, greedy.seconds
        )
    else:
        chosen = exact
    return Solution(
        canonical(problem, chosen.choice), chosen.method, chosen.status, chosen.optimal, chosen.seconds
    ), report


def _gap(greedy: tuple[int, float], exact: tuple[int, float]) -> float | None:
    """Relative cost gap of the greedy (None when it places fewer workloads)."""
    if greedy[0] != exact[0]:
        return None
    if exact[1] <= 0:
        return 0.0 if greedy[1] <= 0 else math.inf
    return (greedy[1] - exact[1]) / exact[1]
