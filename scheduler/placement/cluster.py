"""The cluster the planner places onto: from a pool file, or from ``kubectl get nodes -o yaml``.

Pools whose hardware cannot be resolved are kept in ``Cluster.unavailable`` with reason
``hardware-unknown``, so that every workload's rejections name them.

Node lists (``cluster_from_nodes``) follow the operator's conventions (``operator/nodes.py``):

* a node belongs to the pool of its ``hetsched.io/pool`` label; without it, a node with the GPU
  Feature Discovery label ``nvidia.com/gpu.product`` belongs to the pool ``gpu-<product slug>``
  (selected by that label); nodes with neither are not hetsched's and are ignored;
* cordoned (``spec.unschedulable``) and NotReady nodes are skipped (no Ready condition at all
  counts as NotReady);
* devices of a GPU node = its allocatable ``nvidia.com/gpu``; a CPU node (no allocatable GPUs)
  has one device per socket: the ``hetsched.io/devices-per-node`` label, default 1 — a
  "device" of a CPU hardware entry is one socket, and a replica does not span nodes;
* devices per node of a pool (the largest TP degree) = the most common value among its nodes; the
  capacity counts each node's own devices (a replica's devices sit on one node: a 6-device node
  holds one 4-device replica, not 1.5); all devices are free (the plan is for the whole cluster)
  unless ``used_devices`` says otherwise;
* hardware: the pool's ``hetsched.io/hardware`` label when present (a catalog key or a custom
  entry), else the GFD product mapping of the hardware catalog; price: ``prices`` by pool name,
  else the ``hetsched.io/price-per-device-hour`` label, else the catalog price.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.placement import catalogs
from hetsched.scheduler.pools import (
    DEFAULT_NETWORK_GBPS,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    POOL_LABEL,
    Cluster,
    Pool,
    PoolFile,
    Taint,
    UnavailablePool,
    parse_pool_file,
    read_pool_file,
)

HARDWARE_LABEL = "hetsched.io/hardware"
DEVICES_LABEL = "hetsched.io/devices-per-node"
PRICE_LABEL = "hetsched.io/price-per-device-hour"
PRODUCT_POOL_PREFIX = "gpu-"
HARDWARE_UNKNOWN = "hardware-unknown"
SYSTEM_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")
GB = 1e9


def product_pool_name(product: str) -> str:
    """``NVIDIA-H100-80GB-HBM3`` → ``gpu-nvidia-h100-80gb-hbm3`` (as operator/nodes.py names it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-")
    return (PRODUCT_POOL_PREFIX + slug)[:63].rstrip("-")


def _bandwidths(
    spec: Mapping[str, float], names: Iterable[str]
) -> tuple[dict[tuple[str, str], float], float]:
    known = set(names)
    default = DEFAULT_NETWORK_GBPS * GB
    pairs: dict[tuple[str, str], float] = {}
    for key, gbps in spec.items():
        if gbps <= 0:
            raise ValueError(f"networkBandwidthGBps.{key}: must be > 0, got {gbps}")
        if key == "default":
            default = gbps * GB
            continue
        parts = key.split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"networkBandwidthGBps.{key}: expected 'default' or '<pool>/<pool>'")
        a, b = parts
        for p in (a, b):
            if p not in known:
                raise ValueError(f"networkBandwidthGBps.{key}: no pool named {p!r}")
        pairs[(a, b) if a <= b else (b, a)] = gbps * GB
    return pairs, default


def resolve_hardware(
    key: str | None,
    *,
    gpu_product: str | None = None,
    custom: Mapping[str, HardwareSpec] | None = None,
) -> tuple[HardwareSpec | None, str]:
    """Hardware for a pool: custom entry or catalog key first, then the GFD product label.

    Returns (spec, "") or (None, a sentence saying what was tried and how to fix it).
    """
    custom = custom or {}
    if key:
        if key in custom:
            return custom[key], ""
        hw = catalogs.get_hardware(key)
        if hw is not None:
            return hw, ""
    if gpu_product:
        hw = catalogs.hardware_for_gfd_product(gpu_product)
        if hw is not None:
            return hw, ""
    tried = []
    if key:
        tried.append(f"hardware {key!r} is neither a catalog key nor a custom hardware entry")
    if gpu_product:
        tried.append(f"no catalog entry lists {GPU_PRODUCT_LABEL}={gpu_product}")
    if not tried:
        tried.append("no hardware key and no GPU product label")
    return None, "; ".join(
        tried
    ) + f" (label the nodes {HARDWARE_LABEL}=<catalog key> or add a hardware entry)"


def build_cluster(
    pool_file: PoolFile | Mapping[str, Any] | str | Path,
    *,
    custom_hardware: Mapping[str, HardwareSpec] | None = None,
) -> Cluster:
    """A Cluster from a pool file (parsed, as a dict, or a path).

    Hardware: the file's ``hardware:`` entries (custom hardware, by name) first, then the catalog.
    Price: ``pricePerDeviceHour`` when given, else the hardware's catalog price. Free devices:
    ``freeDevices`` when given, else all. Network: ``networkBandwidthGBps`` (GB/s), ``default`` for
    unlisted pairs (25 GB/s when absent); within a pool, the devices' own network.
    """
    if isinstance(pool_file, str | Path):
        pool_file = read_pool_file(pool_file)
    elif not isinstance(pool_file, PoolFile):
        pool_file = parse_pool_file(pool_file)
    custom = dict(custom_hardware or {})
    custom.update(catalogs.parse_custom_hardware(pool_file.hardware))
    pools: list[Pool] = []
    unavailable: list[UnavailablePool] = []
    for entry in pool_file.pools:
        hw, why = resolve_hardware(entry.hardware, gpu_product=entry.gpu_product, custom=custom)
        total = entry.nodes * entry.devices_per_node
        if hw is None:
            unavailable.append(UnavailablePool(entry.name, HARDWARE_UNKNOWN, why, total))
            continue
        selector = {POOL_LABEL: entry.name}
        pools.append(
            Pool(
                name=entry.name,
                hardware=hw,
                nodes=entry.nodes,
                devices_per_node=entry.devices_per_node,
                free_devices=total if entry.free_devices is None else entry.free_devices,
                price_per_device_hour=(
                    hw.price_per_hour if entry.price_per_device_hour is None else entry.price_per_device_hour
                ),
                node_selector=selector,
                taints=tuple(entry.taints),
            )
        )
    pairs, default = _bandwidths(pool_file.network_bandwidth_gbps, [p.name for p in pool_file.pools])
    return Cluster(tuple(pools), pairs, default, tuple(unavailable))


