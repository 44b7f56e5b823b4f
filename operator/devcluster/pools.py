"""Node pools file (``examples/pools/*.yaml``) and the fake Node manifests built from it.

The same file is read by the placement engine (``hetsched plan --pools``); the format is
documented in ``docs/pools.md``. Everything here is pure: parsing, validation, manifests.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

POOL_LABEL = "hetsched.io/pool"
HARDWARE_LABEL = "hetsched.io/hardware"
GPU_RESOURCE = "nvidia.com/gpu"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
MAX_PODS_PER_NODE = "110"  # the kubelet's default --max-pods

# Kubernetes resource.Quantity, e.g. "192", "500m", "2Ti", "1.5e3".
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
# A DNS-1123 label: pool names become part of node names and label values.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Node names are "<pool>-<index>" and must also fit a label value (kubernetes.io/hostname): 63 chars.
_MAX_POOL_NAME = 56


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1)
    value: str = ""
    effect: TaintEffect


class Pool(BaseModel):
    """One homogeneous node pool: ``nodes`` identical nodes of ``devicesPerNode`` devices."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(description="pool name; label hetsched.io/pool and node name prefix")
    hardware: str = Field(min_length=1, description="hardware catalog key, e.g. h100-sxm")
    nodes: int = Field(ge=1, description="number of nodes")
    devices_per_node: int = Field(
        alias="devicesPerNode", ge=0, description="GPUs per node (CPU pools: sockets per node)"
    )
    price_per_device_hour: float | None = Field(default=None, alias="pricePerDeviceHour", ge=0)
    node_cpu: str = Field(alias="nodeCpu", description="allocatable CPU per node, a Kubernetes quantity")
    node_memory: str = Field(alias="nodeMemory", description="allocatable memory per node, e.g. 2Ti")
    gpu_product: str | None = Field(default=None, alias="gpuProduct", description="nvidia.com/gpu.product")
    gpu_memory_mib: int | None = Field(default=None, alias="gpuMemoryMiB", gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > _MAX_POOL_NAME:
            raise ValueError(
                f"{value!r} must be lower-case letters, digits and '-' (a DNS label), "
                f"at most {_MAX_POOL_NAME} characters"
            )
        return value

    @field_validator("node_cpu", "node_memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> str:
        # YAML gives 192 as an int; Kubernetes wants the string "192".
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("must be a Kubernetes quantity such as 192, 500m or 2Ti")
        text = str(value)
        if not _QUANTITY.match(text):
            raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 192, 500m, 2Ti)")
        return text

    @model_validator(mode="after")
    def _gpu_fields_together(self) -> Pool:
        if self.gpu_product is not None:
            if self.devices_per_node < 1:
                raise ValueError("devicesPerNode must be at least 1 for a GPU pool (gpuProduct is set)")
            if self.gpu_memory_mib is None:
                raise ValueError("gpuMemoryMiB is required when gpuProduct is set")
        elif self.gpu_memory_mib is not None:
            raise ValueError("gpuMemoryMiB is only meaningful with gpuProduct (a GPU pool)")
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpu_product is not None

    def node_names(self) -> list[str]:
        return [node_name(self.name, i) for i in range(self.nodes)]


class PoolsFile(BaseModel):
    """The whole file: the pools and, optionally, inter-pool network bandwidth for KV transfer."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    pools: tuple[Pool, ...] = Field(min_length=1)
    network_bandwidth_gbps: dict[str, float] | None = Field(default=None, alias="networkBandwidthGBps")

    @field_validator("network_bandwidth_gbps")
    @classmethod
    def _positive_bandwidth(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, gbps in (value or {}).items():
            if gbps <= 0:
                raise ValueError(f"{key}: bandwidth must be positive, got {gbps}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> PoolsFile:
        seen: set[str] = set()
        for pool in self.pools:
            if pool.name in seen:
                raise ValueError(f"pool name {pool.name!r} is used twice")
            seen.add(pool.name)
        return self

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """``("pools", 2, "devicesPerNode")`` -> ``pools[2] (t4).devicesPerNode``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            if isinstance(node, list) and part < len(node):
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    out += f" ({node['name']})"
            continue
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out


def parse_pools(data: Any, source: str = "pools file") -> PoolsFile:
    """Validate parsed YAML; errors are a ValueError naming the file and each bad field."""
    try:
        return PoolsFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = _field_path(tuple(error["loc"]), data) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message}")
        raise ValueError(f"{source}: invalid pools file\n" + "\n".join(lines)) from None


def load_pools(path: str | Path) -> PoolsFile:
    """Read and validate a pools YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return parse_pools(data, str(path))


def node_name(pool: str, index: int) -> str:
    return f"{pool}-{index}"


def node_manifest(pool: Pool, index: int) -> dict[str, Any]:
    """A KWOK-managed Node as a GPU node with GPU Feature Discovery would look.

    Capacity equals allocatable (``nodeCpu``/``nodeMemory`` are what pods can use); KWOK keeps the
    status we set and reports the node Ready.
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
    resources = {
        "cpu": pool.node_cpu,
        "memory": pool.node_memory,
        "pods": MAX_PODS_PER_NODE,
        "ephemeral-storage": "1Ti",
    }
    if pool.is_gpu:
        assert pool.gpu_product is not None and pool.gpu_memory_mib is not None  # validated
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": pool.gpu_product,
                "nvidia.com/gpu.count": str(pool.devices_per_node),
                "nvidia.com/gpu.memory": str(pool.gpu_memory_mib),
            }
        )
        resources[GPU_RESOURCE] = str(pool.devices_per_node)
    labels.update(pool.labels)  # extra labels last, so a pool file can override
    spec: dict[str, Any] = {}
    if pool.taints:
        spec["taints"] = [
            {"key": t.key, "effect": t.effect.value, **({"value": t.value} if t.value else {})}
            for t in pool.taints
        ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            # KWOK fills in the rest (kubeletVersion "kwok-<version>", addresses, conditions).
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def node_manifests(pools: PoolsFile) -> list[dict[str, Any]]:
    """Every node of every pool, in file order."""
    return [node_manifest(pool, i) for pool in pools.pools for i in range(pool.nodes)]


def node_list(pools: PoolsFile) -> dict[str, Any]:
    """The nodes as one ``v1/List`` (what ``kubectl apply -f -`` takes)."""
    return {"apiVersion": "v1", "kind": "List", "items": node_manifests(pools)}
