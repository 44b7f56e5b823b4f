"""``hetsched render``: the operator's own pipeline offline (intake → one planning round →
desired_children), printed as YAML or a v1 List, in a stable order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hetsched.operator.cli import main
from hetsched.operator.planning.intake import Registration, resolve
from hetsched.operator.planning.plans import plan_workloads
from hetsched.operator.pools.build import PoolsInput
from hetsched.operator.reconcile.children import desired_children
from hetsched.operator.reconcile.manifests import HASH_ANNOTATION
from hetsched.scheduler.pools import build_cluster
from support import REPO

DEMO = REPO / "examples" / "pools" / "demo.yaml"
CHATBOT = REPO / "examples" / "workloads" / "chatbot.yaml"
CODING = REPO / "examples" / "workloads" / "coding.yaml"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_render_prints_every_object_of_a_disaggregated_workload(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--pools", str(DEMO), str(CHATBOT))
    assert code == 0 and err == ""
    docs = list(yaml.safe_load_all(out))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("ServiceAccount", "chatbot-8b-router"),
        ("Role", "chatbot-8b-router"),
        ("RoleBinding", "chatbot-8b-router"),
        ("Service", "chatbot-8b"),
        ("Deployment", "chatbot-8b-decode"),
        ("Deployment", "chatbot-8b-prefill"),
        ("Deployment", "chatbot-8b-router"),
    ]
    # No uid offline: no owner references (an owner that does not exist would get them deleted).
    assert all("ownerReferences" not in d["metadata"] for d in docs)
    decode = docs[4]["spec"]["template"]["spec"]
    assert decode["nodeSelector"] == {"hetsched.io/pool": "t4"}
    assert decode["containers"][0]["image"] == "vllm/vllm-openai:v0.32.0"
    assert decode["containers"][0]["args"][1] == "meta-llama/Llama-3.1-8B-Instruct"


def test_render_equals_the_operators_builders_with_the_uid(capsys: pytest.CaptureFixture[str]) -> None:
    """With --owner-uid the output is exactly what the reconciler would write (hashes included)."""
    code, out, _ = _run(capsys, "--pools", str(DEMO), "--owner-uid", "uid-123", "-o", "json", str(CHATBOT))
    assert code == 0
    listed = json.loads(out)
    assert listed["apiVersion"] == "v1" and listed["kind"] == "List"
    doc = yaml.safe_load(CHATBOT.read_text())
    req, model_id = resolve("default", "chatbot-8b", doc["spec"])
    reg = Registration(("default", "chatbot-8b"), 1, "uid-123", req, doc["spec"], model_id)
    pools = PoolsInput(build_cluster(DEMO), (), "x")
    plan = plan_workloads([reg], pools)[reg.key]
    assert listed["items"] == json.loads(json.dumps(desired_children(reg, plan)))
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-123" for o in listed["items"])


def test_render_is_stable_and_orders_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    first = _run(capsys, "--pools", str(DEMO), str(CODING), str(CHATBOT))
    second = _run(capsys, "--pools", str(DEMO), str(CHATBOT), str(CODING))
    assert first == second and first[0] == 0
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(first[1])]
    assert names.index("chatbot-8b") < names.index("coding-70b")  # by namespace, then name
    hashes = [d["metadata"]["annotations"][HASH_ANNOTATION] for d in yaml.safe_load_all(first[1])]
    assert len(set(hashes)) == len(hashes)


def test_render_reports_unplaced_workloads_and_prints_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = yaml.safe_load(CHATBOT.read_text())
    huge["metadata"]["name"] = "too-fast"
    huge["spec"]["slo"] = {"ttftSeconds": 0.001, "tpotSeconds": 0.0001}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump_all([huge, yaml.safe_load(CODING.read_text())]))
    code, out, err = _run(capsys, "--pools", str(DEMO), str(path))
    assert code == 1
    assert "default/too-fast: not placed (" in err
    assert {d["metadata"]["name"] for d in yaml.safe_load_all(out)} >= {"coding-70b", "coding-70b-serve"}


def test_render_reads_a_model_configmap_from_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.loads((REPO / "tests" / "data" / "hf_configs" / "llama-3.1-8b.json").read_text())
    workload = yaml.safe_load(CHATBOT.read_text())
    workload["spec"]["model"] = {"configMap": {"name": "llama"}}
    workload["spec"]["serving"] = {"engine": "vllm", "model": "/models/llama"}
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "llama", "namespace": "default"},
        "data": {"config.json": json.dumps(config)},
    }
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump_all([cm, workload]))
    code, out, _ = _run(capsys, "--pools", str(DEMO), str(path))
    assert code == 0
    engines = [
        d
        for d in yaml.safe_load_all(out)
        if d["kind"] == "Deployment" and "router" not in d["metadata"]["name"]
    ]
    assert engines and all(
        "/models/llama" in d["spec"]["template"]["spec"]["containers"][0]["args"] for d in engines
    )
    path.write_text(yaml.safe_dump_all([workload]))
    code, _, err = _run(capsys, "--pools", str(DEMO), str(path))
    assert code == 2 and "spec.model.configMap: no ConfigMap default/llama" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--owner-uid", "a=b=c"], "NAMESPACE/NAME=UID"),
        (["--owner-uid", "x", "--owner-uid", "default/nope=1"], "NAMESPACE/NAME=UID"),
    ],
)
def test_render_bad_owner_uids(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--pools", str(DEMO), *argv, str(CHATBOT))
    assert code == 2 and message in err


def test_render_inference_pool_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--pools", str(DEMO), "--inference-pool-epp", "epp", str(CODING))
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert code == 0 and kinds[-1] == "InferencePool"
