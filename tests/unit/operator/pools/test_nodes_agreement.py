"""``hetsched plan --nodes`` and the operator build the same pools from the same Nodes.

The README promises that everything the operator decides can be reproduced without a cluster: the
CLI's ``cluster_from_nodes`` and the operator's pipeline (``project_node`` → ``group_pools`` →
``build_pools``) must agree, including on a price label that is not a number (an error in the CLI,
the pool refused in the operator, with the same message; never silently the catalog price).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hetsched.operator.devcluster.nodes import load_pools, node_manifests
from hetsched.operator.pools.build import build_pools
from hetsched.scheduler.nodes import cluster_from_nodes, group_pools, project_nodes
from hetsched.scheduler.pools import PRICE_INVALID, PRICE_LABEL, Cluster
from support import REPO


def ready_nodes(pool_file: Path) -> list[dict[str, Any]]:
    nodes = node_manifests(load_pools(pool_file))
    for node in nodes:
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return nodes


def operator_cluster(nodes: list[dict[str, Any]], network: dict[str, float] | None = None) -> Cluster:
    return build_pools(group_pools(project_nodes(nodes)), [], network_gbps=network).cluster


@pytest.mark.parametrize("name", ["demo", "large"])
def test_cli_and_operator_build_the_same_cluster_from_the_example_pools(name: str) -> None:
    path = REPO / "examples" / "pools" / f"{name}.yaml"
    nodes = ready_nodes(path)
    network = dict(load_pools(path).network_bandwidth_gbps)
    cli = cluster_from_nodes(nodes, network_bandwidth_gbps=network)
    live = operator_cluster(nodes, network)
    assert cli.pools and cli.pools == live.pools
    assert cli.network_bandwidth == live.network_bandwidth
    assert cli.default_network_bandwidth == live.default_network_bandwidth
    assert cli.unavailable == live.unavailable == ()


def test_cli_and_operator_agree_on_cordoned_not_ready_and_mixed_nodes() -> None:
    nodes = ready_nodes(REPO / "examples" / "pools" / "demo.yaml")
    nodes[0]["spec"]["unschedulable"] = True  # cordoned
    nodes[1]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    small = copy.deepcopy(nodes[2])
    small["metadata"]["name"] = "small-0"
    for field in ("allocatable", "capacity"):
        if "nvidia.com/gpu" in small["status"][field]:
            small["status"][field]["nvidia.com/gpu"] = "2"
    nodes.append(small)
    gfd_only = copy.deepcopy(nodes[2])
    gfd_only["metadata"]["name"] = "gfd-0"
    labels = gfd_only["metadata"]["labels"]
    for key in ("hetsched.io/pool", "hetsched.io/hardware", PRICE_LABEL):
        labels.pop(key, None)
    nodes.append(gfd_only)
    cli = cluster_from_nodes(nodes)
    live = operator_cluster(nodes)
    assert cli.pools == live.pools
    assert {p.node_selector.get("nvidia.com/gpu.product") for p in cli.pools} - {None}


def test_a_price_label_that_is_not_a_number_is_an_error_in_both() -> None:
    nodes = ready_nodes(REPO / "examples" / "pools" / "demo.yaml")
    # One node of the pool with a malformed label (the other says 2.21): the pool is refused.
    bad = next(n for n in nodes if n["metadata"]["labels"]["hetsched.io/pool"] == "a100")
    bad["metadata"]["labels"][PRICE_LABEL] = "cheap"
    with pytest.raises(ValueError, match="price") as raised:
        cluster_from_nodes(nodes)
    message = str(raised.value)
    assert message == f"pool a100: {PRICE_LABEL}='cheap' is not a number"
    built = build_pools(group_pools(project_nodes(nodes)), [])
    assert "a100" not in [p.name for p in built.cluster.pools]
    (refused,) = built.cluster.unavailable
    assert (refused.name, refused.reason, refused.detail) == ("a100", PRICE_INVALID, message)
    view = next(v for v in built.views if v.pool.name == "a100")
    assert view.problem == message and view.price_per_device_hour is None
    # Every other pool is still planned on, as the CLI plans them once the labels are fixed.
    for node in nodes:
        if node["metadata"]["labels"]["hetsched.io/pool"] == "a100":
            node["metadata"]["labels"][PRICE_LABEL] = "2.5"
    fixed = cluster_from_nodes(nodes)
    assert [p for p in fixed.pools if p.name != "a100"] == list(built.cluster.pools)
    assert fixed.pool("a100").price_per_device_hour == 2.5
