"""The estimator against the paper's formulas, published worked numbers and physical properties."""

from __future__ import annotations

import math

import pytest
from hetsched.scheduler.catalog.hardware import IDEAL, HardwareSpec
from hetsched.scheduler.catalog.models import MLAConfig, ModelConfig, MoEConfig
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import (
    Phase,
    Precisions,
    estimate_phase,
    kv_bytes_per_token,
    matmul_operational_intensity,
)
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.roofline import Regime, evaluate
from hypothesis import given, settings
from hypothesis import strategies as st

BF16 = Precisions()


def dense(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        name="t",
        source="test",
        num_layers=32,
        hidden_size=4096,
        num_heads=32,
        num_kv_heads=32,
        head_dim=128,
        intermediate_size=11008,
        vocab_size=32000,
    )
    base.update(kw)
    return ModelConfig.model_validate(base)


def gpu(**kw: object) -> HardwareSpec:
    base: dict[str, object] = dict(
        name="gpu",
        memory_bytes=80e9,
        memory_bandwidth=2.039e12,
        peak_flops={"bf16": 312e12},
        intra_node_bandwidth=300e9,
        network_bandwidth=25e9,
        power_watts=400,
        price_per_hour=2.0,
        source="test",
    )
    base.update(kw)
    return HardwareSpec.model_validate(base)


# ---- the paper's formulas as special cases ------------------------------------------------------


def test_matmul_oi_formula_matches_operator_breakdown() -> None:
    # The fused QKV projection of a prefill step is one matmul W(m×d)·X(d×L).
    model = dense()
    length = 1024
    cost = estimate_phase(model, Phase.PREFILL, batch=1, new_tokens=length, context_tokens=0, precisions=BF16)
    qkv = next(op for op in cost.operators if op.name == "qkv_proj")
    m, d = 3 * 4096, 4096
    assert qkv.operational_intensity == pytest.approx(matmul_operational_intensity(m, d, length, 2.0))
    # DATA.md: LLaMA-2-7B fused QKV at prefill 1024 → 1536 FLOPs/element = 768 FLOP/B at 16 bits.
    assert qkv.operational_intensity == pytest.approx(768.0, rel=1e-12)
    assert matmul_operational_intensity(m, d, length) == pytest.approx(1536.0, rel=1e-12)


def test_decode_gemm_oi_at_batch_one_is_about_one_flop_per_byte() -> None:
    cost = estimate_phase(dense(), Phase.DECODE, batch=1, new_tokens=1, context_tokens=0, precisions=BF16)
    ffn = next(op for op in cost.operators if op.name == "ffn")
    assert ffn.operational_intensity == pytest.approx(1.0, rel=1e-3)


def test_capacity_footprint_is_weights_over_batch_plus_kv() -> None:
    # One MHA layer: K, V ∈ R^{d×L} per request → CF = 2dL + md/B (elements; × bytes).
    model = dense(num_layers=1)
    d, ctx, b = 4096, 1000, 8
    cost = estimate_phase(model, Phase.DECODE, batch=b, new_tokens=1, context_tokens=ctx - 1, precisions=BF16)
    assert cost.kv_bytes_per_request == 2 * d * ctx * 2
    assert cost.capacity_footprint_bytes == pytest.approx(cost.weight_resident_bytes / b + 2 * d * ctx * 2)
    # Without KV (the paper's plain matmul case) the footprint is the weights shared by the batch.
    weights_params = model.total_params
    assert cost.weight_resident_bytes == pytest.approx(weights_params * 2)


# ---- published worked numbers -------------------------------------------------------------------


def test_llama7b_on_a100_matches_llm_analysis() -> None:
    # DATA.md: LLaMA-7B fp16 on A100-SXM-80GB, batch 1, 512 context: prefill 22.41 ms, decode 6.73 ms.
    result = analyze(dense(), gpu(), Scenario(1, 512, 0, 512, 1), precisions=BF16, efficiency=IDEAL)
    assert result.ttft_seconds * 1e3 == pytest.approx(22.41, rel=0.05)
    assert result.tpot_seconds * 1e3 == pytest.approx(6.73, rel=0.05)


