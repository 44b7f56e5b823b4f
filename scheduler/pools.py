"""Node pools: the labels, the pool file format (shared by `plan --pools` and the local cluster),
Pool and Cluster objects, and the Cluster of a pool file.

A pool is a set of identical nodes: ``nodes`` × ``devicesPerNode`` devices of one hardware entry,
targeted by the node label ``hetsched.io/pool=<name>``. See docs/pools.md. Pools from a node list
(``kubectl get nodes``, or the operator's live nodes) are built in :mod:`hetsched.scheduler.nodes`.

Pools whose hardware cannot be resolved are kept in ``Cluster.unavailable`` with reason
``hardware-unknown``, so that every workload's rejections name them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler import catalog
from hetsched.scheduler.catalog.hardware import HardwareSpec
from hetsched.scheduler.engines.platform import PoolServing
from hetsched.scheduler.units import GB
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

# ---- node labels and resources: the one home (the CLI, the operator, its manifests, the local cluster)
POOL_LABEL = "hetsched.io/pool"
HARDWARE_LABEL = "hetsched.io/hardware"  # a catalog key (or a custom hardware entry's name)
DEVICES_LABEL = "hetsched.io/devices-per-node"  # CPU pools: sockets per node (default 1)
PRICE_LABEL = "hetsched.io/price-per-device-hour"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU Feature Discovery
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, set by GPU Feature Discovery
GPU_RESOURCE = "nvidia.com/gpu"

# ---- why a pool is seen but not plannable (UnavailablePool.reason; placement's Reason values)
HARDWARE_UNKNOWN = "hardware-unknown"
PRICE_INVALID = "price-invalid"

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
    serving: PoolServing | None = Field(
        default=None,
        description="serving overrides: images per engine, device resource, RDMA (docs/serving.md)",
    )

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
    # Free devices of each node, when known (a node list); () = the free devices on as few whole
    # nodes of ``devices_per_node`` as they fill. A replica's devices must all sit on one node.
    node_devices: tuple[int, ...] = ()
    # What a node offers besides devices (allocatable CPUs and bytes; 0: unknown): CPU pods are
    # sized in whole cores of a device's (socket's) share of them.
    node_cpu: float = 0.0
    node_memory: float = 0.0
    serving: PoolServing | None = None  # the pool's serving overrides (pool file, AcceleratorProfile)

    @property
    def total_devices(self) -> int:
        return self.nodes * self.devices_per_node

    def aligned_capacity(self, size: int) -> int:
        """Devices that replicas of ``size`` devices or more can occupy together: each node holds
        whole multiples of ``size``. Replica sizes are powers of two (each divides the next), so a
        set of replicas fits on the nodes exactly when, for every size ``s``, the replicas of ``s``
        devices or more need at most ``aligned_capacity(s)`` devices (place the largest first)."""
        if size <= 1:
            return self.free_devices
        if self.node_devices:
            cap = sum(size * (d // size) for d in self.node_devices)
        else:
            full_nodes, rest = divmod(self.free_devices, self.devices_per_node)
            cap = full_nodes * size * (self.devices_per_node // size) + size * (rest // size)
        return min(cap, self.free_devices)

    def binding_sizes(self, largest: int) -> list[tuple[int, int]]:
        """(size, aligned capacity) for the sizes 2, 4, … ≤ ``largest`` whose capacity is below the
        free devices: the only ones that constrain a plan beyond the device count."""
        out, size = [], 2
        while size <= largest:
            cap = self.aligned_capacity(size)
            if cap < self.free_devices:
                out.append((size, cap))
            size *= 2
        return out

    def take(self, replicas: Sequence[int]) -> Pool:
        """The pool with replicas of the given device counts placed (largest first, each on the
        node with the least room that holds it); a replica no node holds still uses free devices."""
        nodes = sorted(self.node_devices) if self.node_devices else []
        free = self.free_devices
        for tp in sorted(replicas, reverse=True):
            free -= tp
            fitting = [i for i, d in enumerate(nodes) if d >= tp]
            if fitting:
                i = min(fitting, key=lambda j: nodes[j])
                nodes[i] -= tp
        free = max(0, free)
        if self.node_devices:
            return replace(self, free_devices=free, node_devices=tuple(d for d in nodes if d > 0))
        return replace(self, free_devices=free)

    def give_back(self, replicas: Sequence[int]) -> Pool:
        """The pool with replicas of the given device counts freed again, each as a block of its
        own (where on their nodes they sat is not tracked, so free neighbours are not merged)."""
        freed = sum(replicas)
        if self.node_devices:
            return replace(
                self, free_devices=self.free_devices + freed, node_devices=(*self.node_devices, *replicas)
            )
        return replace(self, free_devices=self.free_devices + freed)


@dataclass(frozen=True, slots=True)
class UnavailablePool:
    """A pool the planner cannot use, and why (e.g. its hardware is not in the catalog)."""

    name: str
    reason: str  # machine-readable: HARDWARE_UNKNOWN or PRICE_INVALID
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


# ---- the Cluster of a pool file ------------------------------------------------------------------
def network_bandwidths(
    spec: Mapping[str, float], pools: Iterable[str] | None = None, *, ignore_unknown: bool = False
) -> tuple[dict[tuple[str, str], float], float]:
    """Inter-pool bandwidth (``networkBandwidthGBps``, ``--network-gbps``): GB/s per key, ``default``
    or ``<pool>/<pool>``; returns bytes/s by sorted pool pair, and the default.

    ValueError on a bad key or value; a pair naming a pool not in ``pools`` is an error too, unless
    ``ignore_unknown`` (the operator: live pools come and go) — then it is left out. ``pools=None``
    checks the keys only.
    """
    known = None if pools is None else set(pools)
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
        if known is not None:
            missing = [p for p in (a, b) if p not in known]
            if missing and ignore_unknown:
                continue
            if missing:
                raise ValueError(f"networkBandwidthGBps.{key}: no pool named {missing[0]!r}")
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
        hw = catalog.get_hardware(key)
        if hw is not None:
            return hw, ""
    if gpu_product:
        hw = catalog.hardware_for_gfd_product(gpu_product)
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


def _quantity(value: str) -> float:
    """nodeCpu / nodeMemory as a number (a Kubernetes quantity; 0 when it does not parse)."""
    from hetsched.scheduler.nodes import parse_quantity

    return parse_quantity(value)


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
    custom.update(catalog.parse_custom_hardware(pool_file.hardware))
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
                node_cpu=_quantity(entry.node_cpu),
                node_memory=_quantity(entry.node_memory),
                serving=entry.serving,
            )
        )
    pairs, default = network_bandwidths(pool_file.network_bandwidth_gbps, [p.name for p in pool_file.pools])
    return Cluster(tuple(pools), pairs, default, tuple(unavailable))
