"""A model's numbers as the estimator's hot path reads them, derived once per model.

:func:`shape` turns a :class:`~hetsched.scheduler.catalog.models.ModelConfig` into plain tuples
and integers: the attention layers grouped three ways (by projection geometry, by score geometry,
by cache layout), the state layers, the FFN counts and the parameters per weight group. Groups
that are alike are merged, so a model whose layers all attend the same way has one entry in each
(and its figures are summed exactly as a single-geometry formula would sum them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from hetsched.scheduler.catalog.layers import LayerType, WeightGroup
from hetsched.scheduler.catalog.models import ModelConfig


@dataclass(frozen=True, slots=True)
class Span:
    """Layers of one window behaviour inside a geometry class."""

    layers: int
    window: int  # cache cap in tokens (0: the whole context)
    chunked: bool  # Llama 4: attends within aligned chunks of ``window``
    attend_cap: int  # most keys a query attends to (window, or a sparse model's top-k; 0: all)


@dataclass(frozen=True, slots=True)
class Projection:
    """Attention layers sharing their projection shapes (per layer, elements)."""

    layers: int
    q_out: int  # q_proj output (queries, and an output gate's logits)
    kv_out: int  # k_proj + v_proj outputs
    q_width: int  # queries the attention core reads
    out_width: int  # attention output (o_proj input)
    gated: bool  # the attention output is multiplied by a sigmoid gate
    qkv_out: int  # q_out + kv_out
    act_width: int  # activations the attention core reads and writes per token (q, output, gate)


@dataclass(frozen=True, slots=True)
class Scores:
    """Attention layers sharing their score geometry: ``heads`` queries of ``qk_dim``, values of
    ``v_dim``; ``full`` of them attend to every earlier token, the ``capped`` spans to fewer."""

    heads: int
    qk_dim: int
    v_dim: int
    full: int
    capped: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Cache:
    """Attention layers sharing their cache layout: ``elements`` per token and layer, split over
    ``kv_heads`` devices at most under tensor parallelism (0: replicated, MLA)."""

    elements: int
    kv_heads: int
    layers: int
    full: int  # layers holding and reading the whole context
    capped: tuple[Span, ...]  # windowed spans, and a sparse model's (holds all, decode reads top-k)


@dataclass(frozen=True, slots=True)
class StateLayers:
    """Gated DeltaNet or Mamba2 layers: per layer and token, the shapes the step cost needs."""

    kind: LayerType
    layers: int
    in_proj: int  # in_proj output width (hidden → ...)
    out_in: int  # out_proj input width (... → hidden)
    params_per_layer: int
    conv_dim: int
    conv_kernel: int
    heads: int  # value heads (GDN) or SSM heads (Mamba2)
    head_k: int  # key head size (GDN) or state size (Mamba2)
    head_v: int  # value head size (GDN) or head size (Mamba2)
    groups: int  # B/C groups (Mamba2); key heads (GDN)
    chunk: int
    conv_bytes: float  # per request and layer, whole replica
    state_bytes: float
    conv_dtype: str
    state_dtype: str


@dataclass(frozen=True, slots=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    q_width: int
    kv_width: int
    attn_out: int
    attention_layers: int
    projections: tuple[Projection, ...]
    scores: tuple[Scores, ...]
    caches: tuple[Cache, ...]
    ffn: int
    ffn_mats: int
    dense_layers: int
    moe_layers: int
    num_experts: int
    experts_per_token: int
    expert_ffn: int
    expert_width: int  # hidden, or a latent MoE's latent
    latent: int  # latent MoE width (0: none)
    shared_ffn_total: int  # num_shared × shared size
    shared_gate: bool
    vocab: int
    tied: bool
    mla: bool
    kv_lora: int
    q_lora: int
    qk_nope: int
    qk_rope: int
    v_head: int
    # Sparse attention (DeepSeek indexer): layers with their own indexer, heads, head size, top-k,
    # bytes of a cached index key.
    index_layers: int
    index_heads: int
    index_dim: int
    top_k: int
    index_key_bytes: int
    states: tuple[StateLayers, ...]
    mixer_sublayers: int
    ffn_sublayers: int
    total_params: int
    routed_expert_params: int  # all routed experts of all MoE layers
    kv_elems_per_token_layer: int
    norm_params: int
    small_params: int  # other parameters read once per step with the norms (Gemma 4's router scales)
    params_by_group: tuple[tuple[WeightGroup, int], ...]


_SHAPES: dict[int, tuple[ModelConfig, Shape]] = {}
K = TypeVar("K")

_DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


def shape(model: ModelConfig) -> Shape:
    """The model's derived shape, cached by identity (hashing a pydantic model costs more than this)."""
    hit = _SHAPES.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    if len(_SHAPES) > 512:
        _SHAPES.clear()
    derived = _derive(model)
    _SHAPES[id(model)] = (model, derived)  # holding the model keeps its id from being reused
    return derived


