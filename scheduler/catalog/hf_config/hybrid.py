"""Readers of the families whose layers differ: linear-attention hybrids (Qwen3-Next, Qwen3.5),
Mamba hybrids (Nemotron-H, Nemotron 3), local/global attention (Gemma 3, Gemma 4, MiMo-V2-Flash).

Each returns :class:`ModelConfig` fields with ``attention_layers`` (groups of attention layers by
window and geometry), the state layers, and ``_mixers`` for the loader: per layer, the index of
its attention group, or ``"linear"`` / ``"mamba"`` / ``None`` (Nemotron-H's FFN-only layers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hetsched.scheduler.catalog.hf_config.families import attention_fields, moe_fields, qwen_moe_layers, tie
from hetsched.scheduler.catalog.hf_config.fields import MAX_LAYERS, Fields
from hetsched.scheduler.catalog.layers import AttentionLayers, FFNLayout, GatedDeltaNet, LayerType, Mamba2

#: torch dtype names of state caches (``mamba_ssm_dtype``, ``mamba_ssm_cache_dtype``).
_STATE_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "auto": "bf16"}


def _state_dtype(f: Fields, keys: tuple[str, ...], default: str) -> str:
    for key in keys:
        if f.has(key):
            name = f.text(key, "").lower().removeprefix("torch.")
            if name not in _STATE_DTYPES:
                raise f.error(
                    f"field '{f.name(key)}' is {name!r}: unknown dtype; accepted: {', '.join(_STATE_DTYPES)}"
                )
            return _STATE_DTYPES[name]
    return default


def _groups(
    types: list[str], make: Mapping[str, AttentionLayers]
) -> tuple[tuple[AttentionLayers, ...], list[Any]]:
    """Attention groups in order of first appearance, and each layer's group index (``None``
    for non-attention layers, which ``make`` does not list)."""
    order: list[str] = []
    mixers: list[Any] = []
    for t in types:
        if t in make:
            if t not in order:
                order.append(t)
            mixers.append(order.index(t))
        else:
            mixers.append(t)
    groups = tuple(make[t].model_copy(update={"count": types.count(t)}) for t in order)
    return groups, mixers


# ---- Qwen3-Next, Qwen3.5 --------------------------------------------------------------------------
def qwen_hybrid(f: Fields, top: Fields, *, state_dtype_default: str, gate_default: bool) -> dict[str, Any]:
    """Qwen3-Next / Qwen3.5 (dense and MoE): Gated DeltaNet layers and gated full-attention layers
    (every ``full_attention_interval``-th, or ``layer_types``). The MTP layers are not served."""
    out = attention_fields(f)
    layers = out["num_layers"]
    types = f.types("layer_types", layers, ("full_attention", "linear_attention"))
    if types is None:
        interval = f.positive("full_attention_interval", 4)
        types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]
    groups, mixers = _groups(types, {"full_attention": AttentionLayers(count=1)})
    out["attention_layers"] = groups
    out["_mixers"] = tuple("linear" if m == "linear_attention" else m for m in mixers)
    linear = types.count("linear_attention")
    if linear:
        out["linear_attention"] = GatedDeltaNet(
            layers=linear,
            num_key_heads=f.positive("linear_num_key_heads"),
            num_value_heads=f.positive("linear_num_value_heads"),
            key_head_dim=f.positive("linear_key_head_dim"),
            value_head_dim=f.positive("linear_value_head_dim"),
            conv_kernel=f.positive("linear_conv_kernel_dim"),
            # vLLM: the conv state in the model's dtype; the recurrent state in mamba_ssm_dtype when
            # the config sets one (Qwen3.5: float32), else the model's dtype.
            state_dtype=_state_dtype(f, ("mamba_ssm_dtype",), state_dtype_default),
        )
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    out["attention_output_gate"] = f.flag("attn_output_gate", gate_default)
    num_experts = f.integer("num_experts", 0)
    moe_layers = qwen_moe_layers(f, layers, num_experts)
    out["intermediate_size"] = f.integer("intermediate_size") if len(moe_layers) < layers else 0
    if moe_layers:
        shared = f.integer("shared_expert_intermediate_size", 0)
        out.update(
            moe_fields(
                moe_layers,
                layers,
                num_experts=num_experts,
                experts_per_token=f.integer("num_experts_per_tok"),
                expert_intermediate_size=f.integer("moe_intermediate_size"),
                num_shared_experts=1 if shared else 0,
                shared_expert_intermediate_size=shared or None,
                shared_expert_gate=bool(shared),
            )
        )
    return out


def qwen3_next(f: Fields, top: Fields) -> dict[str, Any]:
    return qwen_hybrid(f, top, state_dtype_default="bf16", gate_default=True)


def qwen3_5(f: Fields, top: Fields) -> dict[str, Any]:
    return qwen_hybrid(f, top, state_dtype_default="bf16", gate_default=True)


# ---- Nemotron-H -----------------------------------------------------------------------------------
_NEMOTRON_CODES = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
_NEMOTRON_NAMES = {
    "mamba": "mamba",
    "linear_attention": "mamba",
    "attention": "attention",
    "full_attention": "attention",
    "mlp": "mlp",
    "moe": "moe",
}


def _nemotron_blocks(f: Fields) -> list[str]:
    if f.has("layers_block_type"):
        names = f.strings("layers_block_type") or []
        if not 1 <= len(names) <= MAX_LAYERS:
            raise f.error(f"field '{f.name('layers_block_type')}' must list 1 to {MAX_LAYERS} layers")
        for n in names:
            if n not in _NEMOTRON_NAMES:
                raise f.unsupported(
                    f"layer type {n!r} (field '{f.name('layers_block_type')}') is not modelled; "
                    f"modelled here: {', '.join(_NEMOTRON_NAMES)}"
                )
        blocks = [_NEMOTRON_NAMES[n] for n in names]
    else:
        pattern = f.text("hybrid_override_pattern", "")
        if not 1 <= len(pattern) <= MAX_LAYERS:
            raise f.error(f"missing field '{f.name('hybrid_override_pattern')}' (or layers_block_type)")
        for c in pattern:
            if c not in _NEMOTRON_CODES:
                raise f.unsupported(
                    f"layer type {c!r} (field '{f.name('hybrid_override_pattern')}') is not modelled; "
                    f"modelled here: {', '.join(_NEMOTRON_CODES)}"
                )
        blocks = [_NEMOTRON_CODES[c] for c in pattern]
    if f.has("num_hidden_layers") and f.integer("num_hidden_layers") != len(blocks):
        raise f.error(
            f"field '{f.name('num_hidden_layers')}' is {f.integer('num_hidden_layers')} but the layer pattern "
            f"has {len(blocks)} layers"
        )
    return blocks


def nemotron_h(f: Fields, top: Fields) -> dict[str, Any]:
    """Nemotron-H / Nemotron Nano 2 / Nemotron 3: each layer is one block, Mamba2 (``M``),
    attention (``*``, no positional encoding), a dense ReLU² MLP (``-``) or an MoE block (``E``,
    ReLU² experts, optionally at a latent width). The MTP layers are not served."""
    blocks = _nemotron_blocks(f)
    layers = len(blocks)
    hidden = f.positive("hidden_size")
    heads = f.positive("num_attention_heads")
    head_dim = f.opt_positive("head_dim") or f.opt_positive("attention_head_dim")
    if head_dim is None:
        if hidden % heads:
            raise f.error(
                f"missing field '{f.name('head_dim')}' (hidden_size is not a multiple of the heads)"
            )
        head_dim = hidden // heads
    out: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": f.positive("num_key_value_heads"),
        "head_dim": head_dim,
        "vocab_size": f.integer("vocab_size"),
        "max_position_embeddings": f.opt_integer("max_position_embeddings"),
        "tie_embeddings": tie(f, top),
        "gated_ffn": False,  # ReLU² MLP and experts: up and down only
        "norms_per_layer": 1,  # one pre-norm per block
        "attention_bias": f.flag("attention_bias", False),
    }
    groups, mixers = _groups(blocks, {"attention": AttentionLayers(count=1)})
    out["attention_layers"] = groups
    out["_mixers"] = tuple(None if m in ("mlp", "moe") else m for m in mixers)
    out["_ffn"] = tuple({"mlp": "dense", "moe": "moe"}.get(b) for b in blocks)
    mamba = blocks.count("mamba")
    if mamba:
        out["mamba"] = Mamba2(
            layers=mamba,
            num_heads=f.positive("mamba_num_heads"),
            head_dim=f.positive("mamba_head_dim"),
            state_size=f.positive("ssm_state_size"),
            n_groups=f.positive("n_groups"),
            conv_kernel=f.positive("conv_kernel"),
            conv_bias=f.flag("use_conv_bias", True),
            proj_bias=f.flag("use_bias", False),
            chunk_size=f.positive("chunk_size", 128),
            # vLLM keeps the SSM state in mamba_ssm_cache_dtype, float32 unless the config says.
            state_dtype=_state_dtype(f, ("mamba_ssm_cache_dtype",), "fp32"),
        )
    dense, moe = blocks.count("mlp"), blocks.count("moe")
    out["intermediate_size"] = f.integer("intermediate_size") if dense else 0
    if f.flag("mlp_bias", False):
        raise f.unsupported("Nemotron-H MLP biases (mlp_bias) are not modelled")
    if moe:
        shared = f.integer("n_shared_experts", 0)
        out.update(
            moe_fields(
                set(range(moe)),
                moe,
                num_experts=f.positive("n_routed_experts"),
                experts_per_token=f.positive("num_experts_per_tok"),
                expert_intermediate_size=f.positive("moe_intermediate_size"),
                num_shared_experts=shared,
                shared_expert_intermediate_size=f.opt_positive("moe_shared_expert_intermediate_size")
                if shared
                else None,
                router_bias=True,  # e_score_correction_bias
                latent_size=f.opt_positive("moe_latent_size"),
            )
        )
    out["ffn_layout"] = FFNLayout(dense=dense, moe=moe)
    return out


# ---- Gemma 3, Gemma 4 -----------------------------------------------------------------------------
#: transformers' Gemma3TextConfig defaults for the fields Gemma 3 checkpoints leave out.
GEMMA3_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_208,
    "max_position_embeddings": 131_072,
    "head_dim": 256,
    "sliding_window": 4096,
    "tie_word_embeddings": True,
}


def gemma3(f: Fields, top: Fields) -> dict[str, Any]:
    """Gemma 3: local sliding-window and global layers (5:1 by ``sliding_window_pattern``, or
    ``layer_types``) of one geometry, q/k norms, four norms per layer, GeGLU MLP, tied embeddings.
    Missing fields take transformers' defaults (the 27B config lists only ten)."""
    f = Fields({**GEMMA3_DEFAULTS, **f.data}, f.origin, f.prefix)
    out = attention_fields(f)
    layers = out["num_layers"]
    types = f.types("layer_types", layers, ("full_attention", "sliding_attention"))
    if types is None:
        pattern = f.positive("sliding_window_pattern", 6)
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    window = f.positive("sliding_window")
    groups, mixers = _groups(
        types,
        {
            "full_attention": AttentionLayers(count=1),
            "sliding_attention": AttentionLayers(type=LayerType.SLIDING, count=1, window=window),
        },
    )
    out["attention_layers"] = groups
    out["_mixers"] = tuple(mixers)
    out["intermediate_size"] = f.integer("intermediate_size")
    out["tie_embeddings"] = tie(f, top, default=True)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    out["norms_per_layer"] = 4
    return out


