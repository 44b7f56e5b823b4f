"""The token mixers of one step: attention (dense, windowed, MLA, sparse) and state layers.

Each builder returns the step's operators for its layers (FLOPs and DRAM bytes summed over the
layers, per replica) and what one request keeps in memory. ``cost.estimate_phase`` adds the
embedding, FFN, norms and LM head around them. docs/estimator.md derives every term.
"""

from __future__ import annotations

from typing import NamedTuple

from hetsched.scheduler.catalog.layers import LayerType
from hetsched.scheduler.estimator.shape import Shape, StateLayers


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


class StepShape(NamedTuple):
    """The token shape and formats of one step, as the mixer builders read them (a NamedTuple:
    built once per step on the hot path)."""

    decode: bool
    batch: int
    new: int  # tokens per request in the step
    cached: int  # tokens per request already cached
    tp: int
    w_attention: float  # bytes per attention weight
    w_state: float  # bytes per state-layer weight
    kb: float  # bytes per KV-cache element
    ab: float  # bytes per activation element
    mla_token_bytes: float  # bytes of one MLA cache entry (latent + RoPE key), one layer
    attention_class: str

    @property
    def tokens(self) -> int:
        return self.batch * self.new


class Memory(NamedTuple):
    """What one request keeps after the step: attention KV, index keys and states, per replica and
    per device."""

    kv: float
    kv_per_device: float
    index_keys: float = 0.0  # sparse attention's index keys (replicated on every device)
    state: float = 0.0  # conv and recurrent states of the state layers
    state_per_device: float = 0.0


def matmul(m: float, d: float, t: float, wb: float, ab: float) -> tuple[float, float, float]:
    """FLOPs, weight bytes and activation bytes of W(m×d)·X(d×t)."""
    return 2.0 * m * d * t, m * d * wb, (d * t + m * t) * ab


def chunked_keys(new: int, cached: int, chunk: int) -> float:
    """Σ of keys attended by positions cached..cached+new−1 when each sees only its own chunk."""

    def prefix(x: int) -> float:  # Σ_{p < x} ((p mod chunk) + 1)
        q, r = divmod(x, chunk)
        return q * chunk * (chunk + 1) / 2 + r * (r + 1) / 2

    return prefix(cached + new) - prefix(cached)


def attended_keys(new: int, cached: int, window: int) -> float:
    """Σ over the ``new`` tokens of the keys each attends to (causal), capped by a window."""
    full = new * cached + new * (new + 1) / 2
    if not window:
        return full
    # Token i (1-based) attends to min(cached + i, window) keys.
    cap_from = max(0, min(new, window - cached))  # tokens before the cap binds
    capped = cap_from * cached + cap_from * (cap_from + 1) / 2
    return capped + (new - cap_from) * window


