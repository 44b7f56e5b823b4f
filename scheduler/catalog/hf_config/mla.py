"""Readers of the MLA families: DeepSeek-V2/V3 (and Kimi K2, which ships DeepSeek-V3's
architecture under ``model_type: kimi_k2``), DeepSeek-V3.2 and GLM-5 (DeepSeek sparse attention:
MLA plus an indexer that selects the top-k cached tokens each query attends to).

Readers return ModelConfig fields and, for the loader, ``_mixers`` (per layer, the index of its
attention group) where layers differ. Fields: ``q_lora_rank`` (may be null), ``kv_lora_rank``, ``qk_nope_head_dim``,
``qk_rope_head_dim``, ``v_head_dim``; MoE ``n_routed_experts``, ``n_shared_experts``,
``moe_intermediate_size``, ``first_k_dense_replace``, ``moe_layer_freq`` (GLM-5.2:
``mlp_layer_types``); sparse attention ``index_n_heads``, ``index_head_dim``, ``index_topk`` and
which layers run their own indexer (GLM-5.2: ``indexer_types``, or ``index_topk_pattern``, or
``index_topk_freq`` / ``index_skip_topk_offset``). The MTP layers (``num_nextn_predict_layers``)
are not served.
"""

from __future__ import annotations

from typing import Any

from hetsched.scheduler.catalog.hf_config.families import moe_fields, tie
from hetsched.scheduler.catalog.hf_config.fields import MAX_LAYERS, Fields
from hetsched.scheduler.catalog.layers import AttentionLayers, SparseAttention
from hetsched.scheduler.catalog.models import MLAConfig


def _mla(f: Fields, top: Fields, router_bias: bool) -> dict[str, Any]:
    layers = f.positive("num_hidden_layers", maximum=MAX_LAYERS)
    heads = f.integer("num_attention_heads")
    nope = f.integer("qk_nope_head_dim")
    rope = f.integer("qk_rope_head_dim")
    out: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": f.integer("hidden_size"),
        "num_heads": heads,
        # MLA caches one latent per token, not per-head K/V; HF sets num_key_value_heads = heads.
        "num_kv_heads": f.integer("num_key_value_heads", heads),
        "head_dim": nope + rope,
        "vocab_size": f.integer("vocab_size"),
        "max_position_embeddings": f.opt_integer("max_position_embeddings"),
        "tie_embeddings": tie(f, top),
        "mla": MLAConfig(
            kv_lora_rank=f.integer("kv_lora_rank"),
            q_lora_rank=f.opt_integer("q_lora_rank"),
            qk_nope_head_dim=nope,
            qk_rope_head_dim=rope,
            v_head_dim=f.integer("v_head_dim"),
        ),
    }
    if f.flag("attention_bias", False):
        raise f.unsupported("MLA with attention_bias (biased q_a_proj) is not modelled")
    routed = f.opt_integer("n_routed_experts")
    kinds = f.types("mlp_layer_types", layers, ("dense", "sparse"))
    if kinds is not None:
        moe_layers = {i for i, k in enumerate(kinds) if k == "sparse"} if routed else set[int]()
    else:
        first_dense = f.integer("first_k_dense_replace", 0)
        freq = f.positive("moe_layer_freq", 1)
        moe_layers = (
            {i for i in range(layers) if i >= first_dense and i % freq == 0} if routed else set[int]()
        )
    out["intermediate_size"] = f.integer("intermediate_size") if len(moe_layers) < layers else 0
    if moe_layers:
        assert routed is not None
        out.update(
            moe_fields(
                moe_layers,
                layers,
                num_experts=routed,
                experts_per_token=f.integer("num_experts_per_tok"),
                expert_intermediate_size=f.integer("moe_intermediate_size"),
                num_shared_experts=f.integer("n_shared_experts", 0),
                router_bias=router_bias,
            )
        )
    return out


def deepseek_v2(f: Fields, top: Fields) -> dict[str, Any]:
    return _mla(f, top, router_bias=f.text("topk_method", "") == "noaux_tc")


def deepseek_v3(f: Fields, top: Fields) -> dict[str, Any]:
    """DeepSeek-V3/R1 and Kimi K2: the router adds a per-expert score-correction bias."""
    return _mla(f, top, router_bias=True)


def _indexer_layers(f: Fields, layers: int) -> list[bool]:
    """Which layers run their own indexer (True) rather than reuse the previous one's top-k."""
    kinds = f.types("indexer_types", layers, ("full", "shared"))
    if kinds is not None:
        return [k == "full" for k in kinds]
    if f.has("index_topk_pattern"):
        pattern = f.text("index_topk_pattern", "")
        if len(pattern) != layers or set(pattern) - {"F", "S"}:
            raise f.error(f"field '{f.name('index_topk_pattern')}' must be {layers} letters F or S")
        return [c == "F" for c in pattern]
    freq = f.positive("index_topk_freq", 1)
    offset = f.integer("index_skip_topk_offset", 2)
    return [max(i - offset + 1, 0) % freq == 0 for i in range(layers)]


def sparse_mla(f: Fields, top: Fields) -> dict[str, Any]:
    """DeepSeek-V3.2 (``deepseek_v32``) and GLM-5 (``glm_moe_dsa``): MLA + the DSA indexer."""
    out = _mla(f, top, router_bias=True)
    if out["mla"].q_lora_rank is None:
        raise f.error(
            f"missing field '{f.name('q_lora_rank')}' (the sparse-attention indexer reads the query latent)"
        )
    layers = out["num_layers"]
    own = _indexer_layers(f, layers)
    out["sparse_attention"] = SparseAttention(
        index_heads=f.positive("index_n_heads"),
        index_head_dim=f.positive("index_head_dim"),
        top_k=f.positive("index_topk"),
    )
    with_indexer = sum(own)
    groups = []
    if with_indexer:
        groups.append(AttentionLayers(count=with_indexer, indexer=True))
    if layers - with_indexer:
        groups.append(AttentionLayers(count=layers - with_indexer, indexer=False))
    out["attention_layers"] = tuple(groups)
    out["_mixers"] = tuple(0 if own[i] or not with_indexer else 1 for i in range(layers))
    return out
