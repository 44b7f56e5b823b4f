"""What each layer type costs in a step: state layers, sparse attention, per-group geometry.

Hand calculations (docs/estimator.md, "Layer types"):

* Gated DeltaNet decode, per token, layer and value head: 7·d_k·d_v FLOPs (decay, read-out of the
  old value, rank-1 update, output), plus the causal conv 2·kernel·conv_dim; the conv and recurrent
  states are read and written once per request and step. Prefill: the chunked scan's intra-chunk
  attention 2·(d_k + d_v) per key within a token's 64-token chunk, plus 4·d_k·d_v per token and
  head: linear in the prompt.
* Mamba2 decode: 5·head_dim·state per head and token.
* Sparse attention (DeepSeek-V3.2) decode: the MLA latent of only min(C, top-k) cached tokens is
  read, scores and context over top-k keys; the indexer reads all C index keys (132 bytes each)
  and scores them with its 64 heads of 128 (2·64·128 FLOPs per key).
"""

from __future__ import annotations

import pytest
from hetsched.scheduler.catalog.model_catalog import MODELS
from hetsched.scheduler.estimator.cost import Phase, PhaseCost, Precisions, estimate_phase

BF16 = Precisions()


def step(key: str, phase: Phase, batch: int, new: int, cached: int, tp: int = 1) -> PhaseCost:
    return estimate_phase(
        MODELS[key], phase, batch=batch, new_tokens=new, context_tokens=cached, precisions=BF16, tp=tp
    )


def op(cost: PhaseCost, name: str) -> tuple[float, float, float, float, float]:
    o = next(o for o in cost.operators if o.name == name)
    return o.flops, o.weight_bytes, o.kv_read_bytes, o.kv_write_bytes, o.activation_bytes


def test_gated_deltanet_decode_reads_and_writes_the_state_once() -> None:
    # Qwen3.5-27B: 48 GDN layers, 16 key / 48 value heads of 128, conv kernel 4, FP32 state.
    conv_dim = 2 * 16 * 128 + 48 * 128
    state = 3 * conv_dim * 2 + 48 * 128 * 128 * 4
    for context in (1000, 100_000):
        cost = step("qwen3.5-27b", Phase.DECODE, batch=4, new=1, cached=context)
        flops, _, read, write, _ = op(cost, "state_scan")
        assert read == write == 4 * 48 * state  # whatever the context
        assert flops == 48 * 4 * (2 * 4 * conv_dim + 7 * 48 * 128 * 128)


def test_gated_deltanet_prefill_is_linear_in_the_prompt() -> None:
    conv_dim = 2 * 16 * 128 + 48 * 128
    per_token = 2 * 4 * conv_dim + 2 * 48 * (128 + 128) * 65 / 2 + 4 * 48 * 128 * 128  # 64-token chunks
    for prompt in (4096, 8192):
        flops, _, read, _write, _ = op(
            step("qwen3.5-27b", Phase.PREFILL, batch=1, new=prompt, cached=0), "state_scan"
        )
        assert flops == 48 * per_token * prompt
        assert read == 0  # no cached prefix: nothing to continue from
    a = op(step("qwen3.5-27b", Phase.PREFILL, batch=1, new=4096, cached=0), "attention")[0]
    b = op(step("qwen3.5-27b", Phase.PREFILL, batch=1, new=8192, cached=0), "attention")[0]
    assert b / a == pytest.approx(4, rel=0.001)  # the 16 attention layers stay quadratic


def test_mamba2_decode() -> None:
    # Nemotron-H-56B: 54 Mamba2 layers of 256 heads × 64, state 256, 8 groups, kernel 4.
    conv_dim = 256 * 64 + 2 * 8 * 256
    state = 3 * conv_dim * 2 + 256 * 64 * 256 * 4
    flops, _weights, read, write, _ = op(
        step("nemotron-h-56b", Phase.DECODE, batch=2, new=1, cached=5000), "state_scan"
    )
    assert read == write == 2 * 54 * state
    assert flops == 54 * 2 * (2 * 4 * conv_dim + 5 * 256 * 64 * 256)
    proj = op(step("nemotron-h-56b", Phase.DECODE, batch=2, new=1, cached=5000), "state_proj")
    in_proj = 8192 * (256 * 64 + conv_dim + 256)
    params = in_proj + conv_dim * 4 + conv_dim + 3 * 256 + 256 * 64 + 256 * 64 * 8192
    assert proj[1] == 54 * params * 2
    assert proj[0] == 54 * 2 * 2 * (in_proj + 256 * 64 * 8192)


