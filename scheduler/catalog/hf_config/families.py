"""Readers of the families whose layers all attend alike (one geometry, at most a sliding or chunked
window on some layers): Llama, Mistral/Mixtral/Ministral, Qwen2/3 (dense and MoE), Phi-3/4,
GLM-4.5/4.6/4.7, MiniMax-M2, gpt-oss, Llama 4; and the pieces every reader shares.

A reader takes the text model's fields ``f`` and the top level ``top`` (they differ for multimodal
wrappers) and returns the :class:`ModelConfig` fields it read. Keys starting with ``_`` are for the
loader, not the model: ``_moe_layers`` (indices of MoE layers when they follow no pattern) and
``_roles`` (per layer, for quantization exclusions that name layers).
"""

from __future__ import annotations

from typing import Any

from hetsched.scheduler.catalog.hf_config.fields import MAX_LAYERS, Fields
from hetsched.scheduler.catalog.layers import FFNLayout
from hetsched.scheduler.catalog.models import MoEConfig, WindowKind

ATTENTION_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


# ---- shared pieces ---------------------------------------------------------------------------------
def attention_fields(f: Fields) -> dict[str, Any]:
    """Layers, widths, heads, head size (``head_dim``, else hidden / heads), vocabulary, context."""
    layers = f.positive("num_hidden_layers", maximum=MAX_LAYERS)
    hidden = f.integer("hidden_size")
    heads = f.integer("num_attention_heads")
    kv_heads = f.integer("num_key_value_heads")
    head_dim = f.opt_integer("head_dim")
    if head_dim is None:
        if heads < 1:
            raise f.error(f"field '{f.name('num_attention_heads')}' must be at least 1, got {heads}")
        if hidden % heads:
            raise f.error(
                f"missing field '{f.prefix}head_dim' (hidden_size {hidden} is not a multiple of "
                f"num_attention_heads {heads})"
            )
        head_dim = hidden // heads
    return {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": f.integer("vocab_size"),
        "max_position_embeddings": f.opt_integer("max_position_embeddings"),
    }


def tie(f: Fields, top: Fields | None = None, default: bool = False) -> bool:
    """tie_word_embeddings of the text config, else of the top level, else the family's default."""
    if f.has("tie_word_embeddings"):
        return f.flag("tie_word_embeddings", default)
    return top.flag("tie_word_embeddings", default) if top is not None else default


def layer_types(f: Fields, layers: int, known: tuple[str, ...] = ATTENTION_TYPES) -> list[str] | None:
    return f.types("layer_types", layers, known)


def windows(f: Fields, layers: int, default_sliding_layers: int) -> dict[str, Any]:
    """Sliding-window layers from ``layer_types`` (if present) or the family's default count."""
    types = layer_types(f, layers, ("full_attention", "sliding_attention"))
    count = types.count("sliding_attention") if types is not None else default_sliding_layers
    if not count:
        return {}
    return {"sliding_window": f.integer("sliding_window"), "sliding_window_layers": count}


def _moe_pattern(moe_layers: set[int], layers: int) -> tuple[int, int] | None:
    """(first_dense_layers, layer_interval) reproducing the set of MoE layers, if one does."""
    first = min(moe_layers)
    for interval in range(1, layers + 1):
        start = first - interval + 1
        if start < 0:
            break
        expected = {i for i in range(start, layers) if (i - start) % interval == interval - 1}
        if expected == moe_layers:
            return start, interval
    return None


def moe_fields(moe_layers: set[int], layers: int, **kwargs: Any) -> dict[str, Any]:
    """``moe`` for MoE blocks on ``moe_layers`` of ``layers``; when they follow no "first dense
    layers, then every n-th layer" pattern, also an ``ffn_layout`` with the counts."""
    pattern = _moe_pattern(moe_layers, layers)
    if pattern is not None:
        first, interval = pattern
        return {"moe": MoEConfig(first_dense_layers=first, layer_interval=interval, **kwargs)}
    return {
        "moe": MoEConfig(**kwargs),
        "ffn_layout": FFNLayout(dense=layers - len(moe_layers), moe=len(moe_layers)),
        "_moe_layers": frozenset(moe_layers),
    }


