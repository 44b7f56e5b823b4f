"""What ``hetsched operator run`` configures (:class:`OperatorSettings`, the single source of its
defaults) and the context every handler and background task shares (:class:`OperatorContext`,
passed to Kopf as ``memo.op``): it wires the planning loop, the reconciler and the background
tasks (pool watcher, resync) at start-up, and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `hetsched --help` reads OperatorSettings' defaults
    from hetsched.operator.api.app import Readiness
    from hetsched.operator.api.metrics import Metrics
    from hetsched.operator.api.state import OperatorState
    from hetsched.operator.kube import KubeApi
    from hetsched.operator.planning.intake import Key, Registration
    from hetsched.operator.planning.loop import PlanningLoop
    from hetsched.operator.planning.plans import WorkloadPlan
    from hetsched.operator.pools.build import PoolsInput
    from hetsched.operator.reconcile.children import ChildState
    from hetsched.operator.reconcile.reconciler import Reconciler

log = logging.getLogger("hetsched.operator")
#: The Kopf indices of the children, by kind (``children`` merges them per workload).
CHILD_INDICES = ("deployments_idx", "services_idx", "serviceaccounts_idx", "roles_idx", "rolebindings_idx")
#: The Kopf indices ``handlers.py`` declares, handed to :meth:`OperatorContext.start`.
INDICES = ("nodes_idx", "workloads_idx", "profiles_idx", *CHILD_INDICES)
INFERENCE_POOL_CRD = "inferencepools.inference.networking.k8s.io"
INFERENCE_POOL_API = ("inference.networking.k8s.io/v1", "inferencepools")


@dataclass
class OperatorSettings:
    """What ``hetsched operator run`` configures."""

    clusterwide: bool = True
    namespaces: tuple[str, ...] = ()
    policy: str = "stable"  # stable | joint
    debounce_seconds: float = 0.2
    max_delay_seconds: float = 2.0
    pool_debounce_seconds: float = 0.5
    not_ready_grace_seconds: float = 30.0
    unschedulable_grace_seconds: float = 60.0
    plan_timeout_seconds: float = 60.0
    startup_grace_seconds: float = 10.0
    resync_seconds: float = 60.0
    configmap_retry_seconds: float = 10.0
    workers: int = 4
    network_gbps: dict[str, float] = field(default_factory=dict)
    kubeconfig: str | None = None
    solver: str = "milp"
    solver_time_limit_seconds: float = 10.0
    # An InferencePool per workload naming this endpoint-picker Service (when the CRD is installed).
    inference_pool_epp: str | None = None


@dataclass
class OperatorContext:
    settings: OperatorSettings
    state: OperatorState
    metrics: Metrics
    kube: KubeApi | None = None
    planning_loop: PlanningLoop | None = None
    reconciler: Reconciler | None = None
    indices: dict[str, Any] = field(default_factory=dict)
    pools_dirty: asyncio.Event | None = None
    # Set by the first resource handler call: Kopf calls none before every index is populated, so
    # from then on the indices hold the whole cluster (never plan on a half-listed node set).
    indexed: asyncio.Event | None = None
    # What /readyz reports (the HTTP thread reads it); None: not served (tests).
    readiness: Readiness | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def pools(self) -> PoolsInput | None:
        return None if self.planning_loop is None else self.planning_loop.pools

    def mark_indexed(self) -> None:
        """Called by every resource handler: Kopf calls none before every index is populated."""
        if self.indexed is not None and not self.indexed.is_set():
            self.indexed.set()
            if self.pools_dirty is not None:
                self.pools_dirty.set()
            if self.readiness is not None and self.readiness.mark_indexed("Kopf's indices"):
                log.info("cluster indexed %.1f s after start: ready", self.readiness.indexed_after or 0.0)

    def children(self, key: Key) -> dict[tuple[str, str], ChildState]:
        """The workload's children as the Kopf indices hold them, by (kind, name)."""
        out: dict[tuple[str, str], ChildState] = {}
        for index in CHILD_INDICES:
            idx = self.indices.get(index)
            if idx is None or key not in idx:
                continue
            for child in idx[key]:
                out[(child.kind, child.name)] = child
        return out

    async def start(self, indices: Mapping[str, Any]) -> None:
        """Connect, then start the planning loop, the reconciler, the pool watcher and the resync."""
        from hetsched.operator.kube import KubeApi
        from hetsched.operator.planning.loop import PlanningLoop
        from hetsched.operator.planning.plans import plan_workloads
        from hetsched.operator.pools.watcher import pool_watcher
        from hetsched.operator.reconcile.manifests import RenderOptions
        from hetsched.operator.reconcile.reconciler import Reconciler
        from hetsched.scheduler.placement.options import PlanOptions

        s = self.settings
        self.indices = dict(indices)
        self.kube = await KubeApi.from_kubeconfig(s.kubeconfig)
        options = PlanOptions(solver=s.solver, time_limit_seconds=s.solver_time_limit_seconds)

        def plan_fn(
            regs: list[Registration], pools: PoolsInput, prev: Mapping[Key, WorkloadPlan]
        ) -> dict[Key, WorkloadPlan]:
            with self.metrics.plan_duration.time():
                plans: dict[Key, WorkloadPlan] = plan_workloads(
                    regs, pools, prev, policy=s.policy, options=options
                )
            return plans

        workloads = self.indices["workloads_idx"]
        self.planning_loop = PlanningLoop(
            plan_fn=plan_fn,
            debounce=s.debounce_seconds,
            max_delay=s.max_delay_seconds,
            startup_grace=s.startup_grace_seconds,
            expected=lambda: list(workloads.keys()),
        )
        self.reconciler = Reconciler(
            self.kube,
            self.state,
            self.metrics,
            self.planning_loop,
            self.children,
            self.kube.post_event,
            workers=s.workers,
            unschedulable_grace=s.unschedulable_grace_seconds,
        )
        if s.inference_pool_epp:
            if await self.kube.serves(*INFERENCE_POOL_API):
                self.reconciler.render_options = RenderOptions(inference_pool_epp=s.inference_pool_epp)
            else:
                log.warning(
                    "--inference-pool-epp %s: the InferencePool CRD (%s) is not installed; no InferencePools",
                    s.inference_pool_epp,
                    INFERENCE_POOL_CRD,
                )
        self.planning_loop.on_changed = self.reconciler.enqueue
        self.pools_dirty = asyncio.Event()
        self.indexed = asyncio.Event()
        self.planning_loop.start()
        self.reconciler.start()
        self.tasks.append(asyncio.create_task(pool_watcher(self), name="hetsched pool watcher"))
        self.tasks.append(asyncio.create_task(resync(self), name="hetsched resync"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        if self.reconciler is not None:
            await self.reconciler.stop()
        if self.planning_loop is not None:
            await self.planning_loop.stop()
        if self.kube is not None:
            await self.kube.close()


async def resync(op: OperatorContext) -> None:
    """Periodic safety net: converge every workload (a no-op when nothing drifted)."""
    assert op.reconciler is not None and op.planning_loop is not None
    while True:
        await asyncio.sleep(op.settings.resync_seconds)
        op.reconciler.enqueue(sorted(op.planning_loop.registrations))