def _merge_spans(pairs: list[tuple[K, Span]]) -> dict[K, list[Span]]:
    """Spans by key, in first-seen order; spans of one key with the same behaviour merged."""
    out: dict[K, list[Span]] = {}
    for key, span in pairs:
        spans = out.setdefault(key, [])
        for i, s in enumerate(spans):
            if (s.window, s.chunked, s.attend_cap) == (span.window, span.chunked, span.attend_cap):
                spans[i] = Span(s.layers + span.layers, s.window, s.chunked, s.attend_cap)
                break
        else:
            spans.append(span)
    return out


def _full(spans: list[Span]) -> int:
    return sum(s.layers for s in spans if not s.window and not s.attend_cap)


def _capped(spans: list[Span]) -> tuple[Span, ...]:
    return tuple(s for s in spans if s.window or s.attend_cap)


def _attention(model: ModelConfig) -> tuple[tuple[Projection, ...], tuple[Scores, ...], tuple[Cache, ...]]:
    mla = model.mla
    top_k = model.sparse_attention.top_k if model.sparse_attention is not None else 0
    projections: dict[tuple[int, int, int, int, bool], int] = {}
    score_spans: list[tuple[tuple[int, int, int], Span]] = []
    cache_spans: list[tuple[tuple[int, int], Span]] = []
    for g in model.attention_groups:
        assert g.num_heads is not None and g.num_kv_heads is not None
        assert g.head_dim is not None and g.v_head_dim is not None
        window = g.window or 0
        span = Span(g.count, window, g.type is LayerType.CHUNKED, window or top_k)
        if mla is not None:
            key = (0, 0, 0, 0, False)  # MLA's projections are computed from model.mla
            score_key = (g.num_heads, 0, 0)
            cache_key = (model.group_kv_elements(g), 0)
        else:
            q_width = g.num_heads * g.head_dim
            gate = model.attention_output_gate
            kv_out = g.num_kv_heads * g.head_dim + (0 if g.shared_kv else g.num_kv_heads * g.v_head_dim)
            key = (2 * q_width if gate else q_width, kv_out, q_width, g.num_heads * g.v_head_dim, gate)
            score_key = (g.num_heads, g.head_dim, g.v_head_dim)
            cache_key = (model.group_kv_elements(g), g.num_kv_heads)
        projections[key] = projections.get(key, 0) + g.count
        score_spans.append((score_key, span))
        cache_spans.append((cache_key, span))
    projs = tuple(
        Projection(
            layers,
            q_out,
            kv_out,
            q_width,
            out_width,
            gated,
            q_out + kv_out,
            q_width + out_width + (out_width if gated else 0),
        )
        for (q_out, kv_out, q_width, out_width, gated), layers in projections.items()
    )
    scores = tuple(
        Scores(h, qk, v, _full(spans), _capped(spans))
        for (h, qk, v), spans in _merge_spans(score_spans).items()
    )
    caches = tuple(
        Cache(e, kv, sum(x.layers for x in spans), _full(spans), _capped(spans))
        for (e, kv), spans in _merge_spans(cache_spans).items()
    )
    return projs, scores, caches


