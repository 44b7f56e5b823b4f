"""Built-in model architectures, each from its published ``config.json`` (or the paper).

Every Hugging Face entry below is a trimmed copy of the fields of the model's published
``config.json`` that :func:`hf_config.load_hf_config` reads, passed through that loader, so the
catalog and user-supplied configs share one code path. ``source`` is the config.json URL.

Parameter-count conventions (checked against the published figures in ``tests/unit/test_catalog.py``):

* ``total_params`` counts embeddings, LM head, norms, biases, routers, every expert, and for
  Llama 4 the vision tower that ships in the checkpoint (0.87B); DeepSeek-V3/R1's MTP module
  (14B, used only for speculative decoding) is left out, as in DeepSeek's 671B.
* Vendors publish "active" parameters two ways. Mistral (Mixtral 12.9B), Qwen (Qwen3-30B-A3B
  3.3B, -235B-A22B 22B) and Meta (Llama 4 17B) include the input-embedding table: compare with
  ``active_params``. OpenAI (gpt-oss-120b 5.13B, -20b 3.61B: exact) and DeepSeek (V3 37B,
  V2-Lite 2.4B) leave it out, since a token reads one row of it: compare with
  ``active_compute_params``. Our DeepSeek-V3 count is 36.6B by DeepSeek's convention (37.5B with
  the embedding table); "37B" is a rounded figure.

The paper's study model (Zhao & Liu, arXiv 2601.22001, Figure 3: "a 48-layer model with a hidden
dimension of 2048 and 32 attention heads, all operating at 16-bit precision") is given in three
attention variants. The paper states only those three numbers; our assumptions, chosen so that
only the attention/KV path differs between the variants:

* head_dim 64 (= 2048/32); FFN 4 × hidden = 8192, non-gated (GPT-style, two matrices), untied
  embeddings, vocabulary 32000 (LLaMA-2's);
* ``study-mha``: 32 KV heads; ``study-gqa``: 8 KV heads (LLaMA-3's 4:1 query:KV ratio);
* ``study-mla``: DeepSeek-style MLA with kv_lora_rank 512 and a decoupled RoPE key of 64 (the
  values DeepSeek uses in V2, V2-Lite, V3 — V2-Lite has this very hidden size, 2048), per-head
  q/k "nope" and v widths of 64 (= the MHA head_dim) and no query compression (q_lora_rank null,
  as in V2-Lite). KV per token and layer: 512 + 64 = 576 elements vs 4096 (MHA) and 1024 (GQA).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from hetsched.scheduler.catalog.hf_config import load_hf_config
from hetsched.scheduler.catalog.models import MLAConfig, ModelConfig


class UnknownModelError(KeyError, ValueError):
    """No catalog model of that name or Hugging Face id; the message lists close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


_LLAMA_ROPE = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}


def _llama31(hidden: int, inter: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": 8,
        "rope_scaling": _LLAMA_ROPE,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": 128256,
    }


_QWEN3_32B: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "head_dim": 128,
    "hidden_size": 5120,
    "intermediate_size": 25600,
    "max_position_embeddings": 40960,
    "max_window_layers": 64,
    "num_attention_heads": 64,
    "num_hidden_layers": 64,
    "num_key_value_heads": 8,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def _qwen3_moe(hidden: int, layers: int, heads: int, kv: int, moe_inter: int, inter: int) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "attention_bias": False,
        "decoder_sparse_step": 1,
        "head_dim": 128,
        "hidden_size": hidden,
        "intermediate_size": inter,  # unused: every layer is MoE (mlp_only_layers empty)
        "max_position_embeddings": 40960,
        "max_window_layers": layers,
        "mlp_only_layers": [],
        "moe_intermediate_size": moe_inter,
        "norm_topk_prob": True,
        "num_attention_heads": heads,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


_DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "attention_bias": False,
    "first_k_dense_replace": 3,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "v_head_dim": 128,
    "vocab_size": 129280,
}


