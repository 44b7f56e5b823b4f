"""CRDs generated from the pydantic spec models: structural, bounded, CEL rules kept, no drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hetsched.operator import crdgen
from hetsched.operator.cli import main
from hetsched.scheduler.spec import AcceleratorProfileSpec, AgentWorkloadSpec
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from support import REPO

CRDS = REPO / "crds"


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _rules(schema: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    return {
        path: node["x-kubernetes-validations"]
        for path, node in crdgen.walk(schema)
        if "x-kubernetes-validations" in node
    }


def test_committed_crds_match_the_models() -> None:
    stale = crdgen.drifted(CRDS)
    assert not stale, f"{stale} drifted from scheduler/spec.py: run `make crds` (hetsched crds)"


def test_committed_files_are_exactly_the_generated_ones() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crdgen.rendered_crds())


@pytest.mark.parametrize("name", sorted(crdgen.all_crds()))
def test_schemas_are_structural_and_bounded(name: str) -> None:
    schema = _schema(crdgen.all_crds()[name])
    assert crdgen.structural_problems(schema) == []
    # Unbounded strings/lists under CEL rules make the API server reject the CRD (cost estimate).
    assert crdgen.unbounded_fields(schema) == []


def test_agentworkload_crd_shape() -> None:
    crd = crdgen.agentworkload_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "agentworkloads.hetsched.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["aw"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == [
        "Model",
        "Agent",
        "Prefill Pool",
        "Decode Pool",
        "Prefill Regime",
        "Decode Regime",
        "$/Mtok",
        "Ready",
        "Endpoint",
        "Age",
    ]
    endpoint = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Endpoint")
    assert endpoint["jsonPath"] == ".status.endpoint"
    schema = _schema(crd)
    assert schema["required"] == ["spec"]
    props = schema["properties"]["spec"]["properties"]
    assert props["slo"]["required"] == ["ttftSeconds", "tpotSeconds"]
    assert props["disaggregation"]["enum"] == ["auto", "always", "never"]
    assert props["disaggregation"]["default"] == "auto"
    # Optional fields are nullable, exclusive bounds in OpenAPI 3.0 form, no JSON-Schema leftovers.
    assert props["maxBatch"]["nullable"] is True
    demand = props["demand"]["properties"]["requestsPerSecond"]
    assert demand["minimum"] == 0 and demand["exclusiveMinimum"] is True
    text = crdgen.render(crd)
    for banned in ("$ref", "$defs", "title:", "anyOf", "additionalProperties: false"):
        assert banned not in text
    env = props["serving"]["properties"]["prefill"]["properties"]["env"]
    assert env["x-kubernetes-list-type"] == "map" and env["x-kubernetes-list-map-keys"] == ["name"]
    status = schema["properties"]["status"]["properties"]
    for key in (
        "observedGeneration",
        "conditions",
        "prefill",
        "decode",
        "dollarsPerMillionTokens",
        "rejectedPools",
    ):
        assert key in status
    assert status["rejectedPools"]["maxItems"] == 24
    assert status["endpoint"]["type"] == "string"
    serving = props["serving"]["properties"]
    assert serving["engine"]["enum"] == ["vllm", "sglang"]
    assert serving["kvConnector"]["enum"] == ["nixl", "mooncake"]
    assert serving["allowExperimentalPairs"]["default"] is False
    assert "image" not in serving["prefill"].get("required", [])  # default: the registry's build
    assert serving["router"]["properties"]["replicas"]["maximum"] == 16


def test_cel_rules_name_the_fields() -> None:
    rules = _rules(_schema(crdgen.agentworkload_crd()))
    assert "" in rules  # metadata.name length (children and Services are named after it)
    assert "metadata.name" in rules[""][0]["message"]
    assert any("configMap" in r["message"] for r in rules[".spec.model"])
    assert any("requestsPerSecond" in r["message"] for r in rules[".spec.demand"])
    assert any("slo.ttftSeconds" in r["message"] for r in rules[".spec.slo"])
    assert len(rules[".spec.pools"]) == 2 and all("pools." in r["message"] for r in rules[".spec.pools"])
    assert any("nvidia.com/gpu" in r["message"] for r in rules[".spec.serving.prefill"])
    device_rule = next(r for r in rules[".spec.serving.prefill"] if "device resources" in r["message"])
    assert "'amd.com/gpu'" in device_rule["rule"] and "'nvidia.com/gpu'" in device_rule["rule"]
    assert any("maxContextTokens" in r["message"] for r in rules[".spec"])
    for path, rs in rules.items():
        for r in rs:
            # Optional fields are guarded: a rule reading an absent field fails every object.
            assert r["rule"] and r["message"], path
    pools_rule = rules[".spec.pools"][0]["rule"]
    assert pools_rule.startswith("!has(self.prefill) || !has(self.exclude)")


def test_acceleratorprofile_crd_shape() -> None:
    crd = crdgen.acceleratorprofile_crd()
    assert crd["spec"]["scope"] == "Cluster"
    props = _schema(crd)["properties"]["spec"]["properties"]
    for key in (
        "matchPool",
        "matchGpuProduct",
        "basedOn",
        "memory",
        "bandwidth",
        "peakTflops",
        "power",
        "pricePerHour",
        "architecture",
        "hostBandwidth",
        "serving",
    ):
        assert key in props
    assert set(props["serving"]["properties"]) == {"images", "deviceResource", "rdma"}
    messages = [r["message"] for r in _rules(_schema(crd))[".spec"]]
    assert any("matchPool" in m for m in messages)
    assert any("basedOn" in m for m in messages)


# ---- the converter ------------------------------------------------------------------------------
class _Inner(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": "self.a > 0", "message": "a"}]}
    )
    a: int = Field(default=1, gt=0)


class _Sample(BaseModel):
    inner: _Inner | None = None
    tag: str = Field(default="x", max_length=5, json_schema_extra={"const": "x"})
    anything: Any = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=3)
    ratio: float = Field(default=0.5, gt=0, lt=1)


def test_converter_inlines_refs_and_maps_keywords() -> None:
    schema = crdgen.structural_schema(_Sample)
    inner = schema["properties"]["inner"]
    assert inner["type"] == "object" and inner["nullable"] is True
    assert inner["x-kubernetes-validations"] == [{"rule": "self.a > 0", "message": "a"}]
    assert inner["properties"]["a"]["minimum"] == 0 and inner["properties"]["a"]["exclusiveMinimum"] is True
    assert schema["properties"]["tag"]["enum"] == ["x"]
    assert schema["properties"]["anything"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert schema["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert (
        schema["properties"]["ratio"]["maximum"] == 1
        and schema["properties"]["ratio"]["exclusiveMaximum"] is True
    )
    assert crdgen.structural_problems(schema) == []


def test_converter_rejects_non_structural_unions() -> None:
    class Bad(BaseModel):
        x: int | list[int]

    with pytest.raises(crdgen.SchemaError, match="non-null"):
        crdgen.structural_schema(Bad)

    class Tup(BaseModel):
        t: tuple[int, str]

    with pytest.raises(crdgen.SchemaError, match="prefixItems"):
        crdgen.structural_schema(Tup)


def test_problems_are_reported() -> None:
    assert crdgen.structural_problems({"properties": {"a": {"type": "string", "anyOf": []}}})
    assert crdgen.unbounded_fields({"type": "object", "properties": {"s": {"type": "string"}}}) == [".s"]


# ---- the models mirror the CEL rules (the CLI never sees the API server) ------------------------
BASE: dict[str, Any] = {
    "model": {"name": "llama-3.1-8b"},
    "agent": {"profile": "chatbot"},
    "demand": {"requestsPerSecond": 1},
    "slo": {"ttftSeconds": 1, "tpotSeconds": 0.05},
}


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"slo": {"ttftSeconds": 0.01, "tpotSeconds": 0.05}}, "slo.ttftSeconds must be at least"),
        ({"pools": {"prefill": ["a"], "exclude": ["a"]}}, "pools.prefill names a pool"),
        ({"pools": {"decode": ["b"], "exclude": ["b"]}}, "pools.decode names a pool"),
        (
            {"serving": {"prefill": {"image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}}},
            "nvidia.com/gpu",
        ),
        ({"serving": {"prefill": {"image": "x", "resources": {"claims": {}}}}}, "requests and limits"),
        ({"serving": {"prefill": {"image": "x", "env": [{"name": "A"}, {"name": "A"}]}}}, "duplicate"),
        (
            {"maxContextTokens": 100, "agent": {"profile": "chatbot", "overrides": {"promptTokens": 100}}},
            "maxContextTokens",
        ),
        ({"pools": {"prefill": ["x" * 64]}}, "at most 63"),
        # What the API server would refuse in the Deployment (tests/data/bad_inputs/aw-049..057).
        ({"serving": {"prefill": {"image": "x", "env": [{"name": "A=B"}]}}}, "other than '='"),
        ({"serving": {"prefill": {"image": "x", "env": [{"name": "É"}]}}}, "printable ASCII"),
        (
            {"serving": {"prefill": {"image": "x", "resources": {"requests": {"cpu": "1x"}}}}},
            r"requests\[cpu\]",
        ),
        ({"serving": {"prefill": {"image": "x", "resources": {"requests": {"cpu": "-1"}}}}}, "non-negative"),
        ({"serving": {"prefill": {"image": "x", "resources": {"requests": {"gpu": "1"}}}}}, "resource names"),
        (
            {"serving": {"prefill": {"image": "x", "resources": {"requests": {"k8s.io/x": "1"}}}}},
            "cannot be overcommitted",
        ),
        (
            {"serving": {"prefill": {"image": "x", "resources": {"limits": {"example.com/x": "0.5"}}}}},
            "whole numbers",
        ),
        (
            {
                "serving": {
                    "prefill": {
                        "image": "x",
                        "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
                    }
                }
            },
            "at most its limit",
        ),
        ({"serving": {"prefill": {"image": "vLLM/x: latest"}}}, "not an image reference"),
        ({"serving": {"prefill": {"image": "x:"}}}, "not an image reference"),
    ],
)
def test_spec_validators_mirror_cel(patch: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        AgentWorkloadSpec.model_validate({**BASE, **patch})


def test_valid_spec_passes() -> None:
    spec = AgentWorkloadSpec.model_validate(
        {**BASE, "pools": {"prefill": ["h100"], "exclude": ["t4"]}, "maxContextTokens": 8192}
    )
    assert spec.pools.exclude == ["t4"]


@pytest.mark.parametrize(
    "image",
    [
        "x",
        "vllm/vllm-openai:v0.11.0",
        "registry.example.com:5000/team/model_server:v1.2-rc",
        "Registry.Example/a__b/c-d:1",
        "localhost/x@sha256:" + "0" * 64,
        "[::1]:5000/x:latest",
    ],
)
def test_valid_serving_containers_pass(image: str) -> None:
    """Image references the kubelet parses; quantities in every form the API server reads; env names
    with anything printable but '='; unicode values."""
    container = {
        "image": image,
        "env": [{"name": "1 odd-but.valid_NAME~!", "value": "😀 ü \u2028"}],
        "args": ["--greeting", "héllo 😀"],
        "resources": {
            "requests": {
                "cpu": "1000m",
                "memory": "0.5Gi",
                "ephemeral-storage": "1e3",
                "example.com/fpga": "1",
            },
            "limits": {"cpu": "1", "memory": "512Mi", "example.com/fpga": "1", "hugepages-2Mi": "+2Mi"},
        },
    }
    spec = AgentWorkloadSpec.model_validate({**BASE, "serving": {"prefill": container}})
    assert spec.serving is not None and spec.serving.prefill.image == image


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"pricePerHour": 1}, "matchPool or matchGpuProduct"),
        ({"matchPool": "p"}, "set basedOn"),
        ({"matchPool": "p", "memory": "80GB"}, "all required unless basedOn"),
        ({"matchPool": "p", "basedOn": "h100-sxm", "peakTflops": {"tf99": 1}}, "compute classes"),
    ],
)
def test_profile_validators(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        AcceleratorProfileSpec.model_validate(doc)


def test_profile_hardware_entry() -> None:
    spec = AcceleratorProfileSpec.model_validate(
        {"matchGpuProduct": "X", "basedOn": "l4", "pricePerHour": 0.5}
    )
    assert spec.defines_hardware
    assert spec.hardware_entry("mine") == {"basedOn": "l4", "pricePerHour": 0.5, "name": "mine"}
    price_only = AcceleratorProfileSpec.model_validate({"matchPool": "p", "pricePerHour": 2})
    assert not price_only.defines_hardware


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1
    assert "differ" in capsys.readouterr().err
    assert main(["crds", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["acceleratorprofiles.hetsched.io.yaml", "agentworkloads.hetsched.io.yaml"]
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 0
    docs = list(yaml.safe_load_all((tmp_path / "agentworkloads.hetsched.io.yaml").read_text()))
    assert docs[0]["kind"] == "CustomResourceDefinition"
    (tmp_path / "agentworkloads.hetsched.io.yaml").write_text("# edited\n")
    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1
