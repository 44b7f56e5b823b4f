"""Live pools from Node projections; hardware and price from AcceleratorProfiles or the catalog."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hetsched.operator.pools import nodes as n
from hetsched.operator.pools.build import build_pools
from hetsched.operator.pools.profiles import parse_profile, parse_profiles, resolve_pool
from hetsched.scheduler import nodes as scheduler_nodes
from support.builders import demo_nodes, live_pools, projections


def _node(
    name: str, labels: dict[str, str], gpus: int = 0, ready: bool = True, **spec: Any
) -> dict[str, Any]:
    alloc = {"cpu": "32", "memory": "256Gi"}
    if gpus:
        alloc["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "allocatable": alloc,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.mark.parametrize(
    ("q", "value"),
    [
        ("8", 8.0),
        ("500m", 0.5),
        ("2Ti", 2.0**41),
        ("1.5e3", 1500.0),
        ("64Gi", 64 * 2.0**30),
        ("bogus", 0.0),
        (None, 0.0),
    ],
)
def test_parse_quantity(q: Any, value: float) -> None:
    assert scheduler_nodes.parse_quantity(q) == value


def test_projection_is_small_and_drops_system_taints() -> None:
    node = _node(
        "a-0",
        {"hetsched.io/pool": "a", "nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "23034"},
        4,
        taints=[
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        ],
    )
    p = scheduler_nodes.project_node("a-0", node["metadata"]["labels"], node["spec"], node["status"])
    assert p is not None
    assert p["pool"] == "a" and p["byLabel"] and p["gpus"] == 4 and p["gpuMemoryMiB"] == 23034
    assert p["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert set(p) == {
        "name",
        "pool",
        "byLabel",
        "product",
        "hardware",
        "price",
        "gpus",
        "devicesLabel",
        "gpuMemoryMiB",
        "cpu",
        "memory",
        "ready",
        "unschedulable",
        "taints",
    }
    assert scheduler_nodes.project_node("x", {"kubernetes.io/os": "linux"}, {}, {}) is None


def test_demo_pools_grouped_by_label() -> None:
    pools = {p.name: p for p in live_pools()}
    assert sorted(pools) == ["a100", "cpu-amx", "h100", "l4", "t4"]
    assert pools["h100"].devices == 16 and pools["h100"].gpu
    assert pools["h100"].node_selector == {"hetsched.io/pool": "h100"}
    assert pools["h100"].taints == (("nvidia.com/gpu", "present", "NoSchedule"),)
    assert pools["h100"].hardware_hint == "h100-sxm"
    assert not pools["cpu-amx"].gpu and pools["cpu-amx"].devices_per_node >= 1


def test_product_pools_for_unlabelled_gpu_nodes() -> None:
    nodes = [_node(f"g-{i}", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, 8) for i in range(3)]
    (pool,) = live_pools(nodes)
    assert pool.name == "gpu-nvidia-h100-80gb-hbm3"
    assert pool.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pool.devices == 24 and not pool.by_label


def test_cordoned_and_not_ready_nodes_do_not_count() -> None:
    nodes = demo_nodes()
    by_name = {x["metadata"]["name"]: x for x in nodes}
    by_name["t4-0"]["spec"]["unschedulable"] = True
    by_name["t4-1"]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    by_name["l4-0"]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    pools = {p.name: p for p in live_pools(nodes)}
    assert pools["t4"].nodes == 0 and pools["t4"].total_nodes == 2
    assert pools["t4"].cordoned == ("t4-0",) and pools["t4"].not_ready == ("t4-1",)
    assert pools["l4"].devices == 4
    built = build_pools(list(pools.values()), [])
    assert "t4" not in {p.name for p in built.cluster.pools}
    view = {v.pool.name: v for v in built.views}["t4"]
    assert "NotReady or cordoned" in view.problem


def test_fingerprint_tracks_capacity_not_node_names() -> None:
    base = n.fingerprint(live_pools())
    assert base == n.fingerprint(live_pools())
    nodes = demo_nodes()
    renamed = copy.deepcopy(nodes)
    renamed[0]["metadata"]["name"] = "another-name"
    assert n.fingerprint(live_pools(renamed)) == base
    nodes[0]["spec"]["unschedulable"] = True
    assert n.fingerprint(live_pools(nodes)) != base
    assert n.fingerprint(live_pools(), extra=["profile"]) != base


def test_price_label_and_devices_label() -> None:
    nodes = [
        _node(
            "c-0",
            {
                "hetsched.io/pool": "c",
                "hetsched.io/hardware": "xeon-6980p",
                "hetsched.io/devices-per-node": "2",
                "hetsched.io/price-per-device-hour": "3.5",
            },
        )
    ]
    (pool,) = live_pools(nodes)
    assert pool.devices == 2 and pool.price_label == 3.5
    (view,) = build_pools([pool], []).views
    assert view.price_per_device_hour == 3.5 and view.hardware == "xeon-6980p"


# ---- AcceleratorProfiles ------------------------------------------------------------------------
def test_profile_defines_custom_hardware() -> None:
    p = parse_profile(
        "mi999",
        {
            "matchPool": "x",
            "memory": "96GB",
            "bandwidth": "4TB/s",
            "peakTflops": {"bf16": 500},
            "power": "500W",
            "pricePerHour": 1.5,
        },
    )
    assert p.hardware is not None
    assert p.hardware.name == "mi999" and p.hardware.memory_bytes == 96e9 and p.hardware.price_per_hour == 1.5
    assert p.hardware.source == "AcceleratorProfile/mi999"


def test_profile_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="basedOn"):
        parse_profile("x", {"matchPool": "x", "basedOn": "no-such-gpu"})
    with pytest.raises(ValueError, match="matchPool or matchGpuProduct"):
        parse_profile("x", {"pricePerHour": 1})
    ok, bad = parse_profiles({"good": {"matchPool": "a", "pricePerHour": 1}, "bad": {"pricePerHour": 1}})
    assert [p.name for p in ok] == ["good"] and list(bad) == ["bad"]


def test_resolution_order() -> None:
    pools = {p.name: p for p in live_pools()}
    l4 = pools["l4"]
    # No profile: the hetsched.io/hardware label.
    r = resolve_pool(l4, [])
    assert r.hardware is not None and r.hardware.name == "l4" and "label" in r.hardware_source
    # A price-only profile for the pool overrides the price only.
    price = parse_profile("cheap-l4", {"matchPool": "l4", "pricePerHour": 0.1})
    r = resolve_pool(l4, [price])
    assert r.hardware is not None and r.hardware.name == "l4" and r.price_per_device_hour == 0.1
    # A product profile defining hardware beats the label; a pool profile beats the product profile.
    product = parse_profile("l4-tuned", {"matchGpuProduct": "NVIDIA-L4", "basedOn": "l4", "memory": "20GB"})
    r = resolve_pool(l4, [product, price])
    assert r.hardware is not None and r.hardware.name == "l4-tuned" and r.price_per_device_hour == 0.1
    pool_hw = parse_profile("l4-pool", {"matchPool": "l4", "basedOn": "a10"})
    r = resolve_pool(l4, [product, pool_hw])
    assert r.hardware is not None and r.hardware.name == "l4-pool"
    assert r.hardware_source.startswith("AcceleratorProfile/l4-pool")


def test_unknown_hardware_is_reported_with_a_fix() -> None:
    nodes = [_node("z-0", {"hetsched.io/pool": "z", "nvidia.com/gpu.product": "NVIDIA-Z9000"}, 8)]
    built = build_pools(live_pools(nodes), [])
    assert built.cluster.pools == ()
    (u,) = built.cluster.unavailable
    assert u.name == "z" and u.reason == "hardware-unknown"
    assert "AcceleratorProfile" in built.views[0].problem
    fixed = build_pools(
        live_pools(nodes),
        [parse_profile("z9000", {"matchGpuProduct": "NVIDIA-Z9000", "basedOn": "h100-sxm"})],
    )
    assert [p.hardware.name for p in fixed.cluster.pools] == ["z9000"]


def test_projections_of_demo_nodes() -> None:
    assert len(projections(demo_nodes())) == 10


def test_not_ready_grace() -> None:
    since: dict[str, float] = {}
    projs = projections(demo_nodes())
    projs[0] = {**projs[0], "ready": False}
    out, recheck = n.apply_not_ready_grace(projs, since, now=100.0, grace=30.0)
    assert out[0]["ready"] is True and recheck == 30.0 and since == {projs[0]["name"]: 100.0}
    out, recheck = n.apply_not_ready_grace(projs, since, now=120.0, grace=30.0)
    assert out[0]["ready"] is True and recheck == 10.0
    out, recheck = n.apply_not_ready_grace(projs, since, now=131.0, grace=30.0)
    assert out[0]["ready"] is False and recheck is None
    projs[0] = {**projs[0], "ready": True}
    out, _ = n.apply_not_ready_grace(projs, since, now=140.0, grace=30.0)
    assert since == {} and out[0]["ready"] is True
    # Cordoned nodes are not given any grace.
    projs[1] = {**projs[1], "unschedulable": True}
    out, _ = n.apply_not_ready_grace(projs, since, now=150.0, grace=30.0)
    assert out[1]["unschedulable"] is True


def test_nodes_of_another_size_count_their_own_devices() -> None:
    """A pool is mostly 8-GPU nodes; one 4-GPU node adds 4 devices (not 8), and the planner's
    replicas of 8 devices can only use the 8-GPU nodes."""
    nodes = [
        _node(f"g-{i}", {"hetsched.io/pool": "mixed", "hetsched.io/hardware": "h100-sxm"}, 8)
        for i in range(2)
    ]
    nodes.append(_node("g-small", {"hetsched.io/pool": "mixed", "hetsched.io/hardware": "h100-sxm"}, 4))
    (pool,) = live_pools(nodes)
    assert pool.devices_per_node == 8 and sorted(pool.node_devices) == [4, 8, 8]
    assert pool.devices == 20
    planned = build_pools([pool], []).cluster.pool("mixed")
    assert planned.free_devices == 20
    assert planned.aligned_capacity(8) == 16 and planned.aligned_capacity(4) == 20
    before = n.fingerprint([pool])
    nodes[-1]["status"]["allocatable"]["nvidia.com/gpu"] = "2"
    assert n.fingerprint(live_pools(nodes)) != before


def test_every_node_not_ready_is_a_disruption_not_a_loss() -> None:
    """All nodes NotReady: every node keeps counting and the grace clocks restart, so the nodes
    still NotReady when the first one is back get a full grace period from then."""
    since: dict[str, float] = {}
    ready = projections(demo_nodes())
    down = [{**p, "ready": False} for p in ready]
    assert n.is_full_disruption(down) and not n.is_full_disruption(ready) and not n.is_full_disruption([])
    n.apply_not_ready_grace(down[:1] + ready[1:], since, now=100.0, grace=5.0)
    assert list(since) == [down[0]["name"]]
    out, recheck = n.apply_not_ready_grace(down, since, now=200.0, grace=5.0)
    assert all(p["ready"] for p in out) and recheck is None and since == {}
    # One node back: the others count for another 5 s, then drop out.
    partly = [ready[0], *down[1:]]
    out, recheck = n.apply_not_ready_grace(partly, since, now=300.0, grace=5.0)
    assert all(p["ready"] for p in out) and recheck == 5.0
    out, _ = n.apply_not_ready_grace(partly, since, now=306.0, grace=5.0)
    assert [p["ready"] for p in out] == [True] + [False] * (len(out) - 1)
