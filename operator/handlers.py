"""Kopf handlers: dispatch only. Each unpacks the object and calls the pipeline stage it belongs
to; the stages raise ``kopf.PermanentError`` (invalid spec) or ``kopf.TemporaryError`` (waiting).

Importing this module registers the handlers in Kopf's default registry; ``run.py`` passes the
shared :class:`~hetsched.operator.settings.OperatorContext` as ``memo.op``.

Watched:

* AgentWorkloads — create/update(spec)/resume: ``planning.intake.reconcile_workload`` (validate,
  resolve, register, await the plan, converge); deletions (watch event) forget the workload
  (children go by garbage collection);
* AcceleratorProfiles — validated (status condition ``Accepted``, ``pools.profiles``), then they
  change pool hardware;
* Nodes — indexed as small projections (``scheduler.nodes.project_node``); every node event marks
  the pools dirty, and the pool watcher (``pools.watcher``) re-derives the pools (debounced);
* the children (Deployments, Services, and the P/D router's ServiceAccounts, Roles and
  RoleBindings, labelled ``app.kubernetes.io/managed-by=hetsched``) — indexed (owner, content,
  replica counts) and their events re-converge the owner (Ready, drift); InferencePools (an optional
  CRD) are written but not watched; an AgentWorkload's status events too (a status someone else
  wrote is written back);
* ConfigMaps — an edit or deletion of one a workload reads re-runs its intake
  (``planning.configmaps``; the others are dropped at once);
* our CRDs — while the AgentWorkload CRD is missing (or being deleted) the operator forgets its
  workloads, writes nothing and is not ready (``settings.OperatorContext.crd_changed``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from hetsched.operator.planning.configmaps import on_configmap_event
from hetsched.operator.planning.intake import reconcile_workload
from hetsched.operator.pools.profiles import profile_status
from hetsched.operator.reconcile import manifests
from hetsched.operator.reconcile.children import ChildState
from hetsched.operator.settings import CRDS, INDICES, OperatorContext
from hetsched.scheduler.nodes import project_node
from hetsched.scheduler.spec import API_GROUP, API_VERSION

AW = "agentworkloads"
AP = "acceleratorprofiles"
MANAGED = {"app.kubernetes.io/managed-by": manifests.MANAGER}


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


@kopf.index("", "v1", "serviceaccounts", labels=MANAGED)
def serviceaccounts_idx(
    namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any
) -> Any:
    workload = labels.get(manifests.WORKLOAD_LABEL)
    return None if not workload else {(namespace, workload): ChildState.from_body("ServiceAccount", body)}


@kopf.index("rbac.authorization.k8s.io", "v1", "roles", labels=MANAGED)
def roles_idx(namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any) -> Any:
    workload = labels.get(manifests.WORKLOAD_LABEL)
    return None if not workload else {(namespace, workload): ChildState.from_body("Role", body)}


@kopf.index("rbac.authorization.k8s.io", "v1", "rolebindings", labels=MANAGED)
def rolebindings_idx(
    namespace: str | None, labels: Mapping[str, str], body: Mapping[str, Any], **_: Any
) -> Any:
    workload = labels.get(manifests.WORKLOAD_LABEL)
    return None if not workload else {(namespace, workload): ChildState.from_body("RoleBinding", body)}


# ---- lifecycle ----------------------------------------------------------------------------------
@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **kwargs: Any) -> None:
    op = _op(memo)
    s = op.settings
    op.kopf_settings = settings  # for a rescan of discovery (``kopf_discovery``)
    settings.peering.standalone = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hetsched.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hetsched.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    await op.start({k: kwargs[k] for k in INDICES})
    logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())
    op.state.started.set()
    logger.info(
        "hetsched operator started (%s, policy %s)",
        "all namespaces" if s.clusterwide else "namespaces " + ", ".join(s.namespaces),
        s.policy,
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    await _op(memo).stop()


class _QuietWatchHandlers(logging.Filter):
    """Drop Kopf's "Handler 'node_event' succeeded." lines: one per watch event is noise."""

    QUIET = (
        "node_event",
        "profile_event",
        "workload_event",
        "deployment_event",
        "service_event",
        "configmap_event",
        "crd_event",
        "serviceaccount_event",
        "role_event",
        "rolebinding_event",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.endswith("succeeded.") and any(f"'{h}'" in msg for h in self.QUIET))


