"""The config readers of the 2025-2026 families: layouts read, refusals that name the feature,
context limits, architecture fallback, bounded parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hetsched.scheduler.catalog.hf_config import SUPPORTED_ARCHITECTURES, Unsupported, load_hf_config
from hetsched.scheduler.catalog.layers import LayerType
from hetsched.scheduler.catalog.model_catalog import MODELS
from support import DATA, REPO

DATA = DATA / "hf_configs"
CATALOG = REPO / "scheduler" / "catalog" / "data" / "configs"


def config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def test_catalog_configs_are_the_corpus_files() -> None:
    """The catalog loads its own copies (shipped in the package); they are the corpus's files."""
    for path in CATALOG.iterdir():
        folder = DATA / "quantization" if "quant_config" in path.name else DATA
        assert path.read_bytes() == (folder / path.name).read_bytes(), path.name


def test_every_model_type_has_a_real_config() -> None:
    """Each family read has a real config.json in the corpus."""
    seen: set[str] = set()
    for path in DATA.glob("*.json"):
        data = json.loads(path.read_text())
        seen.add(str(data.get("model_type")))
        text = data.get("text_config")
        if isinstance(text, dict) and "model_type" in text:
            seen.add(text["model_type"])
    # Types only a wrapper names, or sharing a reader with a type that has a file.
    missing = set(SUPPORTED_ARCHITECTURES) - seen
    assert missing <= {"llama4_text", "qwen3_5_moe_text", "mistral", "gemma4_text", "mimo_v2"}, missing


def test_qwen3_next_layout() -> None:
    m = MODELS["qwen3-next-80b-a3b"]
    assert [(g.type, g.count, g.num_kv_heads, g.head_dim) for g in m.attention_groups] == [
        (LayerType.FULL, 12, 2, 256)
    ]
    assert m.linear_attention is not None and m.linear_attention.layers == 36
    assert m.attention_output_gate and m.qk_norm
    assert m.moe is not None and m.moe.shared_expert_gate and m.moe.num_experts == 512


def test_qwen35_recurrent_state_is_fp32_from_mamba_ssm_dtype() -> None:
    assert MODELS["qwen3.5-27b"].linear_attention is not None
    assert MODELS["qwen3.5-27b"].linear_attention.state_dtype == "fp32"
    assert MODELS["qwen3-next-80b-a3b"].linear_attention is not None
    assert MODELS["qwen3-next-80b-a3b"].linear_attention.state_dtype == "bf16"


def test_nemotron_h_pattern_and_block_list_schemas() -> None:
    nano = MODELS["nemotron-3-nano-30b-a3b"]
    assert (nano.num_layers, nano.attention_layer_count, nano.state_layers) == (52, 6, 23)
    assert (nano.dense_layers, nano.moe_layers) == (0, 23)
    ultra = MODELS["nemotron-3-ultra-550b-a55b"]  # layers_block_type, no num_hidden_layers
    assert (ultra.num_layers, ultra.attention_layer_count, ultra.state_layers, ultra.moe_layers) == (
        108,
        12,
        48,
        48,
    )
    assert ultra.moe is not None and ultra.moe.latent_size == 2048


def test_nemotron_super_latent_moe_parameters() -> None:
    """Nemotron 3 Super: routed experts at the 1024-wide latent (512 of them, ReLU², 2688 wide),
    hidden → latent → hidden projections, a 5376-wide shared expert; 120.67B vs the name's 120B."""
    m = load_hf_config(DATA / "nemotron-3-super-120b-a12b.json")
    assert m.moe is not None and m.expert_params == 2 * 1024 * 2688
    assert m.latent_projection_params == 2 * 4096 * 1024
    assert m.shared_expert_params == 2 * 4096 * 5376
    assert abs(m.total_params / 120e9 - 1) < 0.01
    assert m.total_params == 120_668_687_360 + 40 * 512  # transformers' count + the router biases


def test_gemma3_defaults_and_windows() -> None:
    m = MODELS["gemma-3-27b"]
    assert m.vocab_size == 262_208 and m.tie_embeddings  # transformers' defaults: not in the file
    assert [(g.type, g.count, g.window) for g in m.attention_groups] == [
        (LayerType.SLIDING, 52, 1024),
        (LayerType.FULL, 10, None),
    ]
    assert m.context_limit == 131_072  # linear RoPE factor 8 already counted (vLLM's Gemma 3 rule)


def test_gemma4_global_layers_have_their_own_geometry() -> None:
    m = MODELS["gemma-4-26b-a4b"]
    local, global_ = m.attention_groups
    assert (local.count, local.num_kv_heads, local.head_dim, local.window) == (25, 8, 256, 1024)
    assert (global_.count, global_.num_kv_heads, global_.head_dim, global_.shared_kv) == (5, 2, 512, True)
    assert m.ffn_layout is not None and m.ffn_layout.parallel  # dense MLP beside the experts


