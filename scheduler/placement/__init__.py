"""Placement engine: where each workload's prefill and decode run, at least cluster cost.

Public API (what the CLI and the operator call):

* :func:`resolve_workload` / :func:`resolve_manifest` — an AgentWorkload spec (pydantic or dict)
  to a :class:`WorkloadRequest`;
* ``pools.build_cluster`` (pool file) / ``nodes.cluster_from_nodes`` (``kubectl get nodes -o
  yaml``) — the :class:`~hetsched.scheduler.pools.Cluster` it places onto;
* :func:`plan` — the :class:`Plan` (``Plan.to_dict()`` is the ``hetsched plan -o json`` shape).

Modules, in the order a plan runs through them: ``request`` (workload → :class:`WorkloadRequest`),
``options`` (the vocabulary: :class:`Option`, :class:`Rejection`, :class:`PlanOptions`),
``estimates`` (:class:`EstimateCache`, the memoised estimator and serving model), ``candidates``
(:class:`CandidateGenerator`: each workload's options), ``solver`` (one option per workload under
the free devices), ``planner`` (:func:`plan`), ``explain`` (rejections per pool, suggestions),
``result`` (:class:`Plan`), ``cli`` (``hetsched plan``).

docs/placement.md explains the model, the formulas, the reasons and the solver.
"""

from hetsched.scheduler.placement.candidates import CandidateGenerator
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.explain import suggest
from hetsched.scheduler.placement.options import (
    Mode,
    Option,
    PlanOptions,
    Reason,
    Rejection,
    WorkloadCandidates,
)
from hetsched.scheduler.placement.planner import build_problem, plan, shared_cache
from hetsched.scheduler.placement.request import (
    WorkloadRequest,
    load_requests,
    resolve_manifest,
    resolve_workload,
)
from hetsched.scheduler.placement.result import (
    PhasePlacement,
    Plan,
    PoolUsage,
    SolverReport,
    Suggestion,
    WorkloadPlacement,
)

__all__ = [
    "CandidateGenerator",
    "EstimateCache",
    "Mode",
    "Option",
    "PhasePlacement",
    "Plan",
    "PlanOptions",
    "PoolUsage",
    "Reason",
    "Rejection",
    "SolverReport",
    "Suggestion",
    "WorkloadCandidates",
    "WorkloadPlacement",
    "WorkloadRequest",
    "build_problem",
    "load_requests",
    "plan",
    "resolve_manifest",
    "resolve_workload",
    "shared_cache",
    "suggest",
]