def gemma4(f: Fields, top: Fields) -> dict[str, Any]:
    """Gemma 4: local layers (``head_dim``, ``num_key_value_heads``, window ``sliding_window``) and
    global layers (``global_head_dim``; with ``attention_k_eq_v`` also ``num_global_key_value_heads``
    and no v_proj, the cache still holding K and V), q/k norms, GeGLU MLP, and in the MoE sizes a
    routed-expert block beside the dense MLP of every layer."""
    out = attention_fields(f)
    layers = out["num_layers"]
    if f.integer("num_kv_shared_layers", 0):
        raise f.unsupported(
            "Gemma 4 layers that share another layer's KV (num_kv_shared_layers) are not modelled"
        )
    if f.integer("hidden_size_per_layer_input", 0):
        raise f.unsupported(
            "Gemma 4 per-layer input embeddings (hidden_size_per_layer_input) are not modelled"
        )
    if f.flag("use_double_wide_mlp", False):
        raise f.unsupported("Gemma 4 double-wide MLPs (use_double_wide_mlp) are not modelled")
    if f.has("per_layer_config"):
        raise f.unsupported(
            "an explicit per_layer_config is not read (Gemma 4 derives it from the global fields)"
        )
    types = f.types("layer_types", layers, ("full_attention", "sliding_attention"))
    if types is None:
        types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(layers)]
        types[-1] = "full_attention"
    k_eq_v = f.flag("attention_k_eq_v", False)
    global_kv = f.opt_positive("num_global_key_value_heads") if k_eq_v else None
    groups, mixers = _groups(
        types,
        {
            "sliding_attention": AttentionLayers(
                type=LayerType.SLIDING, count=1, window=f.positive("sliding_window")
            ),
            "full_attention": AttentionLayers(
                count=1, head_dim=f.positive("global_head_dim", 512), num_kv_heads=global_kv, shared_kv=k_eq_v
            ),
        },
    )
    out["attention_layers"] = groups
    out["_mixers"] = tuple(mixers)
    out["tie_embeddings"] = tie(f, top, default=True)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["qk_norm"] = True
    out["intermediate_size"] = f.integer("intermediate_size")
    out["norms_per_layer"] = 4
    if f.flag("enable_moe_block", False):
        experts = f.positive("num_experts")
        out.update(
            moe_fields(
                set(range(layers)),
                layers,
                num_experts=experts,
                experts_per_token=f.positive("top_k_experts"),
                expert_intermediate_size=f.positive("moe_intermediate_size"),
            )
        )
        out["ffn_layout"] = FFNLayout(dense=layers, moe=layers, parallel=True)
        out["norms_per_layer"] = 7  # and the MoE block's three
        # The router's input scale (hidden) and per-expert output scale, per layer.
        out["other_params"] = layers * (out["hidden_size"] + experts)
    return out


