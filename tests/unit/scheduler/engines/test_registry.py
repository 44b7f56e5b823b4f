"""The engine registry's data (images per engine and build with sources, device resources per
vendor, connectors, routers) and what a pool offers an engine (platform, image per phase)."""

from __future__ import annotations

import pytest
import yaml
from hetsched.scheduler.catalog import hardware_catalog
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.engines.platform import (
    PoolServing,
    ServingChoice,
    build_of_image,
    choose_engine,
    image_for,
    platform_of,
)
from hetsched.scheduler.engines.registry import TpRule, parse_registry, registry


def test_every_engine_build_and_router_names_a_pinned_image_and_its_source() -> None:
    reg = registry()
    assert set(reg.engines) == {"vllm", "sglang"}
    for key, engine in reg.engines.items():
        assert engine.key == key and engine.source and engine.command and engine.args
        for build in engine.builds.values():
            tag = build.image.rsplit(":", 1)[-1]
            assert ":" in build.image and tag not in ("latest", "") and build.source
        assert engine.router.image.rsplit(":", 1)[-1] != "latest" and engine.router.source
        for conn in engine.pd.connectors.values():
            assert conn.source and set(conn.roles) == {"prefill", "decode"}
    assert set(reg.engines["vllm"].builds) == {"cuda", "rocm", "cpu"}
    assert "cpu" not in reg.engines["sglang"].builds  # SGLang publishes no CPU image
    assert reg.device_resources() == ("amd.com/gpu", "google.com/tpu", "habana.ai/gaudi", "nvidia.com/gpu")


def test_vllm_nixl_as_vllm_032_accepts_it() -> None:
    nixl = registry().engine("vllm").connector(None)
    assert nixl.config == {"kv_connector": "NixlConnector"}
    assert nixl.roles == {"prefill": "kv_producer", "decode": "kv_consumer"}  # kv_both is deprecated
    assert nixl.tp is TpRule.DECODE_AT_LEAST_PREFILL and nixl.host_staging
    assert nixl.side_channel is not None and nixl.side_channel.port == 5600
    assert registry().engine("vllm").connector("mooncake").tp is TpRule.EQUAL
    with pytest.raises(KeyError, match="no KV connector 'p2p'"):
        registry().engine("vllm").connector("p2p")


def test_tp_rules() -> None:
    assert TpRule.DECODE_AT_LEAST_PREFILL.allows(1, 2) and not TpRule.DECODE_AT_LEAST_PREFILL.allows(4, 2)
    assert TpRule.EQUAL.allows(2, 2) and not TpRule.EQUAL.allows(1, 2)
    assert TpRule.ANY.allows(8, 1)


def test_a_bad_registry_names_the_field() -> None:
    doc = yaml.safe_load(
        (hardware_catalog.DATA_PATH.parent.parent.parent / "engines" / "data" / "engines.yaml").read_text()
    )
    doc["engines"]["vllm"]["pd"]["default"] = "nope"
    with pytest.raises(ValueError, match=r"engines\.vllm\.pd: .*nope"):
        parse_registry(doc)
    doc["engines"]["vllm"]["pd"]["default"] = "nixl"
    doc["engines"]["vllm"]["pd"]["connectors"]["nixl"]["pairs"] = {"gpu-tpu": "supported"}
    with pytest.raises(ValueError, match="unknown pair"):
        parse_registry(doc)


@pytest.mark.parametrize(
    ("hardware", "kind", "vendor", "build", "resource"),
    [
        ("h100-sxm", "gpu", "nvidia", "cuda", "nvidia.com/gpu"),
        ("t4", "gpu", "nvidia", "cuda", "nvidia.com/gpu"),
        ("mi300x", "gpu", "amd", "rocm", "amd.com/gpu"),
        ("xeon-6980p", "cpu", "intel", "cpu", None),
        ("epyc-9654", "cpu", "amd", "cpu", None),  # an AMD CPU is a CPU, not a ROCm device
    ],
)
def test_platform_of_catalog_hardware(
    hardware: str, kind: str, vendor: str, build: str, resource: str | None
) -> None:
    p = platform_of(get_hardware(hardware))
    assert (p.kind, p.vendor, p.build, p.device_resource) == (kind, vendor, build, resource)
    assert p.architecture  # every catalog entry names its generation


