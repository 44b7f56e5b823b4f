"""The vLLM arguments that ``hetsched render`` writes are accepted by the real vLLM argument parser,
for every engine build (CUDA, ROCm, CPU) and every mode (colocated, prefill, decode): parsed by the
server's own parser, validated, turned into engine arguments (``engine/check_vllm_args.py``, run in the
engine environment; no engine starts). A misspelled flag and a bad connector role in the same batch
must be rejected, so the check is known to bite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hetsched.operator.render import render
from hetsched.scheduler.spec import API_GROUP, API_VERSION, KIND
from support.engines import ENGINE_SCRIPTS, EngineEnv

pytestmark = pytest.mark.engines

POOLS = Path(__file__).parent / "data" / "builds.yaml"
BUILDS = {"h100": "cuda", "mi300x": "rocm", "cpu": "cpu"}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _workload(name: str, model_dir: Path, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "args"},
        "spec": {
            "model": {"name": MODEL},
            "agent": {"profile": "chatbot"},
            "demand": {"requestsPerSecond": 0.5},
            "slo": {"ttftSeconds": 30, "tpotSeconds": 1},
            "serving": {"engine": "vllm", "model": str(model_dir)},  # no hub here: a local folder
            **spec,
        },
    }


def rendered_engines(model_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(build, mode) -> the engine container ``hetsched render`` produced for it."""
    docs = []
    for family in BUILDS:
        docs.append(
            _workload(f"{family}-colo", model_dir, disaggregation="never", pools={"prefill": [f"{family}-a"]})
        )
        docs.append(
            _workload(
                f"{family}-pd",
                model_dir,
                disaggregation="always",
                pools={"prefill": [f"{family}-a"], "decode": [f"{family}-b"]},
            )
        )
    objects, problems = render(POOLS, docs)
    assert not problems, problems
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        if obj["kind"] != "Deployment" or obj["metadata"]["name"].endswith("-router"):
            continue
        pod = obj["spec"]["template"]["spec"]
        pool = pod["nodeSelector"]["hetsched.io/pool"]
        mode = obj["metadata"]["name"].rsplit("-", 1)[1]
        (container,) = pod["containers"]
        out[(BUILDS[pool.rsplit("-", 1)[0]], "colocated" if mode == "serve" else mode)] = container
    return out


def test_rendered_vllm_args_are_accepted_by_vllm(engines: EngineEnv, model_dir: Path, tmp_path: Path) -> None:
    containers = rendered_engines(model_dir)
    assert set(containers) == {(b, m) for b in BUILDS.values() for m in ("colocated", "prefill", "decode")}
    images = {build: c["image"] for (build, _), c in containers.items()}
    assert len(set(images.values())) == 3, images  # one image per build
    keys = sorted(containers)
    lists = []
    for key in keys:
        c = containers[key]
        assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"], (key, c["command"])
        # $(POD_IP) is the kubelet's to expand; any address does for the parser.
        lists.append([a.replace("$(POD_IP)", "10.0.0.7") for a in c["args"]])
    good = lists[keys.index(("cpu", "decode"))]
    misspelled = [a.replace("--max-model-len", "--max-model-length") for a in good]
    bad_role = [a.replace("kv_consumer", "kv_reader") for a in good]
    assert misspelled != good and bad_role != good
    batch = tmp_path / "lists.json"
    batch.write_text(json.dumps([*lists, misspelled, bad_role]))

    result = engines.run(str(ENGINE_SCRIPTS / "check_vllm_args.py"), str(batch), cwd=tmp_path, timeout=600)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(keys) + 2, result.stdout + result.stderr[-3000:]
    for key, line in zip(keys, lines, strict=False):
        assert line["ok"], (key, line)
        _, mode = key
        if mode == "colocated":
            assert "kv" not in line, (key, line)
        else:
            assert line["kv"]["kv_connector"] == "NixlConnector", (key, line)
            assert line["kv"]["kv_role"] == {"prefill": "kv_producer", "decode": "kv_consumer"}[mode], (
                key,
                line,
            )
    assert not lines[-2]["ok"] and "max-model-length" in lines[-2]["error"], lines[-2]
    assert not lines[-1]["ok"] and "kv_role" in lines[-1]["error"], lines[-1]
    assert result.returncode == 1  # the two bad lists