# ---- MiMo-V2-Flash --------------------------------------------------------------------------------
def mimo_v2_flash(f: Fields, top: Fields) -> dict[str, Any]:
    """MiMo-V2-Flash: ``hybrid_layer_pattern`` 1 = sliding-window layer (``swa_*`` heads and sizes,
    a sink per head), 0 = full layer; K/Q heads of ``head_dim``, V heads of ``v_head_dim``; MoE
    where ``moe_layer_freq`` (a per-layer list) says 1, a dense MLP elsewhere. MTP not served."""
    out = attention_fields(f)
    layers = out["num_layers"]
    pattern = f.integers("hybrid_layer_pattern")
    if pattern is None or len(pattern) != layers or set(pattern) - {0, 1}:
        raise f.error(
            f"field '{f.name('hybrid_layer_pattern')}' must list 0 or 1 for each of the {layers} layers"
        )
    types = ["sliding_attention" if p else "full_attention" for p in pattern]
    head = out["head_dim"]
    groups, mixers = _groups(
        types,
        {
            "full_attention": AttentionLayers(
                count=1,
                v_head_dim=f.positive("v_head_dim", head),
                sinks=f.flag("add_full_attention_sink_bias", False),
            ),
            "sliding_attention": AttentionLayers(
                type=LayerType.SLIDING,
                count=1,
                window=f.positive("sliding_window"),
                num_heads=f.positive("swa_num_attention_heads", out["num_heads"]),
                num_kv_heads=f.positive("swa_num_key_value_heads", out["num_kv_heads"]),
                head_dim=f.positive("swa_head_dim", head),
                v_head_dim=f.positive("swa_v_head_dim", f.positive("v_head_dim", head)),
                sinks=f.flag("add_swa_attention_sink_bias", False),
            ),
        },
    )
    out["attention_layers"] = groups
    out["_mixers"] = tuple(mixers)
    out["tie_embeddings"] = tie(f, top)
    out["attention_bias"] = f.flag("attention_bias", False)
    out["attention_out_bias"] = False
    freq = f.integers("moe_layer_freq")
    if freq is None or len(freq) != layers:
        raise f.error(f"field '{f.name('moe_layer_freq')}' must list 0 or 1 for each of the {layers} layers")
    moe_layers = {i for i, v in enumerate(freq) if v}
    out["intermediate_size"] = f.integer("intermediate_size") if len(moe_layers) < layers else 0
    if moe_layers:
        out.update(
            moe_fields(
                moe_layers,
                layers,
                num_experts=f.positive("n_routed_experts"),
                experts_per_token=f.positive("num_experts_per_tok"),
                expert_intermediate_size=f.positive("moe_intermediate_size"),
                num_shared_experts=f.integer("n_shared_experts", 0),
                router_bias=True,  # noaux_tc: e_score_correction_bias
            )
        )
    return out
