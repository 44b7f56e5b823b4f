"""Per-phase, per-operator FLOPs and DRAM bytes of one forward step: the OI/CF estimator.

Conventions (docs/estimator.md has the derivations):

* Every matmul ``Y = W X`` with ``W`` m×d and ``X`` d×T costs ``2·m·d·T`` FLOPs and moves
  ``m·d`` weight elements, ``d·T`` input and ``m·T`` output activation elements: the paper's
  ``OI = 2mdL / (md + dL + mL)`` is the single-matmul special case.
* Attention reads each request's cached K/V once per step and writes the new tokens' K/V; the
  score matrix stays on chip (fused attention). Causal masking is counted exactly: new token ``i``
  of ``n`` attends to ``C + i`` keys, so prefill scores are about half of the full square.
* MLA: prefill uses the expanded form (latent decompressed to per-head K/V), decode the absorbed
  form (queries projected into the latent), as vLLM and SGLang serve it. The cache holds one
  latent of ``kv_lora_rank + qk_rope_head_dim`` per token and layer, not split by tensor parallelism.
* MoE: a step with ``T`` tokens routes ``T·k`` token-expert pairs and touches, in expectation under
  uniform routing, ``E·(1 − (1 − k/E)^T)`` distinct experts, whose weights are read once.
* LM head at prefill: only each request's last token (that is what samples the first output token).
* Tensor parallelism ``tp``: weights and FLOPs split ``tp`` ways, K/V heads split up to the number
  of KV heads (replicated beyond; MLA's latent on every rank), and every copy is read, so the
  replica's KV traffic is ``tp / split`` times one copy's; two all-reduces per layer of the step's
  hidden states in BF16 (the residual stream's format, whatever the GEMM inputs).
* The attention core runs at ``Precisions.attention_class`` (FP8 with an FP8 cache, else BF16),
  the other operators at the activations' class.

Figures are per *replica* (the ``tp`` devices together) unless named ``per_device``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from hetsched.scheduler.catalog.layers import CheckpointWeights, WeightGroup
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator import operators as mixers
from hetsched.scheduler.estimator.operators import OperatorCost, StepShape, matmul
from hetsched.scheduler.estimator.precision import PRECISIONS, Precision
from hetsched.scheduler.estimator.shape import Shape, shape, state_bytes_per_device

#: Element width of each compute class (for choosing the attention core's class).
_CLASS_BITS: dict[str, int] = {"fp4": 4, "int4": 4, "fp8": 8, "int8": 8, "bf16": 16, "fp32": 32}


class Phase(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True, slots=True)
class Precisions:
    """Storage formats of weights, KV cache and activations; compute runs at the activation format."""

    weights: Precision = Precision.BF16
    kv_cache: Precision = Precision.BF16
    activations: Precision = Precision.BF16
    experts: Precision | None = None  # routed-expert weights, when they differ (gpt-oss: mxfp4)
    # The checkpoint's own bytes per weight group (a quantized checkpoint read from its
    # quantization_config); when set, it sizes the weights and ``weights``/``experts`` only name them.
    checkpoint: CheckpointWeights | None = None
    # (weight, expert, KV, activation bytes per element, the all-reduce's bytes per element,
    # attention class): derived once, read by every step estimate.
    widths: tuple[float, float, float, float, float, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        wb = PRECISIONS[self.weights].bytes_per_element
        eb = PRECISIONS[self.experts].bytes_per_element if self.experts else wb
        ab = PRECISIONS[self.activations].bytes_per_element
        # The residual stream the all-reduce sums stays in BF16 (or wider) even when the GEMMs
        # take FP8 or FP4 inputs: engines all-reduce BF16.
        reduce = max(ab, PRECISIONS[Precision.BF16].bytes_per_element)
        kb = PRECISIONS[self.kv_cache].bytes_per_element
        object.__setattr__(self, "widths", (wb, eb, kb, ab, reduce, self.attention_class))

    @property
    def compute_class(self) -> str:
        return PRECISIONS[self.activations].compute_class

    @property
    def attention_class(self) -> str:
        """Tensor-core class of the attention core (QKᵀ, PV over the cache): the wider of the
        activations' and the KV cache's formats, never narrower than FP8 (attention kernels take
        queries and the cache in one format: FP8 with an FP8 cache, BF16 with a BF16 one; an integer
        cache is dequantized to BF16)."""
        act = self.compute_class
        kv = PRECISIONS[self.kv_cache].compute_class
        if kv.startswith("int"):
            kv = "bf16"
        act_bits, kv_bits = _CLASS_BITS.get(act, 16), _CLASS_BITS.get(kv, 16)
        if max(act_bits, kv_bits) < 8:
            return "fp8"
        return act if act_bits > kv_bits else kv

    @staticmethod
    def native(model: ModelConfig) -> Precisions:
        weights = Precision(model.native_weight_precision)
        experts = Precision(model.native_expert_precision) if model.native_expert_precision else None
        return Precisions(
            weights=weights,
            kv_cache=Precision.BF16,
            activations=Precision.BF16,
            experts=experts,
            checkpoint=model.checkpoint,
        )

    @staticmethod
    def requested(
        model: ModelConfig,
        *,
        weights: Precision | None = None,
        kv_cache: Precision = Precision.BF16,
        activations: Precision = Precision.BF16,
    ) -> Precisions:
        """The formats a workload asks for (its ``precision`` spec, ``--weights-dtype``, ...).

        Without ``weights`` the checkpoint's native formats, the routed experts' included (gpt-oss:
        mxfp4 experts); with ``weights``, every weight (experts too) in that format.
        """
        native = Precisions.native(model)
        return Precisions(
            weights=native.weights if weights is None else weights,
            kv_cache=kv_cache,
            activations=activations,
            experts=native.experts if weights is None else None,
            checkpoint=native.checkpoint if weights is None else None,
        )


@dataclass(frozen=True, slots=True)
class StepScaling:
    """A step's totals as functions of the batch B, for finding the ridge and the largest batch.

    ``flops(B) = B·flops_per_request``;
    ``bytes(B) = fixed_bytes + experts_touched(B·tokens)·bytes_per_expert + B·bytes_per_request``.
    """

    flops_per_request: float
    fixed_bytes: float
    bytes_per_request: float
    tokens_per_request: int
    moe_layers: int
    num_experts: int
    experts_per_token: int
    bytes_per_expert: float  # one expert's weights in one layer, per replica

    def experts_touched(self, tokens: float) -> float:
        if not self.moe_layers:
            return 0.0
        e, k = self.num_experts, self.experts_per_token
        return e * (1.0 - math.pow(1.0 - k / e, tokens))

    def dram_bytes(self, batch: float) -> float:
        touched = self.experts_touched(batch * self.tokens_per_request)
        return (
            self.fixed_bytes
            + self.moe_layers * touched * self.bytes_per_expert
            + batch * self.bytes_per_request
        )

    def operational_intensity(self, batch: float) -> float:
        return batch * self.flops_per_request / self.dram_bytes(batch)

    def batch_to_reach(self, target_oi: float, limit: int = 1 << 24) -> int | None:
        """Smallest integer batch whose OI reaches ``target_oi`` (None if none up to ``limit``).

        OI grows monotonically with B (the per-request bytes grow no faster than FLOPs), so a
        doubling search and a bisection find it in about 50 evaluations.
        """
        if self.operational_intensity(1) >= target_oi:
            return 1
        if self.operational_intensity(limit) < target_oi:
            return None
        lo, hi = 1, 2
        while self.operational_intensity(hi) < target_oi:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.operational_intensity(mid) >= target_oi:
                hi = mid
            else:
                lo = mid
        return hi


@dataclass(frozen=True, slots=True)
class PhaseCost:
    """Cost of one step of a phase for a batch of identical requests on one replica."""

    phase: Phase
    batch: int
    new_tokens: int  # per request: prompt tokens (prefill) or 1 (decode)
    context_tokens: int  # per request: cached tokens before the step
    tp: int
    layers: int  # transformer layers the step runs through (per-layer fixed costs scale with it)
    operators: tuple[OperatorCost, ...]
    weight_resident_bytes: float  # all weights held by the replica
    kv_bytes_per_request: float  # KV cache of one request after the step, whole replica
    kv_bytes_per_request_per_device: float
    allreduce_count: int  # collectives per step (0 without tensor parallelism)
    allreduce_bytes: float  # payload of one all-reduce (per device, before the ring factor; ≥ BF16)
    scaling: StepScaling
    # Totals over the operators (computed once: the planner evaluates many candidates).
    flops: float
    dram_bytes: float
    weight_bytes: float  # weights read by the step (MoE: only the experts touched)
    kv_read_bytes: float
    kv_write_bytes: float
    activation_bytes: float
    # Parts of kv_bytes_per_request that are not attention KV (whole replica).
    state_bytes_per_request: float = 0.0  # linear-attention / Mamba states (fixed per request)
    index_bytes_per_request: float = 0.0  # sparse attention's index keys

    @property
    def operational_intensity(self) -> float:
        return self.flops / self.dram_bytes

    @property
    def tokens(self) -> int:
        return self.batch * self.new_tokens

    @property
    def capacity_footprint_bytes(self) -> float:
        """CF: DRAM one request needs = resident weights / B + its KV cache (paper: md/B + 2dL)."""
        return self.weight_resident_bytes / self.batch + self.kv_bytes_per_request


@dataclass(frozen=True, slots=True)
class KVProfile:
    """How a request's cache grows with its context, at one KV-cache format (whole replica).

    ``growth_bytes_per_token``: what each further token adds once every window is full (the
    full-attention layers, and a sparse model's index keys); ``window_bytes_per_token`` what the
    windowed layers add per token until ``window_cap_bytes``; ``state_bytes`` the state layers'
    fixed share, whatever the context.
    """

    growth_bytes_per_token: float
    window_bytes_per_token: float
    window_cap_bytes: float
    state_bytes: float
    index_bytes_per_token: float


def mla_entry_bytes(model: ModelConfig, kv_precision: Precision) -> float:
    """Bytes of one MLA cache entry (latent + RoPE key) of one layer.

    Sparse-attention models (FlashMLA's sparse kernels) store an FP8 cache as FP8 latent values,
    one FP32 scale per 128 of them and the RoPE key in BF16 (vLLM ``fp8_ds_mla``: 656 bytes for
    DeepSeek-V3.2); every other case is elements × bytes per element.
    """
    assert model.mla is not None
    m = model.mla
    if model.sparse_attention is not None and kv_precision is Precision.FP8:
        return m.kv_lora_rank + 4 * -(-m.kv_lora_rank // 128) + 2 * m.qk_rope_head_dim
    return (m.kv_lora_rank + m.qk_rope_head_dim) * PRECISIONS[kv_precision].bytes_per_element


def kv_profile(model: ModelConfig, kv_precision: Precision = Precision.BF16) -> KVProfile:
    """The request's cache by kind: growth per token, the windowed layers' share and cap, states."""
    kb = PRECISIONS[kv_precision].bytes_per_element
    growth = window = cap = 0.0
    for g in model.attention_groups:
        per_token = (
            mla_entry_bytes(model, kv_precision) if model.mla is not None else model.group_kv_elements(g) * kb
        )
        if g.window is None:
            growth += g.count * per_token
        else:
            window += g.count * per_token
            cap += g.count * g.window * per_token
    index = 0.0
    if model.sparse_attention is not None:
        layers = sum(g.count for g in model.attention_groups if g.indexer)
        index = layers * model.sparse_attention.index_key_bytes
    state = state_bytes_per_device(model, 1)
    return KVProfile(growth + index, window, cap, state, index)


def kv_bytes_per_token(model: ModelConfig, kv_precision: Precision = Precision.BF16) -> float:
    """KV-cache bytes each further token adds once every window is full (full-attention layers and
    a sparse model's index keys; windowed layers stop growing at their window)."""
    if not model.attention_layers and not model.sliding_window_layers:
        return (
            model.num_layers
            * model.kv_elements_per_token_per_layer
            * PRECISIONS[kv_precision].bytes_per_element
        )
    return kv_profile(model, kv_precision).growth_bytes_per_token


def request_cache_bytes(
    model: ModelConfig, context: int, kv_precision: Precision = Precision.BF16, tp: int = 1
) -> tuple[float, float]:
    """One request's cache at ``context`` tokens (attention KV, index keys, states), for the whole
    replica and per device of ``tp``: what ``estimate_phase`` reports as ``kv_bytes_per_request``
    (and ``..._per_device``) for a step ending at ``context``."""
    s = shape(model)
    kb = PRECISIONS[kv_precision].bytes_per_element
    mla_bytes = mla_entry_bytes(model, kv_precision) if s.mla and s.top_k else 0.0
    m = mixers.request_memory(
        s, context, tp, kb, mla_bytes, state_bytes_per_device(model, tp) if s.states else 0.0
    )
    if m.index_keys or m.state:
        return m.kv + m.index_keys + m.state, m.kv_per_device + m.index_keys + m.state_per_device
    return m.kv, m.kv_per_device


class _WeightBytes(NamedTuple):
    """Bytes of a parameter in each weight group, for one step's formats."""

    embedding: float
    attention: float
    state: float
    dense_ffn: float
    shared_experts: float
    experts: float
    router: float
    norms: float
    lm_head: float
    other: float


_UNIFORM: dict[tuple[float, float], _WeightBytes] = {}
_STORED: dict[tuple[int, int], tuple[Shape, CheckpointWeights, _WeightBytes, float]] = {}


def _weight_bytes(s: Shape, p: Precisions, wb: float, eb: float) -> tuple[_WeightBytes, float]:
    """Bytes per parameter of each weight group, and the replica's resident weight bytes."""
    ck = p.checkpoint
    if ck is None:
        hit = _UNIFORM.get((wb, eb))
        if hit is None:
            hit = _UNIFORM[(wb, eb)] = _WeightBytes(wb, wb, wb, wb, wb, eb, wb, wb, wb, wb)
        return hit, (s.total_params - s.routed_expert_params) * wb + s.routed_expert_params * eb
    stored = _STORED.get((id(s), id(ck)))
    if stored is not None and stored[0] is s and stored[1] is ck:
        return stored[2], stored[3]
    if len(_STORED) > 512:
        _STORED.clear()
    g = dict(ck.bytes_per_param)
    w = _WeightBytes(
        g[WeightGroup.EMBEDDING],
        g[WeightGroup.ATTENTION],
        g[WeightGroup.STATE],
        g[WeightGroup.DENSE_FFN],
        g[WeightGroup.SHARED_EXPERTS],
        g[WeightGroup.EXPERTS],
        g[WeightGroup.ROUTER],
        g[WeightGroup.NORMS],
        g[WeightGroup.LM_HEAD],
        g[WeightGroup.OTHER],
    )
    resident = sum(count * g[group] for group, count in s.params_by_group)
    _STORED[(id(s), id(ck))] = (s, ck, w, resident)  # holding both keeps their ids from being reused
    return w, resident


def estimate_phase(
    model: ModelConfig,
    phase: Phase,
    *,
    batch: int,
    new_tokens: int,
    context_tokens: int,
    precisions: Precisions | None = None,
    tp: int = 1,
) -> PhaseCost:
    """Cost of one step: ``batch`` requests each adding ``new_tokens`` after ``context_tokens`` cached.

    Prefill: ``new_tokens`` = prompt tokens P, ``context_tokens`` = prefix already cached C.
    Decode: ``new_tokens`` = 1, ``context_tokens`` = tokens already in the cache.
    """
    if batch < 1 or new_tokens < 1 or context_tokens < 0 or tp < 1:
        raise ValueError(
            f"batch ({batch}) and new_tokens ({new_tokens}) must be ≥ 1, "
            f"context_tokens ({context_tokens}) ≥ 0, tp ({tp}) ≥ 1"
        )
    s = shape(model)
    p = precisions or Precisions.native(model)
    wb, eb, kb, ab, reduce_bytes, attention_class = p.widths
    w, weight_resident = _weight_bytes(s, p, wb, eb)
    h = s.hidden
    n = new_tokens
    c = context_tokens
    b = batch
    t = b * n  # tokens in the step
    layers = s.layers

    ops: list[OperatorCost] = []

    # Embedding lookup: reads one row per token, no FLOPs.
    ops.append(OperatorCost("embedding", 0.0, t * h * w.embedding, 0.0, 0.0, t * h * ab))

    # ---- token mixers: attention layers, then state layers -------------------------------------
    st = StepShape(
        decode=phase is Phase.DECODE,
        batch=b,
        new=n,
        cached=c,
        tp=tp,
        w_attention=w.attention,
        w_state=w.state,
        kb=kb,
        ab=ab,
        mla_token_bytes=mla_entry_bytes(model, p.kv_cache) if s.mla and s.top_k else 0.0,
        attention_class=attention_class,
    )
    if s.attention_layers:
        mixers.attention(s, st, ops)
    if s.states:
        mixers.states(s, st, ops)

    # ---- feed-forward -----------------------------------------------------------------------
    if s.dense_layers:
        f, wt, a = matmul(s.ffn_mats * s.ffn, h, t, w.dense_ffn, ab)
        dl = s.dense_layers
        ops.append(OperatorCost("ffn", dl * f, dl * wt, 0.0, 0.0, dl * a))
    bytes_per_expert = 0.0
    touched = 0.0
    if s.moe_layers:
        ml = s.moe_layers
        f, wt, a = matmul(s.num_experts, h, t, w.router, ab)
        ops.append(OperatorCost("router", ml * f, ml * wt, 0.0, 0.0, ml * a))
        if s.shared_ffn_total:
            f, wt, a = matmul(s.ffn_mats * s.shared_ffn_total, h, t, w.shared_experts, ab)
            if s.shared_gate:  # the shared expert's sigmoid gate: hidden → 1
                gf, gw, ga = matmul(1, h, t, w.shared_experts, ab)
                f, wt, a = f + gf, wt + gw, a + ga
            ops.append(OperatorCost("shared_experts", ml * f, ml * wt, 0.0, 0.0, ml * a))
        if s.latent:  # latent MoE: hidden → latent before the experts, latent → hidden after
            f1, w1, a1 = matmul(s.latent, h, t, w.other, ab)
            f2, w2, a2 = matmul(h, s.latent, t, w.other, ab)
            ops.append(OperatorCost("latent_proj", ml * (f1 + f2), ml * (w1 + w2), 0.0, 0.0, ml * (a1 + a2)))
        k = s.experts_per_token
        e = s.num_experts
        touched = e * (1.0 - (1.0 - k / e) ** t)
        width = s.expert_width
        bytes_per_expert = s.ffn_mats * s.expert_ffn * width * w.experts
        pairs = t * k
        expert_f = 2.0 * s.ffn_mats * s.expert_ffn * width * pairs
        expert_a = pairs * (width + s.ffn_mats * s.expert_ffn + s.expert_ffn) * ab
        ops.append(
            OperatorCost("experts", ml * expert_f, ml * touched * bytes_per_expert, 0.0, 0.0, ml * expert_a)
        )

    # Norm weights are read once per step (tiny, but they are weights), with other small ones.
    small = s.norm_params * w.norms
    if s.small_params:
        small += s.small_params * w.other
    ops.append(OperatorCost("norms", 0.0, small, 0.0, 0.0, 0.0))

    # ---- LM head: every decode token; only the last prompt token of each request at prefill ----
    logit_tokens = b if phase is Phase.PREFILL else t
    f, wt, a = matmul(s.vocab, h, logit_tokens, w.lm_head, ab)
    ops.append(OperatorCost("lm_head", f, wt, 0.0, 0.0, a))

    # ---- tensor parallelism: per replica the totals are unchanged; comms per device ------------
    # One all-reduce after each row-parallel output: every token mixer and every FFN.
    allreduce_count = s.mixer_sublayers + s.ffn_sublayers if tp > 1 else 0
    allreduce_bytes = t * h * reduce_bytes  # BF16 or wider (Precisions.widths)

    memory = mixers.request_memory(
        s, c + n, tp, kb, st.mla_token_bytes, state_bytes_per_device(model, tp) if s.states else 0.0
    )
    kv_per_request = memory.kv
    kv_per_device = memory.kv_per_device
    if memory.index_keys or memory.state:
        kv_per_request = kv_per_request + memory.index_keys + memory.state
        kv_per_device = kv_per_device + memory.index_keys + memory.state_per_device

    # Scaling in B (for the ridge/capacity search): separate batch-independent weight bytes.
    flops_total = 0.0
    weights_read = kv_read_total = kv_write_total = act_total = 0.0
    for _, op_flops, op_weights, op_read, op_write, op_act, _ in ops:
        flops_total += op_flops
        weights_read += op_weights
        kv_read_total += op_read
        kv_write_total += op_write
        act_total += op_act
    dram_total = weights_read + kv_read_total + kv_write_total + act_total
    expert_read = s.moe_layers * touched * bytes_per_expert if s.moe_layers else 0.0
    embed_read = t * h * w.embedding
    fixed = weights_read - expert_read - embed_read
    per_request = (dram_total - weights_read + embed_read) / b
    scaling = StepScaling(
        flops_per_request=flops_total / b,
        fixed_bytes=fixed,
        bytes_per_request=per_request,
        tokens_per_request=n,
        moe_layers=s.moe_layers,
        num_experts=s.num_experts,
        experts_per_token=s.experts_per_token,
        bytes_per_expert=bytes_per_expert,
    )
    # Positional (the fields in order): this runs for every step the planner evaluates.
    return PhaseCost(
        phase,  # phase
        b,  # batch
        n,  # new_tokens
        c,  # context_tokens
        tp,  # tp
        layers,  # layers
        tuple(ops),  # operators
        weight_resident,  # weight_resident_bytes
        kv_per_request,  # kv_bytes_per_request
        kv_per_device,  # kv_bytes_per_request_per_device
        allreduce_count,  # allreduce_count
        allreduce_bytes,  # allreduce_bytes
        scaling,  # scaling
        flops_total,  # flops
        dram_total,  # dram_bytes
        weights_read,  # weight_bytes
        kv_read_total,  # kv_read_bytes
        kv_write_total,  # kv_write_bytes
        act_total,  # activation_bytes
        memory.state,  # state_bytes_per_request
        memory.index_keys,  # index_bytes_per_request
    )


def matmul_operational_intensity(m: int, d: int, length: int, bytes_per_element: float = 1.0) -> float:
    """The paper's matmul OI, 2mdL / (md + dL + mL), in FLOPs per byte."""
    return 2.0 * m * d * length / ((m * d + d * length + m * length) * bytes_per_element)


__all__ = [
    "KVProfile",
    "OperatorCost",
    "Phase",
    "PhaseCost",
    "Precisions",
    "StepScaling",
    "estimate_phase",
    "kv_bytes_per_token",
    "kv_profile",
    "matmul_operational_intensity",
    "mla_entry_bytes",
    "request_cache_bytes",
]