_LLAMA4_VISION: dict[str, Any] = {
    "hidden_size": 1408,
    "image_size": 336,
    "intermediate_size": 5632,
    "model_type": "llama4_vision_model",
    "multi_modal_projector_bias": False,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 34,
    "patch_size": 14,
    "pixel_shuffle_ratio": 0.5,
    "projector_input_dim": 4096,
    "projector_output_dim": 4096,
    "vision_output_dim": 4096,
}


def _llama4(experts: int, moe_step: int, max_pos: int, qk_norm: bool) -> dict[str, Any]:
    return {
        "architectures": ["Llama4ForConditionalGeneration"],
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text",
            "attention_bias": False,
            "attention_chunk_size": 8192,
            "head_dim": 128,
            "hidden_size": 5120,
            "interleave_moe_layer_step": moe_step,
            "intermediate_size": 8192,
            "intermediate_size_mlp": 16384,
            "max_position_embeddings": max_pos,
            "no_rope_layers": [],  # empty: every 4th layer is a global NoPE layer, the rest chunked
            "num_attention_heads": 40,
            "num_experts_per_tok": 1,
            "num_hidden_layers": 48,
            "num_key_value_heads": 8,
            "num_local_experts": experts,
            "torch_dtype": "bfloat16",
            "use_qk_norm": qk_norm,
            "vocab_size": 202048,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vision_config": _LLAMA4_VISION,
    }


def _gpt_oss(layers: int, experts: int) -> dict[str, Any]:
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "attention_bias": True,
        "experts_per_token": 4,
        "head_dim": 64,
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "layer_types": ["sliding_attention", "full_attention"] * (layers // 2),
        "max_position_embeddings": 131072,
        "num_attention_heads": 64,
        "num_experts_per_tok": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": 8,
        "num_local_experts": experts,
        "quantization_config": {
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
            "quant_method": "mxfp4",
        },
        "sliding_window": 128,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": 201088,
    }


_MIXTRAL_8X7B: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}

#: key → (Hugging Face repo of the config.json, config, extra names that resolve to it).
_HF_ENTRIES: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", _llama31(4096, 14336, 32, 32), ("meta-llama-3.1-8b",)),
    "llama-3.1-70b": (
        "meta-llama/Llama-3.1-70B",
        _llama31(8192, 28672, 80, 64),
        ("meta-llama-3.1-70b", "llama-3.3-70b", "meta-llama/Llama-3.3-70B-Instruct"),
    ),
    # The paper's "LLaMA3-70B": Meta-Llama-3-70B has the same shapes as 3.1-70B; its own config
    # says max_position_embeddings 8192 (no RoPE scaling). We keep 3.1's 131072 so that the
    # paper's long agent contexts can be evaluated on it.
    "llama-3-70b": ("meta-llama/Meta-Llama-3-70B", _llama31(8192, 28672, 80, 64), ("llama3-70b",)),
    "llama-3.1-405b": (
        "meta-llama/Llama-3.1-405B",
        _llama31(16384, 53248, 126, 128),
        ("meta-llama-3.1-405b",),
    ),
    "qwen3-32b": ("Qwen/Qwen3-32B", _QWEN3_32B, ()),
    "qwen3-30b-a3b": ("Qwen/Qwen3-30B-A3B", _qwen3_moe(2048, 48, 32, 4, 768, 6144), ()),
    "qwen3-235b-a22b": ("Qwen/Qwen3-235B-A22B", _qwen3_moe(4096, 94, 64, 4, 1536, 12288), ()),
    "deepseek-v3": ("deepseek-ai/DeepSeek-V3", _DEEPSEEK_V3, ()),
    "deepseek-r1": ("deepseek-ai/DeepSeek-R1", _DEEPSEEK_V3, ()),
    "llama-4-scout": (
        "meta-llama/Llama-4-Scout-17B-16E",
        _llama4(16, 1, 10485760, qk_norm=True),
        ("llama-4-scout-17b-16e",),
    ),
    "llama-4-maverick": (
        "meta-llama/Llama-4-Maverick-17B-128E",
        _llama4(128, 2, 1048576, qk_norm=False),
        ("llama-4-maverick-17b-128e",),
    ),
    "gpt-oss-20b": ("openai/gpt-oss-20b", _gpt_oss(24, 32), ()),
    "gpt-oss-120b": ("openai/gpt-oss-120b", _gpt_oss(36, 128), ()),
    "mixtral-8x7b": ("mistralai/Mixtral-8x7B-v0.1", _MIXTRAL_8X7B, ()),
}

