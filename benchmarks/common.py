"""What the operator benchmarks share: the node pools at a given size, the workload mix, the
AgentWorkload manifests and the operator's resident memory.

The benchmarks run as scripts under ``PYTHONSAFEPATH=1`` (the repository's ``operator/`` folder
must not shadow the standard library), which leaves the script's folder off ``sys.path``; each
script puts it back before importing this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# Agent workload shapes: dense and MoE, 8B to 70B, rate and session demand, one disaggregated.
WORKLOAD_MIX: list[dict[str, Any]] = yaml.safe_load((REPO / "benchmarks/data/workload-mix.yaml").read_text())


def pools_doc(nodes: int) -> dict[str, Any]:
    """``nodes`` KWOK nodes over five pools (20% H100, 15% A100, 25% L4, 25% T4, 15% CPU)."""
    split = [
        ("h100", "h100-sxm", 8, "NVIDIA-H100-80GB-HBM3", 81559, 0.20),
        ("a100", "a100-80gb", 8, "NVIDIA-A100-SXM4-80GB", 81920, 0.15),
        ("l4", "l4", 4, "NVIDIA-L4", 23034, 0.25),
        ("t4", "t4", 4, "Tesla-T4", 15360, 0.25),
        ("cpu", "xeon-6980p", 2, None, None, 0.15),
    ]
    pools, left = [], nodes
    for i, (name, hw, per, product, mib, share) in enumerate(split):
        n = left if i == len(split) - 1 else int(nodes * share)
        left -= n
        entry: dict[str, Any] = {
            "name": name,
            "hardware": hw,
            "nodes": n,
            "devicesPerNode": per,
            "nodeCpu": "96",
            "nodeMemory": "512Gi",
        }
        if product:
            entry.update(
                gpuProduct=product,
                gpuMemoryMiB=mib,
                taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
            )
        pools.append(entry)
    return {"pools": pools}


def manifest(i: int, namespace: str, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """AgentWorkload ``w<i>`` in ``namespace``, the ``i``-th of ``specs`` taken in turn."""
    return {
        "apiVersion": "hetsched.io/v1alpha1",
        "kind": "AgentWorkload",
        "metadata": {"name": f"w{i:04d}", "namespace": namespace},
        "spec": specs[i % len(specs)],
    }


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (NaN once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
