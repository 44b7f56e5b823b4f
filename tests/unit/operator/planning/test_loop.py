"""The planning loop: debounced background planning of every registered workload (no cluster, no
Kopf)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

import pytest
from hetsched.operator.planning.intake import Key, Registration
from hetsched.operator.planning.loop import PlanningLoop, Round
from hetsched.operator.planning.plans import WorkloadPlan, plan_workloads
from hetsched.operator.pools.build import PoolsInput
from support.builders import CHAT, CODER, HUGE, fast_planning_loop, pools_input, registration


def test_registrations_are_planned_together_after_a_debounce() -> None:
    rounds: list[Round] = []

    async def main() -> None:
        c = fast_planning_loop(on_round=rounds.append)
        c.start()
        c.set_pools(pools_input())
        for name, spec in (("chat", CHAT), ("coder", CODER), ("huge", HUGE)):
            c.register(registration(name, spec))
        plan = await c.plan_for(("default", "chat"), 1, timeout=30)
        assert plan.placed
        assert (await c.plan_for(("default", "huge"), 1, timeout=1)).placed is False
        await c.stop()

    asyncio.run(main())
    assert len(rounds) == 1 and len(rounds[0].plans) == 3  # one burst, one round


def test_plan_for_waits_for_the_generation_and_times_out() -> None:
    async def main() -> None:
        c = fast_planning_loop()
        c.start()
        c.set_pools(pools_input())
        c.register(registration("chat", CHAT))
        await c.plan_for(("default", "chat"), 1, timeout=30)
        with pytest.raises(TimeoutError):
            await c.plan_for(("default", "chat"), 2, timeout=0.3)
        c.register(registration("chat", CHAT, generation=2))
        assert (await c.plan_for(("default", "chat"), 2, timeout=30)).generation == 2
        assert c.plan(("default", "chat")) is not None
        c.forget(("default", "chat"))
        assert c.plan(("default", "chat")) is None
        await c.stop()

    asyncio.run(main())


def test_no_round_without_pools_or_before_the_startup_barrier() -> None:
    rounds: list[Round] = []

    async def main() -> None:
        expected = [("default", "chat"), ("default", "late")]
        c = PlanningLoop(
            debounce=0.01, max_delay=0.1, startup_grace=30, on_round=rounds.append, expected=lambda: expected
        )
        c.start()
        c.register(registration("chat", CHAT))
        await asyncio.sleep(0.2)
        assert rounds == []  # no pools yet
        c.set_pools(pools_input())
        await asyncio.sleep(0.3)
        assert rounds == []  # "late" is known to the index but not registered yet
        c.mark_invalid(("default", "late"), 1)
        await c.plan_for(("default", "chat"), 1, timeout=30)
        await c.stop()

    asyncio.run(main())
    assert len(rounds) == 1


def test_changed_keys_are_handed_over_and_errors_do_not_kill_the_loop() -> None:
    changed: list[list[Key]] = []
    calls = {"n": 0}

    def flaky(
        regs: list[Registration], pools: PoolsInput, prev: Mapping[Key, WorkloadPlan]
    ) -> dict[Key, WorkloadPlan]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("solver crashed")
        return plan_workloads(regs, pools, prev)

    async def main() -> None:
        c = fast_planning_loop(plan_fn=flaky, on_changed=changed.append, retry_after=0.05)
        c.start()
        c.set_pools(pools_input())
        c.register(registration("chat", CHAT))
        await c.plan_for(("default", "chat"), 1, timeout=30)
        c.register(registration("coder", CODER))
        with pytest.raises(RuntimeError, match="solver crashed"):
            await c.plan_for(("default", "coder"), 1, timeout=30)
        assert c.result is not None and c.result.error
        for _ in range(200):  # retried by itself
            if c.rounds == 3:
                break
            await asyncio.sleep(0.02)
        assert (await c.plan_for(("default", "coder"), 1, timeout=30)).placed
        assert c.snapshot()["rounds"] == 3
        await c.stop()

    asyncio.run(main())
    assert changed[0] == [("default", "chat")]
    assert ("default", "coder") in changed[-1] and ("default", "chat") not in changed[-1]


def test_pool_loss_is_recorded() -> None:
    from support.builders import demo_nodes

    async def main() -> None:
        c = fast_planning_loop()
        c.set_pools(pools_input())
        c.set_pools(pools_input())  # same fingerprint: no-op
        assert c.lost_pools == set()
        nodes = [n for n in demo_nodes() if n["metadata"]["labels"]["hetsched.io/pool"] != "t4"]
        c.set_pools(pools_input(nodes))
        assert c.lost_pools == {"t4"}

    asyncio.run(main())


def test_registration_equality_avoids_needless_rounds() -> None:
    async def main() -> None:
        c = fast_planning_loop()
        reg = registration("chat", CHAT)
        c.register(reg)
        version = c._version
        c.register(replace(reg))
        assert c._version == version

    asyncio.run(main())
