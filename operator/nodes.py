"""Live node pools: small projections of Nodes, grouped into pools, and their fingerprint.

Pure functions: the Kopf node index (``handlers.py``) stores :func:`project_node` results; the
planner glue (``planning.py``) turns :func:`group_pools` results into the scheduler's ``Cluster``.

A node belongs to the pool named by its ``hetsched.io/pool`` label; a node without it but with the
GPU Feature Discovery label ``nvidia.com/gpu.product`` belongs to a pool named after the product
(``gpu-nvidia-h100-80gb-hbm3``) whose pods select the product label and avoid labelled nodes.
Nodes with neither are not hetsched's and are ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

POOL_LABEL = "hetsched.io/pool"
HARDWARE_LABEL = "hetsched.io/hardware"
DEVICES_LABEL = "hetsched.io/devices-per-node"  # CPU pools: sockets per node (default 1)
PRICE_LABEL = "hetsched.io/price-per-device-hour"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_POOL_PREFIX = "gpu-"
# Taints the node lifecycle controller sets on NotReady/unreachable/cordoned nodes: not the pool's own.
SYSTEM_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource.Quantity ("500m", "2Ti", "8") as a float; bad input is 0."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(2) not in _SUFFIX:
        return 0.0
    try:
        return float(m.group(1)) * _SUFFIX[m.group(2)]
    except ValueError:
        return 0.0


def product_pool_name(product: str) -> str:
    """A DNS-label pool name for a GPU product: ``NVIDIA-H100-80GB-HBM3`` → ``gpu-nvidia-h100-80gb-hbm3``."""
    slug = re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-")
    return (PRODUCT_POOL_PREFIX + slug)[:63].rstrip("-")


def project_node(
    name: str, labels: Mapping[str, str], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The few fields of a Node that placement needs (None: not in any pool).

    Kept small on purpose: an index of 1,000 nodes holds 1,000 of these.
    """
    pool = labels.get(POOL_LABEL)
    product = labels.get(GPU_PRODUCT_LABEL)
    if not pool and not product:
        return None
    alloc = status.get("allocatable") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    taints = [
        {"key": t.get("key", ""), "value": t.get("value") or "", "effect": t.get("effect", "NoSchedule")}
        for t in spec.get("taints") or []
        if not str(t.get("key", "")).startswith(SYSTEM_TAINT_PREFIXES)
    ]
    try:
        devices_label = int(labels.get(DEVICES_LABEL, "0"))
    except ValueError:
        devices_label = 0
    gpu_memory_mib = labels.get(GPU_MEMORY_LABEL)
    try:
        price = float(labels[PRICE_LABEL]) if PRICE_LABEL in labels else None
    except ValueError:
        price = None
    return {
        "name": name,
        "pool": pool or product_pool_name(product or ""),
        "byLabel": bool(pool),
        "product": product or "",
        "hardware": labels.get(HARDWARE_LABEL, ""),
        "price": price,
        "gpus": int(parse_quantity(alloc.get(GPU_RESOURCE))),
        "devicesLabel": devices_label,
        "gpuMemoryMiB": int(gpu_memory_mib) if gpu_memory_mib and gpu_memory_mib.isdigit() else 0,
        "cpu": parse_quantity(alloc.get("cpu")),
        "memory": parse_quantity(alloc.get("memory")),
        "ready": conditions.get("Ready") == "True",
        "unschedulable": bool(spec.get("unschedulable")),
        "taints": sorted(taints, key=lambda t: (t["key"], t["effect"], t["value"])),
    }


@dataclass(frozen=True, slots=True)
class LivePool:
    """A pool as observed: its schedulable nodes and the devices on them."""

    name: str
    node_selector: dict[str, str]
    by_label: bool
    gpu_product: str
    hardware_hint: str  # hetsched.io/hardware label of its nodes ("" when absent)
    gpu: bool
    nodes: int  # Ready and schedulable
    devices_per_node: int
    total_nodes: int
    not_ready: tuple[str, ...]
    cordoned: tuple[str, ...]
    cpu_per_node: float
    memory_per_node: float  # bytes
    gpu_memory_mib: int
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect) of every schedulable node
    node_names: tuple[str, ...] = field(default=())
    price_label: float | None = None  # hetsched.io/price-per-device-hour of its nodes
    node_devices: tuple[int, ...] = field(default=())  # devices of each Ready, schedulable node

    @property
    def devices(self) -> int:
        if self.node_devices:
            return sum(self.node_devices)
        return self.nodes * self.devices_per_node

    @property
    def memory_bytes(self) -> float:
        return self.nodes * self.memory_per_node

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodeSelector": dict(self.node_selector),
            "source": "label" if self.by_label else "gpu-product",
            "gpuProduct": self.gpu_product or None,
            "hardwareLabel": self.hardware_hint or None,
            "gpu": self.gpu,
            "nodes": self.nodes,
            "totalNodes": self.total_nodes,
            "devicesPerNode": self.devices_per_node,
            "devices": self.devices,
            "notReady": list(self.not_ready),
            "cordoned": list(self.cordoned),
            "cpuPerNode": self.cpu_per_node,
            "memoryPerNodeBytes": self.memory_per_node,
            "taints": [{"key": k, "value": v, "effect": e} for k, v, e in self.taints],
        }


