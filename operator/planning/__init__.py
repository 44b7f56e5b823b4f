"""Decide: workloads in, plans out.

* :mod:`.intake` — an AgentWorkload validated and resolved into a ``Registration``;
* :mod:`.loop` — the debounced planning loop over every registered workload (``PlanningLoop``);
* :mod:`.plans` — one planning round (stable or joint policy) and the per-workload ``WorkloadPlan``.
"""