def test_a_gpu_without_vendor_is_nvidia_and_an_unknown_vendor_needs_a_resource() -> None:
    custom = hardware_catalog.hardware_from_entry(
        {"name": "mystery", "basedOn": "l4", "vendor": "", "architecture": ""}, "test"
    )
    assert platform_of(custom).device_resource == "nvidia.com/gpu"
    odd = hardware_catalog.hardware_from_entry({"name": "odd", "basedOn": "l4", "vendor": "Acme"}, "test")
    found = image_for(ServingChoice(), "decode", platform_of(odd))
    assert found.image is None and "serving.deviceResource" in found.source
    fixed = platform_of(odd, PoolServing(deviceResource="acme.com/npu", images={"vllm": "acme/vllm:1"}))
    assert image_for(ServingChoice(), "decode", fixed).image == "acme/vllm:1"


def test_image_for_each_pool_and_the_overrides_in_order() -> None:
    cpu, amd, l4 = (platform_of(get_hardware(h)) for h in ("xeon-6980p", "mi300x", "l4"))
    vllm = ServingChoice()
    assert image_for(vllm, "decode", l4).image == "vllm/vllm-openai:v0.32.0"
    assert image_for(vllm, "decode", cpu).image == "vllm/vllm-openai-cpu:v0.32.0"
    assert image_for(vllm, "decode", amd).image.startswith("rocm/vllm:")  # type: ignore[union-attr]
    # The pool's override, then the workload's own image, win.
    mirrored = platform_of(get_hardware("xeon-6980p"), PoolServing(images={"vllm": "mirror/vllm-cpu:1"}))
    assert image_for(vllm, "decode", mirrored).image == "mirror/vllm-cpu:1"
    mine = ServingChoice(prefill_image="mine/vllm:2")
    assert image_for(mine, "decode", mirrored).image == "mine/vllm:2"
    # A known build for other hardware is refused, naming the field it came from.
    cuda = ServingChoice(prefill_image="vllm/vllm-openai:v0.11.0")
    refused = image_for(cuda, "colocated", cpu)
    assert refused.image is None
    assert refused.source.startswith(
        "spec.serving.prefill.image vllm/vllm-openai:v0.11.0 is vLLM's CUDA build"
    )
    sglang = ServingChoice(engine="sglang")
    assert image_for(sglang, "decode", amd).image == "lmsysorg/sglang:v0.5.18-rocm720-mi30x"
    no_cpu = image_for(sglang, "prefill", cpu)
    assert (
        no_cpu.image is None and "no CPU build" in no_cpu.source and "serving.images.sglang" in no_cpu.source
    )


def test_build_of_image_and_engine_choice() -> None:
    assert build_of_image("vllm/vllm-openai:v0.11.0") == ("vllm", "cuda")
    assert build_of_image("docker.io/vllm/vllm-openai-cpu:v0.20.0") == ("vllm", "cpu")
    assert build_of_image("lmsysorg/sglang:v0.5.5.post3-rocm700-mi30x") == ("sglang", "rocm")
    assert build_of_image("lmsysorg/sglang:v0.5.9") == ("sglang", "cuda")
    assert build_of_image("registry.local/anything:1") is None
    assert choose_engine(None, ["lmsysorg/sglang:v0.5.9"]) == "sglang"
    assert choose_engine("vllm", ["lmsysorg/sglang:v0.5.9"]) == "vllm"  # spec.serving.engine wins
    assert choose_engine(None, [None]) == "vllm"


def test_pool_serving_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="extended resource"):
        PoolServing(deviceResource="gpu")
    with pytest.raises(ValueError, match="1-63"):
        PoolServing(images={"": "x:1"})
    assert PoolServing.model_validate({"deviceResource": "amd.com/gpu", "rdma": True}).rdma
