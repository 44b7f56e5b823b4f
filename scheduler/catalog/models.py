"""Transformer model architectures: the shapes the estimator needs, and parameter counts.

Conventions (docs/estimator.md): parameter counts include the embedding table and the LM head
(once when tied); norms and biases are counted; the MTP (multi-token prediction) module of
DeepSeek-V3 is not part of the served model and is left out. ``active_params`` counts every
parameter a token touches, the whole input-embedding table included (Mistral's, Qwen's and Meta's
published "active" figures); ``active_compute_params`` leaves the input-embedding table out (a
lookup reads one row of it), which is how OpenAI (gpt-oss) and DeepSeek count "active" parameters.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AttentionKind(StrEnum):
    MHA = "mha"
    GQA = "gqa"
    MQA = "mqa"
    MLA = "mla"


class MLAConfig(BaseModel):
    """Multi-head latent attention (DeepSeek-V2/V3): a compressed KV latent plus a decoupled RoPE key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kv_lora_rank: int = Field(gt=0)
    q_lora_rank: int | None = Field(default=None, gt=0)  # None: queries are projected directly
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class WindowKind(StrEnum):
    """How the ``sliding_window_layers`` of a model limit attention (both cap their KV at the window)."""

    SLIDING = "sliding"  # token t attends to the last ``window`` tokens (Mistral, gpt-oss)
    CHUNKED = "chunked"  # token t attends within its aligned chunk of ``window`` tokens (Llama 4)


