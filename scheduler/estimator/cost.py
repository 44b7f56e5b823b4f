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
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from hetsched.scheduler.catalog.models import ModelConfig, WindowKind
from hetsched.scheduler.estimator.precision import PRECISIONS, Precision

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
            weights=weights, kv_cache=Precision.BF16, activations=Precision.BF16, experts=experts
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
        )


class OperatorCost(NamedTuple):
    """One operator of a step, summed over layers: FLOPs and the DRAM bytes it moves.

    A NamedTuple rather than a frozen dataclass: a step builds about ten of them and the planner
    evaluates thousands of steps, so construction cost matters.
    """

    name: str
    flops: float
    weight_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    activation_bytes: float
    # Tensor-core class its FLOPs run at; None: the step's compute class (the activations').
    compute_class: str | None = None

    @property
    def dram_bytes(self) -> float:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes + self.activation_bytes

    @property
    def operational_intensity(self) -> float:
        return self.flops / self.dram_bytes if self.dram_bytes else 0.0


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
class _Shape:
    """Numbers derived once per model (the hot path reads plain attributes, not properties)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    q_width: int
    kv_width: int
    attn_out: int
    ffn: int
    ffn_mats: int
    dense_layers: int
    moe_layers: int
    num_experts: int
    experts_per_token: int
    expert_ffn: int
    shared_ffn_total: int  # num_shared × shared size
    vocab: int
    tied: bool
    mla: bool
    kv_lora: int
    q_lora: int
    qk_nope: int
    qk_rope: int
    v_head: int
    window: int
    window_layers: int
    chunked: bool  # Llama 4: windowed layers attend within aligned chunks, not a sliding window
    total_params: int
    routed_expert_params: int  # all routed experts of all MoE layers
    kv_elems_per_token_layer: int
    norm_params: int
    attn_params: int


_SHAPES: dict[int, tuple[ModelConfig, _Shape]] = {}


def _shape(model: ModelConfig) -> _Shape:
    """The model's derived shape, cached by identity (hashing a pydantic model costs more than this)."""
    hit = _SHAPES.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    if len(_SHAPES) > 512:
        _SHAPES.clear()
    shape = _derive_shape(model)
    _SHAPES[id(model)] = (model, shape)  # holding the model keeps its id from being reused
    return shape


def _derive_shape(model: ModelConfig) -> _Shape:
    moe = model.moe
    mla = model.mla
    return _Shape(
        layers=model.num_layers,
        hidden=model.hidden_size,
        heads=model.num_heads,
        kv_heads=model.num_kv_heads,
        head_dim=model.head_dim,
        q_width=model.q_width,
        kv_width=model.num_kv_heads * model.head_dim,
        attn_out=model.attn_out_width,
        ffn=model.intermediate_size,
        ffn_mats=model.ffn_matrices,
        dense_layers=model.dense_layers,
        moe_layers=model.moe_layers,
        num_experts=moe.num_experts if moe else 0,
        experts_per_token=moe.experts_per_token if moe else 0,
        expert_ffn=moe.expert_intermediate_size if moe else 0,
        shared_ffn_total=(moe.num_shared_experts * moe.shared_size) if moe else 0,
        vocab=model.vocab_size,
        tied=model.tie_embeddings,
        mla=mla is not None,
        kv_lora=mla.kv_lora_rank if mla else 0,
        q_lora=(mla.q_lora_rank or 0) if mla else 0,
        qk_nope=mla.qk_nope_head_dim if mla else 0,
        qk_rope=mla.qk_rope_head_dim if mla else 0,
        v_head=mla.v_head_dim if mla else 0,
        window=model.sliding_window or 0,
        window_layers=model.sliding_window_layers,
        chunked=model.sliding_window_kind is WindowKind.CHUNKED,
        total_params=model.total_params,
        routed_expert_params=(model.moe_layers * moe.num_experts * model.expert_params) if moe else 0,
        kv_elems_per_token_layer=model.kv_elements_per_token_per_layer,
        norm_params=model.norm_params,
        attn_params=model.attention_params_per_layer,
    )