# ---- node lists -------------------------------------------------------------------------------
def _int(value: Any) -> int:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return 0


def _ready(status: Mapping[str, Any]) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _node_items(doc: Any) -> list[Mapping[str, Any]]:
    if isinstance(doc, list):
        items: list[Any] = doc
    elif isinstance(doc, Mapping) and doc.get("kind") == "Node":
        items = [doc]
    elif isinstance(doc, Mapping) and isinstance(doc.get("items"), list):
        items = doc["items"]
    else:
        raise ValueError("expected a Node, a NodeList/List with items, or a list of Nodes")
    return [i for i in items if isinstance(i, Mapping) and i.get("kind", "Node") == "Node"]


def cluster_from_nodes(
    node_list_doc: Any,
    *,
    custom_hardware: Mapping[str, HardwareSpec] | None = None,
    prices: Mapping[str, float] | None = None,
    used_devices: Mapping[str, int] | None = None,
    network_bandwidth_gbps: Mapping[str, float] | None = None,
) -> Cluster:
    """A Cluster from ``kubectl get nodes -o yaml`` output (parsed), grouped into pools.

    See the module docstring for the rules. A pool whose nodes are all skipped is left out; a pool
    whose hardware is unknown goes to ``Cluster.unavailable`` (reason ``hardware-unknown``).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    by_label: dict[str, bool] = {}
    for item in _node_items(node_list_doc):
        meta = item.get("metadata") or {}
        labels: Mapping[str, str] = meta.get("labels") or {}
        spec: Mapping[str, Any] = item.get("spec") or {}
        status: Mapping[str, Any] = item.get("status") or {}
        pool = labels.get(POOL_LABEL)
        product = labels.get(GPU_PRODUCT_LABEL)
        if not pool and not product:
            continue  # not hetsched's
        name = pool or product_pool_name(product or "")
        if spec.get("unschedulable") or not _ready(status):
            continue
        gpus = _int((status.get("allocatable") or {}).get(GPU_RESOURCE))
        devices = gpus if gpus > 0 else max(1, _int(labels.get(DEVICES_LABEL, 1)))
        taints = tuple(
            Taint(
                key=str(t.get("key")),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect", "NoSchedule")),
            )
            for t in spec.get("taints") or []
            if t.get("key") and not str(t.get("key")).startswith(SYSTEM_TAINT_PREFIXES)
        )
        groups.setdefault(name, []).append(
            {
                "devices": devices,
                "gpu": gpus > 0,
                "product": product or "",
                "hardware": labels.get(HARDWARE_LABEL, ""),
                "price": labels.get(PRICE_LABEL),
                "taints": taints,
            }
        )
        by_label[name] = by_label.get(name, False) or bool(pool)
    custom = dict(custom_hardware or {})
    prices = prices or {}
    used = used_devices or {}
    pools: list[Pool] = []
    unavailable: list[UnavailablePool] = []
    for name in sorted(groups):
        nodes = groups[name]
        per_node = Counter(n["devices"] for n in nodes).most_common(1)[0][0]
        total = sum(int(n["devices"]) for n in nodes)
        hardware_key = _most_common([n["hardware"] for n in nodes if n["hardware"]])
        product = _most_common([n["product"] for n in nodes if n["product"]])
        hw, why = resolve_hardware(hardware_key, gpu_product=product, custom=custom)
        if hw is None:
            unavailable.append(UnavailablePool(name, HARDWARE_UNKNOWN, why, total))
            continue
        price = prices.get(name)
        label_price = _most_common([n["price"] for n in nodes if n["price"]])
        if price is None and label_price:
            try:
                price = float(label_price)
            except ValueError:
                raise ValueError(f"pool {name}: {PRICE_LABEL}={label_price!r} is not a number") from None
        taint_set = sorted({t for n in nodes for t in n["taints"]}, key=lambda t: (t.key, t.effect, t.value))
        selector = {POOL_LABEL: name} if by_label[name] else {GPU_PRODUCT_LABEL: product or ""}
        pools.append(
            Pool(
                name=name,
                hardware=hw,
                nodes=len(nodes),
                devices_per_node=int(per_node),
                free_devices=max(0, total - int(used.get(name, 0))),
                price_per_device_hour=hw.price_per_hour if price is None else price,
                node_selector=selector,
                taints=tuple(taint_set),
                node_devices=tuple(int(n["devices"]) for n in nodes),
            )
        )
    pairs, default = _bandwidths(network_bandwidth_gbps or {}, [p.name for p in pools])
    return Cluster(tuple(pools), pairs, default, tuple(unavailable))


def _most_common(values: list[Any]) -> Any:
    if not values:
        return None
    counts = Counter(values)
    return max(sorted(counts, key=str), key=lambda v: counts[v])


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
        items.extend(_node_items(d))
    return items
