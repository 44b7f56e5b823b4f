"""Kopf handlers: thin. They unpack the objects, hand them to the coordinator/reconciler and raise
``kopf.PermanentError`` (invalid spec) or ``kopf.TemporaryError`` (waiting) as appropriate.

Importing this module registers the handlers in Kopf's default registry; ``operator_cli`` passes
the shared :class:`OperatorContext` as ``memo.op``.

Watched:

* AgentWorkloads — create/update(spec)/resume: validate, resolve, register, await the plan,
  converge; deletions (watch event) forget the workload (children go by garbage collection);
* AcceleratorProfiles — validated (status condition ``Accepted``), then they change pool hardware;
* Nodes — indexed as small projections (``nodes.project_node``); every node event marks the pools
  dirty, and the pool watcher re-derives the pools and their fingerprint (debounced);
* the children (Deployments, Services labelled ``app.kubernetes.io/managed-by=hetsched``) —
  indexed (content hash, replica counts) and their events re-converge the owner (Ready, drift).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import kopf
from hetsched.operator import manifests
from hetsched.operator.coordinator import Coordinator
from hetsched.operator.kube import KubeApi
from hetsched.operator.metrics import Metrics
from hetsched.operator.nodes import apply_not_ready_grace, fingerprint, is_full_disruption
from hetsched.operator.planning import (
    Key,
    PoolsInput,
    Registration,
    WorkloadPlan,
    build_pools,
    plan_workloads,
    resolve,
)
from hetsched.operator.profiles import parse_profile, parse_profiles
from hetsched.operator.reconcile import ChildState
from hetsched.operator.reconciler import Reconciler
from hetsched.operator.state import OperatorState
from hetsched.operator.status import now_rfc3339, set_condition
from hetsched.scheduler.nodes import group_pools, project_node
from hetsched.scheduler.placement.options import PlanOptions
from hetsched.scheduler.spec import API_GROUP, API_VERSION, AgentWorkloadSpec, format_validation_error
from pydantic import ValidationError

if TYPE_CHECKING:
    from hetsched.operator.api import Readiness

AW = "agentworkloads"
AP = "acceleratorprofiles"
MANAGED = {"app.kubernetes.io/managed-by": manifests.MANAGER}

log = logging.getLogger("hetsched.operator")


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


@dataclass
class OperatorContext:
    settings: OperatorSettings
    state: OperatorState
    metrics: Metrics
    kube: KubeApi | None = None
    coordinator: Coordinator | None = None
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
        return None if self.coordinator is None else self.coordinator.pools


def _op(memo: Any) -> OperatorContext:
    op = getattr(memo, "op", None)
    if not isinstance(op, OperatorContext):
        raise kopf.PermanentError("hetsched: operator context missing (start with `hetsched operator run`)")
    return op


# ---- indices ------------------------------------------------------------------------------------
@kopf.index("", "v1", "nodes")
def nodes_idx(
    name: str, labels: Mapping[str, str], spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any
) -> Any:
    proj = project_node(name, labels, spec, status)
    return None if proj is None else {proj["pool"]: proj}


@kopf.index(API_GROUP, API_VERSION, AW)
def workloads_idx(namespace: str | None, name: str, meta: Mapping[str, Any], **_: Any) -> Any:
    return {(namespace, name): int(meta.get("generation") or 0)}


@kopf.index(API_GROUP, API_VERSION, AP)
def profiles_idx(name: str, spec: Mapping[str, Any], **_: Any) -> Any:
    return {name: json.loads(json.dumps(dict(spec)))}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def deployments_idx(
    namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any
) -> Any:
    workload = labels.get(manifests.WORKLOAD_LABEL)
    return None if not workload else {(namespace, workload): ChildState.from_body("Deployment", body)}


@kopf.index("", "v1", "services", labels=MANAGED)
def services_idx(namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any) -> Any:
    workload = labels.get(manifests.WORKLOAD_LABEL)
    return None if not workload else {(namespace, workload): ChildState.from_body("Service", body)}


def _children(op: OperatorContext, key: Key) -> dict[tuple[str, str], ChildState]:
    out: dict[tuple[str, str], ChildState] = {}
    for index in ("deployments_idx", "services_idx"):
        idx = op.indices.get(index)
        if idx is None or key not in idx:
            continue
        for child in idx[key]:
            out[(child.kind, child.name)] = child
    return out


# ---- lifecycle ----------------------------------------------------------------------------------
@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **kwargs: Any) -> None:
    op = _op(memo)
    s = op.settings
    settings.peering.standalone = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hetsched.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hetsched.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    op.indices = {
        k: kwargs[k]
        for k in ("nodes_idx", "workloads_idx", "profiles_idx", "deployments_idx", "services_idx")
    }
    op.kube = await KubeApi.from_kubeconfig(s.kubeconfig)
    options = PlanOptions(solver=s.solver, time_limit_seconds=s.solver_time_limit_seconds)

    def plan_fn(
        regs: list[Registration], pools: PoolsInput, prev: Mapping[Key, WorkloadPlan]
    ) -> dict[Key, WorkloadPlan]:
        with op.metrics.plan_duration.time():
            plans: dict[Key, WorkloadPlan] = plan_workloads(
                regs, pools, prev, policy=s.policy, options=options
            )
        return plans

    workloads = op.indices["workloads_idx"]
    op.coordinator = Coordinator(
        plan_fn=plan_fn,
        debounce=s.debounce_seconds,
        max_delay=s.max_delay_seconds,
        startup_grace=s.startup_grace_seconds,
        expected=lambda: list(workloads.keys()),
    )

    op.reconciler = Reconciler(
        op.kube,
        op.state,
        op.metrics,
        op.coordinator,
        lambda key: _children(op, key),
        op.kube.post_event,
        workers=s.workers,
        unschedulable_grace=s.unschedulable_grace_seconds,
    )
    op.coordinator.on_changed = op.reconciler.enqueue
    op.pools_dirty = asyncio.Event()
    op.indexed = asyncio.Event()
    op.coordinator.start()
    op.reconciler.start()
    op.tasks.append(asyncio.create_task(_pool_watcher(op), name="hetsched pool watcher"))
    op.tasks.append(asyncio.create_task(_resync(op), name="hetsched resync"))
    logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())
    op.state.started.set()
    logger.info(
        "hetsched operator started (%s, policy %s)",
        "all namespaces" if s.clusterwide else "namespaces " + ", ".join(s.namespaces),
        s.policy,
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    op = _op(memo)
    for task in op.tasks:
        task.cancel()
    for task in op.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    op.tasks.clear()
    if op.reconciler is not None:
        await op.reconciler.stop()
    if op.coordinator is not None:
        await op.coordinator.stop()
    if op.kube is not None:
        await op.kube.close()


class _QuietWatchHandlers(logging.Filter):
    """Drop Kopf's "Handler 'node_event' succeeded." lines: one per watch event is noise."""

    QUIET = ("node_event", "profile_event", "workload_event", "deployment_event", "service_event")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.endswith("succeeded.") and any(f"'{h}'" in msg for h in self.QUIET))


