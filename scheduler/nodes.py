"""Nodes → pools: the one rule set of ``hetsched plan --nodes`` and of the operator.

Both start from Node objects (a ``kubectl get nodes -o yaml`` file; the operator's live nodes),
project each to the few fields placement needs (:func:`project_node`), group the projections into
pools (:func:`group_pools`) and turn a pool with its resolved hardware and price into the planner's
``Pool`` (:func:`pool_from_live`). The hardware and price are resolved by the caller: the CLI from
the nodes' labels and custom hardware entries (:func:`cluster_from_nodes`), the operator from
AcceleratorProfiles first (``operator/pools/profiles.py``); both read the price label through
:func:`label_price`. The rules:

* a node belongs to the pool of its ``hetsched.io/pool`` label; without it, a node with the GPU
  Feature Discovery label ``nvidia.com/gpu.product`` belongs to the pool ``gpu-<product slug>``
  (selected by that label; its pods avoid labelled nodes); nodes with neither are not hetsched's
  and are ignored;
* cordoned (``spec.unschedulable``) and NotReady nodes do not count (no Ready condition at all
  counts as NotReady); a pool whose nodes are all cordoned or NotReady is not offered to the
  planner, and one whose hardware is unknown is unavailable (reason ``hardware-unknown``);
* devices of a GPU node = its allocatable device resources (``nvidia.com/gpu``, ``amd.com/gpu``, ...:
  the engine registry's vendors); a CPU pool (no node with
  allocatable GPUs) has one device per socket: the ``hetsched.io/devices-per-node`` label,
  default 1 — a "device" of a CPU hardware entry is one socket, and a replica does not span nodes;
* devices per node of a pool (the largest TP degree) = the most common value among its nodes; the
  capacity counts each node's own devices (a 6-device node holds one 4-device replica, not 1.5);
* the price: an explicit one (CLI ``prices``, an AcceleratorProfile), else the nodes'
  ``hetsched.io/price-per-device-hour`` label, else the catalog price. A label that is not a number
  is an error (``label_price``: the CLI fails, the operator refuses the pool with reason
  ``price-invalid``), never silently the catalog price.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.engines.platform import PoolServing
from hetsched.scheduler.engines.registry import registry
from hetsched.scheduler.pools import (
    DEVICES_LABEL,
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    HARDWARE_LABEL,
    HARDWARE_UNKNOWN,
    POOL_LABEL,
    PRICE_LABEL,
    Cluster,
    Pool,
    Taint,
    UnavailablePool,
    network_bandwidths,
    resolve_hardware,
)
from hetsched.scheduler.units import kube_quantity

PRODUCT_POOL_PREFIX = "gpu-"
# Taints the node lifecycle controller sets on NotReady/unreachable/cordoned nodes: not the pool's own.
SYSTEM_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource.Quantity ("500m", "2Ti", "8") as a float; bad input is 0."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(kube_quantity(str(value).strip()))
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

    Kept small on purpose: the operator's index of 1,000 nodes holds 1,000 of these. A price label
    that is not a number is kept as ``badPrice`` (only then), so that the pool can be refused.
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
    price: float | None = None
    bad_price: str | None = None
    if PRICE_LABEL in labels:
        try:
            price = float(labels[PRICE_LABEL])
        except ValueError:
            bad_price = str(labels[PRICE_LABEL])
    out = {
        "name": name,
        "pool": pool or product_pool_name(product or ""),
        "byLabel": bool(pool),
        "product": product or "",
        "hardware": labels.get(HARDWARE_LABEL, ""),
        "price": price,
        "gpus": int(sum(parse_quantity(alloc.get(r)) for r in registry().device_resources())),
        "devicesLabel": devices_label,
        "gpuMemoryMiB": int(gpu_memory_mib) if gpu_memory_mib and gpu_memory_mib.isdigit() else 0,
        "cpu": parse_quantity(alloc.get("cpu")),
        "memory": parse_quantity(alloc.get("memory")),
        "ready": conditions.get("Ready") == "True",
        "unschedulable": bool(spec.get("unschedulable")),
        "taints": sorted(taints, key=lambda t: (t["key"], t["effect"], t["value"])),
    }
    if bad_price is not None:
        out["badPrice"] = bad_price
    return out


@dataclass(frozen=True, slots=True)
class LivePool:
    """A pool as observed from its nodes: its schedulable nodes and the devices on them."""

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
    bad_price_label: str | None = None  # a price label of its nodes that is not a number

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
        product = most_common([str(n["product"]) for n in basis if n["product"]]) or ""
        gpu = any(int(n["gpus"]) > 0 for n in basis)
        if gpu:
            per_node = most_common([int(n["gpus"]) for n in basis if int(n["gpus"]) > 0]) or 0
        else:
            per_node = most_common([max(1, int(n.get("devicesLabel", 0) or 0)) for n in basis]) or 1
        taint_sets = [frozenset((t["key"], t["value"], t["effect"]) for t in n["taints"]) for n in basis]
        union: set[tuple[str, str, str]] = set().union(*taint_sets) if taint_sets else set()
        selector = {POOL_LABEL: name} if by_label else {GPU_PRODUCT_LABEL: product}
        pools.append(
            LivePool(
                name=name,
                node_selector=selector,
                by_label=by_label,
                gpu_product=product,
                hardware_hint=most_common([str(n["hardware"]) for n in basis if n["hardware"]]) or "",
                gpu=gpu,
                nodes=len(usable),
                devices_per_node=per_node,
                total_nodes=len(members),
                not_ready=tuple(str(n["name"]) for n in members if not n["ready"]),
                cordoned=tuple(str(n["name"]) for n in members if n["unschedulable"]),
                cpu_per_node=most_common([float(n["cpu"]) for n in basis]) or 0.0,
                memory_per_node=most_common([float(n["memory"]) for n in basis]) or 0.0,
                gpu_memory_mib=most_common([int(n.get("gpuMemoryMiB", 0) or 0) for n in basis]) or 0,
                taints=tuple(sorted(union)),
                node_names=tuple(str(n["name"]) for n in usable),
                node_devices=tuple(
                    int(n["gpus"]) if gpu else max(1, int(n.get("devicesLabel", 0) or 0)) for n in usable
                ),
                price_label=most_common([float(n["price"]) for n in basis if n.get("price") is not None]),
                bad_price_label=most_common([str(n["badPrice"]) for n in basis if n.get("badPrice")]),
            )
        )
    return pools


def most_common(values: list[Any]) -> Any:
    """The most frequent value (ties: the first in string order); None for no values."""
    if not values:
        return None
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(sorted(counts, key=str), key=lambda v: counts[v])


def label_price(pool: LivePool) -> float | None:
    """The price per device-hour the nodes' ``hetsched.io/price-per-device-hour`` label gives (None:
    no label). ValueError when a node's label is not a number: planning on the catalog price
    instead would be a wrong number nobody asked for."""
    if pool.bad_price_label is not None:
        raise ValueError(f"pool {pool.name}: {PRICE_LABEL}={pool.bad_price_label!r} is not a number")
    return pool.price_label


def pool_from_live(
    live: LivePool, hardware: HardwareSpec, price: float, used: int = 0, serving: PoolServing | None = None
) -> Pool | None:
    """The planner's Pool of an observed pool with its hardware and price, ``used`` devices taken;
    None when none of its nodes is Ready and schedulable (the pool is not offered)."""
    if live.nodes == 0:
        return None
    return Pool(
        name=live.name,
        hardware=hardware,
        nodes=live.nodes,
        devices_per_node=live.devices_per_node,
        free_devices=max(0, live.devices - int(used)),
        price_per_device_hour=price,
        node_selector=dict(live.node_selector),
        taints=tuple(Taint(key=k, value=v, effect=e) for k, v, e in live.taints),
        node_devices=live.node_devices,
        node_cpu=live.cpu_per_node,
        node_memory=live.memory_per_node,
        serving=serving,
    )


# ---- node lists (hetsched plan --nodes) -------------------------------------------------------------
def node_items(doc: Any) -> list[Mapping[str, Any]]:
    """The Nodes of a parsed document: a Node, a NodeList/List with items, or a list of Nodes."""
    if isinstance(doc, list):
        items: list[Any] = doc
    elif isinstance(doc, Mapping) and doc.get("kind") == "Node":
        items = [doc]
    elif isinstance(doc, Mapping) and isinstance(doc.get("items"), list):
        items = doc["items"]
    else:
        raise ValueError("expected a Node, a NodeList/List with items, or a list of Nodes")
    return [i for i in items if isinstance(i, Mapping) and i.get("kind", "Node") == "Node"]


def project_nodes(node_list_doc: Any) -> list[dict[str, Any]]:
    """:func:`project_node` of every Node of a parsed document (those in no pool left out)."""
    out = []
    for item in node_items(node_list_doc):
        meta = item.get("metadata") or {}
        proj = project_node(
            str(meta.get("name") or ""),
            meta.get("labels") or {},
            item.get("spec") or {},
            item.get("status") or {},
        )
        if proj is not None:
            out.append(proj)
    return out


def cluster_from_nodes(
    node_list_doc: Any,
    *,
    custom_hardware: Mapping[str, HardwareSpec] | None = None,
    prices: Mapping[str, float] | None = None,
    used_devices: Mapping[str, int] | None = None,
    network_bandwidth_gbps: Mapping[str, float] | None = None,
) -> Cluster:
    """A Cluster from ``kubectl get nodes -o yaml`` output (parsed), grouped into pools.

    See the module docstring for the rules. Hardware: the pool's ``hetsched.io/hardware`` label (a
    catalog key or a ``custom_hardware`` entry), else the GFD product mapping of the hardware
    catalog. Price: ``prices`` by pool name, else :func:`label_price`, else the catalog price. All
    devices are free (the plan is for the whole cluster) unless ``used_devices`` says otherwise.
    """
    custom = dict(custom_hardware or {})
    prices = prices or {}
    used = used_devices or {}
    pools: list[Pool] = []
    unavailable: list[UnavailablePool] = []
    for live in group_pools(project_nodes(node_list_doc)):
        hw, why = resolve_hardware(
            live.hardware_hint or None, gpu_product=live.gpu_product or None, custom=custom
        )
        if hw is None:
            unavailable.append(UnavailablePool(live.name, HARDWARE_UNKNOWN, why, live.devices))
            continue
        price = prices.get(live.name)
        if price is None:
            price = label_price(live)
        pool = pool_from_live(live, hw, hw.price_per_hour if price is None else price, used.get(live.name, 0))
        if pool is not None:
            pools.append(pool)
    pairs, default = network_bandwidths(network_bandwidth_gbps or {}, [p.name for p in pools])
    return Cluster(tuple(pools), pairs, default, tuple(unavailable))


def load_nodes(path: str | Path) -> Any:
    """Parse a ``kubectl get nodes -o yaml`` (or json) file."""
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if len(docs) == 1:
        return docs[0]
    items: list[Any] = []
    for d in docs:
        items.extend(node_items(d))
    return items