_PAPER = (
    "Zhao & Liu, arXiv 2601.22001, Figure 3 (48 layers, hidden 2048, 32 heads, 16-bit); see module docstring"
)


def _study(name: str, kv_heads: int, mla: MLAConfig | None = None) -> ModelConfig:
    return ModelConfig(
        name=name,
        source=_PAPER,
        num_layers=48,
        hidden_size=2048,
        num_heads=32,
        num_kv_heads=kv_heads,
        head_dim=64,
        intermediate_size=4 * 2048,
        gated_ffn=False,
        vocab_size=32000,
        mla=mla,
    )


@dataclass(frozen=True)
class _DataEntry:
    """A catalog model read from its config.json copy in ``data/configs`` (``data/models.yaml``)."""

    key: str
    hf_id: str
    config: str
    source: str
    aliases: tuple[str, ...]
    exact: bool  # only the id and aliases resolve to it (quantized checkpoints)
    quantization: str | None


def _data_entries() -> list[_DataEntry]:
    index = yaml.safe_load(
        resources.files(__package__).joinpath("data/models.yaml").read_text(encoding="utf-8")
    )
    return [
        _DataEntry(
            key=e["key"],
            hf_id=e["hf_id"],
            config=e["config"],
            source=e["source"],
            aliases=tuple(e.get("aliases", ())),
            exact=e.get("match") == "exact",
            quantization=e.get("quantization"),
        )
        for e in index["models"]
    ]


_DATA_ENTRIES = _data_entries()


def _load_data_entry(e: _DataEntry) -> ModelConfig:
    configs = resources.files(__package__).joinpath("data/configs")
    config = json.loads(configs.joinpath(e.config).read_text(encoding="utf-8"))
    sidecar = (
        json.loads(configs.joinpath(e.quantization).read_text(encoding="utf-8")) if e.quantization else None
    )
    source = f"{_hf(e.hf_id)} (copy: {e.source})"
    return load_hf_config(config, name=e.key, hf_id=e.hf_id, source=source, quantization_config=sidecar)


def _build() -> dict[str, ModelConfig]:
    models = {
        key: load_hf_config(config, name=key, hf_id=repo, source=_hf(repo))
        for key, (repo, config, _) in _HF_ENTRIES.items()
    }
    for e in _DATA_ENTRIES:
        models[e.key] = _load_data_entry(e)
    models["study-mha"] = _study("study-mha", 32)
    models["study-gqa"] = _study("study-gqa", 8)
    models["study-mla"] = _study(
        "study-mla",
        32,
        MLAConfig(
            kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=64, qk_rope_head_dim=64, v_head_dim=64
        ),
    )
    return models


MODELS: dict[str, ModelConfig] = _build()

# ---- lookup -----------------------------------------------------------------------------------------
# Name variants that denote the same architecture: org prefixes, "Meta-" prefixes, and suffixes for
# instruct/base/chat tunes, quantized re-uploads and dated refreshes (e.g. DeepSeek-R1-0528,
# Qwen3-30B-A3B-Instruct-2507, nvidia/Llama-3.1-8B-Instruct-FP8, Mixtral-8x7B-Instruct-v0.1).
_SUFFIXES = re.compile(
    r"-(instruct|it|chat|base|hf|original|bf16|fp8|fp8-dynamic|fp4|nvfp4|mxfp4|awq|gptq|int4|int8|w4a16|w8a8"
    r"|thinking|v0\.\d+|\d{4})$"
)


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = key.rsplit("/", 1)[-1]
    key = key.removeprefix("meta-")
    while True:
        stripped = _SUFFIXES.sub("", key)
        if stripped == key:
            return key
        key = stripped


