"""Parameters of the vision towers multimodal checkpoints load beside the text model.

Text tokens never run them, but their weights take memory: ``ModelConfig.vision_params`` counts
them in ``total_params`` (not in the active parameters). Each counter follows the tower's
transformers module (encoder and the projector into the text model's hidden size); a tower not
listed here is refused by name rather than left out.
"""

from __future__ import annotations

from collections.abc import Callable

from hetsched.scheduler.catalog.hf_config.fields import MAX_LAYERS, Fields


def llama4(v: Fields, text_hidden: int) -> int:
    """Llama 4: the vision encoder, pixel-shuffle adapter and projector (``Llama4VisionModel`` +
    ``Llama4MultiModalProjector``)."""
    h = v.integer("hidden_size")
    inter = v.integer("intermediate_size")
    layers = v.positive("num_hidden_layers", maximum=MAX_LAYERS)
    patch = v.positive("patch_size")
    channels = v.integer("num_channels", 3)
    image = v.positive("image_size")
    shuffle = v.number("pixel_shuffle_ratio", 0.5)
    if not 1e-3 <= shuffle <= 1:  # real configs use 0.5; a tiny ratio would divide by zero below
        raise v.error(f"field '{v.name('pixel_shuffle_ratio')}' must be in [0.001, 1], got {shuffle}")
    proj_in = v.integer("projector_input_dim")
    proj_out = v.integer("projector_output_dim")
    vision_out = v.integer("vision_output_dim")
    patches = (image // patch) ** 2
    embed = channels * patch * patch * h + h + (patches + 1) * h + 2 * 2 * h  # patches, cls, pos, 2 LNs
    layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    adapter_in = round(h / shuffle**2)
    adapter = adapter_in * proj_in + proj_in * proj_out  # fc1, fc2 without bias
    projector = vision_out * text_hidden + (text_hidden if v.flag("multi_modal_projector_bias", False) else 0)
    return embed + layers * layer + adapter + projector


def _vit_layer(h: int, inter: int) -> int:
    """A pre-norm ViT block with biased q/k/v/o and a two-matrix MLP, LayerNorms with bias."""
    return 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h


def siglip(v: Fields, text_hidden: int) -> int:
    """Gemma 3: SigLIP (patch conv, position table, blocks, post-LayerNorm; no head) and the
    projector (a hidden → text-hidden matrix and an RMSNorm before it)."""
    if v.flag("vision_use_head", False):
        raise v.unsupported("a SigLIP tower with its attention-pooling head is not modelled")
    h = v.positive("hidden_size")
    inter = v.positive("intermediate_size")
    layers = v.positive("num_hidden_layers", maximum=MAX_LAYERS)
    patch = v.positive("patch_size")
    image = v.positive("image_size")
    channels = v.integer("num_channels", 3)
    embed = channels * patch * patch * h + h + (image // patch) ** 2 * h
    return embed + layers * _vit_layer(h, inter) + 2 * h + h * text_hidden + h


def gemma4(v: Fields, text_hidden: int) -> int:
    """Gemma 4: patch projection, 2-D position table, blocks (q/k/v/o without bias, q/k norms,
    four RMSNorms, gated MLP), and the embedder into the text model (a matrix)."""
    h = v.positive("hidden_size")
    inter = v.positive("intermediate_size")
    layers = v.positive("num_hidden_layers", maximum=MAX_LAYERS)
    heads = v.positive("num_attention_heads")
    kv_heads = v.positive("num_key_value_heads", heads)
    head_dim = v.positive("head_dim", h // heads)
    patch = v.positive("patch_size")
    positions = v.positive("position_embedding_size")
    embed = 3 * patch * patch * h + 2 * positions * h
    attention = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h + 2 * head_dim
    layer = attention + 4 * h + 3 * h * inter
    return embed + layers * layer + h * text_hidden


def qwen3_5(v: Fields, text_hidden: int) -> int:
    """Qwen3.5 / Qwen3-VL style: 3-D patch conv, learned position table, ViT blocks, and the patch
    merger (LayerNorm, two linears) into ``out_hidden_size``."""
    h = v.positive("hidden_size")
    inter = v.positive("intermediate_size")
    depth = v.positive("depth", maximum=MAX_LAYERS)
    patch = v.positive("patch_size")
    temporal = v.positive("temporal_patch_size", 2)
    channels = v.positive("in_channels", 3)
    positions = v.positive("num_position_embeddings")
    merge = v.positive("spatial_merge_size", 2)
    out = v.positive("out_hidden_size", text_hidden)
    if v.integers("deepstack_visual_indexes"):
        raise v.unsupported("Qwen vision deepstack mergers (deepstack_visual_indexes) are not modelled")
    embed = channels * temporal * patch * patch * h + h + positions * h
    merged = h * merge * merge
    merger = 2 * h + merged * merged + merged + merged * out + out
    return embed + depth * _vit_layer(h, inter) + merger


def pixtral(v: Fields, text_hidden: int) -> int:
    """Mistral 3: Pixtral (patch conv, RMSNorms, q/k/v/o without bias, gated MLP) and the
    projector (RMSNorm, patch merger, two linears)."""
    h = v.positive("hidden_size")
    inter = v.positive("intermediate_size")
    layers = v.positive("num_hidden_layers", maximum=MAX_LAYERS)
    patch = v.positive("patch_size")
    channels = v.positive("num_channels", 3)
    layer = 4 * h * h + 3 * h * inter + 2 * h
    tower = channels * patch * patch * h + h + layers * layer
    return tower


def _mistral3_projector(top: Fields, v: Fields, text_hidden: int) -> int:
    h = v.positive("hidden_size")
    merge = top.positive("spatial_merge_size", 2)
    bias = top.flag("multimodal_projector_bias", True)
    return (
        h
        + h * merge * merge * h
        + h * text_hidden
        + (text_hidden if bias else 0)
        + (text_hidden * text_hidden + (text_hidden if bias else 0))
    )


def moonvit(v: Fields, text_hidden: int) -> int:
    """Kimi K2.5: MoonViT (patch conv, 2-D position table, ViT blocks, final LayerNorm) and the
    patch-merger projector (LayerNorm, two linears)."""
    h = v.positive("vt_hidden_size") if v.has("vt_hidden_size") else v.positive("hidden_size")
    inter = (
        v.positive("vt_intermediate_size")
        if v.has("vt_intermediate_size")
        else v.positive("intermediate_size")
    )
    layers = (
        v.positive("vt_num_hidden_layers", maximum=MAX_LAYERS)
        if v.has("vt_num_hidden_layers")
        else v.positive("num_hidden_layers", maximum=MAX_LAYERS)
    )
    patch = v.positive("patch_size")
    pos_h = v.positive("init_pos_emb_height")
    pos_w = v.positive("init_pos_emb_width")
    merge = v.integers("merge_kernel_size") or [2, 2]
    if len(merge) != 2 or min(merge) < 1:
        raise v.error(f"field '{v.name('merge_kernel_size')}' must be two positive integers")
    mm_hidden = v.positive("mm_hidden_size", h)
    embed = 3 * patch * patch * h + h + pos_h * pos_w * h
    merged = h * merge[0] * merge[1]
    projector = 2 * mm_hidden + merged * merged + merged + merged * text_hidden + text_hidden
    return embed + layers * _vit_layer(h, inter) + 2 * h + projector


#: vision_config.model_type (or the wrapper's own type) → its counter.
TOWERS: dict[str, Callable[[Fields, int], int]] = {
    "llama4_vision_model": llama4,
    "siglip_vision_model": siglip,
    "gemma4_vision": gemma4,
    "qwen3_5": qwen3_5,
    "qwen3_5_moe": qwen3_5,
    "qwen3_5_vision": qwen3_5,
    "qwen3_5_moe_vision": qwen3_5,
    "pixtral": pixtral,
    "moonvit": moonvit,
}


def vision_params(top: Fields, wrapper: str, default_tower: str, text_hidden: int) -> int:
    """Parameters of ``top.vision_config`` (0 without one); an unknown tower is refused by name."""
    v = top.opt_sub("vision_config")
    if v is None:
        return 0
    tower = v.text("model_type", default_tower) or default_tower
    counter = TOWERS.get(tower)
    if counter is None:
        raise v.unsupported(
            f"vision tower {tower!r} (field '{v.name('model_type')}') is not modelled; its weights would be "
            f"left out of memory. Modelled: {', '.join(sorted(TOWERS))}"
        )
    n = counter(v, text_hidden)
    if wrapper == "mistral3":
        n += _mistral3_projector(top, v, text_hidden)
    return n
