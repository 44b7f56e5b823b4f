"""Shared builders for the operator's unit tests: demo-pool nodes, workloads, a fake API server."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from hetsched.operator.devcluster.nodes import load_pools, node_manifests
from hetsched.operator.kube import ApiError
from hetsched.operator.planning.intake import Registration, resolve
from hetsched.operator.planning.loop import PlanningLoop
from hetsched.operator.pools.build import PoolsInput, build_pools
from hetsched.operator.pools.nodes import fingerprint
from hetsched.operator.pools.profiles import Profile
from hetsched.operator.reconcile.children import ChildState
from hetsched.operator.reconcile.manifests import WORKLOAD_LABEL
from hetsched.scheduler.nodes import LivePool, group_pools, project_node

from support import REPO

DEMO_POOLS = REPO / "examples" / "pools" / "demo.yaml"

CHAT: dict[str, Any] = {
    "model": {"name": "llama-3.1-8b"},
    "agent": {"profile": "chatbot"},
    "demand": {"requestsPerSecond": 5},
    "slo": {"ttftSeconds": 1, "tpotSeconds": 0.05},
}
CODER: dict[str, Any] = {
    "model": {"name": "llama-3.1-70b"},
    "agent": {"profile": "coding"},
    "demand": {"concurrentSessions": 16},
    "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
}
HUGE: dict[str, Any] = {
    "model": {"name": "llama-3.1-405b"},
    "agent": {"profile": "coding"},
    "demand": {"requestsPerSecond": 50},
    "slo": {"ttftSeconds": 1, "tpotSeconds": 0.05},
}


def demo_nodes(ready: bool = True) -> list[dict[str, Any]]:
    """The demo pools' Node manifests as the API server would return them (Ready)."""
    out = []
    for n in node_manifests(load_pools(DEMO_POOLS)):
        n = copy.deepcopy(n)
        n["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        out.append(n)
    return out


def projections(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n in nodes:
        p = project_node(
            n["metadata"]["name"], n["metadata"].get("labels", {}), n.get("spec", {}), n["status"]
        )
        if p is not None:
            out.append(p)
    return out


def live_pools(nodes: list[dict[str, Any]] | None = None) -> list[LivePool]:
    return group_pools(projections(nodes if nodes is not None else demo_nodes()))


def pools_input(
    nodes: list[dict[str, Any]] | None = None, profiles: list[Profile] | None = None
) -> PoolsInput:
    live = live_pools(nodes)
    return build_pools(live, profiles or [], fingerprint=fingerprint(live))


def registration(
    name: str, spec: Mapping[str, Any], generation: int = 1, namespace: str = "default", created: str = ""
) -> Registration:
    req, model_id = resolve(namespace, name, spec)
    return Registration((namespace, name), generation, f"uid-{name}", req, dict(spec), model_id, created)


class FakeApi:
    """An in-memory API server for the reconciler: objects with uids and resourceVersions, the
    preconditions of ``KubeApi.apply`` (a create fails on an existing object, an update on another
    object than ``uid``) and ``delete``, and refusals on demand. Records every write."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, kind, name)
        self.applied: list[dict[str, Any]] = []  # every accepted apply body
        self.refused: list[dict[str, Any]] = []  # every refused one
        self.gets: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.status_patches: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.fail_apply = False  # the API server fails to serve (503)
        self.refuse: Callable[[Mapping[str, Any]], str | None] | None = None  # a message: 422
        self.refuse_delete: str | None = None  # a message: every deletion is refused (403)
        self.refuse_status: str | None = None  # a message: every status patch is refused (422)
        self.pods: list[dict[str, Any]] = []  # what list_pods returns (filtered by selector)
        self.pod_lists: list[tuple[str, str]] = []
        self._version = 100

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object as someone else would (a user's own Service): a uid, a version."""
        body = copy.deepcopy(dict(obj))
        meta = body["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = self._next_version()
        self.objects[(meta["namespace"], body["kind"], meta["name"])] = body
        return copy.deepcopy(body)

    async def apply(self, obj: Mapping[str, Any], *, create: bool = False, uid: str = "") -> dict[str, Any]:
        if self.fail_apply:
            raise ApiError(503, "ServiceUnavailable", "apply failed")
        meta = obj["metadata"]
        key = (meta["namespace"], str(obj["kind"]), meta["name"])
        message = self.refuse(obj) if self.refuse is not None else None
        if message is not None:
            self.refused.append(copy.deepcopy(dict(obj)))
            raise ApiError(422, "Invalid", message)
        current = self.objects.get(key)
        if create and current is not None:
            raise ApiError(409, "Conflict", "the object has been modified")
        if uid and (current is None or current["metadata"]["uid"] != uid):
            raise ApiError(409, "Conflict", "uid mismatch")
        self.applied.append(copy.deepcopy(dict(obj)))
        body = copy.deepcopy(dict(obj))
        if current is not None:
            body["metadata"]["uid"] = current["metadata"]["uid"]
            if _content(current) == _content(body):
                return copy.deepcopy(current)  # no change: no new version
            body["status"] = current.get("status", {})
        return self.put(body)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((kind, namespace, name))
        found = self.objects.get((namespace, kind, name))
        return copy.deepcopy(found) if found is not None else None

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str = "") -> None:
        if self.refuse_delete is not None:
            raise ApiError(403, "Forbidden", self.refuse_delete)
        current = self.objects.get((namespace, kind, name))
        if current is None or (uid and current["metadata"]["uid"] != uid):
            return
        del self.objects[(namespace, kind, name)]
        self.deleted.append((kind, namespace, name))

    async def patch_workload_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if self.refuse_status is not None:
            raise ApiError(422, "Invalid", self.refuse_status)
        self.status_patches.append((namespace, name, copy.deepcopy(dict(status))))

    async def post_event(self, ref: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((ref["metadata"]["name"], type_, reason, message))

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.pod_lists.append((namespace, selector))
        want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
        return [
            copy.deepcopy(p)
            for p in self.pods
            if p["metadata"].get("namespace", namespace) == namespace
            and all(p["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
        ]

    def index(self, ready: bool = True) -> dict[tuple[str, str], dict[tuple[str, str], ChildState]]:
        """What the operator's child indices would hold: the objects labelled as ours, by
        (namespace, workload), with every replica available if ``ready``."""
        out: dict[tuple[str, str], dict[tuple[str, str], ChildState]] = {}
        for (namespace, kind, name), body in self.objects.items():
            labels = body["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") != "hetsched" or WORKLOAD_LABEL not in labels:
                continue
            body = copy.deepcopy(body)
            if kind == "Deployment":
                replicas = body["spec"].get("replicas", 0)
                body["metadata"]["generation"] = 1
                body["status"] = {
                    "observedGeneration": 1,
                    "updatedReplicas": replicas,
                    "availableReplicas": replicas if ready else 0,
                }
            out.setdefault((namespace, labels[WORKLOAD_LABEL]), {})[(kind, name)] = ChildState.from_body(
                kind, body
            )
        return out


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return out


def fast_planning_loop(**kw: Any) -> PlanningLoop:
    """A planning loop with short delays, for tests."""
    return PlanningLoop(debounce=0.01, max_delay=0.2, startup_grace=5, **kw)
