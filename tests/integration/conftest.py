"""A real local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK) for the
integration tests: one per test session, in a temporary state folder with its own ports, with the
demo pools' nodes Ready; stopped at the end.

Binaries come from the cache (``make controlplane`` builds them; if they are missing the fixture
builds them first, which takes minutes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hetsched.operator.devcluster.cluster import Cluster
from hetsched.operator.devcluster.nodes import load_pools
from support import REPO
from support.cluster import LocalCluster

DEMO_POOLS = REPO / "examples" / "pools" / "demo.yaml"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    state_dir = tmp_path_factory.mktemp("cluster") / "state"
    handle = Cluster(state_dir, log=print)
    handle.up(load_pools(DEMO_POOLS))
    try:
        yield LocalCluster(handle)
    finally:
        handle.down()


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    # Parametrised test names carry [...]: keep only what a namespace name allows.
    name = "t-" + re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:50].strip("-")
    cluster.kubectl("create", "namespace", name)
    # Pods need the namespace's `default` ServiceAccount, made by the controller-manager.
    cluster.wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        what=f"ServiceAccount default in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
