"""`make demo`'s pure parts: the placement summary and the pid file (no cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hetsched.operator.devcluster import demo


def _phase(pool: str, regime: str, oi: float, ridge: float, **kw: Any) -> dict[str, Any]:
    return {
        "pool": pool,
        "tp": 1,
        "replicas": 1,
        "batch": 8,
        "regime": regime,
        "operationalIntensity": oi,
        "ridgePoint": ridge,
        **kw,
    }


def _aw(name: str, ready: str = "True", placed: bool = True) -> dict[str, Any]:
    conds = [
        {
            "type": "Placed",
            "status": "True" if placed else "False",
            "reason": "Placed" if placed else "Capacity",
        },
        {"type": "Ready", "status": ready, "reason": "Available", "message": f"{name}-decode: 0/1 available"},
    ]
    status: dict[str, Any] = {"conditions": conds}
    if placed:
        conds[0]["message"] = "placed"
        status |= {
            "mode": "disaggregated",
            "prefill": _phase("l4", "compute-bound", 1758, 403.3),
            "decode": _phase("t4", "bandwidth-bound", 38.71, 203.1),
            "ttftSeconds": 1.3145,
            "tpotSeconds": 0.051712,
            "dollarsPerMillionTokens": 0.876,
            "endpoint": f"http://{name}.default.svc:8000/v1",
        }
    else:
        conds[0]["message"] = "no pool has the capacity"
    return {
        "metadata": {"namespace": "default", "name": name},
        "spec": {"slo": {"ttftSeconds": 1.5, "tpotSeconds": 0.1}},
        "status": status,
    }


POOLS = {"pools": [{"name": "l4", "hardware": "l4", "devicesAllocated": 2, "devices": 8}]}


def test_summary_shows_latency_against_the_slo_and_the_ridge() -> None:
    text = demo.summary([_aw("chat")], POOLS)
    assert "prefill l4 (TP 1 x 1, compute-bound) -> decode t4" in text
    assert "(ridge 403.3 / 203.1)" in text
    assert "TTFT 1.31s (SLO 1.5s), TPOT 0.0517s (SLO 0.1s)" in text
    assert "NOT READY" not in text
    assert "l4         l4             2 / 8" in text
    assert "endpoint http://chat.default.svc:8000/v1 (OpenAI API, Service -> the P/D router)" in text


def test_demo_says_kwok_pods_do_not_run() -> None:
    assert "no container runs" in demo.KWOK_NOTE and "docs/serving.md" in demo.KWOK_NOTE


def test_summary_flags_not_ready_and_unplaced_workloads() -> None:
    stuck = {
        "default/stuck": "pod stuck-decode-x Pending: 0/10 nodes are available: 2 Insufficient nvidia.com/gpu"
    }
    text = demo.summary(
        [_aw("rolling", ready="False"), _aw("stuck", ready="False"), _aw("big", placed=False)], POOLS, stuck
    )
    lines = text.splitlines()
    assert any("NOT READY: rolling-decode: 0/1 available" in line for line in lines)
    assert any("NOT READY: pod stuck-decode-x Pending: 0/10 nodes are available" in line for line in lines)
    assert any(
        "default/big" in line and "NOT PLACED (Capacity): no pool has the capacity" in line for line in lines
    )
    assert [
        aw["metadata"]["name"]
        for aw in demo._not_ready([_aw("a"), _aw("b", ready="False"), _aw("c", placed=False)])
    ] == ["b"]


def test_unschedulable_reads_the_pods_scheduling_condition() -> None:
    pods = {
        "items": [
            {
                "metadata": {"name": "w-prefill-1"},
                "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]},
            },
            {
                "metadata": {"name": "w-decode-1"},
                "status": {
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/10 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: not helpful.",
                        }
                    ]
                },
            },
        ]
    }
    calls: list[tuple[str, ...]] = []

    def kubectl(*argv: str) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, json.dumps(pods), "")

    assert (
        demo._unschedulable(kubectl, "ns", "w")
        == "pod w-decode-1 Pending: 0/10 nodes are available: 2 Insufficient nvidia.com/gpu"
    )
    assert calls == [("get", "pods", "-n", "ns", "-l", "hetsched.io/workload=w", "-o", "json")]
    pods["items"] = pods["items"][:1]
    assert demo._unschedulable(kubectl, "ns", "w") is None


def test_pid_file_names_only_a_live_demo_operator(tmp_path: Path) -> None:
    pid_file = tmp_path / "operator.pid"
    assert demo._read_pid(pid_file) is None  # missing
    pid_file.write_text("not a pid\n")
    assert demo._read_pid(pid_file) is None
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but pytest, not the operator: never signalled
    assert demo._read_pid(pid_file) is None
    child = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{child.pid}\n")
        assert demo._read_pid(pid_file) is None
    finally:
        child.kill()
        child.wait()
    assert demo._is_demo_operator(child.pid) is False  # gone


def test_pid_file_names_the_running_operator(tmp_path: Path) -> None:
    # A stand-in with the operator's command line: `python -m hetsched.operator operator run ...`.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "hetsched.operator", "operator", "run"]
    )
    try:
        (tmp_path / "operator.pid").write_text(f"{child.pid}\n")
        # Until the child has exec'd, /proc shows the parent's (pytest's) command line.
        deadline = time.monotonic() + 10
        while demo._read_pid(tmp_path / "operator.pid") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert demo._read_pid(tmp_path / "operator.pid") == child.pid
    finally:
        child.kill()
        child.wait()
