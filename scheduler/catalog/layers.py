"""Layer types of models whose layers are not all alike, and how a checkpoint stores its weights.

A :class:`~hetsched.scheduler.catalog.models.ModelConfig` whose layers all attend the same way is
described by its flat fields (``num_heads``, ``sliding_window_layers``, ``moe``...). Hybrid models
list their layers by type instead (docs/estimator.md, "Layer types"):

* :class:`AttentionLayers` — softmax attention over a KV cache: full, sliding-window or chunked,
  each group with its own head counts and K/V head sizes (Gemma 4's local and global layers,
  MiMo's), optionally with a DeepSeek sparse-attention indexer (:class:`SparseAttention`);
* :class:`GatedDeltaNet` — linear attention (Qwen3-Next, Qwen3.5): a fixed recurrent state per
  request instead of a KV cache;
* :class:`Mamba2` — state-space layers (Nemotron-H): likewise a fixed state per request;
* :class:`FFNLayout` — how many layers carry a dense FFN and how many an MoE block, when that is
  not "every layer one or the other" (Nemotron-H's FFN-only layers, Gemma 4's dense + MoE layers).

:class:`CheckpointWeights` is the checkpoint's own storage (``quantization_config``): bytes per
parameter for each :class:`WeightGroup`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Elements of a DeepSeek sparse-attention index key that share one FP32 scale (vLLM's
#: ``quant_block_size``): a cached index key is FP8 values plus one 4-byte scale per block.
INDEX_KEY_BLOCK = 128


class LayerType(StrEnum):
    """What a layer's token mixer is (the names of Hugging Face's ``layer_types``)."""

    FULL = "full_attention"
    SLIDING = "sliding_attention"  # attends to the last ``window`` tokens
    CHUNKED = "chunked_attention"  # attends within its aligned chunk of ``window`` tokens (Llama 4)
    LINEAR = "linear_attention"  # Gated DeltaNet
    MAMBA = "mamba"  # Mamba2 (state-space duality)


WINDOWED = (LayerType.SLIDING, LayerType.CHUNKED)


class AttentionLayers(BaseModel):
    """``count`` softmax-attention layers that share their window and geometry.

    Head counts and sizes left ``None`` are the model's (``ModelConfig.num_heads``, ...). The cache
    holds ``num_kv_heads·(head_dim + v_head_dim)`` elements per token (MLA models: the latent).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: LayerType = LayerType.FULL
    count: int = Field(gt=0)
    window: int | None = Field(default=None, gt=0, description="window or chunk, for windowed types")
    num_heads: int | None = Field(default=None, gt=0)
    num_kv_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0, description="query/key head size")
    v_head_dim: int | None = Field(default=None, gt=0, description="value head size (None: head_dim)")
    shared_kv: bool = Field(
        default=False,
        description="the key projection also serves as the value (Gemma 4's attention_k_eq_v): no "
        "v_proj weights, but the cache still holds K and V",
    )
    sinks: bool = Field(default=False, description="a learned sink logit per head (gpt-oss, MiMo SWA)")
    indexer: bool = Field(
        default=False,
        description="sparse attention: the layer runs its own indexer and caches its index keys "
        "(False in a sparse model: it reuses an earlier layer's selection)",
    )

    @model_validator(mode="after")
    def _check(self) -> AttentionLayers:
        if self.type in (LayerType.LINEAR, LayerType.MAMBA):
            raise ValueError(f"attention layers cannot be of type {self.type.value!r}")
        if (self.type in WINDOWED) != (self.window is not None):
            raise ValueError(f"{self.type.value} layers: a window is required for windowed types only")
        return self


