"""Hugging Face config.json loader: every supported family, catalog reproduction, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hetsched.scheduler.catalog.hf_config import load_hf_config
from hetsched.scheduler.catalog.model_catalog import MODELS
from hetsched.scheduler.catalog.models import AttentionKind, ModelConfig, WindowKind
from support import DATA

DATA = DATA / "hf_configs"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def arch(model: ModelConfig) -> dict[str, Any]:
    """Everything but the naming fields."""
    dump: dict[str, Any] = model.model_dump(exclude={"name", "source", "hf_id"})
    return dump


# ---- the fixtures reproduce the catalog -------------------------------------------------------------
@pytest.mark.parametrize(
    ("file", "key"),
    [
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("llama-3.1-70b", "llama-3.1-70b"),
        ("llama-3.1-70b", "llama-3-70b"),
        ("llama-3.1-405b", "llama-3.1-405b"),
        ("mixtral-8x7b", "mixtral-8x7b"),
        ("qwen3-32b", "qwen3-32b"),
        ("qwen3-30b-a3b", "qwen3-30b-a3b"),
        ("qwen3-235b-a22b", "qwen3-235b-a22b"),
        ("deepseek-v3", "deepseek-v3"),
        ("deepseek-v3", "deepseek-r1"),
        ("gpt-oss-20b", "gpt-oss-20b"),
        ("gpt-oss-120b", "gpt-oss-120b"),
        ("llama-4-scout-17b-16e", "llama-4-scout"),
        ("llama-4-maverick-17b-128e", "llama-4-maverick"),
    ],
)
def test_fixture_file_reproduces_catalog_entry(file: str, key: str) -> None:
    loaded = load_hf_config(DATA / f"{file}.json")
    assert arch(loaded) == arch(MODELS[key])
    assert loaded.total_params == MODELS[key].total_params


# ---- per family -------------------------------------------------------------------------------------
def test_llama_dense_gqa() -> None:
    m = load_hf_config(fixture("llama-3.1-8b"), name="x")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim) == (32, 4096, 32, 8, 128)
    assert m.attention_kind is AttentionKind.GQA
    assert m.moe is None and m.mla is None and not m.tie_embeddings
    assert m.max_position_embeddings == 131072
    assert m.native_weight_precision == "bf16"


def test_mistral_sliding_window_applies_to_every_layer() -> None:
    m = load_hf_config(DATA / "mistral-7b-v0.1.json")
    assert m.name == "mistral-7b-v0.1"  # default name: the file's stem (a config.json: its directory)
    assert (m.sliding_window, m.sliding_window_layers) == (4096, 32)
    assert m.sliding_window_kind is WindowKind.SLIDING
    assert m.kv_elements(100_000) == 32 * 4096 * 2 * 8 * 128
    assert m.total_params == pytest.approx(7.24e9, rel=0.01)  # HF safetensors: 7.24B


def test_mixtral_moe() -> None:
    m = load_hf_config(fixture("mixtral-8x7b"))
    assert m.moe is not None
    assert (m.moe.num_experts, m.moe.experts_per_token, m.moe.expert_intermediate_size) == (8, 2, 14336)
    assert m.intermediate_size == 0 and m.moe_layers == 32 and m.sliding_window is None


def test_qwen2_biases_on_qkv_only() -> None:
    m = load_hf_config(fixture("qwen2.5-7b-instruct"))
    assert m.attention_bias and m.attention_out_bias is False and not m.qk_norm
    h, q, kv = 3584, 28 * 128, 4 * 128
    assert m.attention_params_per_layer == 2 * h * q + 2 * h * kv + q + 2 * kv
    assert m.sliding_window_layers == 0  # use_sliding_window false
    # Qwen2.5-7B model card: 7.61B parameters, 6.53B non-embedding.
    assert m.total_params == pytest.approx(7.61e9, rel=0.01)
    assert m.total_params - 2 * m.embedding_params == pytest.approx(6.53e9, rel=0.01)


def test_qwen2_sliding_window_from_max_window_layers() -> None:
    cfg = fixture("qwen2.5-7b-instruct") | {"use_sliding_window": True, "max_window_layers": 20}
    m = load_hf_config(cfg)
    assert (m.sliding_window, m.sliding_window_layers) == (131072, 8)


def test_qwen3_dense_has_qk_norm_and_wide_queries() -> None:
    m = load_hf_config(fixture("qwen3-32b"))
    assert m.qk_norm and m.q_width == 8192 != m.hidden_size
    assert m.attention_params_per_layer == 2 * 5120 * 8192 + 2 * 5120 * 1024 + 2 * 128


def test_qwen3_moe_sparse_step_and_mlp_only_layers() -> None:
    cfg = fixture("qwen3-30b-a3b") | {"decoder_sparse_step": 2}
    m = load_hf_config(cfg)
    assert m.moe is not None and m.moe_layers == 24 and m.intermediate_size == 6144
    assert (m.moe.first_dense_layers, m.moe.layer_interval) == (0, 2)
    m = load_hf_config(fixture("qwen3-30b-a3b") | {"mlp_only_layers": [0, 1]})
    assert m.moe is not None and (m.moe.first_dense_layers, m.moe_layers, m.dense_layers) == (2, 46, 2)


def test_moe_layers_without_a_pattern_are_counted() -> None:
    """MoE layers that follow no "first dense, then every n-th" pattern: counted by ffn_layout."""
    m = load_hf_config(fixture("qwen3-30b-a3b") | {"mlp_only_layers": [5]})
    assert (m.moe_layers, m.dense_layers) == (47, 1)
    base = load_hf_config(fixture("qwen3-30b-a3b"))
    assert m.ffn_layout is not None
    assert (
        m.total_params
        == base.total_params
        - (
            base.moe.num_experts * base.expert_params + base.router_params  # type: ignore[union-attr]
        )
        + 3 * 2048 * 6144
    )


def test_deepseek_v3_mla_moe_fp8() -> None:
    m = load_hf_config(fixture("deepseek-v3"))
    assert m.attention_kind is AttentionKind.MLA and m.mla is not None
    assert (m.mla.q_lora_rank, m.mla.kv_lora_rank, m.mla.qk_rope_head_dim) == (1536, 512, 64)
    assert m.moe is not None and m.moe.router_bias and m.moe.num_shared_experts == 1
    assert (m.moe.first_dense_layers, m.moe_layers, m.dense_layers) == (3, 58, 3)
    assert m.native_weight_precision == "fp8"
    assert m.kv_elements_per_token_per_layer == 576


def test_deepseek_v2_lite_without_query_compression() -> None:
    m = load_hf_config(fixture("deepseek-v2-lite"))
    assert m.mla is not None and m.mla.q_lora_rank is None
    assert m.moe is not None and not m.moe.router_bias
    assert (m.moe.num_shared_experts, m.moe.first_dense_layers, m.moe_layers) == (2, 1, 26)
    # DeepSeek-V2 paper: V2-Lite has 15.7B parameters, 2.4B activated (DeepSeek's convention
    # leaves the input-embedding table out; 2.45B truncated to 2.4B).
    assert m.total_params == pytest.approx(15.7e9, rel=0.01)
    assert m.active_compute_params == pytest.approx(2.4e9, rel=0.025)


def test_deepseek_moe_layer_freq_is_converted() -> None:
    m = load_hf_config(fixture("deepseek-v2-lite") | {"moe_layer_freq": 2, "first_k_dense_replace": 3})
    # DeepSeek: layer i is MoE when i >= 3 and i % 2 == 0 -> 4, 6, ..., 26.
    assert m.moe is not None and m.moe_layers == 12
    assert (m.moe.first_dense_layers, m.moe.layer_interval) == (3, 2)


def test_deepseek_dense_when_no_routed_experts() -> None:
    m = load_hf_config(fixture("deepseek-v2-lite") | {"n_routed_experts": None})
    assert m.moe is None and m.intermediate_size == 10944


def test_gpt_oss() -> None:
    m = load_hf_config(fixture("gpt-oss-120b"))
    assert m.attention_bias and m.attention_sinks and m.head_dim == 64 and m.q_width == 4096
    assert m.moe is not None and m.moe.router_bias and m.moe.expert_bias
    assert (m.moe.num_experts, m.moe.experts_per_token) == (128, 4)
    assert (m.sliding_window, m.sliding_window_layers) == (128, 18)
    assert (m.native_weight_precision, m.native_expert_precision) == ("bf16", "mxfp4")
    # gpt-oss model card: attention 0.96B in total over 36 layers.
    assert 36 * m.attention_params_per_layer == pytest.approx(0.96e9, rel=0.01)


def test_gpt_oss_layer_types_must_match_layers() -> None:
    cfg = fixture("gpt-oss-20b") | {"layer_types": ["full_attention"] * 3}
    with pytest.raises(ValueError, match="layer_types' has 3 entries for 24 layers"):
        load_hf_config(cfg)


def test_llama4_scout_chunked_attention_and_vision() -> None:
    m = load_hf_config(fixture("llama-4-scout-17b-16e"))
    assert m.moe is not None and m.moe_layers == 48 and m.intermediate_size == 0
    assert (m.moe.num_experts, m.moe.num_shared_experts, m.moe.expert_intermediate_size) == (16, 1, 8192)
    # no_rope_layers empty: every 4th layer is global NoPE attention, the other 36 chunked (8192).
    assert (m.sliding_window, m.sliding_window_layers) == (8192, 36)
    assert m.sliding_window_kind is WindowKind.CHUNKED
    assert not m.qk_norm  # Llama 4's qk norm is a parameter-free L2 norm
    assert m.vision_params == 871_932_416


def test_llama4_maverick_interleaved_moe() -> None:
    m = load_hf_config(fixture("llama-4-maverick-17b-128e"))
    assert m.moe is not None and (m.moe_layers, m.dense_layers, m.moe.layer_interval) == (24, 24, 2)
    assert m.intermediate_size == 16384


def test_llama4_layer_types_override_no_rope_layers() -> None:
    cfg = fixture("llama-4-scout-17b-16e")
    cfg["text_config"] = cfg["text_config"] | {"layer_types": ["chunked_attention", "full_attention"] * 24}
    assert load_hf_config(cfg).sliding_window_layers == 24


def test_llama4_text_only() -> None:
    cfg = fixture("llama-4-scout-17b-16e")["text_config"] | {"architectures": ["Llama4ForCausalLM"]}
    m = load_hf_config(cfg)
    assert m.vision_params == 0
    assert m.total_params == MODELS["llama-4-scout"].total_params - MODELS["llama-4-scout"].vision_params


# ---- names, sources, precision --------------------------------------------------------------------------
def test_name_and_hf_id_from_name_or_path() -> None:
    m = load_hf_config(fixture("llama-3.1-8b") | {"_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"})
    assert m.name == "llama-3.1-8b-instruct" and m.hf_id == "meta-llama/Llama-3.1-8B-Instruct"


def test_directory_with_config_json(tmp_path: Path) -> None:
    model_dir = tmp_path / "My-Model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(fixture("qwen3-32b")))
    m = load_hf_config(model_dir)
    assert m.name == "my-model" and m.source.endswith("config.json")
    assert arch(m) == arch(MODELS["qwen3-32b"])


def test_model_type_inferred_from_architectures() -> None:
    cfg = fixture("llama-3.1-8b")
    del cfg["model_type"]
    assert load_hf_config(cfg).num_layers == 32


@pytest.mark.parametrize(
    ("quant", "weights"),
    [
        ({"quant_method": "awq", "bits": 4}, "int4"),
        ({"quant_method": "gptq", "bits": 8}, "int8"),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "nvfp4"),
        ({"quant_method": "fbgemm_fp8"}, "fp8"),
    ],
)
def test_quantization_config(quant: dict[str, Any], weights: str) -> None:
    m = load_hf_config(fixture("llama-3.1-8b") | {"quantization_config": quant})
    assert m.native_weight_precision == weights


def test_float16_checkpoint() -> None:
    assert (
        load_hf_config(fixture("mistral-7b-v0.1") | {"torch_dtype": "float16"}).native_weight_precision
        == "fp16"
    )


@pytest.mark.parametrize(
    ("dtype", "weights"),
    [
        ("bfloat16", "bf16"),
        ("torch.float16", "fp16"),
        ("half", "fp16"),
        ("float32", "fp32"),
        ("FP16", "fp16"),
        ("float8_e4m3fn", "fp8"),
        ("auto", "bf16"),
    ],
)
def test_accepted_dtypes(dtype: str, weights: str) -> None:
    cfg = fixture("llama-3.1-8b") | {"torch_dtype": dtype}
    assert load_hf_config(cfg).native_weight_precision == weights
    del cfg["torch_dtype"]
    assert load_hf_config(cfg | {"dtype": dtype}).native_weight_precision == weights  # the newer key


def test_missing_dtype_is_the_documented_bf16() -> None:
    cfg = fixture("llama-3.1-8b")
    cfg.pop("torch_dtype", None)
    cfg.pop("dtype", None)
    assert load_hf_config(cfg).native_weight_precision == "bf16"
    assert load_hf_config(cfg | {"torch_dtype": None}).native_weight_precision == "bf16"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"torch_dtype": "float7"}, "torch_dtype"),
        ({"torch_dtype": ""}, "torch_dtype"),
        ({"torch_dtype": 16}, "torch_dtype"),
        ({"dtype": "int3"}, "dtype"),
    ],
)
def test_unknown_dtype_is_an_error_naming_the_field(change: dict[str, Any], field: str) -> None:
    """Not silently bf16: a wrong dtype would mis-size the weights by 2-4x."""
    cfg = fixture("llama-3.1-8b")
    cfg.pop("torch_dtype", None)
    with pytest.raises(
        ValueError, match=rf"^config\.json: field '{field}' is .*: unknown dtype; accepted: "
    ) as e:
        load_hf_config(cfg | change)
    assert "bfloat16" in str(e.value) and "float16" in str(e.value) and "float32" in str(e.value)


def test_unknown_dtype_under_text_config_is_named() -> None:
    cfg = fixture("llama-4-scout-17b-16e")
    cfg.pop("torch_dtype", None)
    cfg["text_config"] = dict(cfg["text_config"]) | {"torch_dtype": "float7"}
    with pytest.raises(ValueError, match=r"field 'text_config\.torch_dtype' is 'float7'"):
        load_hf_config(cfg)


# ---- errors -----------------------------------------------------------------------------------------------
def test_missing_field_is_named() -> None:
    cfg = fixture("llama-3.1-8b")
    del cfg["num_key_value_heads"]
    with pytest.raises(ValueError, match=r"^config\.json: missing field 'num_key_value_heads'$"):
        load_hf_config(cfg)


def test_missing_nested_field_is_named_with_its_path(tmp_path: Path) -> None:
    cfg = fixture("llama-4-scout-17b-16e")
    del cfg["text_config"]["intermediate_size_mlp"]
    cfg["text_config"]["interleave_moe_layer_step"] = 2
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: missing field 'text_config\.intermediate_size_mlp'"):
        load_hf_config(path)


def test_unsupported_architecture_lists_supported_ones() -> None:
    cfg = {"architectures": ["FooForCausalLM"], "model_type": "foo", "hidden_size": 8}
    with pytest.raises(ValueError) as info:
        load_hf_config(cfg)
    msg = str(info.value)
    assert "unsupported architecture 'FooForCausalLM' (model_type 'foo'); supported:" in msg
    assert "LlamaForCausalLM (llama)" in msg and "GptOssForCausalLM (gpt_oss)" in msg


def test_no_model_type_and_no_architectures() -> None:
    with pytest.raises(ValueError, match="missing field 'model_type'"):
        load_hf_config({"hidden_size": 8})


def test_wrong_type_is_named() -> None:
    with pytest.raises(ValueError, match="field 'hidden_size' must be an integer, got '4096'"):
        load_hf_config(fixture("llama-3.1-8b") | {"hidden_size": "4096"})
    with pytest.raises(ValueError, match="field 'tie_word_embeddings' must be true or false"):
        load_hf_config(fixture("llama-3.1-8b") | {"tie_word_embeddings": "no"})


def test_schema_violation_names_the_file() -> None:
    with pytest.raises(ValueError, match=r"config\.json: .*num_kv_heads"):
        load_hf_config(fixture("llama-3.1-8b") | {"num_key_value_heads": 7})


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n')
    with pytest.raises(ValueError, match=r"config\.json: malformed JSON at line 3 column 23"):
        load_hf_config(path)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_hf_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_hf_config(tmp_path / "nope.json")
