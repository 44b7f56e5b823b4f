"""The real-engine tests' workloads and their rendering: a tiny random-weight Llama (its config.json in
a ConfigMap, its weights in a local folder named by ``spec.serving.model``), disaggregated across two
CPU pools and colocated on a third, rendered by ``hetsched render`` exactly as the operator would
create them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND
from support.engines import cache_root

PD_NAME = "tiny"
COLO_NAME = "tiny-colo"


def _workload(namespace: str, name: str, model_dir: Path, **spec: Any) -> list[dict[str, Any]]:
    config_map = f"{name}-model-config"
    # User input, not harness substitutions: no hub on this machine, and a torch.compile cache shared
    # across runs (a node-local cache, as a hostPath volume would give).
    env = [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "VLLM_CACHE_ROOT", "value": str(cache_root() / "vllm")},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map, "namespace": namespace},
            "data": {"config.json": (model_dir / "config.json").read_text()},
        },
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {"configMap": {"name": config_map}},
                "agent": {"profile": "chatbot"},
                "demand": {"requestsPerSecond": 0.05},
                "slo": {"ttftSeconds": 60, "tpotSeconds": 5},
                "serving": {"model": str(model_dir), "prefill": {"env": env}},
                **spec,
            },
        },
    ]


def pd_workload(namespace: str, model_dir: Path) -> list[dict[str, Any]]:
    return _workload(
        namespace,
        PD_NAME,
        model_dir,
        disaggregation="always",
        pools={"prefill": ["cpu-prefill"], "decode": ["cpu-decode"]},
    )


def colocated_workload(namespace: str, model_dir: Path) -> list[dict[str, Any]]:
    return _workload(namespace, COLO_NAME, model_dir, disaggregation="never", pools={"prefill": ["cpu-colo"]})


def render(pools: Path, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``hetsched render --pools POOLS WORKLOAD.yaml -o json``: the objects the operator would create."""
    with tempfile.TemporaryDirectory(prefix="hetsched-render-") as tmp:
        path = Path(tmp) / "workload.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "hetsched.operator",
                "render",
                "--pools",
                str(pools),
                str(path),
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, f"hetsched render failed ({result.returncode}): {result.stderr}"
    objects: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return objects


def served_model(objects: list[dict[str, Any]]) -> str:
    """The ``--served-model-name`` of the workload's engines (what clients send as ``model``)."""
    names = set()
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            args = list(c.get("args") or [])
            if "--served-model-name" in args:
                names.add(args[args.index("--served-model-name") + 1])
    assert len(names) == 1, f"expected one --served-model-name across the engines, found {names}"
    return names.pop()