def test_gpt13b_kv_weights_and_prefill_flops() -> None:
    # DATA.md: 13B GPT (40 layers, 5120, FFN 20480, vocab 50272) fp16: KV 427.62 MB at 522 tokens,
    # weights 25.68 GB, prefill 13.36 TFLOP for a 512-token prompt, decode 17.07 ms on A100-40GB.
    model = dense(
        num_layers=40,
        hidden_size=5120,
        num_heads=40,
        num_kv_heads=40,
        intermediate_size=20480,
        vocab_size=50272,
        gated_ffn=False,
        tie_embeddings=True,
    )
    assert kv_bytes_per_token(model) * 522 / 1e6 == pytest.approx(427.62, rel=1e-3)
    a100_40 = gpu(memory_bytes=40e9, memory_bandwidth=1.555e12)
    result = analyze(model, a100_40, Scenario(1, 512, 0, 512, 1), precisions=BF16, efficiency=IDEAL)
    assert result.prefill.cost.weight_resident_bytes / 1e9 == pytest.approx(25.68, rel=0.03)
    assert result.prefill.cost.flops / 1e12 == pytest.approx(13.36, rel=0.05)
    assert result.tpot_seconds * 1e3 == pytest.approx(17.07, rel=0.05)


def test_llama3_70b_int8_kv_per_token_and_32k_sequence() -> None:
    model = dense(
        num_layers=80,
        hidden_size=8192,
        num_heads=64,
        num_kv_heads=8,
        intermediate_size=28672,
        vocab_size=128256,
    )
    assert kv_bytes_per_token(model, Precision.INT8) == 2 * 8 * 128 * 80 == 163_840
    assert kv_bytes_per_token(model, Precision.INT8) * 32 * 1024 / 1e9 == pytest.approx(5.37, rel=0.01)


def test_h100_critical_batch_is_about_ridge_point() -> None:
    # scaling-book: at 1e15 FLOP/s and 3.35e12 B/s, bf16 decode turns compute-bound near B ≈ 298.
    h100 = gpu(peak_flops={"bf16": 1e15}, memory_bandwidth=3.35e12, memory_bytes=1e15)
    model = dense(
        num_layers=80,
        hidden_size=8192,
        num_heads=64,
        num_kv_heads=8,
        intermediate_size=28672,
        vocab_size=128256,
    )
    cost = estimate_phase(model, Phase.DECODE, batch=1, new_tokens=1, context_tokens=0, precisions=BF16)
    perf = evaluate(cost, h100, efficiency=IDEAL)
    assert perf.ridge_batch is not None
    # Weights alone give 298; the activations each matmul reads and writes (≈ 2·B/d of the weight
    # traffic at this batch) push it a few percent higher.
    assert 298 <= perf.ridge_batch <= 298 * 1.08


# ---- regimes ------------------------------------------------------------------------------------


def test_regimes_compute_bandwidth_capacity_and_does_not_fit() -> None:
    model = dense()
    hw = gpu()
    prefill = estimate_phase(
        model, Phase.PREFILL, batch=1, new_tokens=2048, context_tokens=0, precisions=BF16
    )
    assert evaluate(prefill, hw, efficiency=IDEAL).regime is Regime.COMPUTE_BOUND
    short = estimate_phase(model, Phase.DECODE, batch=8, new_tokens=1, context_tokens=512, precisions=BF16)
    assert evaluate(short, hw, efficiency=IDEAL).regime is Regime.BANDWIDTH_BOUND
    # Long context and a large target batch: memory caps the batch far below the ridge.
    long = estimate_phase(
        model, Phase.DECODE, batch=256, new_tokens=1, context_tokens=100_000, precisions=BF16
    )
    perf = evaluate(long, hw, efficiency=IDEAL)
    assert perf.regime is Regime.CAPACITY_BOUND
    assert perf.operating_batch == perf.max_batch < 256
    assert perf.mfu < 0.5 and perf.mbu <= 1.0
    small = gpu(memory_bytes=8e9)
    assert evaluate(short, small, efficiency=IDEAL).regime is Regime.DOES_NOT_FIT


def test_tensor_parallelism_splits_weights_and_adds_allreduce() -> None:
    model = dense(num_kv_heads=8)
    hw = gpu()
    one = estimate_phase(model, Phase.DECODE, batch=4, new_tokens=1, context_tokens=4096, precisions=BF16)
    four = estimate_phase(
        model, Phase.DECODE, batch=4, new_tokens=1, context_tokens=4096, precisions=BF16, tp=4
    )
    assert four.kv_bytes_per_request_per_device == pytest.approx(one.kv_bytes_per_request / 4)
    p1, p4 = evaluate(one, hw, efficiency=IDEAL), evaluate(four, hw, efficiency=IDEAL)
    assert p4.communication_seconds > 0 and p1.communication_seconds == 0
    assert p4.max_batch > p1.max_batch
    assert p4.step_seconds < p1.step_seconds


