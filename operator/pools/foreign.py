"""Devices held outside the operator's namespaces: a namespace-scoped operator counts them as used.

The planner counts a pool's free devices as its nodes' allocatable GPUs minus what the operator's
own plans hold. An operator that watches only some namespaces does not see the pods of the others
(another team's training job, a second hetsched release): it would plan their GPUs as free and
its children would stay Pending. So, when namespace-scoped, it watches the pods of the whole
cluster that are bound to a node and not finished (one list, then a watch; field selectors do the
filtering on the server, only a small projection of each pod is kept) and subtracts, per node, the
GPUs of those outside its namespaces (:func:`held_by_node`; ``build.build_pools`` takes them off
the node's free devices, so the per-node packing sees them too). Pods in the watched namespaces
are left to the unschedulable check, as before: the operator's own children are among them.

RBAC: ``pods`` list and watch cluster-wide (the chart's ClusterRole grants it with
``operator.watchNamespaces``). A cluster-wide operator does not run this.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hetsched.operator.kube import read_json
from hetsched.scheduler.nodes import parse_quantity
from hetsched.scheduler.pools import GPU_RESOURCE

if TYPE_CHECKING:
    from hetsched.operator.settings import OperatorContext

log = logging.getLogger("hetsched.operator")
# Bound and not finished: what holds devices (the scheduler counts these too).
FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """The GPUs a pod holds, as the scheduler counts them: the larger of its containers' sum and
    its largest init container (requests, else limits)."""
    spec = pod.get("spec") or {}

    def gpus(container: Mapping[str, Any]) -> int:
        res = container.get("resources") or {}
        value = (res.get("requests") or {}).get(GPU_RESOURCE, (res.get("limits") or {}).get(GPU_RESOURCE))
        return int(parse_quantity(value))

    main = sum(gpus(c) for c in spec.get("containers") or ())
    init = max((gpus(c) for c in spec.get("initContainers") or ()), default=0)
    return max(main, init)


def held_by_node(pods: Mapping[str, tuple[str, str, int]], watched: Callable[[str], bool]) -> dict[str, int]:
    """GPUs per node held by pods (uid → (namespace, node, gpus)) outside the watched namespaces."""
    out: dict[str, int] = {}
    for namespace, node, gpus in pods.values():
        if gpus > 0 and not watched(namespace):
            out[node] = out.get(node, 0) + gpus
    return out


def _projection(pod: Mapping[str, Any]) -> tuple[str, tuple[str, str, int]] | None:
    meta = pod.get("metadata") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    phase = (pod.get("status") or {}).get("phase")
    if not node or phase in ("Succeeded", "Failed"):
        return None
    return str(meta.get("uid")), (str(meta.get("namespace")), str(node), pod_gpus(pod))


async def foreign_pods_watcher(op: OperatorContext, watched: Callable[[str], bool]) -> None:
    """Keep ``op.held_outside`` (GPUs per node held outside the watched namespaces) current."""
    assert op.kube is not None
    core = op.kube.core
    pods: dict[str, tuple[str, str, int]] = {}
    backoff = 1.0

    def publish() -> None:
        held = held_by_node(pods, watched)
        if held != op.held_outside:
            op.held_outside = held
            if op.pools_dirty is not None:
                op.pools_dirty.set()

    while True:
        try:
            pods.clear()
            cont: str | None = None
            while True:  # one consistent list, in pages
                paging: dict[str, Any] = {"_continue": cont} if cont else {}
                response = await core.list_pod_for_all_namespaces(
                    field_selector=FIELD_SELECTOR, limit=500, _preload_content=False, **paging
                )
                page = await read_json(response)
                for pod in page.get("items") or ():
                    proj = _projection(pod)
                    if proj is not None:
                        pods[proj[0]] = proj[1]
                meta = page.get("metadata") or {}
                cont = meta.get("continue")
                version = str(meta.get("resourceVersion") or "")
                if not cont:
                    break
            publish()
            backoff = 1.0
            while True:  # watch from there until the server ends the stream; then watch again
                version = await _watch(core, version, pods, publish)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # 410 Gone, a dropped connection, the API server restarting
            log.info(
                "watching the pods outside the watched namespaces: %s; listing again in %g s", exc, backoff
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


async def _watch(
    core: Any, version: str, pods: dict[str, tuple[str, str, int]], publish: Callable[[], None]
) -> str:
    response = await core.list_pod_for_all_namespaces(
        field_selector=FIELD_SELECTOR,
        watch=True,
        resource_version=version,
        allow_watch_bookmarks=True,
        timeout_seconds=300,
        _preload_content=False,
    )
    async with response:
        if response.status != 200:
            raise RuntimeError(f"watch answered {response.status}")
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                uid = str((obj.get("metadata") or {}).get("uid"))
                proj = None if kind == "DELETED" else _projection(obj)
                if proj is None:
                    pods.pop(uid, None)
                else:
                    pods[uid] = proj[1]
                publish()
    return version
