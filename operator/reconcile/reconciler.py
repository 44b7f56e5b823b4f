"""Converges a workload's children and status to its current plan (async, never blocking).

``converge(key)`` is idempotent: it builds the desired children with the pure functions of
``children.py`` and writes only what differs from what the API server holds (``drift.py``: the
fields the operator sets, compared as a forced apply would change them, so a quiet cluster costs no
write and a hand edit is undone once), deletes children of its own the plan no longer has (e.g.
after a switch between colocated and disaggregated serving), computes the status and patches it
only when it differs from what the API server holds, and posts an Event when the placement changed.
Calls for one workload are serialised by a per-workload lock; a work queue with a few workers
converges the keys the planner, the watch events and the periodic resync hand over.

Ownership: children are created only where no object has the name, and updated only while this
workload's uid controls them (the API server checks both: ``kube.KubeApi.apply``). A desired child
held by anything else is a conflict: nothing is written for the workload (no partial set), nothing it
does not control is deleted, and ``Degraded``/``Ready`` say ``ChildConflict`` with the object and
its holder (one Warning Event).

Refused writes: a write the API server refuses (``ApiError.refused``) becomes ``Degraded``/``Ready``
reason ``ChildRejected`` with the API server's message and one Warning Event; the same content is
retried with a per-object back-off (``writes.Refusals``), at most one pending retry per workload,
and at once when the content changes. Other failures (5xx, timeouts) fail the converge, which is
retried with a per-workload back-off (2 s doubling to 30 s), again one pending retry per workload.

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
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState, Slo
from hetsched.operator.kube import ApiError
from hetsched.operator.planning.intake import Key, Registration
from hetsched.operator.planning.loop import PlanningLoop
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.children import (
    Actions,
    ChildState,
    Conflict,
    PodScheduling,
    Write,
    conflict_message,
    desired_children,
    key_of,
    plan_actions,
    readiness,
    stalled_children,
    unschedulable_pods,
)
from hetsched.operator.reconcile.status import (
    CHILD_CONFLICT,
    CHILD_REJECTED,
    UNSCHEDULABLE,
    comparable,
    degraded_event,
    placed_status,
    placement_event,
    problem_status,
    status_patch,
    unplaced_status,
)
from hetsched.operator.reconcile.writes import Refusals
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND

log = logging.getLogger("hetsched.reconciler")

# A converge that fails (API server down, a timeout) is retried after 2 s, doubling to 30 s.
FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 30.0

ChildrenFn = Callable[[Key], Mapping[tuple[str, str], ChildState]]
EventFn = Callable[[Mapping[str, Any], str, str, str], Awaitable[None]]


class Api(Protocol):
    async def apply(
        self, obj: Mapping[str, Any], *, create: bool = False, uid: str = ""
    ) -> Mapping[str, Any]: ...

    async def get(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str = "") -> None: ...

    async def patch_workload_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...


HASH = manifests.HASH_ANNOTATION
DELETION = "(deletion)"  # what a refused deletion is keyed by in Refusals, in place of a content hash


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


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
        # The status as we last wrote it (or found it), and the last few we wrote: a watch event
        # showing any of those is our own write coming back, anything else someone else's edit.
        self._status: dict[Key, dict[str, Any]] = {}
        self._written: dict[Key, deque[dict[str, Any]]] = {}
        # A status someone else wrote: the next status patch is computed against it.
        self._foreign: dict[Key, dict[str, Any]] = {}
        # Our writes the index has not caught up with: (namespace, kind, name) → (hash, the index's
        # resourceVersion of the child when we wrote it; "" for a create).
        self._in_flight: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._refusals = Refusals()
        self._failures: dict[Key, int] = {}  # converges in a row that failed (retry back-off)
        self._status_refused: dict[Key, str] = {}  # the message of a refused status patch (one Event)
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    # ---- bookkeeping ----------------------------------------------------------------------------
    def note_status(self, key: Key, status: Mapping[str, Any] | None) -> None:
        """The status the API server has (from a handler's body), unless we already know better."""
        if key not in self._status:
            self._status[key] = comparable(status)

    def observe_status(self, key: Key, status: Mapping[str, Any] | None) -> None:
        """The status a watch event shows. If it is none we wrote, someone else edited it: converge,
        patching against what is there, so the edit is repaired at once."""
        live = comparable({k: v for k, v in (status or {}).items() if not str(k).startswith("kopf")})
        ours = self._status.get(key)
        if ours is None or live == ours or any(live == w for w in self._written.get(key, ())):
            return
        if key not in self.planning_loop.registrations:
            return  # not ours to converge (invalid spec, waiting for its ConfigMap): the handlers own it
        self._foreign[key] = live
        self.enqueue([key])

    def forget(self, key: Key) -> None:
        self._status.pop(key, None)
        self._written.pop(key, None)
        self._foreign.pop(key, None)
        self._failures.pop(key, None)
        self._status_refused.pop(key, None)
        self._locks.pop(key, None)
        self._refusals.forget(key)
        timer = self._rechecks.pop(key, None)
        if timer is not None:
            timer.cancel()
        for pods_key in [k for k in self._pods if k[0] == key[0] and k[1].startswith(key[1] + "-")]:
            self._pods.pop(pods_key, None)
        for k in [k for k in self._in_flight if k[0] == key[0] and k[2].startswith(key[1] + "-")]:
            self._in_flight.pop(k, None)
        self.state.drop_workload(*key)

    def child_gone(self, namespace: str, kind: str, name: str) -> None:
        """A child was deleted (watch event): forget our write so that converge re-creates it."""
        self._in_flight.pop((namespace, kind, name), None)

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
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (failures - 1))
                log.warning("converging %s/%s failed (retry in %g s): %s", key[0], key[1], delay, exc)
                self.metrics.count("error")
                self._recheck(key, delay)  # one pending retry per workload, however often it fails
            else:
                self._failures.pop(key, None)

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
        in_flight = {(k, n): v for (ns, k, n), v in self._in_flight.items() if ns == namespace}
        actions = plan_actions(desired, existing, in_flight, workload=name, uid=reg.uid)
        if reg.request is None:  # kept as its status recorded, without its model config: touch nothing
            actions = Actions((), (), (), ())
        conflicts = list(actions.conflicts)
        writes = list(actions.writes)
        now = time.monotonic()
        for obj in actions.lookups:  # not in the index: is the name free?
            kind, child = key_of(obj)
            if self._refusals.waiting((namespace, kind, child), obj["metadata"]["annotations"][HASH], now):
                writes.append(Write(obj))  # refused, retry not due: reported, not looked up again
                continue
            found = await self.api.get(kind, namespace, child)
            if found is None:
                writes.append(Write(obj))
                continue
            have = ChildState.from_body(kind, found)
            if have.controller_uid != reg.uid:
                conflicts.append(Conflict.of(name, have))
            elif (why := have.drift(obj)) is not None:  # ours, without our labels
                writes.append(Write(obj, have.uid, have.resource_version, why))
        degraded: tuple[str, str] | None = None
        wrote = False
        if conflicts:  # nothing is written: neither a partial set nor a deletion
            degraded = (CHILD_CONFLICT, conflict_message(conflicts))
        else:
            rejected = await self._write_children(reg, desired, writes)
            rejected += await self._delete_children(reg, actions.delete)
            wrote = bool(writes or actions.delete)
            if rejected:
                degraded = (CHILD_REJECTED, "; ".join(rejected))
        if degraded is None and reg.problem is not None:  # the model config went away or turned invalid
            degraded = reg.problem
        if plan.placed:
            ready = readiness(plan, desired, existing)
            if degraded is None and not ready[0]:
                unschedulable = await self._unschedulable(key, desired, existing)
                if unschedulable is not None:
                    degraded = (UNSCHEDULABLE, unschedulable)
            status = placed_status(
                plan, reg.generation, previous, ready, namespace_name=key, degraded=degraded
            )
        else:
            status = unplaced_status(plan, reg.generation, previous)
        event = placement_event(previous, plan, self.planning_loop.lost_pools)
        warning = degraded_event(previous, degraded)
        wrote = await self._write_status(reg, status) or wrote
        if event is not None:
            self._event(object_ref(namespace, name, reg.uid), *event)
        if warning is not None:
            self._event(object_ref(namespace, name, reg.uid), *warning)
        if not plan.placed:
            return "infeasible"
        if degraded is not None and degraded[0] == CHILD_CONFLICT:
            return "conflict"
        if degraded is not None and degraded[0] == CHILD_REJECTED:
            return "rejected"
        return "placed" if wrote else "unchanged"

    async def _write_children(
        self, reg: Registration, desired: list[dict[str, Any]], writes: list[Write]
    ) -> list[str]:
        """Apply ``writes``; returns what the API server refused (``Kind name: message``), including
        refusals of the desired content whose retry is not due yet."""
        namespace = reg.key[0]
        now = time.monotonic()
        pending = {w.key: w for w in writes}
        rejected: list[str] = []
        retry_in: float | None = None
        for obj in desired:
            kind, child = key_of(obj)
            object_key = (namespace, kind, child)
            content = obj["metadata"]["annotations"][HASH]
            write = pending.get((kind, child))
            refusal = self._refusals.of(object_key, content)
            if write is None:  # the API server holds this content: nothing refused
                self._refusals.accepted(object_key)
                continue
            if refusal is not None and now < refusal.retry_at:
                rejected.append(f"{kind} {child}: {refusal.message}")
                retry_in = _earliest(retry_in, refusal.retry_at - now)
                continue
            try:
                stored = await self.api.apply(obj, create=not write.uid, uid=write.uid)
            except ApiError as exc:
                if not exc.refused or exc.status == 409:
                    raise  # not served, or the object changed under us: retried with back-off
                refusal = self._refusals.refused(reg.key, object_key, content, exc.message, now)
                log.warning(
                    "%s %s/%s refused by the API server (attempt %d, next in %.0f s): %s",
                    kind,
                    namespace,
                    child,
                    refusal.attempts,
                    refusal.retry_at - now,
                    exc.message,
                )
                rejected.append(f"{kind} {child}: {exc.message}")
                retry_in = _earliest(retry_in, refusal.retry_at - now)
                continue
            self._refusals.accepted(object_key)
            self._in_flight[object_key] = (content, write.live_version)
            if write.uid:  # an update: a new plan or spec, or drift (a hand edit) undone
                log.info("%s %s/%s updated (it differed at %s)", kind, namespace, child, write.why)
                if str((stored.get("metadata") or {}).get("resourceVersion")) == write.live_version:
                    # The comparison saw a difference the API server did not: a drift.py bug.
                    log.warning("%s %s/%s: the write changed nothing (%s)", kind, namespace, child, write.why)
        if retry_in is not None:
            self._recheck(reg.key, retry_in)
        return rejected

    async def _delete_children(self, reg: Registration, delete: Iterable[tuple[str, str, str]]) -> list[str]:
        """Delete children of ours the plan no longer has; returns the refused deletions (retried
        with the same back-off as refused writes)."""
        namespace = reg.key[0]
        now = time.monotonic()
        rejected: list[str] = []
        for kind, child, uid in delete:
            object_key = (namespace, kind, child)
            refusal = self._refusals.waiting(object_key, DELETION, now)
            if refusal is not None:
                rejected.append(f"{kind} {child} (deletion): {refusal.message}")
                self._recheck(reg.key, refusal.retry_at - now)
                continue
            try:
                await self.api.delete(kind, namespace, child, uid=uid)
            except ApiError as exc:
                if not exc.refused:
                    raise
                refusal = self._refusals.refused(reg.key, object_key, DELETION, exc.message, now)
                log.warning(
                    "deleting %s %s/%s refused by the API server: %s", kind, namespace, child, exc.message
                )
                rejected.append(f"{kind} {child} (deletion): {exc.message}")
                self._recheck(reg.key, refusal.retry_at - now)
                continue
            self._refusals.accepted(object_key)
            self._in_flight.pop(object_key, None)
        return rejected

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
        stored = comparable(status)
        wrote = await self._patch_status(key, stored, status)
        self.state.set_workload(key[0], key[1], stored, Slo.from_spec(reg.spec))
        return wrote

    async def _patch_status(self, key: Key, stored: dict[str, Any], status: Mapping[str, Any]) -> bool:
        """Patch the status from what the API server holds (ours, or an edit someone else made)."""
        base = self._foreign.get(key, self._status.get(key))
        patch = status_patch(base, status)
        if patch is not None:
            try:
                await self.api.patch_workload_status(key[0], key[1], patch)
            except ApiError as exc:
                # No condition can say it (the status is what was refused): an Event, once per
                # message, and the converge fails (retried with back-off).
                if exc.refused and self._status_refused.get(key) != exc.message:
                    self._status_refused[key] = exc.message
                    reg = self.planning_loop.registrations.get(key)
                    ref = object_ref(key[0], key[1], reg.uid if reg is not None else "")
                    self._event(ref, "Warning", "StatusRejected", exc.message)
                raise
            self._status_refused.pop(key, None)
            self._written.setdefault(key, deque(maxlen=4)).append(stored)
        self._foreign.pop(key, None)
        self._status[key] = stored
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
            stored = comparable(status)
            if await self._patch_status(key, stored, status):
                self._event(object_ref(key[0], key[1], uid), "Warning", reason, message)
            self.state.set_workload(key[0], key[1], stored)
            # No valid plan means no devices: children of an earlier generation go, so that what
            # runs always matches what the planner accounts for (only those this workload controls).
            for (kind, child), have in sorted(self.children(key).items()):
                if have.controller_uid == uid:
                    await self.api.delete(kind, key[0], child, uid=have.uid)
                    self._in_flight.pop((key[0], kind, child), None)