def attention(s: Shape, st: StepShape, ops: list[OperatorCost]) -> None:
    """Appends qkv_proj, attention (scores and context over the cache) and out_proj of every
    attention layer to ``ops``, and for a sparse model its indexer."""
    h, b, n, c = s.hidden, st.batch, st.new, st.cached
    t = b * n
    wb, ab, kb = st.w_attention, st.ab, st.kb
    la = s.attention_layers
    # ---- projections ------------------------------------------------------------------------
    if s.mla:
        qk_head = s.qk_nope + s.qk_rope
        if s.q_lora:
            f1, w1, a1 = matmul(s.q_lora, h, t, wb, ab)
            f2, w2, a2 = matmul(s.heads * qk_head, s.q_lora, t, wb, ab)
            qf, qw, qa = f1 + f2, w1 + w2, a1 + a2
        else:
            qf, qw, qa = matmul(s.heads * qk_head, h, t, wb, ab)
        df, dw, da = matmul(s.kv_lora + s.qk_rope, h, t, wb, ab)
        ops.append(OperatorCost("qkv_proj", la * (qf + df), la * (qw + dw), 0.0, 0.0, la * (qa + da)))
    else:
        # One pass over the projection classes (one for a model whose layers all attend alike):
        # q/k/v and o matmuls, and the attention core's activations (+ the output gate's).
        pf = pw = pa = of = ow = oa = act = 0.0
        for i, p in enumerate(s.projections):
            f, w, a = matmul(p.qkv_out, h, t, wb, ab)
            f2, w2, a2 = matmul(h, p.out_width, t, wb, ab)
            x = p.layers * t * p.act_width * ab
            if i:
                pf, pw, pa = pf + p.layers * f, pw + p.layers * w, pa + p.layers * a
                of, ow, oa = of + p.layers * f2, ow + p.layers * w2, oa + p.layers * a2
                act += x
            else:
                pf, pw, pa = p.layers * f, p.layers * w, p.layers * a
                of, ow, oa = p.layers * f2, p.layers * w2, p.layers * a2
                act = x
        ops.append(OperatorCost("qkv_proj", pf, pw, 0.0, 0.0, pa))

    # ---- the cache: read, written, held ------------------------------------------------------
    end = c + n
    tp = st.tp
    kv_read = kv_write = 0.0
    for i, cache in enumerate(s.caches):
        read_tokens = cache.full * c
        for span in cache.capped:
            if span.window:
                read_tokens += span.layers * (c % span.window if span.chunked else min(c, span.window))
            else:  # sparse attention: decode reads only the selected tokens' entries
                read_tokens += span.layers * (min(c, span.attend_cap) if st.decode else c)
        if s.top_k:
            per_token = st.mla_token_bytes
            read = b * per_token * read_tokens
            write = b * n * per_token * cache.layers
        else:
            e = cache.elements
            read = b * e * kb * read_tokens
            write = b * n * e * kb * cache.layers
        # Every rank holding a copy of a KV head reads (and writes) it: MLA's latent lives on all
        # ``tp`` ranks, GQA's heads on ``tp / kv_heads`` ranks each when ``tp > kv_heads``.
        replicas = tp / (min(tp, cache.kv_heads) if cache.kv_heads else 1)
        read *= replicas
        write *= replicas
        if i:
            kv_read, kv_write = kv_read + read, kv_write + write
        else:
            kv_read, kv_write = read, write

    # ---- scores and context: Σ over layers of the keys each new token attends to ---------------
    full_keys = (n * c + n * (n + 1) / 2) * b  # causal, uncapped
    keys_by_class: list[float] = []
    for sc in s.scores:
        keys_sum = sc.full * full_keys if sc.full else 0.0
        for span in sc.capped:
            if span.chunked:
                k = chunked_keys(n, c, span.window) * b
            else:
                k = attended_keys(n, c, span.attend_cap) * b
            keys_sum += span.layers * k
        keys_by_class.append(keys_sum)
    if s.mla and (st.decode or (s.top_k and end > s.top_k)):
        # Absorbed: q_nope·W_UK into the latent, scores over (latent + rope), context in the latent,
        # then W_UV back to v_head per head. W_UK and W_UV are read as weights. Sparse models run
        # their long prefills this way too (the selected keys are gathered from the latent cache).
        keys_sum = keys_by_class[0]
        score_f = 2.0 * s.heads * (s.kv_lora + s.qk_rope) * keys_sum
        ctx_f = 2.0 * s.heads * s.kv_lora * keys_sum
        absorb_f = la * 2.0 * t * s.heads * s.kv_lora * (s.qk_nope + s.v_head)
        absorb_w = la * s.kv_lora * s.heads * (s.qk_nope + s.v_head) * wb
        act = la * t * s.heads * (s.qk_nope + s.qk_rope + s.kv_lora + s.v_head) * ab * 2
        ops.append(
            OperatorCost(
                "attention", score_f + ctx_f + absorb_f, absorb_w, kv_read, kv_write, act, st.attention_class
            )
        )
    elif s.mla:
        # Expanded: decompress K_nope and V for every attended key position (cached and new).
        sc = s.scores[0]
        positions = sc.full * end
        for span in sc.capped:
            positions += span.layers * (min(end, span.window) if span.window else end)
        kv_positions = b * positions
        up_f = 2.0 * s.kv_lora * s.heads * (s.qk_nope + s.v_head) * kv_positions
        up_w = la * s.kv_lora * s.heads * (s.qk_nope + s.v_head) * wb
        keys_sum = keys_by_class[0]
        score_f = 2.0 * s.heads * (s.qk_nope + s.qk_rope) * keys_sum
        ctx_f = 2.0 * s.heads * s.v_head * keys_sum
        act = la * t * s.heads * (s.qk_nope + s.qk_rope + s.v_head) * ab * 2
        ops.append(
            OperatorCost(
                "attention", score_f + ctx_f + up_f, up_w, kv_read, kv_write, act, st.attention_class
            )
        )
    else:
        flops = 0.0
        for i, sc in enumerate(s.scores):
            keys_sum = keys_by_class[i]
            f = 2.0 * sc.heads * sc.qk_dim * keys_sum + 2.0 * sc.heads * sc.v_dim * keys_sum
            flops = flops + f if i else f
        ops.append(OperatorCost("attention", flops, 0.0, kv_read, kv_write, act, st.attention_class))

    if s.mla:
        f, w, a = matmul(h, s.attn_out, t, wb, ab)
        ops.append(OperatorCost("out_proj", la * f, la * w, 0.0, 0.0, la * a))
    else:
        ops.append(OperatorCost("out_proj", of, ow, 0.0, 0.0, oa))

    if s.index_layers:
        ops.append(_indexer(s, st))


def request_memory(
    s: Shape, end: int, tp: int, kb: float, mla_token_bytes: float, state_per_device: float
) -> Memory:
    """What one request holds at ``end`` tokens: each cache class's tokens (windowed layers at most
    their window) × its bytes per token, split over the devices holding its KV heads (MLA:
    replicated); a sparse model's index keys (replicated); the state layers' fixed states."""
    kv = kv_dev = 0.0
    for i, cache in enumerate(s.caches):
        held_tokens = cache.full * end
        for span in cache.capped:
            held_tokens += span.layers * (min(end, span.window) if span.window else end)
        held = held_tokens * mla_token_bytes if s.top_k else held_tokens * cache.elements * kb
        split = min(tp, cache.kv_heads) if cache.kv_heads else 1
        if i:
            kv, kv_dev = kv + held, kv_dev + held / split
        else:
            kv, kv_dev = held, held / split
    if not s.index_layers and not s.states:
        return Memory(kv, kv_dev)
    index = s.index_layers * end * s.index_key_bytes
    state = 0.0
    for layer in s.states:
        state += layer.layers * (layer.conv_bytes + layer.state_bytes)
    return Memory(kv, kv_dev, index, state, state_per_device)