class _PoolPublisher:
    """Turns node projections and profile specs into pools; publishes when the fingerprint moves."""

    def __init__(self, op: OperatorContext) -> None:
        self.op = op
        self.last: str | None = None
        self.not_ready_since: dict[str, float] = {}
        self.disrupted = False

    def publish(
        self, raw_nodes: Sequence[Mapping[str, Any]], raw_profiles: Mapping[str, Mapping[str, Any]]
    ) -> None:
        op, s = self.op, self.op.settings
        assert op.coordinator is not None and op.pools_dirty is not None
        loop = asyncio.get_running_loop()
        disrupted = is_full_disruption(raw_nodes)
        if disrupted != self.disrupted:
            self.disrupted = disrupted
            if disrupted:
                log.warning(
                    "every node is NotReady: taken as a control-plane or network disruption, not lost "
                    "hardware; the pools keep their nodes until one is Ready again"
                )
            else:
                log.info("a node is Ready again: NotReady nodes count after the grace period from now")
        nodes, recheck = apply_not_ready_grace(
            raw_nodes, self.not_ready_since, loop.time(), s.not_ready_grace_seconds
        )
        if recheck is not None:
            loop.call_later(recheck + 0.05, op.pools_dirty.set)
        profiles, _bad = parse_profiles(raw_profiles)
        live = group_pools(nodes)
        extra = [[p.name, p.spec.model_dump(mode="json")] for p in profiles], sorted(s.network_gbps.items())
        fp = fingerprint(live, extra)
        if fp != self.last:
            pools = build_pools(live, profiles, network_gbps=s.network_gbps, fingerprint=fp)
            op.state.set_pools(pools.views, fp)
            op.coordinator.set_pools(pools)
            log.info("pools: %s", ", ".join(f"{v.pool.name}={v.pool.devices}" for v in pools.views) or "none")
            self.last = fp