class MoEConfig(BaseModel):
    """Mixture-of-experts FFN.

    Layer ``i`` is an MoE layer when ``i >= first_dense_layers`` and
    ``(i - first_dense_layers) % layer_interval == layer_interval - 1``; other layers use the dense
    FFN of size ``ModelConfig.intermediate_size``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_experts: int = Field(gt=0)
    experts_per_token: int = Field(gt=0)
    expert_intermediate_size: int = Field(gt=0)
    num_shared_experts: int = Field(default=0, ge=0)
    shared_expert_intermediate_size: int | None = Field(default=None, gt=0)  # default: expert size
    first_dense_layers: int = Field(default=0, ge=0)
    layer_interval: int = Field(default=1, gt=0)
    router_bias: bool = False
    expert_bias: bool = False  # biases on each expert's gate/up/down matrices (gpt-oss)

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"moe.experts_per_token ({self.experts_per_token}) exceeds "
                f"moe.num_experts ({self.num_experts})"
            )
        return self

    @property
    def shared_size(self) -> int:
        return self.shared_expert_intermediate_size or self.expert_intermediate_size


class ModelConfig(BaseModel):
    """Architecture of a decoder-only transformer, as the estimator sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    source: str = Field(min_length=1, description="where the numbers come from (config.json URL, paper)")
    hf_id: str | None = None
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(ge=0, description="dense FFN width (0 if every layer is MoE)")
    vocab_size: int = Field(gt=0)
    tie_embeddings: bool = False
    gated_ffn: bool = Field(default=True, description="SwiGLU-style FFN with gate, up and down matrices")
    attention_bias: bool = False  # biases on q, k, v (and o for gpt-oss)
    attention_out_bias: bool | None = Field(
        default=None, description="bias on the output projection; None: same as attention_bias (Qwen2: False)"
    )
    qk_norm: bool = Field(
        default=False, description="learned RMSNorm of q and k heads (Qwen3): 2·head_dim params per layer"
    )
    attention_sinks: bool = Field(
        default=False, description="a learned sink logit per head and layer (gpt-oss)"
    )
    mla: MLAConfig | None = None
    moe: MoEConfig | None = None
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_window_layers: int = Field(default=0, ge=0, description="layers whose KV is capped at the window")
    sliding_window_kind: WindowKind = Field(
        default=WindowKind.SLIDING,
        description="sliding window, or Llama 4's chunked attention (sliding_window = chunk size)",
    )
    max_position_embeddings: int | None = Field(default=None, gt=0)
    native_weight_precision: str = "bf16"
    # Non-default weight precision of the routed experts in the released checkpoint (gpt-oss: mxfp4).
    native_expert_precision: str | None = None
    vision_params: int = Field(
        default=0,
        ge=0,
        description="vision encoder + projector loaded with the checkpoint (Llama 4): in total_params, "
        "not in active_params (text tokens do not run it)",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.mla is None and self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.sliding_window_layers > self.num_layers:
            raise ValueError("sliding_window_layers exceeds num_layers")
        if self.sliding_window_layers and self.sliding_window is None:
            raise ValueError("sliding_window_layers is set but sliding_window is not")
        if self.moe is None and self.intermediate_size == 0:
            raise ValueError("intermediate_size must be > 0 for a dense model")
        if self.moe is not None and self.dense_layers and self.intermediate_size == 0:
            raise ValueError("intermediate_size must be > 0: the model has dense FFN layers")
        return self

    # ---- derived shapes -------------------------------------------------------------------------
    @property
    def attention_kind(self) -> AttentionKind:
        if self.mla is not None:
            return AttentionKind.MLA
        if self.num_kv_heads == self.num_heads:
            return AttentionKind.MHA
        if self.num_kv_heads == 1:
            return AttentionKind.MQA
        return AttentionKind.GQA

    @property
    def q_width(self) -> int:
        """Width of the concatenated query heads (differs from hidden for Qwen3, gpt-oss, MLA)."""
        if self.mla is not None:
            return self.num_heads * (self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim)
        return self.num_heads * self.head_dim

    @property
    def attn_out_width(self) -> int:
        if self.mla is not None:
            return self.num_heads * self.mla.v_head_dim
        return self.num_heads * self.head_dim

    @cached_property
    def moe_layers(self) -> int:
        if self.moe is None:
            return 0
        span = self.num_layers - self.moe.first_dense_layers
        return max(0, span // self.moe.layer_interval)

    @property
    def dense_layers(self) -> int:
        return self.num_layers - self.moe_layers

    @property
    def ffn_matrices(self) -> int:
        return 3 if self.gated_ffn else 2

    # ---- per-layer parameter counts ------------------------------------------------------------
    @cached_property
    def attention_params_per_layer(self) -> int:
        h = self.hidden_size
        if self.mla is not None:
            m = self.mla
            qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank is not None:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * self.num_heads * qk_head
            else:
                q = h * self.num_heads * qk_head
            kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv_up = m.kv_lora_rank * self.num_heads * (m.qk_nope_head_dim + m.v_head_dim)
            out = self.num_heads * m.v_head_dim * h
            return q + kv_down + kv_up + out
        kv_width = self.num_kv_heads * self.head_dim
        params = h * self.q_width + 2 * h * kv_width + self.q_width * h
        if self.attention_bias:
            params += self.q_width + 2 * kv_width
        out_bias = self.attention_bias if self.attention_out_bias is None else self.attention_out_bias
        if out_bias:
            params += h
        if self.qk_norm:
            params += 2 * self.head_dim
        if self.attention_sinks:
            params += self.num_heads
        return params

    @property
    def dense_ffn_params(self) -> int:
        return self.ffn_matrices * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """One routed expert of one layer (its biases included when it has them)."""
        assert self.moe is not None
        inter = self.moe.expert_intermediate_size
        params = self.ffn_matrices * self.hidden_size * inter
        if self.moe.expert_bias:
            params += (self.ffn_matrices - 1) * inter + self.hidden_size
        return params

    @property
    def shared_expert_params(self) -> int:
        assert self.moe is not None
        return self.moe.num_shared_experts * self.ffn_matrices * self.hidden_size * self.moe.shared_size

    @property
    def router_params(self) -> int:
        assert self.moe is not None
        return self.hidden_size * self.moe.num_experts + (self.moe.num_experts if self.moe.router_bias else 0)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @cached_property
    def total_params(self) -> int:
        n = self.embedding_params + self.lm_head_params + self.norm_params + self.vision_params
        n += self.num_layers * self.attention_params_per_layer
        n += self.dense_layers * self.dense_ffn_params
        if self.moe is not None:
            routed = self.moe.num_experts * self.expert_params
            n += self.moe_layers * (routed + self.shared_expert_params + self.router_params)
        return n

    @cached_property
    def active_params(self) -> int:
        """Parameters used for one text token (routed experts: only ``experts_per_token`` of them).

        Includes the whole input-embedding table (the Mistral/Qwen/Meta convention); the vision
        encoder is left out.
        """
        text = self.total_params - self.vision_params
        if self.moe is None:
            return text
        routed_unused = (self.moe.num_experts - self.moe.experts_per_token) * self.expert_params
        return text - self.moe_layers * routed_unused

    @property
    def active_compute_params(self) -> int:
        """``active_params`` less the input-embedding table, which a token only looks up one row of.

        This is the "active parameters" convention of OpenAI (gpt-oss model card: 5.13B for
        gpt-oss-120b) and DeepSeek. With tied embeddings the table is the LM head and stays in.
        """
        if self.tie_embeddings:
            return self.active_params
        return self.active_params - self.embedding_params

    # ---- KV cache ------------------------------------------------------------------------------
    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """Cached elements per token in one layer: K and V heads, or MLA's latent plus RoPE key."""
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def kv_elements(self, context: int) -> int:
        """Cached elements of one sequence of ``context`` tokens over all layers (windows applied)."""
        full_layers = self.num_layers - self.sliding_window_layers
        tokens = full_layers * context
        if self.sliding_window_layers:
            assert self.sliding_window is not None
            tokens += self.sliding_window_layers * min(context, self.sliding_window)
        return tokens * self.kv_elements_per_token_per_layer