def group_pools(nodes: Iterable[Mapping[str, Any]]) -> list[LivePool]:
    """Group node projections into pools (sorted by name).

    Only Ready, schedulable nodes count towards capacity; a pool whose nodes are all NotReady or
    cordoned is kept with ``nodes == 0`` (so a placement on it reads as "pool lost", not "unknown").
    Devices per node (which bounds the TP degree) is the most common value among schedulable
    nodes; the capacity counts each node's own devices, so a node of another size is not miscounted.
    """
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for n in nodes:
        groups[str(n["pool"])].append(n)
    pools = []
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda n: str(n["name"]))
        usable = [n for n in members if n["ready"] and not n["unschedulable"]]
        basis = usable or members
        by_label = any(n["byLabel"] for n in members)
        product = _most_common([str(n["product"]) for n in basis if n["product"]]) or ""
        gpu = any(int(n["gpus"]) > 0 for n in basis)
        if gpu:
            per_node = _most_common([int(n["gpus"]) for n in basis if int(n["gpus"]) > 0]) or 0
        else:
            per_node = _most_common([max(1, int(n.get("devicesLabel", 0) or 0)) for n in basis]) or 1
        taint_sets = [frozenset((t["key"], t["value"], t["effect"]) for t in n["taints"]) for n in basis]
        union: set[tuple[str, str, str]] = set().union(*taint_sets) if taint_sets else set()
        selector = {POOL_LABEL: name} if by_label else {GPU_PRODUCT_LABEL: product}
        pools.append(
            LivePool(
                name=name,
                node_selector=selector,
                by_label=by_label,
                gpu_product=product,
                hardware_hint=_most_common([str(n["hardware"]) for n in basis if n["hardware"]]) or "",
                gpu=gpu,
                nodes=len(usable),
                devices_per_node=per_node,
                total_nodes=len(members),
                not_ready=tuple(str(n["name"]) for n in members if not n["ready"]),
                cordoned=tuple(str(n["name"]) for n in members if n["unschedulable"]),
                cpu_per_node=_most_common([float(n["cpu"]) for n in basis]) or 0.0,
                memory_per_node=_most_common([float(n["memory"]) for n in basis]) or 0.0,
                gpu_memory_mib=_most_common([int(n.get("gpuMemoryMiB", 0) or 0) for n in basis]) or 0,
                taints=tuple(sorted(union)),
                node_names=tuple(str(n["name"]) for n in usable),
                node_devices=tuple(
                    int(n["gpus"]) if gpu else max(1, int(n.get("devicesLabel", 0) or 0)) for n in usable
                ),
                price_label=_most_common([float(n["price"]) for n in basis if n.get("price") is not None]),
            )
        )
    return pools


def _most_common(values: list[Any]) -> Any:
    if not values:
        return None
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(sorted(counts, key=str), key=lambda v: counts[v])


def fingerprint(pools: Iterable[LivePool], extra: Any = None) -> str:
    """A short hash of what placement depends on: pools, their usable devices, hardware and taints.

    Node names are left out on purpose: replacing a node by an identical one changes nothing.
    """
    doc = [
        [
            p.name,
            p.node_selector,
            p.gpu_product,
            p.hardware_hint,
            p.gpu,
            p.nodes,
            p.devices_per_node,
            sorted(p.node_devices),
            p.taints,
            p.price_label,
        ]
        for p in pools
    ]
    raw = json.dumps([doc, extra], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def is_full_disruption(projections: Sequence[Mapping[str, Any]]) -> bool:
    """Every node NotReady (and there is at least one)."""
    return bool(projections) and not any(p["ready"] for p in projections)


def apply_not_ready_grace(
    projections: Iterable[Mapping[str, Any]],
    not_ready_since: dict[str, float],
    now: float,
    grace: float,
) -> tuple[list[dict[str, Any]], float | None]:
    """Count a NotReady node as Ready until it has been NotReady for ``grace`` seconds.

    A heartbeat blip must not move every workload off a pool; a node that stays NotReady does.
    ``not_ready_since`` (node name → first time seen NotReady) is updated in place. Returns the
    adjusted projections and, if some node is inside its grace period, the seconds until the
    earliest one expires (when the caller should look again). Cordoning is an explicit decision
    and takes effect at once.

    When every node is NotReady at once, that is a control-plane or network disruption (after an
    API-server or etcd outage nobody could renew the node Leases), not lost hardware: the node
    lifecycle controller stops evicting in that state, and here every node keeps counting, with
    the grace clocks restarted, so the workloads keep their placement. Re-planning could not move
    them anywhere anyway; it would only remove their children.
    """
    nodes = list(projections)
    if is_full_disruption(nodes):
        not_ready_since.clear()
        return [{**p, "ready": True} for p in nodes], None
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    next_check: float | None = None
    for proj in nodes:
        p = dict(proj)
        name = str(p["name"])
        seen.add(name)
        if p["ready"]:
            not_ready_since.pop(name, None)
        else:
            since = not_ready_since.setdefault(name, now)
            left = since + grace - now
            if left > 0:
                p["ready"] = True
                next_check = left if next_check is None else min(next_check, left)
        out.append(p)
    for name in [n for n in not_ready_since if n not in seen]:
        del not_ready_since[name]
    return out, next_check
