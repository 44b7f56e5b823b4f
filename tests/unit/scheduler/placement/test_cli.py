"""`hetsched plan`: JSON shape, table, exit codes, --nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hetsched.operator.cli import main
from support import REPO

POOLS = str(REPO / "examples" / "pools" / "demo.yaml")
WORKLOADS = REPO / "examples" / "workloads"
PHASE_KEYS = {"pool", "tp", "batch", "replicas", "regime", "cost_per_million_tokens", "rejected"}


def test_plan_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "plan",
            "--pools",
            POOLS,
            str(WORKLOADS / "chatbot.yaml"),
            str(WORKLOADS / "coding.yaml"),
            "-o",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert isinstance(out["total_cost_per_hour"], float) and out["total_cost_per_hour"] > 0
    assert [w["name"] for w in out["workloads"]] == ["chatbot-8b", "coding-70b"]
    for w in out["workloads"]:
        assert w["mode"] in ("colocated", "disaggregated")
        assert set(w["phases"]) == {"prefill", "decode"}
        pre, dec = w["phases"]["prefill"], w["phases"]["decode"]
        assert set(pre) >= PHASE_KEYS and set(dec) >= PHASE_KEYS
        assert "ttft_seconds" in pre and "tpot_seconds" in dec
        assert pre["ttft_seconds"] > 0 and dec["tpot_seconds"] > 0
        assert pre["regime"] in ("compute-bound", "bandwidth-bound", "capacity-bound")
        for r in pre["rejected"] + dec["rejected"]:
            assert set(r) == {"pool", "reason", "detail"} and r["detail"]
    assert out["total_cost_per_hour"] == pytest.approx(sum(w["cost_per_hour"] for w in out["workloads"]))


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--pools", POOLS, str(WORKLOADS / "mix.yaml")])
    out = capsys.readouterr().out
    assert code == 0
    for word in (
        "PHASE",
        "POOL",
        "TP",
        "BATCH",
        "REPLICAS",
        "REGIME",
        "TTFT",
        "TPOT",
        "$/MTOK",
        "REASON",
        "total $",
    ):
        assert word in out
    assert "mix/swe-agent-70b" in out and "not on" in out


def test_plan_infeasible_exits_1_and_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((WORKLOADS / "chatbot.yaml").read_text())
    doc["metadata"]["name"] = "impossible"
    doc["spec"]["slo"] = {"ttftSeconds": 0.001, "tpotSeconds": 0.0005}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["plan", "--pools", POOLS, str(path), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    w = out["workloads"][0]
    assert w["mode"] is None and w["phases"]["prefill"]["pool"] is None
    assert w["infeasible"]["reason"] == "slo" and w["infeasible"]["closest_miss"]["pool"]
    assert any(s["action"] == "relax-slo" for s in w["infeasible"]["suggestions"])


def test_plan_from_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alloc = {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "4"}
    nodes = {
        "kind": "List",
        "items": [
            {
                "kind": "Node",
                "metadata": {"name": f"l4-{i}", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
                "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True"}]},
            }
            for i in range(2)
        ],
    }
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(nodes))
    code = main(
        ["plan", "--nodes", str(path), str(WORKLOADS / "chatbot.yaml"), "-o", "json", "--utilization", "0.85"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["workloads"][0]["phases"]["decode"]["pool"] == "gpu-nvidia-l4"


def test_plan_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--pools", POOLS, str(tmp_path / "missing.yaml")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["plan", "--pools", POOLS, str(WORKLOADS / "chatbot.yaml"), "--utilization", "1.5"]) == 2
    with pytest.raises(SystemExit):
        main(["plan", str(WORKLOADS / "chatbot.yaml")])  # --pools or --nodes is required
