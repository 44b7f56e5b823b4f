"""Fixtures of the reliability and security tests.

The fault-injection tests restart the API server and etcd, stop node heartbeats and kill
operators, so they get a control plane of their own (``rel_cluster``: the demo pools, CRDs
applied, a 25 s node grace period so that a lost node goes NotReady quickly) rather than the
integration tests' session cluster. Each module runs its own operator(s) on its own namespace
pattern, so nothing here sees another module's objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hetsched.operator.devcluster.cluster import Cluster
from hetsched.operator.devcluster.nodes import load_pools
from support import DEMO_POOLS, REPO
from support.cluster import LocalCluster
from support.harness import create_namespace, delete_namespace

NODE_GRACE_SECONDS = 25


@pytest.fixture(scope="session")
def rel_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    state_dir = tmp_path_factory.mktemp("rel-cluster") / "state"
    handle = Cluster(state_dir, log=print)
    handle.up(load_pools(DEMO_POOLS), node_grace_period=NODE_GRACE_SECONDS)
    try:
        cluster = LocalCluster(handle)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("agentworkloads.hetsched.io", "acceleratorprofiles.hetsched.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        yield cluster
    finally:
        handle.down()


def namespace_for(prefix: str, request: pytest.FixtureRequest) -> str:
    base = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")
    return (prefix + base.removeprefix("test-"))[:60].strip("-")


@pytest.fixture
def make_namespace(rel_cluster: LocalCluster) -> Iterator[object]:
    """``make_namespace(name)`` creates a namespace (deleted after the test)."""
    made: list[str] = []

    def make(name: str) -> str:
        made.append(create_namespace(rel_cluster, name))
        return name

    yield make
    for name in made:
        delete_namespace(rel_cluster, name)