def _states(model: ModelConfig) -> tuple[StateLayers, ...]:
    out: list[StateLayers] = []
    h = model.hidden_size
    if model.linear_attention is not None:
        g = model.linear_attention
        out.append(
            StateLayers(
                kind=LayerType.LINEAR,
                layers=g.layers,
                in_proj=2 * g.key_dim + 2 * g.value_dim + 2 * g.num_value_heads,
                out_in=g.value_dim,
                params_per_layer=g.params_per_layer(h),
                conv_dim=g.conv_dim,
                conv_kernel=g.conv_kernel,
                heads=g.num_value_heads,
                head_k=g.key_head_dim,
                head_v=g.value_head_dim,
                groups=g.num_key_heads,
                chunk=g.chunk_size,
                conv_bytes=g.conv_state_elements() * _DTYPE_BYTES[g.conv_dtype],
                state_bytes=g.recurrent_state_elements() * _DTYPE_BYTES[g.state_dtype],
                conv_dtype=g.conv_dtype,
                state_dtype=g.state_dtype,
            )
        )
    if model.mamba is not None:
        m = model.mamba
        out.append(
            StateLayers(
                kind=LayerType.MAMBA,
                layers=m.layers,
                in_proj=m.inner + m.conv_dim() + m.num_heads,
                out_in=m.inner,
                params_per_layer=m.params_per_layer(h),
                conv_dim=m.conv_dim(),
                conv_kernel=m.conv_kernel,
                heads=m.num_heads,
                head_k=m.state_size,
                head_v=m.head_dim,
                groups=m.n_groups,
                chunk=m.chunk_size,
                conv_bytes=m.conv_state_elements() * _DTYPE_BYTES[m.conv_dtype],
                state_bytes=m.recurrent_state_elements() * _DTYPE_BYTES[m.state_dtype],
                conv_dtype=m.conv_dtype,
                state_dtype=m.state_dtype,
            )
        )
    return tuple(out)


def state_bytes_per_device(model: ModelConfig, tp: int) -> float:
    """One request's state-layer bytes on each of ``tp`` devices (heads split; Mamba2's groups
    replicated up to ``tp`` when they do not divide evenly, as vLLM shards them)."""
    total = 0.0
    if model.linear_attention is not None:
        g = model.linear_attention
        total += g.layers * (
            g.conv_state_elements(tp) * _DTYPE_BYTES[g.conv_dtype]
            + g.recurrent_state_elements(tp) * _DTYPE_BYTES[g.state_dtype]
        )
    if model.mamba is not None:
        m = model.mamba
        total += m.layers * (
            m.conv_state_elements(tp) * _DTYPE_BYTES[m.conv_dtype]
            + m.recurrent_state_elements(tp) * _DTYPE_BYTES[m.state_dtype]
        )
    return total


def _derive(model: ModelConfig) -> Shape:
    moe = model.moe
    mla = model.mla
    sparse = model.sparse_attention
    projections, scores, caches = _attention(model)
    by_group = model.params_by_group
    routed = dict(by_group)[WeightGroup.EXPERTS]
    return Shape(
        layers=model.num_layers,
        hidden=model.hidden_size,
        heads=model.num_heads,
        kv_heads=model.num_kv_heads,
        head_dim=model.head_dim,
        q_width=model.q_width,
        kv_width=model.num_kv_heads * model.head_dim,
        attn_out=model.attn_out_width,
        attention_layers=model.attention_layer_count,
        projections=projections,
        scores=scores,
        caches=caches,
        ffn=model.intermediate_size,
        ffn_mats=model.ffn_matrices,
        dense_layers=model.dense_layers,
        moe_layers=model.moe_layers,
        num_experts=moe.num_experts if moe else 0,
        experts_per_token=moe.experts_per_token if moe else 0,
        expert_ffn=moe.expert_intermediate_size if moe else 0,
        expert_width=model.expert_width if moe else 0,
        latent=(moe.latent_size or 0) if moe else 0,
        shared_ffn_total=(moe.num_shared_experts * moe.shared_size) if moe else 0,
        shared_gate=bool(moe and moe.shared_expert_gate),
        vocab=model.vocab_size,
        tied=model.tie_embeddings,
        mla=mla is not None,
        kv_lora=mla.kv_lora_rank if mla else 0,
        q_lora=(mla.q_lora_rank or 0) if mla else 0,
        qk_nope=mla.qk_nope_head_dim if mla else 0,
        qk_rope=mla.qk_rope_head_dim if mla else 0,
        v_head=mla.v_head_dim if mla else 0,
        index_layers=sum(g.count for g in model.attention_groups if g.indexer),
        index_heads=sparse.index_heads if sparse else 0,
        index_dim=sparse.index_head_dim if sparse else 0,
        top_k=sparse.top_k if sparse else 0,
        index_key_bytes=sparse.index_key_bytes if sparse else 0,
        states=_states(model),
        mixer_sublayers=model.mixer_layers,
        ffn_sublayers=model.ffn_sublayers,
        total_params=model.total_params,
        routed_expert_params=routed,
        kv_elems_per_token_layer=model.kv_elements_per_token_per_layer,
        norm_params=model.norm_params,
        small_params=model.other_params,
        params_by_group=by_group,
    )