def test_dense_decode_reads_every_weight_once() -> None:
    """Decode of a dense hybrid reads each weight once: all parameters but the vision tower and the
    embedding table, plus the batch's embedding rows (the per-head q/k norm weights, 2 × 256 in
    each of the 16 attention layers, are not counted as read: as for Qwen3)."""
    m = MODELS["qwen3.5-27b"]
    cost = step("qwen3.5-27b", Phase.DECODE, batch=8, new=1, cached=4000)
    read = m.total_params - m.vision_params - 248_320 * 5120 - 16 * 2 * 256
    assert cost.weight_bytes == read * 2 + 8 * 5120 * 2


def test_sparse_attention_decode_reads_top_k_and_scans_all_index_keys() -> None:
    # DeepSeek-V3.2: 61 layers, 128 heads, latent 512 + RoPE 64, v 128 / nope 128; top-k 2048;
    # indexer 64 heads of 128 on the 1536-wide query latent.
    for context in (1000, 100_000):
        cost = step("deepseek-v3.2", Phase.DECODE, batch=2, new=1, cached=context)
        selected = min(context, 2048)
        keys = min(context + 1, 2048)
        flops, _weights, read, write, _ = op(cost, "attention")
        assert read == 2 * selected * 61 * 576 * 2
        assert write == 2 * 61 * 576 * 2
        score = 2 * 128 * (512 + 64) * keys * 2 * 61
        context_f = 2 * 128 * 512 * keys * 2 * 61
        absorb = 61 * 2 * 2 * 128 * 512 * (128 + 128)
        assert flops == score + context_f + absorb
        f, w, r, wr, _ = op(cost, "indexer")
        assert r == 2 * context * 61 * 132 and wr == 2 * 61 * 132
        proj = 2 * 2 * (1536 * 64 * 128 + 7168 * 128 + 7168 * 64)
        assert f == 61 * proj + 61 * 2 * 64 * 128 * (context + 1) * 2
        assert w == 61 * (1536 * 64 * 128 + 7168 * 128 + 7168 * 64 + 2 * 128) * 2  # BF16 weights


def test_sparse_attention_caps_decode_time_not_memory() -> None:
    """Past top-k tokens the attention's bytes stop growing; the cache (and the index scan) does not."""
    a = step("deepseek-v3.2", Phase.DECODE, batch=1, new=1, cached=50_000)
    b = step("deepseek-v3.2", Phase.DECODE, batch=1, new=1, cached=100_000)
    assert op(a, "attention")[2] == op(b, "attention")[2]
    assert b.kv_bytes_per_request - a.kv_bytes_per_request == 50_000 * 61 * (1152 + 132)
    dense = step("kimi-k2", Phase.DECODE, batch=1, new=1, cached=100_000)
    assert op(dense, "attention")[2] == 100_000 * 61 * 1152  # a dense MLA model reads everything


def test_shared_indexer_layers_keep_no_index_keys() -> None:
    cost = step("glm-5.2", Phase.DECODE, batch=1, new=1, cached=9999)
    _, _, read, _, _ = op(cost, "indexer")
    assert read == 9999 * 21 * 132
    assert cost.index_bytes_per_request == 10_000 * 21 * 132


def test_per_group_geometry_in_scores_and_projections() -> None:
    """Gemma 4 26B: 25 local layers (16 heads of 256, 8 KV heads, window 1024) and 5 global ones
    (16 heads of 512, 2 KV heads, K doubling as V: no v_proj)."""
    cost = step("gemma-4-26b-a4b", Phase.DECODE, batch=1, new=1, cached=99_999)
    flops, _, read, _, _ = op(cost, "attention")
    local = 25 * 2 * 16 * (256 + 256) * 1024
    global_ = 5 * 2 * 16 * (512 + 512) * 100_000
    assert flops == local + global_
    assert read == 25 * 1024 * 2 * 8 * 256 * 2 + 5 * 99_999 * 2 * 2 * 512 * 2
    _, weights, _, _, _ = op(cost, "qkv_proj")
    assert weights == (25 * 2816 * (16 * 256 + 2 * 8 * 256) + 5 * 2816 * (16 * 512 + 2 * 512)) * 2


def test_gated_attention_output_and_asymmetric_heads() -> None:
    """Qwen3.5's q_proj also yields the output gate (2 × heads × head_dim); MiMo's V heads (128) are
    narrower than its K heads (192)."""
    _, weights, _, _, _ = op(step("qwen3.5-27b", Phase.DECODE, batch=1, new=1, cached=10), "qkv_proj")
    assert weights == 16 * 5120 * (2 * 24 * 256 + 2 * 4 * 256) * 2


def test_allreduces_follow_the_sublayers() -> None:
    """One all-reduce per token mixer and per FFN: Nemotron-H's blocks have one each."""
    assert step("nemotron-h-56b", Phase.DECODE, batch=1, new=1, cached=10, tp=2).allreduce_count == 118
    assert step("qwen3.5-27b", Phase.DECODE, batch=1, new=1, cached=10, tp=2).allreduce_count == 2 * 64