async def _pool_watcher(op: OperatorContext) -> None:
    """Re-derive the pools when nodes or profiles change (debounced).

    The Kopf indices are complete only once the first resource handler ran (``op.indexed``).
    Until then (for instance while no watched namespace exists yet: Kopf then starts no watch at
    all) the pools come from a direct, consistent list of the nodes, re-read every grace period,
    so the operator never plans on a partial node set and still reports the pools.
    """
    assert op.pools_dirty is not None and op.indexed is not None
    s = op.settings
    publisher = _PoolPublisher(op)
    while not op.indexed.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(op.indexed.wait(), s.startup_grace_seconds)
        if not op.indexed.is_set() and op.kube is not None:
            try:
                listed = await op.kube.list_nodes()
                profiles = await op.kube.list_profiles()
            except Exception as exc:
                log.warning("listing nodes failed: %s", exc)
                continue
            raw = [p for p in (project_node(n, lb, sp, st) for n, lb, sp, st in listed) if p is not None]
            publisher.publish(raw, profiles)
            # No handler will run to say the indices are complete while Kopf watches nothing.
            ready = op.readiness
            if ready is not None and not ready.indexed.is_set() and await _watches_nothing(op):
                ready.mark_indexed("no watched namespace exists")
                log.info("no namespace matches %s: nothing to index, ready", ", ".join(s.namespaces))
    while True:
        await asyncio.sleep(s.pool_debounce_seconds)
        op.pools_dirty.clear()
        raw_nodes = [proj for store in op.indices["nodes_idx"].values() for proj in store]
        raw_profiles = {name: spec for name, store in op.indices["profiles_idx"].items() for spec in store}
        publisher.publish(raw_nodes, raw_profiles)
        await op.pools_dirty.wait()


