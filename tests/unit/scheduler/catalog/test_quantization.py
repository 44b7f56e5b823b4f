"""Quantized checkpoints: the bytes each weight group is stored in, read from quantization_config.

Hand calculations per method (bytes per parameter): W8A8 INT8 per channel 1; W4A16 INT4 in groups
of 32 with BF16 scales 0.5 + 2/32; NVFP4 0.5 + one FP8 scale per 16; MXFP4 0.5 + one E8M0 scale
per 32; AWQ group 128 with FP16 scales and packed 4-bit zero points 0.5 + 2/128 + 0.5/128; GPTQ
likewise (zero points stored even when symmetric). Excluded modules keep the checkpoint's BF16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hetsched.scheduler.catalog.hf_config import Unsupported, load_hf_config
from hetsched.scheduler.catalog.layers import WeightGroup
from hetsched.scheduler.catalog.model_catalog import MODELS
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from support import DATA

DATA = DATA / "hf_configs"
QUANT = DATA / "quantization"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def block(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((QUANT / name).read_text())
    return data


def resident(model: Any) -> float:
    cost = estimate_phase(model, Phase.DECODE, batch=1, new_tokens=1, context_tokens=0)
    return cost.weight_resident_bytes


# Llama-3.1-8B: embedding and LM head 128256 × 4096 each, norms (2·32 + 1) × 4096, the rest linear.
EMBED = 128_256 * 4096
NORMS = 65 * 4096
LINEAR = 8_030_261_248 - 2 * EMBED - NORMS


def test_llama_8b_w8a8_is_int8_not_bf16() -> None:
    """The issue's case: a compressed-tensors W8A8 config was counted as BF16 (16.06 GB). INT8
    linear layers, the LM head left out (``ignore: [lm_head]``), the embedding table never
    quantized (vLLM quantizes linear layers only): 9.08 GB."""
    m = load_hf_config(
        fixture("llama-3.1-8b") | {"quantization_config": block("ministral-8b-w8a8.quantization_config.json")}
    )
    assert m.native_weight_precision == "int8"
    assert resident(m) == LINEAR * 1 + (2 * EMBED + NORMS) * 2
    assert resident(m) == pytest.approx(9.08e9, rel=0.001)
    assert resident(load_hf_config(fixture("llama-3.1-8b"))) == 8_030_261_248 * 2  # 16.06 GB in BF16


def test_awq_sidecar_and_inline_block() -> None:
    awq = 0.5 + 2 / 128 + 0.5 / 128
    for q in (
        block("yarn-mistral-7b-awq.quantization_config.json"),
        block("llama-2-7b-chat-awq.quant_config.json"),
    ):
        m = load_hf_config(fixture("llama-3.1-8b"), quantization_config=q)
        assert m.native_weight_precision == "int4"
        assert resident(m) == LINEAR * awq + (2 * EMBED + NORMS) * 2  # AWQ never quantizes the LM head


def test_awq_sidecar_read_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(fixture("llama-3.1-8b")))
    (tmp_path / "quant_config.json").write_text((QUANT / "llama-2-7b-chat-awq.quant_config.json").read_text())
    m = load_hf_config(tmp_path)
    assert m.checkpoint is not None and m.checkpoint.method == "awq"


def test_gptq_group_32_and_per_channel() -> None:
    m = load_hf_config(
        fixture("qwen2.5-7b-instruct"), quantization_config=block("qwen2.5-0.5b-gptq.quantize_config.json")
    )
    ck = m.checkpoint
    assert ck is not None and ck.bytes_of(WeightGroup.ATTENTION) == 0.5 + 2 / 32 + 0.5 / 32
    assert ck.bytes_of(WeightGroup.LM_HEAD) == 2.0  # lm_head: false
    q = block("shuttle-3-gptq.quantize_config.json") | {"group_size": -1}
    m = load_hf_config(fixture("qwen2.5-7b-instruct"), quantization_config=q)
    assert m.checkpoint is not None and m.checkpoint.bytes_of(WeightGroup.DENSE_FFN) == 0.5


def test_kimi_k25_int4_experts_bf16_elsewhere() -> None:
    """compressed-tensors W4A16 inside text_config; ignore: lm_head, every self_attn, the shared
    experts and the dense MLP (re: expressions): only the routed experts are INT4 (g32, BF16 scales)."""
    m = MODELS["kimi-k2.5"]
    assert (m.native_weight_precision, m.native_expert_precision) == ("bf16", "int4")
    groups = dict(m.params_by_group)
    experts = groups[WeightGroup.EXPERTS]
    assert experts == 60 * 384 * 3 * 7168 * 2048
    assert resident(m) == experts * (0.5 + 2 / 32) + (m.total_params - experts) * 2


def test_qwen35_nvfp4_experts_only() -> None:
    """ModelOpt NVFP4 (config.json's quantization_config, the ``ignore`` list): linear attention,
    full attention, shared experts and their gates, the vision tower and lm_head stay BF16."""
    m = MODELS["qwen3.5-122b-a10b-nvfp4"]
    assert (m.native_weight_precision, m.native_expert_precision) == ("bf16", "nvfp4")
    experts = dict(m.params_by_group)[WeightGroup.EXPERTS]
    assert resident(m) == experts * (0.5 + 1 / 16) + (m.total_params - experts) * 2
    assert m.checkpoint is not None and m.checkpoint.kv_cache_format == "fp8"


def test_legacy_modelopt_sidecar() -> None:
    """nvidia/Qwen3-235B-A22B-NVFP4 (ModelOpt 0.33): no quantization_config, an hf_quant_config.json
    with ``exclude_modules`` (every router, lm_head)."""
    m = MODELS["qwen3-235b-a22b-nvfp4"]
    groups = dict(m.params_by_group)
    nvfp4 = sum(groups[g] for g in (WeightGroup.ATTENTION, WeightGroup.EXPERTS))
    assert resident(m) == nvfp4 * 0.5625 + (m.total_params - nvfp4) * 2
    assert m.native_weight_precision == "nvfp4"


def test_gemma4_nvfp4_keeps_attention_and_vision_bf16() -> None:
    m = MODELS["gemma-4-31b-nvfp4"]
    groups = dict(m.params_by_group)
    ffn = groups[WeightGroup.DENSE_FFN]
    assert ffn == 60 * 3 * 5376 * 21504
    assert resident(m) == ffn * 0.5625 + (m.total_params - ffn) * 2


def test_mxfp4_gpt_oss_unchanged() -> None:
    """gpt-oss: MXFP4 routed experts (4 bits + an E8M0 scale per 32), everything else BF16."""
    m = MODELS["gpt-oss-120b"]
    experts = 36 * 128 * (3 * 2880 * 2880 + 2 * 2880 + 2880)
    assert resident(m) == (m.total_params - experts) * 2 + experts * 0.53125


def test_fp8_exclusion_lists() -> None:
    """FP8 with ``modules_to_not_convert`` (Qwen3-30B-A3B-FP8: lm_head, norms, every router) and
    ``ignored_layers`` (MiMo: o_proj of some layers)."""
    m = MODELS["qwen3-30b-a3b-fp8"]
    g = dict(m.params_by_group)
    bf16 = g[WeightGroup.LM_HEAD] + g[WeightGroup.NORMS] + g[WeightGroup.ROUTER]
    assert resident(m) == bf16 * 2 + (m.total_params - bf16) * 1
    cfg = fixture("mimo-v2-flash")
    cfg["quantization_config"] = cfg["quantization_config"] | {
        "ignored_layers": [f"model.layers.{i}.self_attn.o_proj" for i in range(48)]
    }
    mimo = load_hf_config(cfg)
    o_proj = 48 * 64 * 128 * 4096  # heads × v_head_dim × hidden in every layer
    assert resident(mimo) == (mimo.total_params - o_proj) * 1 + o_proj * 2


def test_requested_weights_override_the_checkpoint() -> None:
    m = MODELS["kimi-k2.5"]
    from hetsched.scheduler.estimator.precision import Precision

    p = Precisions.requested(m, weights=Precision.FP8)
    assert p.checkpoint is None
    cost = estimate_phase(m, Phase.DECODE, batch=1, new_tokens=1, context_tokens=0, precisions=p)
    assert cost.weight_resident_bytes == m.total_params * 1


@pytest.mark.parametrize(
    ("quant", "message"),
    [
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quantization method 'bitsandbytes'"),
        ({"quant_method": "gguf"}, "quantization method 'gguf'"),
        ({"quant_method": "gptq", "bits": 3}, "3-bit integer weights are not modelled"),
        (
            {"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"},
            "ModelOpt quantization algorithm 'W4A8_AWQ'",
        ),
        (
            {"quant_method": "gptq", "bits": 4, "dynamic": {"+:.*attn.*": {"bits": 8}}},
            "GPTQ per-module overrides",
        ),
        (
            {"quant_method": "fp8", "modules_to_not_convert": ["model.layers.0.mystery_block"]},
            "quantization exclusion 'model.layers.0.mystery_block' names no module",
        ),
    ],
)
def test_unread_quantization_is_refused_by_name(quant: dict[str, Any], message: str) -> None:
    with pytest.raises(Unsupported, match=message):
        load_hf_config(fixture("llama-3.1-8b") | {"quantization_config": quant})


def test_regex_exclusions_are_never_executed() -> None:
    """A catastrophic-backtracking expression is classified by the names it mentions, not run."""
    evil = "re:(a+)+$" + "a" * 50
    with pytest.raises(Unsupported, match="names no module"):
        load_hf_config(
            fixture("llama-3.1-8b")
            | {"quantization_config": {"quant_method": "fp8", "ignored_layers": [evil]}}
        )
