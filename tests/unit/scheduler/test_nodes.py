"""Clusters from `kubectl get nodes -o yaml` and from pool files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hetsched.scheduler.nodes import cluster_from_nodes, load_nodes, product_pool_name
from hetsched.scheduler.pools import build_cluster
from support import REPO


def node(
    name: str,
    labels: dict[str, str],
    gpus: int | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    alloc: dict[str, str] = {"cpu": "96", "memory": "1Ti"}
    if gpus is not None:
        alloc["nvidia.com/gpu"] = str(gpus)
    spec: dict[str, Any] = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "allocatable": alloc,
            "capacity": alloc,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


H100 = {
    "hetsched.io/pool": "h100",
    "hetsched.io/hardware": "h100-sxm",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
}
GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def node_list() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            node("h100-0", H100, 8, taints=GPU_TAINT),
            node("h100-1", {**H100, "hetsched.io/price-per-device-hour": "3.5"}, 8, taints=GPU_TAINT),
            node("h100-2", H100, 8, unschedulable=True),  # cordoned
            node("h100-3", H100, 8, ready=False),  # NotReady
            node("a100-x", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, 8),  # GFD only
            node("a100-y", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, 4),
            node("a100-z", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, 8),
            node(
                "cpu-0",
                {
                    "hetsched.io/pool": "cpu",
                    "hetsched.io/hardware": "xeon-6980p",
                    "hetsched.io/devices-per-node": "2",
                },
            ),
            node("cpu-1", {"hetsched.io/pool": "cpu", "hetsched.io/hardware": "xeon-6980p"}),
            node("odd-0", {"nvidia.com/gpu.product": "Acme-Tensor-9000"}, 4),  # not in the catalog
            node("plain", {"kubernetes.io/os": "linux"}),  # not hetsched's
            node(
                "tainted-by-lifecycle",
                {**H100, "hetsched.io/pool": "h100b"},
                8,
                taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}],
            ),
        ],
    }


def test_cluster_from_nodes_groups_and_skips() -> None:
    cl = cluster_from_nodes(node_list())
    names = [p.name for p in cl.pools]
    a100 = product_pool_name("NVIDIA-A100-SXM4-80GB")
    assert a100 == "gpu-nvidia-a100-sxm4-80gb"
    assert names == sorted(names) and set(names) == {"h100", "h100b", "cpu", a100}
    h100 = cl.pool("h100")
    assert h100.hardware.name == "h100-sxm" and h100.nodes == 2 and h100.devices_per_node == 8
    assert h100.free_devices == 16 and h100.price_per_device_hour == 3.5  # the label overrides the catalog
    assert h100.node_selector == {"hetsched.io/pool": "h100"}
    assert [(t.key, t.effect) for t in h100.taints] == [("nvidia.com/gpu", "NoSchedule")]
    assert cl.pool("h100b").taints == ()  # lifecycle taints are not the pool's own
    a = cl.pool(a100)
    assert (
        a.hardware.name == "a100-80gb" and a.nodes == 3 and a.devices_per_node == 8 and a.free_devices == 20
    )
    assert a.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    cpu = cl.pool("cpu")
    assert (
        cpu.hardware.kind.value == "cpu" and cpu.nodes == 2 and cpu.free_devices == 3
    )  # 2 sockets + default 1
    assert [u.name for u in cl.unavailable] == [product_pool_name("Acme-Tensor-9000")]
    assert cl.unavailable[0].reason == "hardware-unknown" and "Acme-Tensor-9000" in cl.unavailable[0].detail
    assert cl.unavailable[0].devices == 4


def test_cluster_from_nodes_options() -> None:
    cl = cluster_from_nodes(
        node_list()["items"],
        prices={"h100": 9.0},
        used_devices={"h100": 10},
        network_bandwidth_gbps={"default": 10, "h100/cpu": 40},
    )
    h100 = cl.pool("h100")
    assert h100.price_per_device_hour == 9.0 and h100.free_devices == 6
    assert cl.bandwidth_between("h100", "cpu") == 40e9
    assert cl.default_network_bandwidth == 10e9
    one = cluster_from_nodes(node("solo", H100, 4))
    assert one.pool("h100").free_devices == 4
    with pytest.raises(ValueError, match="Node"):
        cluster_from_nodes({"kind": "Pod"})
    with pytest.raises(ValueError, match="price"):
        cluster_from_nodes(node("bad", {**H100, "hetsched.io/price-per-device-hour": "cheap"}, 8))


def test_load_nodes_file(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(node_list()))
    assert load_nodes(path)["kind"] == "List"
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump_all([node("h100-0", H100, 8), node("h100-1", H100, 8)]))
    cl = cluster_from_nodes(load_nodes(multi))
    assert cl.pool("h100").free_devices == 16
    bad = tmp_path / "bad.yaml"
    bad.write_text("items: [")
    with pytest.raises(ValueError, match="YAML"):
        load_nodes(bad)


def test_build_cluster_from_the_demo_pools() -> None:
    cl = build_cluster(REPO / "examples" / "pools" / "demo.yaml")
    assert [p.name for p in cl.pools][:2] == ["h100", "a100"]
    assert cl.pool("a100").hardware.name == "a100-80gb"  # alias a100-sxm-80gb
    assert cl.bandwidth_between("h100", "a100") == 50e9
    assert cl.default_network_bandwidth == 25e9
    assert not cl.unavailable
    big = build_cluster(REPO / "examples" / "pools" / "large.yaml")
    assert len(big.pools) == 12 and not big.unavailable


def test_build_cluster_validates_bandwidth_keys() -> None:
    doc: dict[str, Any] = {
        "pools": [{"name": "a", "hardware": "h100-sxm", "nodes": 1, "devicesPerNode": 8, "freeDevices": 3}],
        "networkBandwidthGBps": {"a/nope": 10},
    }
    with pytest.raises(ValueError, match="nope"):
        build_cluster(doc)
    doc["networkBandwidthGBps"] = {"default": 5}
    cl = build_cluster(doc)
    assert cl.pool("a").free_devices == 3 and cl.default_network_bandwidth == 5e9