def namespace_matches(name: str, pattern: str) -> bool:
    """Kopf's documented ``--namespace`` syntax: comma-separated globs read left to right; the
    first inclusive glob decides the initial match (a leading ``!glob`` implies ``*`` before it),
    ``!glob`` excludes, and a later inclusive glob re-admits only what the first one matched."""
    globs = [g.strip() for g in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    first = fnmatch.fnmatch(name, globs[0])
    matched = first
    for g in globs[1:]:
        if g.startswith("!"):
            matched = matched and not fnmatch.fnmatch(name, g[1:])
        else:
            matched = matched or (first and fnmatch.fnmatch(name, g))
    return matched


async def _watches_nothing(op: OperatorContext) -> bool:
    """Namespaced, and no existing namespace matches the patterns: Kopf then starts no watch (not
    even the cluster-scoped ones), so no handler runs until such a namespace is created."""
    s = op.settings
    if s.clusterwide or op.kube is None:
        return False
    try:
        listed = await op.kube.core.list_namespace()
    except Exception as exc:  # e.g. forbidden: Kopf then assumes the named namespaces exist
        log.debug("listing namespaces failed: %s", exc)
        return False
    names = [str(ns.metadata.name) for ns in listed.items if ns.metadata is not None]
    return not any(namespace_matches(name, pattern) for name in names for pattern in s.namespaces)


async def _resync(op: OperatorContext) -> None:
    """Periodic safety net: converge every workload (a no-op when nothing drifted)."""
    assert op.reconciler is not None and op.coordinator is not None
    while True:
        await asyncio.sleep(op.settings.resync_seconds)
        op.reconciler.enqueue(sorted(op.coordinator.registrations))


# ---- AgentWorkloads -----------------------------------------------------------------------------
async def _reconcile_workload(
    op: OperatorContext,
    namespace: str,
    name: str,
    uid: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
) -> None:
    assert op.coordinator is not None and op.reconciler is not None and op.kube is not None
    _mark_indexed(op)
    key = (namespace, name)
    generation = int(meta.get("generation") or 0)
    op.reconciler.note_status(key, status)
    spec_doc = json.loads(json.dumps(dict(spec)))
    try:
        parsed = AgentWorkloadSpec.model_validate(spec_doc)
    except ValidationError as exc:
        message = format_validation_error(exc, "spec.")
        await _invalid(op, key, generation, uid, "InvalidSpec", message)
    config_json = None
    if parsed.model.config_map is not None:
        ref = parsed.model.config_map
        data = await op.kube.read_configmap(namespace, ref.name)
        if data is None or ref.key not in data:
            what = f"ConfigMap {namespace}/{ref.name}" + ("" if data is None else f" has no key {ref.key!r}")
            message = f"spec.model.configMap: waiting for {what}"
            await op.reconciler.report_problem(
                key, generation, uid, "ConfigMapNotFound", message, estimated=None
            )
            op.coordinator.mark_invalid(key, generation)
            op.metrics.count("waiting")
            raise kopf.TemporaryError(message, delay=op.settings.configmap_retry_seconds)
        try:
            config_json = json.loads(data[ref.key])
        except json.JSONDecodeError as exc:
            await _invalid(
                op,
                key,
                generation,
                uid,
                "InvalidModelConfig",
                f"spec.model.configMap: {ref.key} is not JSON: {exc}",
            )
    try:
        request, model_id = await asyncio.to_thread(
            resolve, namespace, name, spec_doc, config_json=config_json
        )
    except ValueError as exc:
        message = str(exc).removeprefix(f"{namespace}/{name}: ")
        await _invalid(op, key, generation, uid, "InvalidSpec", message)
    created = str(meta.get("creationTimestamp") or "")
    op.coordinator.register(Registration(key, generation, uid, request, spec_doc, model_id, created))
    try:
        await op.coordinator.plan_for(key, generation, op.settings.plan_timeout_seconds)
    except TimeoutError as exc:
        op.metrics.count("waiting")
        raise kopf.TemporaryError(f"waiting for the planner: {exc}", delay=2) from None
    except RuntimeError as exc:
        op.metrics.count("error")
        raise kopf.TemporaryError(str(exc), delay=10) from None
    await op.reconciler.converge(key)


async def _invalid(
    op: OperatorContext, key: Key, generation: int, uid: str, reason: str, message: str
) -> NoReturn:
    """Report an invalid spec in the status and stop retrying (until the spec changes)."""
    assert op.coordinator is not None and op.reconciler is not None
    op.coordinator.mark_invalid(key, generation)
    await op.reconciler.report_problem(key, generation, uid, reason, message)
    op.metrics.count("invalid")
    raise kopf.PermanentError(message)


@kopf.on.resume(API_GROUP, API_VERSION, AW, id="workload-resume")
async def workload_resumed(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, memo: Any, **_: Any
) -> None:
    await _reconcile_workload(_op(memo), namespace or "default", name, uid, meta, spec, status)


@kopf.on.create(API_GROUP, API_VERSION, AW, id="workload-create")
async def workload_created(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, memo: Any, **_: Any
) -> None:
    await _reconcile_workload(_op(memo), namespace or "default", name, uid, meta, spec, status)


@kopf.on.update(API_GROUP, API_VERSION, AW, field="spec", id="workload-update")
async def workload_updated(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, memo: Any, **_: Any
) -> None:
    await _reconcile_workload(_op(memo), namespace or "default", name, uid, meta, spec, status)


@kopf.on.event(API_GROUP, API_VERSION, AW)
async def workload_event(type: str | None, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        op = _op(memo)
        assert op.coordinator is not None and op.reconciler is not None
        op.coordinator.forget((namespace or "", name))
        op.reconciler.forget((namespace or "", name))


# ---- children -----------------------------------------------------------------------------------
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(
    type: str | None,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    _child_event(_op(memo), type, "Deployment", namespace or "", name, labels)


@kopf.on.event("", "v1", "services", labels=MANAGED)
async def service_event(
    type: str | None,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    if type == "DELETED":
        _child_event(_op(memo), type, "Service", namespace or "", name, labels)


def _mark_indexed(op: OperatorContext) -> None:
    if op.indexed is not None and not op.indexed.is_set():
        op.indexed.set()
        if op.pools_dirty is not None:
            op.pools_dirty.set()
        if op.readiness is not None and op.readiness.mark_indexed("Kopf's indices"):
            log.info("cluster indexed %.1f s after start: ready", op.readiness.indexed_after or 0.0)


def _child_event(
    op: OperatorContext, type_: str | None, kind: str, namespace: str, name: str, labels: Mapping[str, str]
) -> None:
    _mark_indexed(op)
    workload = labels.get(manifests.WORKLOAD_LABEL)
    if op.reconciler is None or not workload:
        return
    if type_ == "DELETED":
        op.reconciler.child_gone(namespace, kind, name)
    if (namespace, workload) in (op.coordinator.registrations if op.coordinator else {}):
        op.reconciler.enqueue([(namespace, workload)])


# ---- nodes and profiles -------------------------------------------------------------------------
@kopf.on.event("", "v1", "nodes")
async def node_event(memo: Any, **_: Any) -> None:
    op = _op(memo)
    _mark_indexed(op)
    if op.pools_dirty is not None:
        op.pools_dirty.set()


@kopf.on.event(API_GROUP, API_VERSION, AP)
async def profile_event(memo: Any, **_: Any) -> None:
    op = _op(memo)
    _mark_indexed(op)
    if op.pools_dirty is not None:
        op.pools_dirty.set()


@kopf.on.resume(API_GROUP, API_VERSION, AP, id="profile-resume")
@kopf.on.create(API_GROUP, API_VERSION, AP, id="profile-create")
@kopf.on.update(API_GROUP, API_VERSION, AP, field="spec", id="profile-update")
async def profile_changed(
    name: str, spec: Any, meta: Any, status: Any, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    generation = int(meta.get("generation") or 0)
    conditions = list((status or {}).get("conditions") or [])
    now = now_rfc3339()
    try:
        profile = parse_profile(name, json.loads(json.dumps(dict(spec))))
    except ValueError as exc:
        patch.status["conditions"] = set_condition(
            conditions, "Accepted", False, "InvalidSpec", str(exc), generation=generation, now=now
        )
        patch.status["observedGeneration"] = generation
        raise kopf.PermanentError(str(exc)) from None
    hardware = profile.hardware.name if profile.hardware is not None else None
    what = f"hardware {hardware}" if hardware else "price override"
    match = ", ".join(
        f"{k}={v}"
        for k, v in (("pool", profile.spec.match_pool), ("gpu product", profile.spec.match_gpu_product))
        if v
    )
    patch.status["conditions"] = set_condition(
        conditions, "Accepted", True, "Accepted", f"{what} for {match}", generation=generation, now=now
    )
    patch.status["observedGeneration"] = generation
    patch.status["hardware"] = hardware
    patch.status["pricePerDeviceHour"] = (
        profile.spec.price_per_hour
        if profile.spec.price_per_hour is not None
        else (profile.hardware.price_per_hour if profile.hardware is not None else None)
    )
    op = _op(memo)
    if op.pools_dirty is not None:
        op.pools_dirty.set()
