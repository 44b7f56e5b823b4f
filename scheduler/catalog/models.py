"""Transformer model architectures: the shapes the estimator needs, and parameter counts.

A model whose layers all attend alike is described by the flat fields below; hybrid models add
their layers by type (``attention_layers``, ``linear_attention``, ``mamba``, ``ffn_layout``: see
:mod:`.layers`), and :attr:`ModelConfig.attention_groups` resolves either description into groups
of identical attention layers, which is all the estimator reads.

Conventions (docs/estimator.md): parameter counts include the embedding table and the LM head
(once when tied); norms and biases are counted; the MTP (multi-token prediction) modules
(DeepSeek, GLM, Qwen3.5, MiniMax, Nemotron 3) are not part of the served model and are left out. ``active_params`` counts every
parameter a token touches, the whole input-embedding table included (Mistral's, Qwen's and Meta's
published "active" figures); ``active_compute_params`` leaves the input-embedding table out (a
lookup reads one row of it), which is how OpenAI (gpt-oss) and DeepSeek count "active" parameters.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property

from hetsched.scheduler.catalog.layers import (
    AttentionLayers,
    CheckpointWeights,
    FFNLayout,
    GatedDeltaNet,
    LayerType,
    Mamba2,
    SparseAttention,
    WeightGroup,
)
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
    shared_expert_gate: bool = Field(
        default=False, description="a sigmoid gate (hidden → 1) on the shared expert (Qwen3-Next, Qwen3.5)"
    )
    latent_size: int | None = Field(
        default=None,
        gt=0,
        description="latent MoE (Nemotron 3 Super/Ultra): routed experts run at this width, between a "
        "hidden → latent and a latent → hidden projection",
    )

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
    qk_norm_full_width: bool = Field(
        default=False,
        description="the q and k norms span all heads (MiniMax-M2: q_width + kv heads·head_dim params)",
    )
    attention_output_gate: bool = Field(
        default=False, description="q_proj also yields a sigmoid gate on the attention output (Qwen3-Next)"
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
    # ---- hybrid models: layers by type (empty / None: every layer alike, from the fields above) ----
    attention_layers: tuple[AttentionLayers, ...] = Field(
        default=(), description="groups of attention layers by window and geometry (hybrid models)"
    )
    linear_attention: GatedDeltaNet | None = None
    mamba: Mamba2 | None = None
    sparse_attention: SparseAttention | None = None
    ffn_layout: FFNLayout | None = None
    norms_per_layer: int = Field(default=2, ge=0, description="hidden-size norms per layer (Gemma: 4)")
    other_params: int = Field(
        default=0, ge=0, description="parameters in no other count (Gemma 4's router scales): weights only"
    )
    max_position_embeddings: int | None = Field(default=None, gt=0)
    max_context_tokens: int | None = Field(
        default=None,
        gt=0,
        description="the longest context served when RoPE scaling extends max_position_embeddings "
        "(None: max_position_embeddings)",
    )
    native_weight_precision: str = "bf16"
    # Non-default weight precision of the routed experts in the released checkpoint (gpt-oss: mxfp4).
    native_expert_precision: str | None = None
    checkpoint: CheckpointWeights | None = Field(
        default=None, description="the checkpoint's stored bytes per weight group (quantization_config)"
    )
    vision_params: int = Field(
        default=0,
        ge=0,
        description="vision encoder + projector loaded with the checkpoint (Llama 4): in total_params, "
        "not in active_params (text tokens do not run it)",
    )
    notes: tuple[str, ...] = Field(default=(), description="what the config reader assumed, for the user")

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
        if self.attention_layers and self.sliding_window_layers:
            raise ValueError("give windows either by attention_layers or by sliding_window_layers, not both")
        if self.mixer_layers > self.num_layers:
            raise ValueError(
                f"{self.mixer_layers} attention and state layers exceed num_layers ({self.num_layers})"
            )
        if not self.attention_layers and self.state_layers:
            raise ValueError("a model with linear-attention or Mamba layers lists its attention_layers")
        for g in self.attention_groups:
            assert g.num_heads is not None and g.num_kv_heads is not None
            if self.mla is None and g.num_heads % g.num_kv_heads:
                raise ValueError(
                    f"{g.type.value} layers: num_heads ({g.num_heads}) must be a multiple of "
                    f"num_kv_heads ({g.num_kv_heads})"
                )
        if self.sparse_attention is not None and (self.mla is None or self.mla.q_lora_rank is None):
            raise ValueError("sparse_attention (the DeepSeek indexer) needs MLA with a query latent")
        if any(g.indexer for g in self.attention_groups) and self.sparse_attention is None:
            raise ValueError("attention layers with an indexer need sparse_attention")
        if self.ffn_layout is not None:
            f = self.ffn_layout
            if (f.moe > 0) != (self.moe is not None):
                raise ValueError("ffn_layout.moe counts MoE layers: set it exactly when moe is set")
            if max(f.dense, f.moe) > self.num_layers or (
                not f.parallel and f.dense + f.moe > self.num_layers
            ):
                raise ValueError(f"ffn_layout ({f.dense} dense, {f.moe} MoE) exceeds num_layers")
        if self.moe is None and self.dense_layers and self.intermediate_size == 0:
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
    def hybrid(self) -> bool:
        """Layers of more than one kind: windows, per-group geometry or state layers."""
        return len(self.attention_groups) > 1 or self.state_layers > 0

    @cached_property
    def attention_groups(self) -> tuple[AttentionLayers, ...]:
        """The attention layers as groups with every field resolved (full layers first for a model
        given by its flat fields, then its windowed ones)."""
        if self.attention_layers:
            return tuple(self._resolve(g) for g in self.attention_layers)
        groups: list[AttentionLayers] = []
        full = self.num_layers - self.sliding_window_layers
        if full:
            groups.append(self._resolve(AttentionLayers(count=full, sinks=self.attention_sinks)))
        if self.sliding_window_layers:
            kind = LayerType.CHUNKED if self.sliding_window_kind is WindowKind.CHUNKED else LayerType.SLIDING
            groups.append(
                self._resolve(
                    AttentionLayers(
                        type=kind,
                        count=self.sliding_window_layers,
                        window=self.sliding_window,
                        sinks=self.attention_sinks,
                    )
                )
            )
        return tuple(groups)

    def _resolve(self, g: AttentionLayers) -> AttentionLayers:
        head = g.head_dim or self.head_dim
        return g.model_copy(
            update={
                "num_heads": g.num_heads or self.num_heads,
                "num_kv_heads": g.num_kv_heads or self.num_kv_heads,
                "head_dim": head,
                "v_head_dim": g.v_head_dim or head,
            }
        )

    @property
    def attention_layer_count(self) -> int:
        return sum(g.count for g in self.attention_groups)

    @property
    def state_layers(self) -> int:
        """Gated DeltaNet and Mamba2 layers (a fixed state per request, no KV cache)."""
        gdn = self.linear_attention.layers if self.linear_attention is not None else 0
        return gdn + (self.mamba.layers if self.mamba is not None else 0)

    @property
    def mixer_layers(self) -> int:
        """Layers with a token mixer (attention or state); Nemotron-H's FFN-only layers have none."""
        return self.attention_layer_count + self.state_layers

    @property
    def ffn_sublayers(self) -> int:
        """Layers with an FFN (dense, MoE or both side by side)."""
        if self.ffn_layout is not None and self.ffn_layout.parallel:
            return max(self.dense_layers, self.moe_layers)
        return self.dense_layers + self.moe_layers

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
        if self.ffn_layout is not None:
            return self.ffn_layout.moe
        span = self.num_layers - self.moe.first_dense_layers
        return max(0, span // self.moe.layer_interval)

    @property
    def dense_layers(self) -> int:
        if self.ffn_layout is not None:
            return self.ffn_layout.dense
        return self.num_layers - self.moe_layers

    @property
    def ffn_matrices(self) -> int:
        return 3 if self.gated_ffn else 2

    # ---- per-layer parameter counts ------------------------------------------------------------
    @cached_property
    def attention_params_per_layer(self) -> int:
        """Parameters of one attention layer of the model's own geometry (the first group's for a
        hybrid model; :meth:`attention_group_params` counts each group)."""
        return self.attention_group_params(self.attention_groups[0]) if self.attention_groups else 0

    def attention_group_params(self, g: AttentionLayers) -> int:
        """Parameters of one layer of the attention group ``g`` (resolved)."""
        h = self.hidden_size
        assert g.num_heads is not None and g.num_kv_heads is not None
        assert g.head_dim is not None and g.v_head_dim is not None
        if self.mla is not None:
            m = self.mla
            heads = g.num_heads
            qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank is not None:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * heads * qk_head
            else:
                q = h * heads * qk_head
            kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv_up = m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
            out = heads * m.v_head_dim * h
            params = q + kv_down + kv_up + out
            if g.indexer:
                assert self.sparse_attention is not None and m.q_lora_rank is not None
                params += self.sparse_attention.params_per_layer(h, m.q_lora_rank)
            return params
        q_width = g.num_heads * g.head_dim
        q_out = 2 * q_width if self.attention_output_gate else q_width
        k_width = g.num_kv_heads * g.head_dim
        v_width = 0 if g.shared_kv else g.num_kv_heads * g.v_head_dim
        out_width = g.num_heads * g.v_head_dim
        params = h * q_out + h * (k_width + v_width) + out_width * h
        if self.attention_bias:
            params += q_out + k_width + v_width
        out_bias = self.attention_bias if self.attention_out_bias is None else self.attention_out_bias
        if out_bias:
            params += h
        if self.qk_norm:
            params += q_width + k_width if self.qk_norm_full_width else 2 * g.head_dim
        if g.sinks:
            params += g.num_heads
        return params

    @property
    def state_params(self) -> int:
        """All Gated DeltaNet and Mamba2 layers together."""
        h = self.hidden_size
        n = 0
        if self.linear_attention is not None:
            n += self.linear_attention.layers * self.linear_attention.params_per_layer(h)
        if self.mamba is not None:
            n += self.mamba.layers * self.mamba.params_per_layer(h)
        return n

    @property
    def dense_ffn_params(self) -> int:
        return self.ffn_matrices * self.hidden_size * self.intermediate_size

    @property
    def expert_width(self) -> int:
        """Input/output width of a routed expert: the hidden size, or the latent of a latent MoE."""
        assert self.moe is not None
        return self.moe.latent_size or self.hidden_size

    @property
    def expert_params(self) -> int:
        """One routed expert of one layer (its biases included when it has them)."""
        assert self.moe is not None
        inter = self.moe.expert_intermediate_size
        params = self.ffn_matrices * self.expert_width * inter
        if self.moe.expert_bias:
            params += (self.ffn_matrices - 1) * inter + self.expert_width
        return params

    @property
    def shared_expert_params(self) -> int:
        """Shared experts of one MoE layer, with their sigmoid gate and a latent MoE's projections."""
        assert self.moe is not None
        h = self.hidden_size
        params = self.moe.num_shared_experts * self.ffn_matrices * h * self.moe.shared_size
        if self.moe.shared_expert_gate:
            params += h
        return params

    @property
    def latent_projection_params(self) -> int:
        """A latent MoE layer's hidden → latent and latent → hidden projections."""
        assert self.moe is not None
        return 2 * self.hidden_size * self.moe.latent_size if self.moe.latent_size else 0

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
        return (self.norms_per_layer * self.num_layers + 1) * self.hidden_size

    @cached_property
    def params_by_group(self) -> tuple[tuple[WeightGroup, int], ...]:
        """Every parameter, by :class:`~.layers.WeightGroup` (what quantized checkpoints store alike)."""
        routed = shared = router = other = 0
        if self.moe is not None:
            routed = self.moe_layers * self.moe.num_experts * self.expert_params
            shared = self.moe_layers * self.shared_expert_params
            router = self.moe_layers * self.router_params
            other = self.moe_layers * self.latent_projection_params
        attention = sum(g.count * self.attention_group_params(g) for g in self.attention_groups)
        counts = {
            WeightGroup.EMBEDDING: self.embedding_params,
            WeightGroup.ATTENTION: attention,
            WeightGroup.STATE: self.state_params,
            WeightGroup.DENSE_FFN: self.dense_layers * self.dense_ffn_params,
            WeightGroup.SHARED_EXPERTS: shared,
            WeightGroup.EXPERTS: routed,
            WeightGroup.ROUTER: router,
            WeightGroup.NORMS: self.norm_params,
            WeightGroup.LM_HEAD: self.lm_head_params,
            WeightGroup.VISION: self.vision_params,
            WeightGroup.OTHER: other + self.other_params,
        }
        return tuple(counts.items())

    @cached_property
    def total_params(self) -> int:
        return sum(n for _, n in self.params_by_group)

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

    # ---- context -------------------------------------------------------------------------------
    @property
    def context_limit(self) -> int | None:
        """The longest context the model serves: ``max_position_embeddings``, or longer where its
        RoPE scaling extends it (``max_context_tokens``; see ``hf_config``)."""
        return self.max_context_tokens or self.max_position_embeddings

    # ---- KV cache ------------------------------------------------------------------------------
    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """Cached elements per token in one layer: K and V heads, or MLA's latent plus RoPE key
        (the model's own geometry; :meth:`group_kv_elements` for each group of a hybrid model)."""
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def group_kv_elements(self, g: AttentionLayers) -> int:
        """Cached elements per token in one layer of the attention group ``g`` (resolved)."""
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        assert g.num_kv_heads is not None and g.head_dim is not None and g.v_head_dim is not None
        return g.num_kv_heads * (g.head_dim + g.v_head_dim)

    def kv_elements(self, context: int) -> int:
        """Cached K/V elements of one sequence of ``context`` tokens over all attention layers
        (windows applied; a sparse model's index keys and the state layers' states not included)."""
        if not self.attention_layers:
            full_layers = self.num_layers - self.sliding_window_layers
            tokens = full_layers * context
            if self.sliding_window_layers:
                assert self.sliding_window is not None
                tokens += self.sliding_window_layers * min(context, self.sliding_window)
            return tokens * self.kv_elements_per_token_per_layer
        total = 0
        for g in self.attention_groups:
            cached = context if g.window is None else min(context, g.window)
            total += g.count * cached * self.group_kv_elements(g)
        return total
