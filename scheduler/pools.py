"""Node pools: the pool file format (shared by `plan --pools` and the local cluster) and Pool objects.

A pool is a set of identical nodes: ``nodes`` × ``devicesPerNode`` devices of one hardware entry,
targeted by the node label ``hetsched.io/pool=<name>``. See docs/pools.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.catalog.hardware import HardwareSpec
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

POOL_LABEL = "hetsched.io/pool"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_NETWORK_GBPS = 25.0  # inter-pool bandwidth (GB/s) when a pool file gives none: 200 Gb/s NICs


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Taint(_Wire):
    key: str = Field(min_length=1)
    value: str = ""
    effect: str = "NoSchedule"

    @field_validator("effect")
    @classmethod
    def _effect(cls, v: str) -> str:
        if v not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError("effect must be NoSchedule, PreferNoSchedule or NoExecute")
        return v


class PoolEntry(_Wire):
    """One pool of a pool file."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    hardware: str = Field(min_length=1, description="hardware catalog key or a custom hardware name")
    nodes: int = Field(ge=0, le=100_000)
    devices_per_node: int = Field(ge=1, le=1024)
    free_devices: int | None = Field(default=None, ge=0, description="default: all devices are free")
    price_per_device_hour: float | None = Field(default=None, ge=0, description="default: the catalog price")
    node_cpu: str = "64"
    node_memory: str = "512Gi"
    gpu_product: str | None = None
    gpu_memory_mib: int | None = Field(
        default=None,
        ge=1,
        alias="gpuMemoryMiB",
        validation_alias=AliasChoices("gpuMemoryMiB", "gpuMemoryMib", "gpu_memory_mib"),
        description="nvidia.com/gpu.memory label value (MiB)",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _free(self) -> PoolEntry:
        if self.free_devices is not None and self.free_devices > self.nodes * self.devices_per_node:
            raise ValueError(
                f"freeDevices ({self.free_devices}) exceeds nodes × devicesPerNode "
                f"({self.nodes * self.devices_per_node})"
            )
        return self


class PoolFile(_Wire):
    pools: list[PoolEntry] = Field(min_length=1)
    network_bandwidth_gbps: dict[str, float] = Field(
        default_factory=dict,
        alias="networkBandwidthGBps",
        validation_alias=AliasChoices(
            "networkBandwidthGBps", "networkBandwidthGbps", "network_bandwidth_gbps"
        ),
        description="GB/s between pools: 'default', or 'a/b' for the pair a and b",
    )
    hardware: list[dict[str, Any]] = Field(default_factory=list, description="custom hardware entries")

    @model_validator(mode="after")
    def _unique(self) -> PoolFile:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pools: duplicate pool names {dupes}")
        return self


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool as the planner sees it."""

    name: str
    hardware: HardwareSpec
    nodes: int
    devices_per_node: int
    free_devices: int
    price_per_device_hour: float
    node_selector: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    @property
    def total_devices(self) -> int:
        return self.nodes * self.devices_per_node


@dataclass(frozen=True, slots=True)
class UnavailablePool:
    """A pool the planner cannot use, and why (e.g. its hardware is not in the catalog)."""

    name: str
    reason: str  # machine-readable, e.g. "hardware-unknown"
    detail: str
    devices: int = 0


@dataclass(frozen=True, slots=True)
class Cluster:
    pools: tuple[Pool, ...]
    network_bandwidth: dict[tuple[str, str], float]  # bytes/s, keyed by sorted pool pair
    default_network_bandwidth: float  # bytes/s
    unavailable: tuple[UnavailablePool, ...] = ()  # pools seen but not plannable (reported, not used)

    def pool(self, name: str) -> Pool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def bandwidth_between(self, a: str, b: str) -> float:
        """Bytes/s for KV transfer between pools (a == b: the devices' own network)."""
        key = (a, b) if a <= b else (b, a)
        if key in self.network_bandwidth:
            return self.network_bandwidth[key]
        if a == b:
            return float(self.pool(a).hardware.network_bandwidth)
        return min(
            self.default_network_bandwidth,
            float(self.pool(a).hardware.network_bandwidth),
            float(self.pool(b).hardware.network_bandwidth),
        )


def _format(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return f"{source}: " + "; ".join(parts)


def parse_pool_file(doc: Any, source: str = "<pools>") -> PoolFile:
    try:
        return PoolFile.model_validate(doc)
    except ValidationError as exc:
        raise ValueError(_format(exc, source)) from None


def read_pool_file(path: str | Path) -> PoolFile:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return parse_pool_file(doc, str(path))
