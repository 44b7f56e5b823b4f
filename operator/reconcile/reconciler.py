"""Converges a workload's children and status to its current plan (async, never blocking).

``converge(key)`` is idempotent: it builds the desired Deployments/Services with the pure
functions of ``reconcile.py``, writes only those whose content hash differs from what the Kopf
index (or our last write) holds, deletes children the plan no longer has (e.g. after a switch
between colocated and disaggregated serving), computes the status and patches it only when it
changed, and posts an Event when the placement changed. Calls for one workload are serialised by
a per-workload lock; a work queue with a few workers converges the keys the planner or the
children's watch events hand over.

Unschedulable children: a Deployment that has not been fully available and made no rollout
progress (its ``Progressing`` condition) for ``unschedulable_grace`` seconds gets one pod list
(its label selector, cached briefly); a pod the scheduler has found no node for during the grace
makes the workload ``Degraded`` (reason ``Unschedulable``, the scheduler's message) with one
Warning Event. A timer re-converges the workload when a stall would pass the grace, so the
condition does not wait for the periodic resync. Ready children never cost a pod list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState, Slo
from hetsched.operator.planning.intake import Key, Registration
from hetsched.operator.planning.loop import PlanningLoop
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.children import (
    ChildState,
    PodScheduling,
    desired_children,
    plan_actions,
    readiness,
    stalled_children,
    unschedulable_pods,
)
from hetsched.operator.reconcile.status import (
    comparable,
    degraded_event,
    placed_status,
    placement_event,
    problem_status,
    status_patch,
    unplaced_status,
)
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND

log = logging.getLogger("hetsched.reconciler")

ChildrenFn = Callable[[Key], Mapping[tuple[str, str], ChildState]]
EventFn = Callable[[Mapping[str, Any], str, str, str], Awaitable[None]]


class Api(Protocol):
    async def apply(self, obj: Mapping[str, Any]) -> None: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def patch_workload_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...


def object_ref(namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
    }


class Reconciler:
    def __init__(
        self,
        api: Api,
        state: OperatorState,
        metrics: Metrics,
        planning_loop: PlanningLoop,
        children: ChildrenFn,
        post_event: EventFn | None = None,
        *,
        workers: int = 4,
        unschedulable_grace: float = 60.0,
    ) -> None:
        self.api = api
        self.state = state
        self.metrics = metrics
        self.planning_loop = planning_loop
        self.children = children
        self.post_event = post_event
        self.workers = workers
        self.unschedulable_grace = unschedulable_grace
        # Cluster-wide rendering choices (the InferencePool's endpoint picker, when its CRD exists).
        self.render_options = manifests.RenderOptions()
        # A stalled child's pods are listed at most once per this many seconds (event bursts).
        self.pod_list_ttl = min(5.0, max(unschedulable_grace / 2, 0.5))
        self._pods: dict[tuple[str, str], tuple[float, tuple[PodScheduling, ...]]] = {}
        self._rechecks: dict[Key, asyncio.TimerHandle] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._status: dict[Key, dict[str, Any]] = {}
        self._applied: dict[tuple[str, str, str], str] = {}  # (namespace, kind, name) → hash
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    # ---- bookkeeping ----------------------------------------------------------------------------
    def note_status(self, key: Key, status: Mapping[str, Any] | None) -> None:
        """The status the API server has (from a handler's body), unless we already know better."""
        if key not in self._status:
            self._status[key] = comparable(status)

    def forget(self, key: Key) -> None:
        self._status.pop(key, None)
        self._locks.pop(key, None)
        timer = self._rechecks.pop(key, None)
        if timer is not None:
            timer.cancel()
        for pods_key in [k for k in self._pods if k[0] == key[0] and k[1].startswith(key[1] + "-")]:
            self._pods.pop(pods_key, None)
        for k in [k for k in self._applied if k[0] == key[0] and k[2].startswith(key[1] + "-")]:
            self._applied.pop(k, None)
        self.state.drop_workload(*key)

    def child_gone(self, namespace: str, kind: str, name: str) -> None:
        """A child was deleted (watch event): forget our write so that converge re-creates it."""
        self._applied.pop((namespace, kind, name), None)

    def _event(self, ref: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event in the background: a failed Event must never fail a reconciliation."""
        if self.post_event is None:
            return
        fn = self.post_event

        async def post() -> None:
            try:
                await fn(ref, type_, reason, message)
            except Exception as exc:
                log.debug("event %s for %s not posted: %s", reason, ref["metadata"]["name"], exc)

        task = asyncio.create_task(post())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # ---- queue ----------------------------------------------------------------------------------
    def enqueue(self, keys: Iterable[Key]) -> None:
        for key in keys:
            if key not in self._queued:
                self._queued.add(key)
                self._queue.put_nowait(key)

    def start(self) -> None:
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"hetsched converge {i}"))

    def _recheck(self, key: Key, delay: float) -> None:
        """Converge ``key`` again in ``delay`` seconds (keeps an earlier pending recheck)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._rechecks.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()

        def fire() -> None:
            self._rechecks.pop(key, None)
            self.enqueue([key])

        self._rechecks[key] = loop.call_at(when, fire)

    async def stop(self) -> None:
        for timer in self._rechecks.values():
            timer.cancel()
        self._rechecks.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self.converge(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("converging %s/%s failed (will retry): %s", key[0], key[1], exc)
                self.metrics.count("error")
                asyncio.get_running_loop().call_later(2.0, self.enqueue, [key])

    # ---- the work -------------------------------------------------------------------------------
    async def converge(self, key: Key) -> str:
        """Bring children and status of ``key`` in line with its plan; returns the result label."""
        async with self._lock(key):
            t0 = time.perf_counter()
            result = await self._converge(key)
            self.metrics.reconcile_duration.observe(time.perf_counter() - t0)
            self.metrics.count(result)
            return result

    async def _converge(self, key: Key) -> str:
        reg = self.planning_loop.registrations.get(key)
        if reg is None:
            return "waiting"
        plan = self.planning_loop.plan(key)
        if plan is None:
            return "waiting"
        namespace, name = key
        previous = self._status.get(key)
        try:
            desired = desired_children(reg, plan, self.render_options)
        except ValueError as exc:
            status = problem_status(
                reg.generation, previous, "InvalidServing", f"spec.serving: {exc}", estimated=True
            )
            await self._write_status(reg, status)
            return "invalid"
        existing = self.children(key)
        applied = {(k, n): h for (ns, k, n), h in self._applied.items() if ns == namespace}
        actions = plan_actions(desired, existing, applied)
        for obj in actions.apply:
            await self.api.apply(obj)
            meta = obj["metadata"]
            self._applied[(namespace, obj["kind"], meta["name"])] = meta["annotations"][
                manifests.HASH_ANNOTATION
            ]
        for kind, child in actions.delete:
            await self.api.delete(kind, namespace, child)
            self._applied.pop((namespace, kind, child), None)
        unschedulable = None
        if plan.placed:
            ready = readiness(plan, desired, existing)
            if not ready[0]:
                unschedulable = await self._unschedulable(key, desired, existing)
            status = placed_status(
                plan, reg.generation, previous, ready, namespace_name=key, unschedulable=unschedulable
            )
        else:
            status = unplaced_status(plan, reg.generation, previous)
        event = placement_event(previous, plan, self.planning_loop.lost_pools)
        warning = degraded_event(previous, unschedulable)
        wrote = await self._write_status(reg, status)
        if event is not None:
            self._event(object_ref(namespace, name, reg.uid), *event)
        if warning is not None:
            self._event(object_ref(namespace, name, reg.uid), *warning)
        if not plan.placed:
            return "infeasible"
        return "placed" if (wrote or actions.apply or actions.delete) else "unchanged"

    async def _unschedulable(
        self,
        key: Key,
        desired: list[dict[str, Any]],
        existing: Mapping[tuple[str, str], ChildState],
    ) -> str | None:
        """Why a child's pods cannot be scheduled (None: none has waited the grace period)."""
        grace = self.unschedulable_grace
        now = time.time()
        stalled, wait = stalled_children(desired, existing, now, grace)
        messages = []
        for child in stalled:
            pods = await self._pods_of(key[0], child)
            message, recheck = unschedulable_pods(child.name, pods, now, grace)
            if message is not None:
                messages.append(message)
            elif recheck is not None:
                wait = recheck if wait is None else min(wait, recheck)
        if wait is not None:
            self._recheck(key, wait + 0.5)  # timestamps have whole seconds
        return "; ".join(messages) or None

    async def _pods_of(self, namespace: str, child: ChildState) -> tuple[PodScheduling, ...]:
        """The child's pods (one list by its label selector), reused for ``pod_list_ttl``."""
        if not child.selector:
            return ()
        cache_key = (namespace, child.name)
        cached = self._pods.get(cache_key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.pod_list_ttl:
            return cached[1]
        try:
            items = await self.api.list_pods(namespace, child.selector)
        except Exception as exc:  # a failed look must not fail the reconciliation
            log.debug("listing the pods of %s/%s failed: %s", namespace, child.name, exc)
            return cached[1] if cached is not None else ()
        pods = tuple(PodScheduling.from_body(p) for p in items)
        self._pods[cache_key] = (now, pods)
        return pods

    async def _write_status(self, reg: Registration, status: Mapping[str, Any]) -> bool:
        key = reg.key
        patch = status_patch(self._status.get(key), status)
        stored = comparable(status)
        if patch is not None:
            await self.api.patch_workload_status(key[0], key[1], patch)
        self._status[key] = stored
        self.state.set_workload(key[0], key[1], stored, Slo.from_spec(reg.spec))
        return patch is not None

    async def report_problem(
        self,
        key: Key,
        generation: int,
        uid: str,
        reason: str,
        message: str,
        *,
        estimated: bool | None = False,
    ) -> None:
        """Status for a workload that cannot be planned (invalid spec, missing ConfigMap)."""
        async with self._lock(key):
            previous = self._status.get(key)
            status = problem_status(generation, previous, reason, message, estimated=estimated)
            patch = status_patch(previous, status)
            if patch is not None:
                await self.api.patch_workload_status(key[0], key[1], patch)
                self._event(object_ref(key[0], key[1], uid), "Warning", reason, message)
            self._status[key] = comparable(status)
            self.state.set_workload(key[0], key[1], self._status[key])
            # No valid plan means no devices: children of an earlier generation go, so that what
            # runs always matches what the planner accounts for.
            for kind, child in sorted(self.children(key)):
                await self.api.delete(kind, key[0], child)
                self._applied.pop((key[0], kind, child), None)
