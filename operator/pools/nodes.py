"""Live node pools: what changes as nodes come and go — the pools' fingerprint and the NotReady grace.

Pure functions. The Kopf node index (``handlers.py``) stores ``scheduler.nodes.project_node``
results; the pools are grouped by ``scheduler.nodes.group_pools``, the rule set ``hetsched plan
--nodes`` shares (which node belongs to which pool, its devices, its price label).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hetsched.scheduler.nodes import LivePool


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
            p.price_label if p.bad_price_label is None else [p.price_label, p.bad_price_label],
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