def _indexer(s: Shape, st: StepShape) -> OperatorCost:
    """The sparse-attention indexer of the layers that run one: its projections (query heads from
    the query latent, one key head and per-head weights from the hidden state), FP8 scores of
    every new token against every cached and earlier new token, and its key cache (read whole,
    one new key written per token; replicated on every rank like MLA's latent)."""
    h, b, n, c, t = s.hidden, st.batch, st.new, st.cached, st.tokens
    wb, ab = st.w_attention, st.ab
    li = s.index_layers
    f1, w1, a1 = matmul(s.index_heads * s.index_dim, s.q_lora, t, wb, ab)
    f2, w2, a2 = matmul(s.index_dim, h, t, wb, ab)
    f3, w3, a3 = matmul(s.index_heads, h, t, wb, ab)
    keys = attended_keys(n, c, 0) * b
    score_f = 2.0 * s.index_heads * s.index_dim * keys
    flops = li * (f1 + f2 + f3) + li * score_f
    weights = li * (w1 + w2 + w3 + 2 * s.index_dim * wb)  # + the key norm's weight and bias
    key = s.index_key_bytes
    read = li * b * c * key * st.tp
    write = li * b * n * key * st.tp
    return OperatorCost("indexer", flops, weights, read, write, li * (a1 + a2 + a3), "fp8")


def _scan_flops(layer: StateLayers, st: StepShape) -> float:
    """FLOPs of one layer's scan over the step's tokens, per request.

    Decode (the recurrent form, per token and head): Gated DeltaNet decays its d_k×d_v state, reads
    the old value out (2·d_k·d_v), writes the rank-1 correction (2·d_k·d_v) and reads the output
    (2·d_k·d_v): 7·d_k·d_v; Mamba2 decays its P×N state, adds the input's outer product (2·P·N)
    and reads out (2·P·N): 5·P·N. Prefill (the chunked form): causal attention within each chunk
    (scores 2·d_k and context 2·d_v per key; Mamba2's scores 2·N per group) plus, per token, the
    state's read-out and update (4·d_k·d_v per head): linear in the prompt.
    """
    n, c = st.new, st.cached
    hk, hv, heads = layer.head_k, layer.head_v, layer.heads
    if st.decode:
        per_head = 7.0 if layer.kind is LayerType.LINEAR else 5.0
        return per_head * heads * hk * hv * n
    keys = chunked_keys(n, c, layer.chunk)
    if layer.kind is LayerType.LINEAR:
        intra = 2.0 * heads * (hk + hv) * keys
    else:
        intra = 2.0 * heads * hv * keys + 2.0 * layer.groups * hk * keys
    return intra + 4.0 * heads * hk * hv * n


def states(s: Shape, st: StepShape, ops: list[OperatorCost]) -> None:
    """state_proj (in_proj, out_proj and the small per-layer weights) and state_scan (the causal
    conv and the recurrence; the conv and recurrent states are read at the start of the step and
    written at its end: decode always, prefill reads only when it continues a cached prefix)."""
    h, b, t = s.hidden, st.batch, st.tokens
    wb, ab = st.w_state, st.ab
    proj = OperatorCost("state_proj", 0.0, 0.0, 0.0, 0.0, 0.0)
    scan = OperatorCost("state_scan", 0.0, 0.0, 0.0, 0.0, 0.0, "bf16")
    for layer in s.states:
        lx = layer.layers
        f1, _, a1 = matmul(layer.in_proj, h, t, wb, ab)
        f2, _, a2 = matmul(h, layer.out_in, t, wb, ab)
        proj = proj._replace(
            flops=proj.flops + lx * (f1 + f2),
            weight_bytes=proj.weight_bytes + lx * layer.params_per_layer * wb,
            activation_bytes=proj.activation_bytes + lx * (a1 + a2),
        )
        per_request = layer.conv_bytes + layer.state_bytes
        conv_f = 2.0 * layer.conv_kernel * layer.conv_dim * t
        read = b * per_request * lx if (st.decode or st.cached) else 0.0
        scan = scan._replace(
            flops=scan.flops + lx * (conv_f + b * _scan_flops(layer, st)),
            kv_read_bytes=scan.kv_read_bytes + read,
            kv_write_bytes=scan.kv_write_bytes + b * per_request * lx,
            activation_bytes=scan.activation_bytes + lx * t * 2 * (layer.conv_dim + layer.out_in) * ab,
        )
    ops.append(proj)
    ops.append(scan)