def test_mla_cache_is_replicated_not_split_by_tp() -> None:
    mla = dense(
        num_kv_heads=32,
        mla=MLAConfig(
            kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128
        ),
    )
    cost = estimate_phase(mla, Phase.DECODE, batch=1, new_tokens=1, context_tokens=99, precisions=BF16, tp=8)
    assert cost.kv_bytes_per_request == 32 * (512 + 64) * 100 * 2
    assert cost.kv_bytes_per_request_per_device == cost.kv_bytes_per_request


def test_allreduce_payload_is_bf16_even_with_fp8_or_fp4_activations() -> None:
    """Engines all-reduce the BF16 residual stream: 2 bytes per element whatever the GEMM inputs,
    4 with FP32 activations."""
    model = dense(num_kv_heads=8)
    for act, width in ((Precision.FP8, 2), (Precision.NVFP4, 2), (Precision.BF16, 2), (Precision.FP32, 4)):
        prec = Precisions(weights=Precision.FP8, kv_cache=Precision.FP8, activations=act)
        cost = estimate_phase(
            model, Phase.DECODE, batch=16, new_tokens=1, context_tokens=100, precisions=prec, tp=4
        )
        assert cost.allreduce_bytes == 16 * model.hidden_size * width
        assert cost.allreduce_count == 2 * model.num_layers


def _kv_read(model: ModelConfig, tp: int) -> float:
    cost = estimate_phase(
        model, Phase.DECODE, batch=4, new_tokens=1, context_tokens=1000, precisions=BF16, tp=tp
    )
    return next(op.kv_read_bytes for op in cost.operators if op.name == "attention")


def test_kv_reads_are_replicated_on_the_ranks_that_replicate_the_cache() -> None:
    """Every TP rank holding a copy of a KV head reads it: the replica's KV traffic is ``tp / split``
    copies (split = min(tp, KV heads); MLA's latent is on every rank), per device one copy's share."""
    gqa = dense(num_kv_heads=4)
    one = _kv_read(gqa, 1)
    assert _kv_read(gqa, 2) == pytest.approx(one)  # heads split: no copy
    assert _kv_read(gqa, 4) == pytest.approx(one)
    assert _kv_read(gqa, 8) == pytest.approx(2 * one)  # 2 ranks per KV head
    # Per device: the KV bytes a rank reads never shrink below one head's share.
    assert _kv_read(gqa, 8) / 8 == pytest.approx(one / 4)
    mla = dense(
        num_kv_heads=32,
        mla=MLAConfig(
            kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128
        ),
    )
    assert _kv_read(mla, 8) == pytest.approx(8 * _kv_read(mla, 1))  # every rank reads the whole latent
    # FLOPs are not replicated: the heads are split.
    f1 = estimate_phase(mla, Phase.DECODE, batch=4, new_tokens=1, context_tokens=1000, precisions=BF16)
    f8 = estimate_phase(mla, Phase.DECODE, batch=4, new_tokens=1, context_tokens=1000, precisions=BF16, tp=8)
    assert f8.flops == pytest.approx(f1.flops)


def test_attention_core_runs_at_the_kv_cache_class_not_the_gemm_class() -> None:
    def attention_class(act: Precision, kv: Precision) -> str | None:
        prec = Precisions(weights=act, kv_cache=kv, activations=act)
        cost = estimate_phase(
            dense(), Phase.PREFILL, batch=1, new_tokens=512, context_tokens=0, precisions=prec
        )
        assert all(op.compute_class is None for op in cost.operators if op.name != "attention")
        return next(op.compute_class for op in cost.operators if op.name == "attention")

    assert attention_class(Precision.NVFP4, Precision.FP8) == "fp8"  # not at the FP4 peak
    assert attention_class(Precision.NVFP4, Precision.BF16) == "bf16"
    assert attention_class(Precision.FP8, Precision.FP8) == "fp8"
    assert attention_class(Precision.FP8, Precision.BF16) == "bf16"
    assert attention_class(Precision.BF16, Precision.FP8) == "bf16"
    assert attention_class(Precision.BF16, Precision.INT8) == "bf16"  # an integer cache is dequantized
    # The roofline prices the attention FLOPs at that class's peak.
    hw = gpu(peak_flops={"bf16": 100e12, "fp8": 200e12, "fp4": 400e12})
    prec = Precisions(weights=Precision.NVFP4, kv_cache=Precision.FP8, activations=Precision.NVFP4)
    cost = estimate_phase(dense(), Phase.PREFILL, batch=1, new_tokens=4096, context_tokens=0, precisions=prec)
    perf = evaluate(cost, hw, compute_class=prec.compute_class, efficiency=IDEAL)
    expected = sum(
        max(op.flops / (200e12 if op.name == "attention" else 400e12), op.dram_bytes / hw.memory_bandwidth)
        for op in cost.operators
    )
    assert perf.step_seconds == pytest.approx(expected, rel=1e-12)


