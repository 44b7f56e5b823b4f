"""Shared builders for the operator's unit tests: demo-pool nodes, workloads, a fake API."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hetsched.operator.devcluster.nodes import load_pools, node_manifests
from hetsched.operator.planning.intake import Registration, resolve
from hetsched.operator.planning.loop import PlanningLoop
from hetsched.operator.pools.build import PoolsInput, build_pools
from hetsched.operator.pools.nodes import fingerprint
from hetsched.operator.pools.profiles import Profile
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
    """Records writes instead of calling the API server."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.status_patches: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.fail_apply = False
        self.pods: list[dict[str, Any]] = []  # what list_pods returns (filtered by selector)
        self.pod_lists: list[tuple[str, str]] = []

    async def apply(self, obj: Mapping[str, Any]) -> None:
        if self.fail_apply:
            raise RuntimeError("apply failed")
        self.applied.append(copy.deepcopy(dict(obj)))

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, namespace, name))

    async def patch_workload_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
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


def fast_planning_loop(**kw: Any) -> PlanningLoop:
    """A planning loop with short delays, for tests."""
    return PlanningLoop(debounce=0.01, max_delay=0.2, startup_grace=5, **kw)
