"""Fixtures of the real-engine tests: the engine environment (installed when missing), the tiny model
(built when missing), and a serving bed (a local control plane whose nodes the local kubelet serves)
with the test workloads deployed from their rendering: disaggregated (prefill + decode + router) and
colocated, started together once per test module and shared by its tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hetsched.operator.devcluster.nodes import load_pools
from support.engines import EngineEnv, engine_env, tiny_model
from support.servingbed import ServingBed, host_cpus

from serving import workloads

POOLS = Path(__file__).parent / "data" / "pools.yaml"
NAMESPACE = "serving"
STARTUP_TIMEOUT = 1500  # three CPU engines starting together on two cores: minutes, more under load


@pytest.fixture(scope="session")
def engines() -> EngineEnv:
    return engine_env()


@pytest.fixture(scope="session")
def model_dir(engines: EngineEnv) -> Path:
    return tiny_model(engines)


@dataclass(frozen=True)
class Workload:
    """A deployed workload: its rendered objects and where its endpoint answers."""

    name: str
    objects: list[dict[str, Any]]
    endpoint: str  # the workload Service's ready endpoint
    model: str  # the served model name clients send

    def deployment(self, phase: str) -> dict[str, Any]:
        found = [
            o
            for o in self.objects
            if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(f"-{phase}")
        ]
        assert len(found) == 1, f"{self.name}: expected one {phase} Deployment"
        return found[0]


@dataclass(frozen=True)
class Deployed:
    bed: ServingBed
    pd: Workload
    colocated: Workload
    startup_seconds: dict[str, float]  # pod -> seconds from start to Ready


# Module scope: the engines stop when test_engines.py is done, not at the end of the whole session.
@pytest.fixture(scope="module")
def deployed(
    engines: EngineEnv, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    cores = host_cpus()
    cpus = {"cpu-prefill": (cores[0],), "cpu-decode": (cores[-1],), "cpu-colo": (cores[0],)}
    bed = ServingBed(tmp_path_factory.mktemp("serving"), engines, load_pools(POOLS), cpus).up()
    try:
        pd_objects = workloads.render(POOLS, workloads.pd_workload(NAMESPACE, model_dir))
        colo_objects = workloads.render(POOLS, workloads.colocated_workload(NAMESPACE, model_dir))
        bed.apply(pd_objects + colo_objects)  # all engines start together
        started = time.monotonic()
        bed.wait_ready(NAMESPACE, {"hetsched.io/workload": workloads.PD_NAME}, 3, STARTUP_TIMEOUT)
        bed.wait_ready(NAMESPACE, {"hetsched.io/workload": workloads.COLO_NAME}, 1, STARTUP_TIMEOUT)
        assert bed.kubelet is not None
        startup = {
            r.key: round(c.ready_times[0] - (c.started_at or 0), 1)
            for r in bed.kubelet.pods.values()
            for c in r.containers
            if c.ready_times
        }
        print(f"engines ready {time.monotonic() - started:.0f} s after apply; per pod: {startup}")
        yield Deployed(
            bed,
            Workload(
                workloads.PD_NAME,
                pd_objects,
                bed.endpoint(NAMESPACE, workloads.PD_NAME),
                workloads.served_model(pd_objects),
            ),
            Workload(
                workloads.COLO_NAME,
                colo_objects,
                bed.endpoint(NAMESPACE, workloads.COLO_NAME),
                workloads.served_model(colo_objects),
            ),
            startup,
        )
    finally:
        bed.down()