def test_phase_cost_carries_the_layer_count() -> None:
    for layers in (1, 32, 61):
        cost = estimate_phase(dense(num_layers=layers), Phase.DECODE, batch=1, new_tokens=1, context_tokens=0)
        assert cost.layers == layers


def test_sliding_window_caps_cache() -> None:
    windowed = dense(sliding_window=128, sliding_window_layers=16)
    cost = estimate_phase(windowed, Phase.DECODE, batch=1, new_tokens=1, context_tokens=9999, precisions=BF16)
    per_layer_token = 2 * 32 * 128 * 2
    assert cost.kv_bytes_per_request == (16 * 10_000 + 16 * 128) * per_layer_token


# ---- properties ---------------------------------------------------------------------------------

MOE = dense(
    intermediate_size=0,
    moe=MoEConfig(num_experts=64, experts_per_token=4, expert_intermediate_size=1408),
)


@settings(max_examples=60, deadline=None)
@given(ctx=st.integers(1, 500_000), extra=st.integers(1, 100_000), batch=st.integers(1, 512))
def test_cf_grows_with_context(ctx: int, extra: int, batch: int) -> None:
    a = estimate_phase(dense(num_kv_heads=8), Phase.DECODE, batch=batch, new_tokens=1, context_tokens=ctx)
    b = estimate_phase(
        dense(num_kv_heads=8), Phase.DECODE, batch=batch, new_tokens=1, context_tokens=ctx + extra
    )
    assert b.capacity_footprint_bytes > a.capacity_footprint_bytes


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 4096), more=st.integers(1, 4096), ctx=st.integers(0, 200_000))
def test_decode_oi_grows_with_batch(batch: int, more: int, ctx: int) -> None:
    for model in (dense(num_kv_heads=8), MOE):
        a = estimate_phase(model, Phase.DECODE, batch=batch, new_tokens=1, context_tokens=ctx)
        b = estimate_phase(model, Phase.DECODE, batch=batch + more, new_tokens=1, context_tokens=ctx)
        assert b.operational_intensity >= a.operational_intensity * (1 - 1e-12)
        # The closed-form scaling used for the ridge search agrees with the full breakdown.
        assert a.scaling.operational_intensity(batch) == pytest.approx(a.operational_intensity, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 256), ctx=st.integers(0, 32_000))
def test_moe_decode_oi_below_dense_of_same_active_size(batch: int, ctx: int) -> None:
    # A dense model whose FFN equals the MoE's active experts: same active params, fewer total.
    same_active = dense(intermediate_size=4 * 1408)
    assert abs(same_active.total_params - MOE.active_params) / MOE.active_params < 0.01
    moe = estimate_phase(MOE, Phase.DECODE, batch=batch, new_tokens=1, context_tokens=ctx)
    den = estimate_phase(same_active, Phase.DECODE, batch=batch, new_tokens=1, context_tokens=ctx)
    assert moe.operational_intensity < den.operational_intensity


@settings(max_examples=60, deadline=None)
@given(
    layers=st.integers(1, 128),
    heads_log=st.integers(0, 7),
    group_log=st.integers(0, 4),
    head_dim=st.sampled_from([64, 80, 128, 256]),
    batch=st.integers(1, 1024),
    prompt=st.integers(1, 200_000),
    cached=st.integers(0, 500_000),
    tp=st.sampled_from([1, 2, 4, 8]),
)
def test_estimates_are_finite_and_positive(
    layers: int, heads_log: int, group_log: int, head_dim: int, batch: int, prompt: int, cached: int, tp: int
) -> None:
    heads = 2**heads_log
    kv = max(1, heads // 2**group_log)
    model = dense(
        num_layers=layers,
        hidden_size=heads * head_dim,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=4 * heads * head_dim,
    )
    for phase, new in ((Phase.PREFILL, prompt), (Phase.DECODE, 1)):
        cost = estimate_phase(model, phase, batch=batch, new_tokens=new, context_tokens=cached, tp=tp)
        perf = evaluate(cost, gpu())
        for value in (
            cost.flops,
            cost.dram_bytes,
            cost.operational_intensity,
            cost.capacity_footprint_bytes,
            perf.step_seconds,
            perf.mfu,
            perf.mbu,
        ):
            assert math.isfinite(value) and value > 0
        assert perf.mfu <= 1 + 1e-9 and perf.mbu <= 1 + 1e-9


def test_invalid_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="batch"):
        estimate_phase(dense(), Phase.DECODE, batch=0, new_tokens=1, context_tokens=0)
    with pytest.raises(ValueError, match="batch"):
        Scenario(0, 1, 0, 1, 1)
