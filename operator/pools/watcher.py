"""Observe: the pools from the nodes and the AcceleratorProfiles, re-derived when they change.

The Kopf node index holds ``scheduler.nodes.project_node`` results; every node or profile event
marks the pools dirty, and :func:`pool_watcher` (debounced) groups the nodes into pools, applies
the NotReady grace period, and publishes the pools (``build.build_pools``) to the planning loop and
the API state when their fingerprint moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hetsched.operator.pools.build import build_pools
from hetsched.operator.pools.nodes import apply_not_ready_grace, fingerprint, is_full_disruption
from hetsched.operator.pools.profiles import parse_profiles
from hetsched.operator.settings import PROFILES_CRD
from hetsched.scheduler.nodes import group_pools, project_node

if TYPE_CHECKING:
    from hetsched.operator.settings import OperatorContext

log = logging.getLogger("hetsched.operator")


class PoolPublisher:
    """Turns node projections and profile specs into pools; publishes when the fingerprint moves."""

    def __init__(self, op: OperatorContext) -> None:
        self.op = op
        self.last: str | None = None
        self.not_ready_since: dict[str, float] = {}
        self.disrupted = False

    def publish(
        self, raw_nodes: Sequence[Mapping[str, Any]], raw_profiles: Mapping[str, Mapping[str, Any]]
    ) -> None:
        op, s = self.op, self.op.settings
        assert op.planning_loop is not None and op.pools_dirty is not None
        loop = asyncio.get_running_loop()
        disrupted = is_full_disruption(raw_nodes)
        if disrupted != self.disrupted:
            self.disrupted = disrupted
            if disrupted:
                log.warning(
                    "every node is NotReady: taken as a control-plane or network disruption, not lost "
                    "hardware; the pools keep their nodes until one is Ready again"
                )
            else:
                log.info("a node is Ready again: NotReady nodes count after the grace period from now")
        nodes, recheck = apply_not_ready_grace(
            raw_nodes, self.not_ready_since, loop.time(), s.not_ready_grace_seconds
        )
        if recheck is not None:
            loop.call_later(recheck + 0.05, op.pools_dirty.set)
        profiles, _bad = parse_profiles(raw_profiles)
        live = group_pools(nodes)
        held = dict(op.held_outside)
        extra = (
            [[p.name, p.spec.model_dump(mode="json")] for p in profiles],
            sorted(s.network_gbps.items()),
            sorted(held.items()),
        )
        fp = fingerprint(live, extra)
        if fp != self.last:
            pools = build_pools(
                live, profiles, network_gbps=s.network_gbps, fingerprint=fp, held_outside=held
            )
            op.state.set_pools(pools.views, fp)
            op.planning_loop.set_pools(pools)
            log.info("pools: %s", ", ".join(f"{v.pool.name}={v.pool.devices}" for v in pools.views) or "none")
            self.last = fp


async def pool_watcher(op: OperatorContext) -> None:
    """Re-derive the pools when nodes or profiles change (debounced).

    The Kopf indices are complete only once the first resource handler ran (``op.indexed``).
    Until then (for instance while no watched namespace exists yet: Kopf then starts no watch at
    all) the pools come from a direct, consistent list of the nodes, re-read every grace period,
    so the operator never plans on a partial node set and still reports the pools.
    """
    assert op.pools_dirty is not None and op.indexed is not None
    s = op.settings
    publisher = PoolPublisher(op)
    while not op.indexed.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(op.indexed.wait(), s.startup_grace_seconds)
        if not op.indexed.is_set() and op.kube is not None:
            try:
                listed = await op.kube.list_nodes()
                profiles = await op.kube.list_profiles()
            except Exception as exc:
                log.warning("listing nodes failed: %s", exc)
                continue
            raw = [p for p in (project_node(n, lb, sp, st) for n, lb, sp, st in listed) if p is not None]
            publisher.publish(raw, profiles)
            # No handler will run to say the indices are complete while Kopf watches nothing.
            ready = op.readiness
            if ready is not None and not ready.indexed.is_set() and await watches_nothing(op):
                ready.mark_indexed("no watched namespace exists")
                log.info("no namespace matches %s: nothing to index, ready", ", ".join(s.namespaces))
    while True:
        await asyncio.sleep(s.pool_debounce_seconds)
        op.pools_dirty.clear()
        raw_nodes = [proj for store in op.indices["nodes_idx"].values() for proj in store]
        raw_profiles = {name: spec for name, store in op.indices["profiles_idx"].items() for spec in store}
        if PROFILES_CRD in op.missing_crds:  # Kopf's index keeps what it saw before the CRD went
            raw_profiles = {}
        publisher.publish(raw_nodes, raw_profiles)
        await op.pools_dirty.wait()


def namespace_matches(name: str, pattern: str) -> bool:
    """Kopf's documented ``--namespace`` syntax: comma-separated globs read left to right; the
    first inclusive glob decides the initial match (a leading ``!glob`` implies ``*`` before it),
    ``!glob`` excludes, and a later inclusive glob re-admits only what the first one matched."""
    globs = [g.strip() for g in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    first = fnmatch.fnmatch(name, globs[0])
    matched = first
    for g in globs[1:]:
        if g.startswith("!"):
            matched = matched and not fnmatch.fnmatch(name, g[1:])
        else:
            matched = matched or (first and fnmatch.fnmatch(name, g))
    return matched


async def watches_nothing(op: OperatorContext) -> bool:
    """Namespaced, and no existing namespace matches the patterns: Kopf then starts no watch (not
    even the cluster-scoped ones), so no handler runs until such a namespace is created."""
    s = op.settings
    if s.clusterwide or op.kube is None:
        return False
    try:
        listed = await op.kube.core.list_namespace()
    except Exception as exc:  # e.g. forbidden: Kopf then assumes the named namespaces exist
        log.debug("listing namespaces failed: %s", exc)
        return False
    names = [str(ns.metadata.name) for ns in listed.items if ns.metadata is not None]
    return not any(namespace_matches(name, pattern) for name in names for pattern in s.namespaces)
