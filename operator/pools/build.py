"""Live pools → the planner's Cluster: hardware and price resolved (AcceleratorProfiles, labels,
catalog; ``profiles.py``), the pools' views for the API and metrics, and the devices in use.

Pure: the pool watcher (``watcher.py``) calls :func:`build_pools` whenever the pools' fingerprint
moves; ``scheduler.nodes`` holds the rules it shares with ``hetsched plan --nodes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from hetsched.operator.api.state import PoolView
from hetsched.operator.pools.profiles import Profile, ResolvedPool, resolve_pool
from hetsched.scheduler.nodes import LivePool, pool_from_live
from hetsched.scheduler.pools import Cluster, Pool, UnavailablePool, network_bandwidths


@dataclass(frozen=True, slots=True)
class PoolsInput:
    """Everything planning needs about the pools, and its fingerprint."""

    cluster: Cluster  # all usable devices free
    views: tuple[PoolView, ...]
    fingerprint: str


def build_pools(
    live: Sequence[LivePool],
    profiles: Sequence[Profile],
    *,
    network_gbps: Mapping[str, float] | None = None,
    fingerprint: str = "",
    held_outside: Mapping[str, int] | None = None,
) -> PoolsInput:
    """The Cluster (hardware and price resolved) and the per-pool views for the API and metrics.

    ``held_outside``: GPUs per node held by pods outside the operator's namespaces
    (``foreign.py``): taken off each node's free devices."""
    held_outside = held_outside or {}
    pools: list[Pool] = []
    unavailable: list[UnavailablePool] = []
    views: list[PoolView] = []
    for lp in live:
        rp: ResolvedPool = resolve_pool(lp, list(profiles))
        hw = rp.hardware
        problem = rp.problem
        held = {
            n: min(d, held_outside.get(n, 0)) for n, d in zip(lp.node_names, lp.node_devices, strict=False)
        }
        if hw is not None and not problem and lp.nodes == 0:
            problem = f"no Ready, schedulable nodes ({lp.total_nodes} node(s): NotReady or cordoned)"
        views.append(
            PoolView(
                pool=lp,
                hardware=hw.name if hw is not None else None,
                hardware_source=rp.hardware_source,
                device_memory_bytes=hw.memory_bytes if hw is not None else 0.0,
                price_per_device_hour=rp.price_per_device_hour,
                problem=problem,
                held_outside=sum(held.values()),
            )
        )
        if hw is None or rp.problem:
            unavailable.append(UnavailablePool(lp.name, rp.reason, rp.problem, lp.devices))
            continue
        pool = pool_from_live(lp, hw, rp.price_per_device_hour or 0.0, serving=rp.serving)
        if pool is not None and any(held.values()):
            free = tuple(d - held[n] for n, d in zip(lp.node_names, lp.node_devices, strict=False))
            pool = replace(pool, free_devices=sum(free), node_devices=tuple(d for d in free if d > 0))
        if pool is not None:  # like cluster_from_nodes: a pool without usable nodes is not offered at all
            pools.append(pool)
    # Pools named in --network-gbps come and go with their nodes: pairs of absent pools are left out.
    pairs, default = network_bandwidths(network_gbps or {}, [p.name for p in pools], ignore_unknown=True)
    cluster = Cluster(tuple(pools), pairs, default, tuple(unavailable))
    return PoolsInput(cluster, tuple(views), fingerprint)


def with_used(cluster: Cluster, used: Mapping[str, int]) -> Cluster:
    """The cluster with ``used`` devices per pool taken."""
    pools = tuple(
        replace(p, free_devices=max(0, p.free_devices - int(used.get(p.name, 0)))) for p in cluster.pools
    )
    return replace(cluster, pools=pools)
