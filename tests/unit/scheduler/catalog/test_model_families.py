"""The 2025-2026 families, each against hand calculations and published parameter counts.

For each catalog model read from its real config.json (``scheduler/catalog/data/configs``):

* the request's cache at two contexts equals a hand calculation written out below: layers × KV
  heads × (K + V head sizes) × 2 bytes per token (windowed layers up to their window), MLA's
  latent + RoPE key, a sparse model's index keys (FP8 + an FP32 scale per 128: 132 bytes), and the
  state layers' fixed conv + recurrent states (vLLM's state shapes and dtypes);
* the capacity footprint at batch B is the weights (parameters × 2 bytes in BF16) / B plus that
  cache; the parameter counts used are transformers 5.25's own (the model built on the meta
  device, MTP layers not built), plus the routers' score-correction biases transformers keeps as
  buffers (the checkpoints store them, so we count them);
* the total parameter count is within 1 % of the figure the vendor (or a serving project's
  documentation) publishes, quoted with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hetsched.scheduler.catalog.model_catalog import MODELS, get_model
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase, kv_profile
from hetsched.scheduler.estimator.precision import Precision

BF16 = Precisions()
KIB = 1024


@dataclass(frozen=True)
class Cache:
    """A hand-written cache: bytes per token in layers that keep every token; per windowed group
    (layers, bytes per token and layer, window); the fixed state bytes."""

    per_token: int
    windowed: tuple[tuple[int, int, int], ...] = ()
    state: int = 0

    def at(self, context: int) -> int:
        held = self.per_token * context + self.state
        for layers, per_layer, window in self.windowed:
            held += layers * per_layer * min(context, window)
        return held


def gdn_state(layers: int, key_heads: int, value_heads: int, head: int, state_bytes: int) -> int:
    """Gated DeltaNet per request: conv (kernel 4 − 1) × (2·key_heads·head + value_heads·head) in
    BF16, recurrent value_heads × head × head in ``state_bytes``."""
    conv = 3 * (2 * key_heads * head + value_heads * head) * 2
    return layers * (conv + value_heads * head * head * state_bytes)


def mamba_state(layers: int, heads: int, head_dim: int, groups: int, state: int) -> int:
    """Mamba2 per request: conv 3 × (heads·head_dim + 2·groups·state) in BF16, SSM heads × head_dim
    × state in FP32 (vLLM's default for Nemotron-H)."""
    conv = 3 * (heads * head_dim + 2 * groups * state) * 2
    return layers * (conv + heads * head_dim * state * 4)


#: key → (hand-written cache in BF16, two contexts, transformers' parameter count + router biases)
CASES: dict[str, tuple[Cache, tuple[int, int], int]] = {
    # 12 gated full-attention layers (2 KV heads of 256) + 36 Gated DeltaNet (16 key / 32 value
    # heads of 128, BF16 state).
    "qwen3-next-80b-a3b": (
        Cache(12 * 2 * 2 * 256 * 2, state=gdn_state(36, 16, 32, 128, 2)),
        (4096, 262_144),
        79_674_391_296,
    ),
    # 16 full (4 KV heads of 256) + 48 Gated DeltaNet (48 value heads, FP32 recurrent state).
    "qwen3.5-27b": (
        Cache(16 * 2 * 4 * 256 * 2, state=gdn_state(48, 16, 48, 128, 4)),
        (1000, 200_000),
        27_356_728_560,
    ),
    "qwen3.5-35b-a3b": (
        Cache(10 * 2 * 2 * 256 * 2, state=gdn_state(30, 16, 32, 128, 4)),
        (8192, 262_144),
        35_107_181_936,
    ),
    "qwen3.5-122b-a10b": (
        Cache(12 * 2 * 2 * 256 * 2, state=gdn_state(36, 16, 64, 128, 4)),
        (8192, 131_072),
        122_562_817_776,
    ),
    "qwen3.5-397b-a17b": (
        Cache(15 * 2 * 2 * 256 * 2, state=gdn_state(45, 16, 64, 128, 4)),
        (8192, 131_072),
        396_802_360_816,
    ),
    # 6 attention (2 KV heads of 128) + 23 Mamba2 (64 heads of 64, 8 groups, state 128) + 23 MoE;
    # 23 MoE layers × 128 router biases.
    "nemotron-3-nano-30b-a3b": (
        Cache(6 * 2 * 2 * 128 * 2, state=mamba_state(23, 64, 64, 8, 128)),
        (4096, 262_144),
        31_577_937_344 + 23 * 128,
    ),
    "nemotron-3-ultra-550b-a55b": (
        Cache(12 * 2 * 2 * 128 * 2, state=mamba_state(48, 256, 64, 8, 128)),
        (4096, 262_144),
        549_308_968_960 + 48 * 512,
    ),
    # 10 attention (8 KV heads of 128) + 54 Mamba2 (256 heads of 64, 8 groups, state 256): an 8K model.
    "nemotron-h-56b": (
        Cache(10 * 2 * 8 * 128 * 2, state=mamba_state(54, 256, 64, 8, 256)),
        (1024, 8192),
        56_324_350_464,
    ),
    # 10 global + 52 local layers (window 1024), all 16 KV heads of 128.
    "gemma-3-27b": (
        Cache(10 * 2 * 16 * 128 * 2, windowed=((52, 2 * 16 * 128 * 2, 1024),)),
        (512, 131_072),
        27_432_406_640,
    ),
    # 5 global layers (2 KV heads of 512; K = V, both stored) + 25 local (8 KV heads of 256, window 1024).
    "gemma-4-26b-a4b": (
        Cache(5 * 2 * 2 * 512 * 2, windowed=((25, 2 * 8 * 256 * 2, 1024),)),
        (1000, 262_144),
        25_805_933_872,
    ),
    # 10 global (4 KV heads of 512) + 50 local (16 KV heads of 256).
    "gemma-4-31b-nvfp4": (
        Cache(10 * 2 * 4 * 512 * 2, windowed=((50, 2 * 16 * 256 * 2, 1024),)),
        (1000, 262_144),
        31_273_086_512,
    ),
    # MLA latent 512 + RoPE 64 in BF16, and an index key (128 FP8 + one FP32 scale) in every layer.
    "deepseek-v3.2": (
        Cache(61 * (512 + 64) * 2 + 61 * (128 + 4)),
        (4096, 163_840),
        671_877_929_216 + 58 * 256,
    ),
    "glm-5": (Cache(78 * (512 + 64) * 2 + 78 * (128 + 4)), (4096, 202_752), 743_911_199_232 + 75 * 256),
    # GLM-5.2 keeps index keys in 21 of its 78 layers (the others reuse a previous selection).
    "glm-5.2": (Cache(78 * (512 + 64) * 2 + 21 * (128 + 4)), (4096, 1_048_576), 743_377_000_704 + 75 * 256),
    "kimi-k2": (Cache(61 * (512 + 64) * 2), (4096, 131_072), 1_026_408_209_408 + 60 * 384),
    "kimi-k2.5": (Cache(61 * (512 + 64) * 2), (4096, 262_144), 1_026_879_353_328 + 60 * 384),
    "glm-4.7": (Cache(92 * 2 * 8 * 128 * 2), (4096, 202_752), 352_797_814_784 + 89 * 160),
    "intellect-3": (Cache(46 * 2 * 8 * 128 * 2), (4096, 131_072), 106_852_245_504 + 45 * 128),
    "minimax-m2.7": (Cache(62 * 2 * 8 * 128 * 2), (4096, 204_800), 228_689_748_992 + 62 * 256),
    "phi-4": (Cache(40 * 2 * 10 * 128 * 2), (1000, 16_384), 14_659_507_200),
    "devstral-small-2-24b": (Cache(40 * 2 * 8 * 128 * 2), (4096, 393_216), 24_011_361_280),
}


def cache_at(key: str, context: int, batch: int = 1, kv: Precision = Precision.BF16) -> tuple[float, float]:
    """(cache per request, CF per request) of a decode step that ends at ``context`` tokens, BF16
    weights."""
    cost = estimate_phase(
        get_model(key),
        Phase.DECODE,
        batch=batch,
        new_tokens=1,
        context_tokens=context - 1,
        precisions=Precisions(kv_cache=kv),
    )
    return cost.kv_bytes_per_request, cost.capacity_footprint_bytes


@pytest.mark.parametrize("key", sorted(CASES))
def test_cache_and_capacity_footprint_equal_the_hand_calculation(key: str) -> None:
    cache, contexts, params = CASES[key]
    assert MODELS[key].total_params == params
    for context in contexts:
        for batch in (1, 16):
            kv, cf = cache_at(key, context, batch)
            assert kv == cache.at(context), (key, context)
            assert cf == params * 2 / batch + cache.at(context), (key, context, batch)


@pytest.mark.parametrize("key", sorted(CASES))
def test_cache_profile_reports_growth_window_and_state(key: str) -> None:
    cache, _, _ = CASES[key]
    kv = kv_profile(MODELS[key])
    assert kv.growth_bytes_per_token == cache.per_token
    assert kv.window_bytes_per_token == sum(layers * per for layers, per, _ in cache.windowed)
    assert kv.window_cap_bytes == sum(layers * per * w for layers, per, w in cache.windowed)
    assert kv.state_bytes == cache.state


def test_states_do_not_grow_with_context_and_windows_cap() -> None:
    """What the issue measured: mapping these models onto a plain GQA reader overstates their KV
    several-fold; the hybrid layers hold a fixed state, windowed layers at most their window."""
    for key in ("qwen3.5-27b", "nemotron-3-nano-30b-a3b"):
        cache, _, _ = CASES[key]
        a, _ = cache_at(key, 100_000)
        b, _ = cache_at(key, 200_000)
        assert b - a == cache.per_token * 100_000  # the states are in both, once
    gemma = MODELS["gemma-3-27b"]
    all_global = 62 * 2 * 16 * 128 * 2 * 131_072
    kv, _ = cache_at("gemma-3-27b", 131_072)
    # 62 / (10 + 52 × 1024 / 131072) = 5.96× less than if every layer kept every token.
    assert all_global / kv == pytest.approx(62 / (10 + 52 * 1024 / 131_072))
    assert gemma.kv_elements(131_072) * 2 == kv


def test_sparse_mla_cache_in_fp8_uses_flashmla_sparse_layout() -> None:
    """FP8 cache of a sparse-attention model: 512 FP8 latent values, 4 FP32 scales, 64 BF16 RoPE
    values = 656 bytes per token and layer (vLLM fp8_ds_mla); the index keys stay 132 bytes."""
    kv, _ = cache_at("deepseek-v3.2", 100_000, kv=Precision.FP8)
    assert kv == 100_000 * 61 * (512 + 4 * 4 + 64 * 2) + 100_000 * 61 * 132
    # A dense MLA model's FP8 cache stays elements × 1 byte (DeepSeek-V3, unchanged).
    kv, _ = cache_at("kimi-k2", 100_000, kv=Precision.FP8)
    assert kv == 100_000 * 61 * 576


def test_tensor_parallel_splits_heads_states_and_replicates_latents() -> None:
    """Per device under TP 4: GQA heads split up to the KV-head count (Gemma 4's global layers
    have 2 KV heads: replicated on 2 of 4 devices), states by heads, MLA and index keys replicated."""
    cost = estimate_phase(
        MODELS["gemma-4-26b-a4b"],
        Phase.DECODE,
        batch=1,
        new_tokens=1,
        context_tokens=9999,
        precisions=BF16,
        tp=4,
    )
    globals_, locals_ = 5 * 2 * 2 * 512 * 2 * 10_000, 25 * 2 * 8 * 256 * 2 * 1024
    assert cost.kv_bytes_per_request_per_device == globals_ / 2 + locals_ / 4
    cost = estimate_phase(
        MODELS["qwen3.5-27b"], Phase.DECODE, batch=1, new_tokens=1, context_tokens=9999, precisions=BF16, tp=4
    )
    assert (
        cost.kv_bytes_per_request_per_device
        == 16 * 2 * 4 * 256 * 2 * 10_000 / 4 + gdn_state(48, 16, 48, 128, 4) / 4
    )
    cost = estimate_phase(
        MODELS["deepseek-v3.2"],
        Phase.DECODE,
        batch=1,
        new_tokens=1,
        context_tokens=9999,
        precisions=BF16,
        tp=8,
    )
    assert cost.kv_bytes_per_request_per_device == cost.kv_bytes_per_request


#: key → (published total parameters, what it counts, source).
PUBLISHED: dict[str, tuple[float, str, str]] = {
    "qwen3-next-80b-a3b": (
        80e9,
        "total",
        'transformers docs, model_doc/qwen3_next.md: "Qwen3-Next-80B-A3B — 80B total parameters, only 3B active"',
    ),
    "qwen3.5-27b": (
        27e9,
        "text",
        'Qwen/Qwen3.5-27B model card (HF commit 3b2962802c14): "Number of Parameters: 27B"',
    ),
    "qwen3.5-35b-a3b": (
        35e9,
        "total",
        'NVIDIA Megatron-Bridge docs, models/vlm/qwen35-vl: "35B total parameters, 3B activated per token"',
    ),
    "qwen3.5-122b-a10b": (
        122e9,
        "total",
        'NVIDIA Megatron-Bridge docs, models/vlm/qwen35-vl: "122B total parameters, 10B activated per token"',
    ),
    "qwen3.5-397b-a17b": (
        397e9,
        "total",
        'SGLang docs, cookbook Qwen3.5: "397B total parameters, 17B activated"',
    ),
    "nemotron-3-nano-30b-a3b": (
        31.6e9,
        "total",
        'huggingface.co/basecompute/NVIDIA-Nemotron-3-Nano-30B-A3B: "A 31.6B-parameter hybrid Mamba-2 / '
        'attention mixture-of-experts model"',
    ),
    "nemotron-3-ultra-550b-a55b": (550e9, "total", "NVIDIA's model name NVIDIA-Nemotron-3-Ultra-550B-A55B"),
    "nemotron-h-56b": (
        56e9,
        "total",
        'NVIDIA Megatron-Bridge API docs, nemotron_h_provider: "NemotronHModel56BProvider: Configuration for '
        'a 56B parameter Nemotron-H model"',
    ),
    "gemma-3-27b": (
        27e9,
        "text",
        'transformers docs, model_doc/gemma3: "available in 1B, 13B, and 27B parameters"',
    ),
    "gemma-4-26b-a4b": (26e9, "total", 'ai.google.dev/gemma/docs/core: "a highly efficient 26B MoE model"'),
    "gemma-4-31b-nvfp4": (31e9, "total", 'ai.google.dev/gemma/docs/core: "Dense: a 31B parameter model"'),
    "deepseek-v3.2": (
        685e9 - 14e9,
        "total",
        'huggingface.co/collections/deepseek-ai/deepseek-v32: "deepseek-ai/DeepSeek-V3.2 • 685B", less the '
        '"14B of the Multi-Token Prediction (MTP) Module weights" of the DeepSeek-V3 README (not served)',
    ),
    "glm-5": (744e9, "total", 'SGLang docs, cookbook GLM-5: "744B parameters (40B active)"'),
    "kimi-k2": (
        1.02e12,
        "total",
        'fireworks.ai/models/fireworks/kimi-k2-instruct-0905: "Parameters: 1.02T" (Moonshot rounds it to "1T")',
    ),
    "glm-4.7": (
        355e9,
        "total",
        'zai-org/GLM-4.5 README (HF blob cbb2c7c): "GLM-4.5 has 355 billion total parameters with 32 billion '
        'active parameters" (GLM-4.7 has its layers)',
    ),
    "intellect-3": (
        106e9,
        "total",
        'zai-org/GLM-4.5 README: "GLM-4.5-Air ... 106 billion total parameters and 12 billion active" '
        "(INTELLECT-3-Base continues GLM-4.5-Air-Base)",
    ),
    "minimax-m2.7": (
        230e9,
        "total",
        'SGLang docs, minimax_m2: "230 billion total parameters with 10 billion active parameters"',
    ),
    "phi-4": (14.7e9, "total", 'ollama.com/library/phi4:14b-fp16: "phi3 · 14.7B · F16"'),
    "devstral-small-2-24b": (
        24e9,
        "total",
        'vercel.com/ai-gateway/models/devstral-small-2: "Devstral Small 2 is a 24B agentic coding model"',
    ),
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_parameter_count_within_one_percent_of_the_published_figure(key: str) -> None:
    published, what, source = PUBLISHED[key]
    m = MODELS[key]
    ours = m.total_params - (m.vision_params if what == "text" else 0)
    assert abs(ours / published - 1) < 0.01, f"{key}: {ours / 1e9:.2f}B vs {published / 1e9:g}B ({source})"


def test_active_parameters_in_both_conventions() -> None:
    """Active parameters: all but the routed experts a token does not use, with the input
    embedding table (Qwen's, NVIDIA's, Google's convention) and without it (DeepSeek's, OpenAI's)."""
    m = MODELS["qwen3.5-122b-a10b"]
    h, expert = 3072, 3 * 3072 * 1024  # a gated expert of width 1024
    vision = m.vision_params
    active = 122_562_817_776 - vision - 48 * (256 - 8) * expert
    assert m.active_params == active
    assert m.active_compute_params == active - 248_320 * h  # untied: the table is not the LM head
    # Tied embeddings (Gemma): the table is the LM head, so it stays in.
    g = MODELS["gemma-3-27b"]
    assert g.active_compute_params == g.active_params == 27_432_406_640 - 423_060_336
    # DeepSeek-V3.2 by DeepSeek's convention: "37B activated" (37.5B here).
    assert MODELS["deepseek-v3.2"].active_compute_params == pytest.approx(37.5e9, rel=0.01)