# ---- families --------------------------------------------------------------------------------------
def llama(f: Fields, top: Fields) -> dict[str, Any]:
    out = attention_fields(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    out.update(windows(f, out["num_layers"], 0))
    return out


def _mistral_windows(f: Fields, layers: int) -> dict[str, Any]:
    # Mistral/Mixtral: a non-null sliding_window applies to every layer (Mistral-7B-v0.1: 4096).
    return windows(f, layers, layers if f.has("sliding_window") else 0)


def mistral(f: Fields, top: Fields) -> dict[str, Any]:
    """Mistral, and Ministral 3 / Devstral 2 (``ministral3``: the same decoder)."""
    out = attention_fields(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = tie(f, top)
    out.update(_mistral_windows(f, out["num_layers"]))
    return out


def mixtral(f: Fields, top: Fields) -> dict[str, Any]:
    out = attention_fields(f)
    layers = out["num_layers"]
    out["intermediate_size"] = 0
    out["tie_embeddings"] = tie(f, top)
    out.update(
        moe_fields(
            set(range(layers)),
            layers,
            num_experts=f.integer("num_local_experts"),
            experts_per_token=f.integer("num_experts_per_tok"),
            expert_intermediate_size=f.integer("intermediate_size"),
        )
    )
    out.update(_mistral_windows(f, layers))
    return out


def _qwen_windows(f: Fields, layers: int) -> dict[str, Any]:
    # Qwen2/Qwen3: with use_sliding_window, layers from max_window_layers on use the window.
    default = 0
    if f.flag("use_sliding_window", False):
        default = max(0, layers - f.integer("max_window_layers", layers))
    return windows(f, layers, default)


def qwen2(f: Fields, top: Fields) -> dict[str, Any]:
    out = attention_fields(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = True  # Qwen2: q/k/v projections always carry a bias ...
    out["attention_out_bias"] = False  # ... the output projection does not
    out.update(_qwen_windows(f, out["num_layers"]))
    return out


def qwen3(f: Fields, top: Fields) -> dict[str, Any]:
    out = attention_fields(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    out.update(_qwen_windows(f, out["num_layers"]))
    return out


def qwen_moe_layers(f: Fields, layers: int, num_experts: int) -> set[int]:
    """Qwen3-MoE, Qwen3-Next, Qwen3.5: layer i is MoE unless in ``mlp_only_layers``, every
    ``decoder_sparse_step``-th layer."""
    step = f.positive("decoder_sparse_step", 1)
    mlp_only = set(f.integers("mlp_only_layers") or [])
    return {i for i in range(layers) if i not in mlp_only and num_experts > 0 and (i + 1) % step == 0}


def qwen3_moe(f: Fields, top: Fields) -> dict[str, Any]:
    out = attention_fields(f)
    layers = out["num_layers"]
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    num_experts = f.integer("num_experts")
    moe_layers = qwen_moe_layers(f, layers, num_experts)
    out["intermediate_size"] = f.integer("intermediate_size") if len(moe_layers) < layers else 0
    if moe_layers:
        out.update(
            moe_fields(
                moe_layers,
                layers,
                num_experts=num_experts,
                experts_per_token=f.integer("num_experts_per_tok"),
                expert_intermediate_size=f.integer("moe_intermediate_size"),
            )
        )
    out.update(_qwen_windows(f, layers))
    return out


def phi3(f: Fields, top: Fields) -> dict[str, Any]:
    """Phi-3, Phi-4, Phi-4-mini: Llama's decoder with fused qkv and gate/up matrices (the same
    parameters); a non-null ``sliding_window`` applies to every layer."""
    out = attention_fields(f)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = tie(f, top)
    out.update(_mistral_windows(f, out["num_layers"]))
    return out


def glm4_moe(f: Fields, top: Fields) -> dict[str, Any]:
    """GLM-4.5 / 4.6 / 4.7 (and -Air): GQA with q/k/v biases and optional q/k norms, DeepSeek-style
    MoE (``first_k_dense_replace`` dense layers, one shared expert, sigmoid router with a
    score-correction bias). The MTP layer (``num_nextn_predict_layers``) is not served."""
    out = attention_fields(f)
    layers = out["num_layers"]
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["attention_out_bias"] = False
    out["qk_norm"] = f.flag("use_qk_norm", False)
    first_dense = f.integer("first_k_dense_replace", 0)
    moe_layers = set(range(first_dense, layers))
    out["intermediate_size"] = f.integer("intermediate_size") if first_dense else 0
    if moe_layers:
        out.update(
            moe_fields(
                moe_layers,
                layers,
                num_experts=f.integer("n_routed_experts"),
                experts_per_token=f.integer("num_experts_per_tok"),
                expert_intermediate_size=f.integer("moe_intermediate_size"),
                num_shared_experts=f.integer("n_shared_experts", 0),
                router_bias=True,
            )
        )
    return out


def minimax_m2(f: Fields, top: Fields) -> dict[str, Any]:
    """MiniMax-M2 / M2.5 / M2.7: full attention in every layer (``attn_type_list`` all 1), q and k
    norms over all heads, MoE in every layer with ``intermediate_size`` as the expert width and a
    routing bias. The MTP modules (``num_mtp_modules``) are not served."""
    out = attention_fields(f)
    layers = out["num_layers"]
    kinds = f.integers("attn_type_list")
    if kinds is not None:
        if len(kinds) != layers:
            raise f.error(f"field '{f.name('attn_type_list')}' has {len(kinds)} entries for {layers} layers")
        if any(k != 1 for k in kinds):
            raise f.unsupported(
                "layer type 'lightning (linear) attention' (attn_type_list 0, MiniMax-01/M1) is not modelled"
            )
    out["tie_embeddings"] = tie(f, top)
    out["qk_norm"] = f.flag("use_qk_norm", True)
    out["qk_norm_full_width"] = f.text("qk_norm_type", "per_layer") == "per_layer"
    out["intermediate_size"] = 0
    if f.integer("shared_intermediate_size", 0):
        raise f.unsupported("MiniMax shared experts (shared_intermediate_size > 0) are not modelled")
    out.update(
        moe_fields(
            set(range(layers)),
            layers,
            num_experts=f.integer("num_local_experts"),
            experts_per_token=f.integer("num_experts_per_tok"),
            expert_intermediate_size=f.integer("intermediate_size"),
            router_bias=f.flag("use_routing_bias", True),
        )
    )
    return out


def gpt_oss(f: Fields, top: Fields) -> dict[str, Any]:
    out = attention_fields(f)
    layers = out["num_layers"]
    out["intermediate_size"] = 0
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", True)  # q, k, v and o
    out["attention_sinks"] = True
    per_token_key = "experts_per_token" if f.has("experts_per_token") else "num_experts_per_tok"
    per_token = f.integer(per_token_key)
    out.update(
        moe_fields(
            set(range(layers)),
            layers,
            num_experts=f.integer("num_local_experts"),
            experts_per_token=per_token,
            expert_intermediate_size=f.integer("intermediate_size"),
            router_bias=True,
            expert_bias=True,
        )
    )
    # gpt-oss alternates sliding (window 128) and full attention; layer_types says which.
    out.update(windows(f, layers, layers // 2 if f.has("sliding_window") else 0))
    return out


def llama4(f: Fields, top: Fields) -> dict[str, Any]:
    """Llama 4 (the text model; the wrapper's vision tower is counted by the loader)."""
    out = attention_fields(f)
    layers = out["num_layers"]
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    # use_qk_norm is a parameter-free L2 norm in Llama 4: no learned weights to count.
    explicit_moe = f.integers("moe_layers")
    if explicit_moe is not None:
        moe_layers = set(explicit_moe)
    else:
        step = f.positive("interleave_moe_layer_step", 1)
        moe_layers = set(range(step - 1, layers, step))
    expert = f.integer("intermediate_size")
    out["intermediate_size"] = f.integer("intermediate_size_mlp") if len(moe_layers) < layers else 0
    out.update(
        moe_fields(
            moe_layers,
            layers,
            num_experts=f.integer("num_local_experts"),
            experts_per_token=f.integer("num_experts_per_tok"),
            expert_intermediate_size=expert,
            num_shared_experts=1,  # Llama4TextMoe always has one shared expert of the expert width
        )
    )
    chunk = f.opt_integer("attention_chunk_size")
    if chunk:
        types = layer_types(f, layers, ("full_attention", "chunked_attention"))
        if types is not None:
            chunked = types.count("chunked_attention")
        else:
            no_rope = f.integers("no_rope_layers") or []
            if no_rope:
                if len(no_rope) != layers:
                    raise f.error(
                        f"field '{f.prefix}no_rope_layers' has {len(no_rope)} entries for {layers} layers"
                    )
                chunked = sum(1 for use_rope in no_rope if use_rope)  # 1: RoPE + chunked; 0: global NoPE
            else:
                interval = f.positive("no_rope_layer_interval", 4)
                chunked = sum(1 for i in range(layers) if (i + 1) % interval != 0)
        if chunked:
            out["sliding_window"] = chunk
            out["sliding_window_layers"] = chunked
            out["sliding_window_kind"] = WindowKind.CHUNKED
    return out