def test_mimo_asymmetric_heads_and_sinks() -> None:
    m = load_hf_config(DATA / "mimo-v2-flash.json")
    full, swa = sorted(m.attention_groups, key=lambda g: g.type.value)
    assert (full.count, full.num_kv_heads, full.head_dim, full.v_head_dim, full.sinks) == (
        9,
        4,
        192,
        128,
        False,
    )
    assert (swa.count, swa.num_kv_heads, swa.window, swa.sinks) == (39, 8, 128, True)
    assert m.total_params == 308_778_768_832 + 47 * 256
    assert (
        abs(m.total_params / 309e9 - 1) < 0.01
    )  # Ascend msModelSlim MiMo-V2-Flash README: "总参数量为 309B"
    v25 = load_hf_config(
        config("mimo-v2-flash") | {"model_type": "mimo_v2", "architectures": ["MiMoV2ForCausalLM"]}
    )
    assert v25.total_params == m.total_params


def test_glm52_shared_indexers() -> None:
    m = MODELS["glm-5.2"]
    assert [(g.count, g.indexer) for g in m.attention_groups] == [(21, True), (57, False)]
    freq = load_hf_config(config("glm-5.2") | {"indexer_types": None})  # from index_topk_freq / offset
    assert [(g.count, g.indexer) for g in freq.attention_groups] == [(21, True), (57, False)]


def test_kimi_k2_reads_as_deepseek_v3_and_k25_counts_its_vision_tower() -> None:
    k2, k25 = MODELS["kimi-k2"], MODELS["kimi-k2.5"]
    assert k2.total_params == k25.total_params - k25.vision_params
    assert k25.vision_params == pytest.approx(450e6, rel=0.05)  # "Total params ~450M" (extracted tower)


def test_unknown_model_type_read_by_its_architecture_and_said_so() -> None:
    m = load_hf_config(config("phi-4") | {"model_type": "phi4_custom"})
    assert m.total_params == MODELS["phi-4"].total_params
    assert m.notes == (
        "model_type 'phi4_custom' is not modelled; read as Phi3ForCausalLM (phi3), its architectures entry",
    )


def test_context_limits() -> None:
    assert MODELS["qwen3-235b-a22b"].context_limit == 40_960
    assert MODELS["llama-3.1-8b"].context_limit == 131_072  # llama3 RoPE: already scaled
    assert MODELS["devstral-small-2-24b"].context_limit == 393_216  # YaRN: already scaled
    assert MODELS["deepseek-v3.2"].context_limit == 163_840
    linear = load_hf_config(config("phi-4") | {"rope_scaling": {"rope_type": "linear", "factor": 4.0}})
    assert linear.context_limit == 4 * 16_384  # vLLM multiplies linear / dynamic factors
    assert load_hf_config(config("phi-4")).context_limit == 16_384
    # Qwen3 serves 40,960 tokens; with YaRN (factor 4 from 32,768, as Qwen documents) 131,072.
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32_768}
    assert load_hf_config(config("qwen3-235b-a22b") | {"rope_scaling": yarn}).context_limit == 131_072


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("qwen3.5-27b", "text_config", "layer_types", ["mamba_attention"] * 64),
            "layer type 'mamba_attention'",
        ),
        (("nemotron-h-56b", None, "hybrid_override_pattern", "MX" * 59), "layer type 'X'"),
        (("minimax-m2.7", None, "attn_type_list", [0] + [1] * 61), "lightning"),
        (("gemma-4-26b-a4b", "text_config", "num_kv_shared_layers", 10), "num_kv_shared_layers"),
        (
            ("gemma-4-26b-a4b", "text_config", "hidden_size_per_layer_input", 256),
            "per-layer input embeddings",
        ),
        (("gemma-4-26b-a4b", None, "audio_config", {"hidden_size": 1536}), "audio tower"),
        (
            ("gemma-3-27b", "vision_config", "model_type", "clip_vision_model"),
            "vision tower 'clip_vision_model'",
        ),
        (("devstral-small-2-24b", "text_config", "model_type", "mamba2"), "text model 'mamba2'"),
    ],
)
def test_what_is_not_modelled_is_refused_by_name(
    change: tuple[str, str | None, str, Any], message: str
) -> None:
    name, section, key, value = change
    cfg = config(name)
    (cfg[section] if section else cfg)[key] = value
    with pytest.raises(Unsupported, match=message):
        load_hf_config(cfg)


def test_unknown_architecture_is_still_unsupported() -> None:
    with pytest.raises(Unsupported, match="unsupported architecture 'RwkvForCausalLM'"):
        load_hf_config({"architectures": ["RwkvForCausalLM"], "model_type": "rwkv"})


def test_parsing_is_bounded() -> None:
    with pytest.raises(ValueError, match="entries"):
        load_hf_config(
            config("qwen3.5-27b")
            | {"text_config": config("qwen3.5-27b")["text_config"] | {"layer_types": ["x"] * 100_000}}
        )
    with pytest.raises(ValueError, match="must list 1 to 1024 layers"):
        load_hf_config(config("nemotron-3-ultra-550b-a55b") | {"layers_block_type": ["mamba"] * 2000})


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(ValueError, match=r"nested too deeply|malformed|levels deep|more than the"):
        load_hf_config(path)  # (now refused for its size, before parsing: config_input bounds)
