"""Fake KWOK Nodes built from a pools file (``examples/pools/*.yaml``).

The file format itself is ``hetsched.scheduler.pools.PoolFile`` (shared with ``plan --pools``;
documented in ``docs/pools.md``). This module adds the checks that only matter for creating real
Node objects, and builds the Node manifests. Everything here is pure.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.pools import (
    DEVICES_LABEL,
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    HARDWARE_LABEL,
    POOL_LABEL,
    PRICE_LABEL,
    PoolEntry,
    PoolFile,
    parse_pool_file,
)

__all__ = [
    "PoolEntry",
    "PoolFile",
    "check_for_cluster",
    "load_pools",
    "node_list",
    "node_manifest",
    "node_manifests",
    "node_name",
    "node_names",
    "parse_pools",
    "price_label_value",
]

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
MAX_PODS_PER_NODE = "110"  # the kubelet's default --max-pods

# Kubernetes resource.Quantity, e.g. "192", "500m", "2Ti", "1.5e3".
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
# Node names double as the kubernetes.io/hostname label value, which is at most 63 characters.
_MAX_LABEL_VALUE = 63


def price_label_value(price: float) -> str:
    """``pricePerDeviceHour`` as a label value the operator parses back to the same float:
    plain decimal notation, no exponent or sign (label values allow only ``[-A-Za-z0-9_.]``),
    e.g. 4.25 → "4.25", 3.0 → "3", 1e-05 → "0.00001"."""
    text = format(Decimal(repr(float(price))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def node_name(pool: str, index: int) -> str:
    return f"{pool}-{index}"


def node_names(pool: PoolEntry) -> list[str]:
    return [node_name(pool.name, i) for i in range(pool.nodes)]


def check_for_cluster(pools: PoolFile, source: str = "pools file") -> PoolFile:
    """Checks beyond the shared format that a real Node needs; ValueError naming each bad field."""
    problems: list[str] = []
    for i, pool in enumerate(pools.pools):
        where = f"pools.{i} ({pool.name})"
        for field, value in (("nodeCpu", pool.node_cpu), ("nodeMemory", pool.node_memory)):
            if not _QUANTITY.match(value):
                problems.append(
                    f"{where}.{field}: {value!r} is not a Kubernetes quantity (e.g. 192, 500m, 2Ti)"
                )
        if pool.nodes and len(node_name(pool.name, pool.nodes - 1)) > _MAX_LABEL_VALUE:
            problems.append(f"{where}.name: too long for node names '<name>-<index>' (63 characters at most)")
        if pool.gpu_memory_mib is not None and pool.gpu_product is None:
            problems.append(f"{where}.gpuMemoryMiB: only meaningful with gpuProduct (a GPU pool)")
        price = pool.price_per_device_hour
        if price is not None and (
            not math.isfinite(price) or len(price_label_value(price)) > _MAX_LABEL_VALUE
        ):
            problems.append(f"{where}.pricePerDeviceHour: {price!r} does not fit a node label")
        for key, value in pool.labels.items():
            if len(value) > _MAX_LABEL_VALUE:
                problems.append(f"{where}.labels.{key}: label values are at most 63 characters")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return pools


def parse_pools(data: Any, source: str = "pools file") -> PoolFile:
    """Validate parsed YAML (shared format + cluster checks)."""
    return check_for_cluster(parse_pool_file(data, source), source)


def load_pools(path: str | Path) -> PoolFile:
    """Read and validate a pools YAML file for the local cluster."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return parse_pools(data, str(path))


def node_manifest(pool: PoolEntry, index: int) -> dict[str, Any]:
    """A KWOK-managed Node, labelled as NVIDIA GPU Feature Discovery would label a real one.

    ``nodeCpu``/``nodeMemory`` are what pods may use; capacity equals allocatable (no system
    reservation to model). KWOK keeps the capacity we set and reports the node Ready. The
    operator's own labels: ``hetsched.io/price-per-device-hour`` when the pool gives
    ``pricePerDeviceHour``, and on CPU pools ``hetsched.io/devices-per-node`` (sockets per node,
    ``devicesPerNode``; GPU pools count ``nvidia.com/gpu`` instead).
    """
    name = node_name(pool.name, index)
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
        HARDWARE_LABEL: pool.hardware,
    }
    if pool.price_per_device_hour is not None:
        labels[PRICE_LABEL] = price_label_value(pool.price_per_device_hour)
    resources = {
        "cpu": pool.node_cpu,
        "memory": pool.node_memory,
        "pods": MAX_PODS_PER_NODE,
        "ephemeral-storage": "1Ti",
    }
    if pool.gpu_product is not None:
        labels |= {
            "nvidia.com/gpu.present": "true",
            GPU_PRODUCT_LABEL: pool.gpu_product,
            "nvidia.com/gpu.count": str(pool.devices_per_node),
        }
        if pool.gpu_memory_mib is not None:
            labels[GPU_MEMORY_LABEL] = str(pool.gpu_memory_mib)
        resources[GPU_RESOURCE] = str(pool.devices_per_node)
    else:
        labels[DEVICES_LABEL] = str(pool.devices_per_node)
    labels |= pool.labels  # extra labels last, so a pool file can override
    spec: dict[str, Any] = {}
    if pool.taints:
        spec["taints"] = [
            {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})} for t in pool.taints
        ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            # KWOK fills in the rest: nodeInfo (kubeletVersion "kwok-<version>"), addresses, conditions.
        },
    }


def node_manifests(pools: PoolFile) -> list[dict[str, Any]]:
    """Every node of every pool, in file order."""
    return [node_manifest(pool, i) for pool in pools.pools for i in range(pool.nodes)]


def node_list(pools: PoolFile) -> dict[str, Any]:
    """The nodes as one ``v1/List`` (what ``kubectl apply -f -`` takes)."""
    return {"apiVersion": "v1", "kind": "List", "items": node_manifests(pools)}