def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    exact = {e.key for e in _DATA_ENTRIES if e.exact}
    for key, model in MODELS.items():
        table[key] = key
        if model.hf_id:
            table[model.hf_id.lower()] = key
            if key not in exact:
                table.setdefault(_normalise(model.hf_id), key)
    extras = [(key, extra) for key, (_, _, extra) in _HF_ENTRIES.items()]
    extras += [(e.key, e.aliases) for e in _DATA_ENTRIES]
    for key, aliases in extras:
        for alias in aliases:
            table.setdefault(alias.lower(), key)
            if key not in exact:
                table.setdefault(_normalise(alias), key)
    return table


_ALIASES = _aliases()


def resolve_model_name(name: str) -> str | None:
    """The catalog key for a key or Hugging Face id (any case, instruct/base/quantized variants)."""
    raw = name.strip().lower()
    for candidate in (raw, raw.replace("_", "-"), _normalise(raw)):
        if candidate in _ALIASES:
            return _ALIASES[candidate]
    return None


def get_model(name: str) -> ModelConfig:
    """A built-in model by catalog key or Hugging Face id (case-insensitive).

    ``meta-llama/Llama-3.1-8B-Instruct``, ``Qwen/Qwen3-235B-A22B-FP8`` or ``deepseek-ai/DeepSeek-R1``
    resolve to the architecture of their base model. Raises :class:`UnknownModelError`.
    """
    key = resolve_model_name(name)
    if key is None:
        close = difflib.get_close_matches(_normalise(name), list(_ALIASES), n=5, cutoff=0.5)
        keys = list(dict.fromkeys(_ALIASES[c] for c in close))
        hint = f"; did you mean {', '.join(keys)}?" if keys else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint} (known: {', '.join(sorted(MODELS))}; or pass a config.json)"
        )
    return MODELS[key]


def list_rows() -> list[dict[str, Any]]:
    """One row per catalog model, for ``hetsched models``: KV growth per token once every window is
    full (BF16 cache), the windows, the state layers' fixed state per request."""
    from hetsched.scheduler.estimator.cost import kv_profile  # the estimator's one KV accounting

    rows: list[dict[str, Any]] = []
    for key, m in MODELS.items():
        kv = kv_profile(m)
        windows = [f"{g.window}×{g.count}" for g in m.attention_groups if g.window]
        rows.append(
            {
                "name": key,
                "hf_id": m.hf_id or "",
                "attention": m.attention_kind.value,
                "layers": m.num_layers,
                "layer_types": _layer_types(m),
                "hidden": m.hidden_size,
                "experts": f"{m.moe.experts_per_token}/{m.moe.num_experts}" if m.moe else "",
                "total_params_b": round(m.total_params / 1e9, 2),
                "active_params_b": round(m.active_params / 1e9, 2),
                "active_excl_embedding_b": round(m.active_compute_params / 1e9, 2),
                "kv_bytes_per_token_bf16": _number(kv.growth_bytes_per_token),
                "window": " ".join(windows),
                "state_mib": round(kv.state_bytes / (1 << 20), 1) if kv.state_bytes else "",
                "context": m.context_limit or "",
                "precision": m.native_weight_precision
                + (f"/{m.native_expert_precision} experts" if m.native_expert_precision else ""),
                "source": m.source,
            }
        )
    return rows


def _number(x: float) -> float | int:
    return int(x) if x == int(x) else x


def _layer_types(m: ModelConfig) -> str:
    """``12F+36GDN``: full (F), sliding (S), chunked (C), sparse (DSA; "shared": reusing an earlier
    layer's selection) attention, Gated DeltaNet (GDN) and Mamba2 (M2) layers."""
    if m.sparse_attention is not None:
        kinds = [f"{g.count}DSA" + ("" if g.indexer else "-shared") for g in m.attention_groups]
    else:
        kinds = [f"{g.count}{g.type.value[0].upper()}" for g in m.attention_groups]
    if m.linear_attention is not None:
        kinds.append(f"{m.linear_attention.layers}GDN")
    if m.mamba is not None:
        kinds.append(f"{m.mamba.layers}M2")
    return "+".join(kinds)