class GatedDeltaNet(BaseModel):
    """Gated DeltaNet linear-attention layers (Qwen3-Next, Qwen3.5).

    Per request and layer a fixed state: the causal-conv state ``(conv_kernel − 1) × conv_dim``
    (``conv_dim = 2·key_heads·key_head_dim + value_heads·value_head_dim``) and the recurrent state
    ``value_heads × key_head_dim × value_head_dim`` (vLLM ``gated_delta_net_state_shape``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: int = Field(gt=0)
    num_key_heads: int = Field(gt=0)
    num_value_heads: int = Field(gt=0)
    key_head_dim: int = Field(gt=0)
    value_head_dim: int = Field(gt=0)
    conv_kernel: int = Field(gt=0)
    conv_dtype: str = "bf16"
    state_dtype: str = Field(default="bf16", description="recurrent state (Qwen3.5: fp32)")
    chunk_size: int = Field(default=64, gt=0, description="chunk of the prefill scan (FLA kernels: 64)")

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def params_per_layer(self, hidden: int) -> int:
        """in_proj (q, k, v, z gate, b and a per value head), depthwise conv, dt bias and A, the
        gated RMSNorm over a value head, out_proj."""
        kd, vd, nv = self.key_dim, self.value_dim, self.num_value_heads
        in_proj = hidden * (2 * kd + 2 * vd + 2 * nv)
        return in_proj + self.conv_dim * self.conv_kernel + 2 * nv + self.value_head_dim + vd * hidden

    def conv_state_elements(self, tp: int = 1) -> float:
        return (self.conv_kernel - 1) * self.conv_dim / tp

    def recurrent_state_elements(self, tp: int = 1) -> float:
        return self.num_value_heads / tp * self.key_head_dim * self.value_head_dim


class Mamba2(BaseModel):
    """Mamba2 (SSD) state-space layers (Nemotron-H).

    ``inner = num_heads·head_dim``; the conv runs over ``inner + 2·n_groups·state_size`` channels.
    Per request and layer: the conv state ``(conv_kernel − 1) × conv_dim`` and the SSM state
    ``num_heads × head_dim × state_size`` (vLLM ``mamba2_state_shape``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    state_size: int = Field(gt=0)
    n_groups: int = Field(gt=0)
    conv_kernel: int = Field(gt=0)
    conv_bias: bool = True
    proj_bias: bool = False
    chunk_size: int = Field(default=128, gt=0)
    conv_dtype: str = "bf16"
    state_dtype: str = Field(default="fp32", description="SSM state (vLLM's default for Nemotron-H)")

    @property
    def inner(self) -> int:
        return self.num_heads * self.head_dim

    def conv_dim(self, tp: int = 1) -> int:
        """Conv channels on all ranks together; vLLM replicates the groups up to ``tp`` when they do
        not divide evenly (``extra_groups_for_head_shards``)."""
        groups = self.n_groups if self.n_groups % tp == 0 else self.n_groups + (tp - self.n_groups % tp)
        groups = max(groups, self.n_groups)
        return self.inner + 2 * groups * self.state_size

    def params_per_layer(self, hidden: int) -> int:
        """in_proj (x, z, B, C, dt), depthwise conv, dt bias, A, D, gated RMSNorm, out_proj."""
        conv = self.conv_dim()
        in_out = self.inner + conv + self.num_heads
        in_proj = hidden * in_out + (in_out if self.proj_bias else 0)
        conv_params = conv * self.conv_kernel + (conv if self.conv_bias else 0)
        out_proj = self.inner * hidden + (hidden if self.proj_bias else 0)
        return in_proj + conv_params + 3 * self.num_heads + self.inner + out_proj

    def conv_state_elements(self, tp: int = 1) -> float:
        return (self.conv_kernel - 1) * self.conv_dim(tp) / tp

    def recurrent_state_elements(self, tp: int = 1) -> float:
        return self.num_heads / tp * self.head_dim * self.state_size


class SparseAttention(BaseModel):
    """DeepSeek sparse attention (DeepSeek-V3.2, GLM-5): an indexer picks ``top_k`` cached tokens
    per query, and the MLA attention reads only those.

    Per indexer layer the indexer has ``index_heads`` query heads of ``index_head_dim`` (from the
    query latent) and one key head; its keys are cached as FP8 plus one FP32 scale per 128
    (``index_head_dim + 4·index_head_dim/128`` bytes per token, whatever the KV-cache format).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index_heads: int = Field(gt=0)
    index_head_dim: int = Field(gt=0)
    top_k: int = Field(gt=0)

    @property
    def index_key_bytes(self) -> int:
        return self.index_head_dim + 4 * -(-self.index_head_dim // INDEX_KEY_BLOCK)

    def params_per_layer(self, hidden: int, q_lora_rank: int) -> int:
        """wq_b (query latent → heads), wk (hidden → one key head), its LayerNorm (weight and
        bias), weights_proj (hidden → one weight per head)."""
        d, n = self.index_head_dim, self.index_heads
        return q_lora_rank * n * d + hidden * d + 2 * d + hidden * n


class FFNLayout(BaseModel):
    """Layers with a dense FFN and layers with an MoE block, when not every layer has one or the
    other (Nemotron-H: mixer-only and FFN-only layers; Gemma 4: a dense FFN beside the MoE block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dense: int = Field(ge=0)
    moe: int = Field(ge=0)
    parallel: bool = Field(default=False, description="the MoE layers are also the dense layers")


class WeightGroup(StrEnum):
    """Parameters grouped by what stores them alike in quantized checkpoints."""

    EMBEDDING = "embedding"
    ATTENTION = "attention"  # q/k/v/o projections (MLA's, the sparse indexer's), their norms
    STATE = "state"  # Gated DeltaNet and Mamba2 mixers
    DENSE_FFN = "dense_ffn"
    SHARED_EXPERTS = "shared_experts"
    EXPERTS = "experts"  # routed experts
    ROUTER = "router"
    NORMS = "norms"  # per-layer and final norms
    LM_HEAD = "lm_head"
    VISION = "vision"  # vision tower and projector
    OTHER = "other"  # parameters outside the groups above (Gemma 4's router scales, latent MoE projections)


class CheckpointWeights(BaseModel):
    """How the checkpoint stores its weights (read from ``quantization_config``).

    ``bytes_per_param`` gives, per weight group, the average bytes of a parameter: the quantized
    format's bytes (group scales and zero points included) for quantized parameters, the
    checkpoint's dtype for those the config leaves out (``ignore``, ``modules_to_not_convert``, a
    method's own exclusions).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(min_length=1, description="quantization_config.quant_method")
    quantized_format: str = Field(description="precision name of the quantized parameters")
    bytes_per_param: tuple[tuple[WeightGroup, float], ...]
    kv_cache_format: str | None = Field(default=None, description="the KV-cache format it was calibrated for")

    @model_validator(mode="after")
    def _check(self) -> CheckpointWeights:
        groups = [g for g, _ in self.bytes_per_param]
        if sorted(groups) != sorted(WeightGroup):
            raise ValueError("bytes_per_param must give every weight group once")
        if any(not 0 < b <= 4 for _, b in self.bytes_per_param):
            raise ValueError("bytes per parameter must be in (0, 4]")
        return self

    def bytes_of(self, group: WeightGroup) -> float:
        for g, b in self.bytes_per_param:
            if g is group:
                return b
        raise KeyError(group)