# ---- AgentWorkloads -----------------------------------------------------------------------------
@kopf.on.resume(API_GROUP, API_VERSION, AW, id="workload-resume")
async def workload_resumed(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, memo: Any, **_: Any
) -> None:
    await reconcile_workload(_op(memo), namespace or "default", name, uid, meta, spec, status)


@kopf.on.create(API_GROUP, API_VERSION, AW, id="workload-create")
async def workload_created(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, memo: Any, **_: Any
) -> None:
    await reconcile_workload(_op(memo), namespace or "default", name, uid, meta, spec, status)


@kopf.on.update(API_GROUP, API_VERSION, AW, field="spec", id="workload-update")
async def workload_updated(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, memo: Any, **_: Any
) -> None:
    await reconcile_workload(_op(memo), namespace or "default", name, uid, meta, spec, status)


@kopf.on.event(API_GROUP, API_VERSION, AW)
async def workload_event(
    type: str | None, namespace: str | None, name: str, status: Any, memo: Any, **_: Any
) -> None:
    op = _op(memo)
    key = (namespace or "", name)
    if type == "DELETED":
        op.forget_workload(key)
    elif type is not None and op.reconciler is not None:  # a status someone else wrote: repaired
        op.reconciler.observe_status(key, json.loads(json.dumps(dict(status or {}))))


# ---- what the workloads depend on ----------------------------------------------------------------
@kopf.on.event("", "v1", "configmaps")
async def configmap_event(
    type: str | None, namespace: str | None, name: str, body: Mapping[str, Any], memo: Any, **_: Any
) -> None:
    """Every ConfigMap of the watched namespaces passes here; only referenced ones matter."""
    on_configmap_event(_op(memo), type, namespace or "", name, body.get("data"))


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions")
async def crd_event(type: str | None, name: str, meta: Mapping[str, Any], memo: Any, **_: Any) -> None:
    """Our CRDs going away (deleted, or being deleted) or coming back."""
    if name in CRDS:
        _op(memo).crd_event(name, type != "DELETED" and not meta.get("deletionTimestamp"))


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
    _child_event(_op(memo), type, "Service", namespace or "", name, labels)


@kopf.on.event("", "v1", "serviceaccounts", labels=MANAGED)
async def serviceaccount_event(
    type: str | None, namespace: str | None, name: str, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    _child_event(_op(memo), type, "ServiceAccount", namespace or "", name, labels)


@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=MANAGED)
async def role_event(
    type: str | None, namespace: str | None, name: str, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    _child_event(_op(memo), type, "Role", namespace or "", name, labels)


@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=MANAGED)
async def rolebinding_event(
    type: str | None, namespace: str | None, name: str, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    _child_event(_op(memo), type, "RoleBinding", namespace or "", name, labels)


def _child_event(
    op: OperatorContext, type_: str | None, kind: str, namespace: str, name: str, labels: Mapping[str, str]
) -> None:
    op.mark_indexed()
    workload = labels.get(manifests.WORKLOAD_LABEL)
    if op.reconciler is None or not workload:
        return
    if type_ == "DELETED":
        op.reconciler.child_gone(namespace, kind, name)
    if (namespace, workload) in (op.planning_loop.registrations if op.planning_loop else {}):
        op.reconciler.enqueue([(namespace, workload)])


# ---- nodes and profiles -------------------------------------------------------------------------
@kopf.on.event("", "v1", "nodes")
async def node_event(memo: Any, **_: Any) -> None:
    op = _op(memo)
    op.mark_indexed()
    if op.pools_dirty is not None:
        op.pools_dirty.set()


@kopf.on.event(API_GROUP, API_VERSION, AP)
async def profile_event(memo: Any, **_: Any) -> None:
    op = _op(memo)
    op.mark_indexed()
    if op.pools_dirty is not None:
        op.pools_dirty.set()


@kopf.on.resume(API_GROUP, API_VERSION, AP, id="profile-resume")
@kopf.on.create(API_GROUP, API_VERSION, AP, id="profile-create")
@kopf.on.update(API_GROUP, API_VERSION, AP, field="spec", id="profile-update")
async def profile_changed(
    name: str, spec: Any, meta: Any, status: Any, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    fields, error = profile_status(
        name, json.loads(json.dumps(dict(spec))), status, int(meta.get("generation") or 0)
    )
    for key, value in fields.items():
        patch.status[key] = value
    if error is not None:
        raise kopf.PermanentError(error)
    op = _op(memo)
    if op.pools_dirty is not None:
        op.pools_dirty.set()
