"""Plans all workloads together, in the background, whenever their specs or the pools change.

Handlers *register* a workload (a validated, resolved spec at a generation) and await its plan;
the pool watcher sets the pools. Changes are debounced (a burst of registrations or node events
becomes one planning round), and each round runs in a worker thread (``asyncio.to_thread``) so
the event loop never blocks. After a round, the keys whose placement changed are handed to
``on_changed`` (the reconciler converges them).

Before the first round the planning loop waits until every workload the index knows about has been
registered or found invalid (or ``startup_grace`` passed), so that an operator restart re-plans
everything at once instead of placing workloads one by one in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hetsched.operator.planning.intake import Key, Registration
from hetsched.operator.planning.plans import WorkloadPlan, plan_workloads
from hetsched.operator.pools.build import PoolsInput

log = logging.getLogger("hetsched.planning")

PlanFn = Callable[[list[Registration], PoolsInput, Mapping[Key, WorkloadPlan]], dict[Key, WorkloadPlan]]


@dataclass(frozen=True, slots=True)
class Round:
    """The result of one planning round and the inputs it saw."""

    number: int
    generations: Mapping[Key, int]
    pools_fingerprint: str
    plans: Mapping[Key, WorkloadPlan]
    seconds: float
    error: str | None = None
    revisions: Mapping[Key, str] = field(default_factory=dict)


@dataclass
class PlanningLoop:
    plan_fn: PlanFn = field(default=lambda regs, pools, prev: plan_workloads(regs, pools, prev))
    debounce: float = 0.2
    max_delay: float = 2.0
    startup_grace: float = 10.0
    retry_after: float = 5.0  # a failed round is retried this much later
    on_changed: Callable[[list[Key]], None] | None = None
    on_round: Callable[[Round], None] | None = None
    expected: Callable[[], Iterable[Key]] | None = None  # keys the workload index holds

    def __post_init__(self) -> None:
        self.registrations: dict[Key, Registration] = {}
        self.invalid: dict[Key, int] = {}
        self.pools: PoolsInput | None = None
        self.result: Round | None = None
        self.lost_pools: set[str] = set()
        self._version = 0
        self._dirty = asyncio.Event()
        self._published = asyncio.Condition()
        self._started = time.monotonic()
        self._first_done = False
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    # ---- inputs ---------------------------------------------------------------------------------
    def _bump(self) -> None:
        self._version += 1
        self._dirty.set()

    def register(self, reg: Registration) -> None:
        old = self.registrations.get(reg.key)
        self.invalid.pop(reg.key, None)
        if (
            old is not None
            and old.generation == reg.generation
            and old.request == reg.request
            and old.uid == reg.uid
            and old.revision == reg.revision
        ):
            self.registrations[reg.key] = reg  # only its problem or seed differ: no new round
            return
        self.registrations[reg.key] = reg
        self._bump()

    def mark_invalid(self, key: Key, generation: int) -> None:
        self.invalid[key] = generation
        if self.registrations.pop(key, None) is not None:
            self._bump()
        elif not self._first_done:
            self._dirty.set()  # may complete the startup barrier

    def forget(self, key: Key) -> None:
        self.invalid.pop(key, None)
        if self.registrations.pop(key, None) is not None:
            self._bump()

    def set_pools(self, pools: PoolsInput) -> None:
        if self.pools is not None and self.pools.fingerprint == pools.fingerprint:
            return
        if self.pools is not None:
            before = {p.name for p in self.pools.cluster.pools}
            after = {p.name for p in pools.cluster.pools}
            self.lost_pools = before - after
        self.pools = pools
        self._bump()

    def request_round(self) -> None:
        """Plan again even if nothing changed (e.g. a periodic safety re-plan)."""
        self._bump()

    # ---- results --------------------------------------------------------------------------------
    def plan(self, key: Key) -> WorkloadPlan | None:
        """The latest plan for ``key`` if it was made for the registered generation."""
        r = self.result
        reg = self.registrations.get(key)
        if r is None or reg is None:
            return None
        p = r.plans.get(key)
        if p is None or p.generation != reg.generation:
            return None
        return p

    async def plan_for(
        self,
        key: Key,
        generation: int,
        timeout: float,  # noqa: ASYNC109
        revision: str | None = None,
    ) -> WorkloadPlan:
        """Wait until a round has planned ``key`` at ``generation`` (and ``revision``, if given;
        a later generation also counts); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout

        def seen(r: Round) -> bool:
            g = r.generations.get(key, -1)
            return g > generation or (
                g == generation and (revision is None or r.revisions.get(key) == revision)
            )

        async with self._published:
            while True:
                r = self.result
                if r is not None and seen(r) and key in r.plans:
                    return r.plans[key]
                if r is not None and r.error and seen(r):
                    raise RuntimeError(f"planning failed: {r.error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no plan for {key[0]}/{key[1]} within {timeout:g} s")
                try:
                    await asyncio.wait_for(self._published.wait(), remaining)
                except TimeoutError:
                    continue

    # ---- loop -----------------------------------------------------------------------------------
    def _barrier_open(self) -> bool:
        if self._first_done or self.expected is None:
            return True
        if time.monotonic() - self._started >= self.startup_grace:
            return True
        known = set(self.registrations) | set(self.invalid)
        return all(k in known for k in self.expected())

    def start(self) -> None:
        self._started = time.monotonic()
        self._task = asyncio.create_task(self.run(), name="hetsched planner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        while True:
            if self._first_done:
                await self._dirty.wait()
            else:
                # Before the first round, wake up periodically to re-check the startup barrier.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), 0.5)
            began = time.monotonic()
            while True:  # debounce: wait for a quiet period, at most max_delay
                self._dirty.clear()
                seen = self._version
                await asyncio.sleep(self.debounce)
                if self._version == seen or time.monotonic() - began >= self.max_delay:
                    break
            if self.pools is None or not self._barrier_open():
                continue
            await self._round()

    async def _round(self) -> None:
        assert self.pools is not None
        regs = sorted(self.registrations.values(), key=lambda r: r.key)
        pools = self.pools
        previous = self._previous(regs, pools)
        generations = {r.key: r.generation for r in regs}
        revisions = {r.key: r.revision for r in regs}
        t0 = time.perf_counter()
        error = None
        try:
            plans = await asyncio.to_thread(self.plan_fn, regs, pools, previous)
        except Exception as exc:  # a planner bug must not kill the operator: report and retry later
            log.exception("planning round failed; retrying in %g s", self.retry_after)
            error = f"{type(exc).__name__}: {exc}"
            plans = {k: v for k, v in previous.items() if k in generations}
            asyncio.get_running_loop().call_later(self.retry_after, self.request_round)
        seconds = time.perf_counter() - t0
        self.rounds += 1
        new = Round(self.rounds, generations, pools.fingerprint, plans, seconds, error, revisions)
        old = self.result
        self.result = new
        self._first_done = True
        changed = [
            k
            for k, p in plans.items()
            if old is None
            or k not in old.plans
            or old.plans[k].signature() != p.signature()
            or old.plans[k].generation != p.generation
        ]
        log.debug("round %d: %d workloads, %d changed, %.3f s", new.number, len(regs), len(changed), seconds)
        if self.on_round is not None:
            self.on_round(new)
        async with self._published:
            self._published.notify_all()
        if changed and self.on_changed is not None:
            self.on_changed(changed)

    def _previous(self, regs: list[Registration], pools: PoolsInput) -> dict[Key, WorkloadPlan]:
        """Each workload's plan of the last round, else the placement its status recorded (its
        seed: after a restart or a failover, the stable policy keeps what runs)."""
        from hetsched.operator.planning.seed import seeded_plan

        last = self.result.plans if self.result is not None else {}
        out: dict[Key, WorkloadPlan] = {}
        for reg in regs:
            plan = last.get(reg.key)
            if (plan is None or plan.generation != reg.generation) and reg.seed is not None:
                plan = seeded_plan(
                    reg.seed,
                    reg.key,
                    pools.cluster,
                    max_model_len=0 if reg.request is None else reg.request.capacity_context,
                    revision=reg.revision
                    if reg.seed.model_config_hash is None
                    else reg.seed.model_config_hash,
                )
            if plan is not None:
                out[reg.key] = plan
        return out

    def snapshot(self) -> dict[str, Any]:
        r = self.result
        return {
            "rounds": self.rounds,
            "registered": len(self.registrations),
            "invalid": len(self.invalid),
            "lastRoundSeconds": None if r is None else r.seconds,
            "lastError": None if r is None else r.error,
        }