def _matmul(m: float, d: float, t: float, wb: float, ab: float) -> tuple[float, float, float]:
    """FLOPs, weight bytes and activation bytes of W(m×d)·X(d×t)."""
    return 2.0 * m * d * t, m * d * wb, (d * t + m * t) * ab


def _chunked_keys(new: int, cached: int, chunk: int) -> float:
    """Σ of keys attended by positions cached..cached+new−1 when each sees only its own chunk."""

    def prefix(x: int) -> float:  # Σ_{p < x} ((p mod chunk) + 1)
        q, r = divmod(x, chunk)
        return q * chunk * (chunk + 1) / 2 + r * (r + 1) / 2

    return prefix(cached + new) - prefix(cached)


def _attended_keys(new: int, cached: int, window: int) -> float:
    """Σ over the ``new`` tokens of the keys each attends to (causal), capped by a window."""
    full = new * cached + new * (new + 1) / 2
    if not window:
        return full
    # Token i (1-based) attends to min(cached + i, window) keys.
    cap_from = max(0, min(new, window - cached))  # tokens before the cap binds
    capped = cap_from * cached + cap_from * (cap_from + 1) / 2
    return capped + (new - cap_from) * window


def kv_bytes_per_token(model: ModelConfig, kv_precision: Precision = Precision.BF16) -> float:
    """KV-cache bytes one token adds over all layers (full-attention layers; no window cap)."""
    return (
        model.num_layers * model.kv_elements_per_token_per_layer * PRECISIONS[kv_precision].bytes_per_element
    )


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
    s = _shape(model)
    p = precisions or Precisions.native(model)
    wb = PRECISIONS[p.weights].bytes_per_element
    eb = PRECISIONS[p.experts].bytes_per_element if p.experts else wb
    kb = PRECISIONS[p.kv_cache].bytes_per_element
    ab = PRECISIONS[p.activations].bytes_per_element
    h = s.hidden
    n = new_tokens
    c = context_tokens
    b = batch
    t = b * n  # tokens in the step
    layers = s.layers
    full_layers = layers - s.window_layers

    ops: list[OperatorCost] = []

    # Embedding lookup: reads one row per token, no FLOPs.
    ops.append(OperatorCost("embedding", 0.0, t * h * wb, 0.0, 0.0, t * h * ab))

    # ---- attention projections --------------------------------------------------------------
    kv_elems = s.kv_elems_per_token_layer
    if s.mla:
        qk_head = s.qk_nope + s.qk_rope
        if s.q_lora:
            f1, w1, a1 = _matmul(s.q_lora, h, t, wb, ab)
            f2, w2, a2 = _matmul(s.heads * qk_head, s.q_lora, t, wb, ab)
            qf, qw, qa = f1 + f2, w1 + w2, a1 + a2
        else:
            qf, qw, qa = _matmul(s.heads * qk_head, h, t, wb, ab)
        df, dw, da = _matmul(s.kv_lora + s.qk_rope, h, t, wb, ab)
        ops.append(
            OperatorCost("qkv_proj", layers * (qf + df), layers * (qw + dw), 0.0, 0.0, layers * (qa + da))
        )
    else:
        f, w, a = _matmul(s.q_width + 2 * s.kv_width, h, t, wb, ab)
        ops.append(OperatorCost("qkv_proj", layers * f, layers * w, 0.0, 0.0, layers * a))

    # ---- attention core: scores and context over the cache -----------------------------------
    keys_full = _attended_keys(n, c, 0) * b
    if not s.window_layers:
        keys_window = 0.0
    elif s.chunked:
        keys_window = _chunked_keys(n, c, s.window) * b
    else:
        keys_window = _attended_keys(n, c, s.window) * b
    keys_sum = full_layers * keys_full + s.window_layers * keys_window  # Σ over layers
    cached_read_full = c
    if not s.window_layers:
        cached_read_window = 0
    elif s.chunked:
        cached_read_window = c % s.window  # only the current chunk's tokens are attended
    else:
        cached_read_window = min(c, s.window)
    kv_read = b * kv_elems * kb * (full_layers * cached_read_full + s.window_layers * cached_read_window)
    kv_write = b * n * kv_elems * kb * layers
    # Every rank holding a copy of a KV head reads (and writes) it: MLA's latent lives on all ``tp``
    # ranks, GQA's heads on ``tp / kv_heads`` ranks each when ``tp > kv_heads``. The replica's
    # traffic is the per-device traffic times ``tp`` (what bandwidth-bound attention pays).
    kv_split = 1 if s.mla else min(tp, s.kv_heads)
    kv_replicas = tp / kv_split
    kv_read *= kv_replicas
    kv_write *= kv_replicas
    attention_class = p.attention_class
    if s.mla and phase is Phase.DECODE:
        # Absorbed: q_nope·W_UK into the latent, scores over (latent + rope), context in the latent,
        # then W_UV back to v_head per head. W_UK and W_UV are read as weights.
        score_f = 2.0 * s.heads * (s.kv_lora + s.qk_rope) * keys_sum
        ctx_f = 2.0 * s.heads * s.kv_lora * keys_sum
        absorb_f = layers * 2.0 * t * s.heads * s.kv_lora * (s.qk_nope + s.v_head)
        absorb_w = layers * s.kv_lora * s.heads * (s.qk_nope + s.v_head) * wb
        act = layers * t * s.heads * (s.qk_nope + s.qk_rope + s.kv_lora + s.v_head) * ab * 2
        ops.append(
            OperatorCost(
                "attention", score_f + ctx_f + absorb_f, absorb_w, kv_read, kv_write, act, attention_class
            )
        )
    elif s.mla:
        # Expanded: decompress K_nope and V for every attended key position (cached and new).
        kv_positions = b * (full_layers * (c + n) + s.window_layers * min(c + n, s.window or c + n))
        up_f = 2.0 * s.kv_lora * s.heads * (s.qk_nope + s.v_head) * kv_positions
        up_w = layers * s.kv_lora * s.heads * (s.qk_nope + s.v_head) * wb
        score_f = 2.0 * s.heads * (s.qk_nope + s.qk_rope) * keys_sum
        ctx_f = 2.0 * s.heads * s.v_head * keys_sum
        act = layers * t * s.heads * (s.qk_nope + s.qk_rope + s.v_head) * ab * 2
        ops.append(
            OperatorCost("attention", score_f + ctx_f + up_f, up_w, kv_read, kv_write, act, attention_class)
        )
    else:
        score_f = 2.0 * s.heads * s.head_dim * keys_sum
        ctx_f = 2.0 * s.heads * s.head_dim * keys_sum
        act = layers * t * (s.q_width + s.attn_out) * ab
        ops.append(OperatorCost("attention", score_f + ctx_f, 0.0, kv_read, kv_write, act, attention_class))

    f, w, a = _matmul(h, s.attn_out, t, wb, ab)
    ops.append(OperatorCost("out_proj", layers * f, layers * w, 0.0, 0.0, layers * a))

    # ---- feed-forward -----------------------------------------------------------------------
    if s.dense_layers:
        f, w, a = _matmul(s.ffn_mats * s.ffn, h, t, wb, ab)
        ops.append(OperatorCost("ffn", s.dense_layers * f, s.dense_layers * w, 0.0, 0.0, s.dense_layers * a))
    bytes_per_expert = 0.0
    if s.moe_layers:
        ml = s.moe_layers
        f, w, a = _matmul(s.num_experts, h, t, wb, ab)
        ops.append(OperatorCost("router", ml * f, ml * w, 0.0, 0.0, ml * a))
        if s.shared_ffn_total:
            f, w, a = _matmul(s.ffn_mats * s.shared_ffn_total, h, t, wb, ab)
            ops.append(OperatorCost("shared_experts", ml * f, ml * w, 0.0, 0.0, ml * a))
        k = s.experts_per_token
        e = s.num_experts
        touched = e * (1.0 - (1.0 - k / e) ** t)
        bytes_per_expert = s.ffn_mats * s.expert_ffn * h * eb
        pairs = t * k
        expert_f = 2.0 * s.ffn_mats * s.expert_ffn * h * pairs
        expert_a = pairs * (h + s.ffn_mats * s.expert_ffn + s.expert_ffn) * ab
        ops.append(
            OperatorCost("experts", ml * expert_f, ml * touched * bytes_per_expert, 0.0, 0.0, ml * expert_a)
        )

    # Norm weights are read once per step (tiny, but they are weights).
    ops.append(OperatorCost("norms", 0.0, s.norm_params * wb, 0.0, 0.0, 0.0))

    # ---- LM head: every decode token; only the last prompt token of each request at prefill ----
    logit_tokens = b if phase is Phase.PREFILL else t
    f, w, a = _matmul(s.vocab, h, logit_tokens, wb, ab)
    ops.append(OperatorCost("lm_head", f, w, 0.0, 0.0, a))

    # ---- tensor parallelism: per replica the totals are unchanged; comms per device ------------
    allreduce_count = 2 * layers if tp > 1 else 0
    # The residual stream the all-reduce sums stays in BF16 (or wider) even when the GEMMs take FP8
    # or FP4 inputs: engines all-reduce BF16.
    allreduce_bytes = t * h * max(ab, PRECISIONS[Precision.BF16].bytes_per_element)

    # Resident weights of the replica: every parameter (all experts, embedding, head, vision tower),
    # routed experts in their own format.
    weight_resident = (s.total_params - s.routed_expert_params) * wb + s.routed_expert_params * eb

    end_context = c + n
    kv_tokens = full_layers * end_context + s.window_layers * (
        min(end_context, s.window) if s.window_layers else 0
    )
    kv_per_request = kv_tokens * kv_elems * kb
    # KV heads split across TP up to the KV-head count; MLA's latent is replicated on every device.
    kv_per_device = kv_per_request / kv_split

    # Scaling in B (for the ridge/capacity search): separate batch-independent weight bytes.
    flops_total = 0.0
    weights_read = kv_read_total = kv_write_total = act_total = 0.0
    for op in ops:
        flops_total += op.flops
        weights_read += op.weight_bytes
        kv_read_total += op.kv_read_bytes
        kv_write_total += op.kv_write_bytes
        act_total += op.activation_bytes
    dram_total = weights_read + kv_read_total + kv_write_total + act_total
    expert_read = s.moe_layers * touched * bytes_per_expert if s.moe_layers else 0.0
    embed_read = t * h * wb
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
    return PhaseCost(
        phase=phase,
        batch=b,
        new_tokens=n,
        context_tokens=c,
        tp=tp,
        layers=layers,
        operators=tuple(ops),
        weight_resident_bytes=weight_resident,
        kv_bytes_per_request=kv_per_request,
        kv_bytes_per_request_per_device=kv_per_device,
        allreduce_count=allreduce_count,
        allreduce_bytes=allreduce_bytes,
        scaling=scaling,
        flops=flops_total,
        dram_bytes=dram_total,
        weight_bytes=weights_read,
        kv_read_bytes=kv_read_total,
        kv_write_bytes=kv_write_total,
        activation_bytes=act_total,
    )


def matmul_operational_intensity(m: int, d: int, length: int, bytes_per_element: float = 1.0) -> float:
    """The paper's matmul OI, 2mdL / (md + dL + mL), in FLOPs per byte."""
    return 2.0 * m * d * length / ((m * d + d * length + m * length) * bytes_per_element)
