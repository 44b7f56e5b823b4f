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
    from hetsched.operator.planning.configmaps import ConfigMapRefs
    from hetsched.operator.planning.intake import Key, Registration
    from hetsched.operator.planning.loop import PlanningLoop
    from hetsched.operator.planning.plans import WorkloadPlan
    from hetsched.operator.pools.build import PoolsInput
    from hetsched.operator.reconcile.children import ChildState
    from hetsched.operator.reconcile.reconciler import Reconciler

log = logging.getLogger("hetsched.operator")
WORKLOADS_CRD = "agentworkloads.hetsched.io"
PROFILES_CRD = "acceleratorprofiles.hetsched.io"
CRDS = (WORKLOADS_CRD, PROFILES_CRD)


def _configmap_refs() -> ConfigMapRefs:
    from hetsched.operator.planning.configmaps import ConfigMapRefs

    return ConfigMapRefs()


#: The indices of the children, one per child kind (each maps (namespace, workload) to ChildStates).
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
    # The model ConfigMaps the workloads read (``planning.configmaps``).
    configmaps: ConfigMapRefs = field(default_factory=lambda: _configmap_refs())
    # Our CRDs that are not installed (or being deleted): while the AgentWorkload one is missing,
    # the operator knows no workload, writes nothing and is not ready.
    missing_crds: set[str] = field(default_factory=set)
    # GPUs per node held by pods outside the watched namespaces (namespace-scoped only; ``foreign``).
    held_outside: dict[str, int] = field(default_factory=dict)
    # What Kopf serves and its settings (``kopf_discovery``; None in tests without Kopf), and the
    # rescans under way of CRDs that came back.
    kopf_insights: Any = None
    kopf_settings: Any = None
    serving: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def forget_workload(self, key: Key) -> None:
        """A workload is gone (deleted, or its CRD went away): drop everything we held for it."""
        if self.planning_loop is not None:
            self.planning_loop.forget(key)
        if self.reconciler is not None:
            self.reconciler.forget(key)
        self.configmaps.forget(key)

    def crd_event(self, crd: str, present: bool) -> None:
        """A watch event of one of our CRDs (``handlers.crd_event``). One that came back counts as
        installed only once Kopf serves it again (``kopf_discovery``): until then not ready."""
        task = self.serving.pop(crd, None)
        if task is not None and not present:
            task.cancel()
        if not present or self.kopf_insights is None or self.kopf_settings is None:
            self.crd_changed(crd, present)
            return
        if task is not None and not task.done():
            self.serving[crd] = task
            return
        from hetsched.operator.kopf_discovery import serve_again, served

        if served(self.kopf_insights, crd):
            self.crd_changed(crd, True)
            return

        async def back() -> None:
            await serve_again(self.kopf_insights, self.kopf_settings, crd)
            self.serving.pop(crd, None)
            self.crd_changed(crd, True)

        self.serving[crd] = asyncio.create_task(back(), name=f"hetsched serve {crd}")

    def crd_changed(self, crd: str, present: bool) -> None:
        """A CRD of ours appeared or went away (``handlers.crd_event``, and the check at start-up)."""
        if present == (crd not in self.missing_crds):
            return
        if present:
            self.missing_crds.discard(crd)
            log.info("CustomResourceDefinition %s is installed", crd)
        else:
            self.missing_crds.add(crd)
            log.warning("CustomResourceDefinition %s is not installed (or being deleted)", crd)
        if crd == WORKLOADS_CRD and not present:
            keys = set(self.configmaps.workloads)
            if self.planning_loop is not None:
                keys |= set(self.planning_loop.registrations) | set(self.planning_loop.invalid)
            for key in sorted(keys):
                self.forget_workload(key)
            if keys:
                log.warning("forgot %d workload(s): their objects went with their CRD", len(keys))
        if self.readiness is not None:
            self.readiness.missing_crds = frozenset(self.missing_crds)
        if self.pools_dirty is not None:
            self.pools_dirty.set()  # AcceleratorProfiles count only while their CRD is installed

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
        for crd in CRDS:  # Kopf reports a CRD only when it changes: is it there at all?
            try:
                present = await self.kube.crd_installed(crd)
            except Exception as exc:
                log.warning("cannot tell whether CustomResourceDefinition %s is installed: %s", crd, exc)
                continue
            self.crd_changed(crd, present)
        self.tasks.append(asyncio.create_task(pool_watcher(self), name="hetsched pool watcher"))
        self.tasks.append(asyncio.create_task(resync(self), name="hetsched resync"))
        if not s.clusterwide:
            from hetsched.operator.pools.foreign import foreign_pods_watcher
            from hetsched.operator.pools.watcher import namespace_matches

            def watched(namespace: str) -> bool:
                return any(namespace_matches(namespace, pattern) for pattern in s.namespaces)

            self.tasks.append(
                asyncio.create_task(foreign_pods_watcher(self, watched), name="hetsched foreign pods")
            )

    async def stop(self) -> None:
        self.tasks.extend(self.serving.values())
        self.serving.clear()
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
