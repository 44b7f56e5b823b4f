"""Catalogs: model parameter counts and KV bytes vs published figures, hardware lookups and GFD
labels, custom hardware YAML, agent profiles and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hetsched.scheduler.catalog import agent_catalog, hardware_catalog, model_catalog
from hetsched.scheduler.catalog.agent_catalog import AGENTS, UnknownAgentError, apply_overrides, get_agent
from hetsched.scheduler.catalog.hardware import DeviceKind
from hetsched.scheduler.catalog.hardware_catalog import (
    HARDWARE,
    UnknownHardwareError,
    get_hardware,
    hardware_for_gfd_product,
    load_hardware_yaml,
)
from hetsched.scheduler.catalog.model_catalog import MODELS, UnknownModelError, get_model
from hetsched.scheduler.catalog.models import AttentionKind, MLAConfig, ModelConfig, MoEConfig
from hetsched.scheduler.estimator.precision import bytes_per_element
from hypothesis import given, settings
from hypothesis import strategies as st

B = 1e9

# ---- parameter counts vs published figures ----
# (key, published total, published active or None, which active count the vendor publishes, rel. tol.)
# "all": active_params (input-embedding table included: Mistral, Qwen, Meta);
# "compute": active_compute_params (input-embedding table left out: OpenAI, DeepSeek).
# Tolerance 1%, except where the published figure has two significant digits and our exact count
# lies just outside 1% of it (noted per row).
Row = tuple[str, float, float | None, str, float]
PUBLISHED: list[Row] = [
    ("llama-3.1-8b", 8.03, None, "all", 0.01),  # Llama 3.1 model card
    ("llama-3.1-70b", 70.55, None, "all", 0.01),
    ("llama-3.1-405b", 405.9, None, "all", 0.01),
    ("qwen3-32b", 32.8, None, "all", 0.01),  # Qwen3-32B model card (31.2B non-embedding)
    ("mixtral-8x7b", 46.7, 12.9, "all", 0.01),  # Mistral: 46.7B total, 12.9B active
    ("gpt-oss-120b", 116.83, 5.13, "compute", 0.01),  # gpt-oss model card, table 1
    ("gpt-oss-20b", 20.91, 3.61, "compute", 0.01),
]
ROUNDED: list[Row] = [
    # Qwen3-30B-A3B card: 30.5B / 3.3B; our active count is 3.353B (Qwen truncates: 30.53 -> 30.5).
    ("qwen3-30b-a3b", 30.5, 3.3, "all", 0.02),
    ("qwen3-235b-a22b", 235.0, 22.0, "all", 0.01),  # 235.09B / 22.19B
    # DeepSeek-V3: 671B total, 37B activated; by DeepSeek's convention we count 36.63B (-1.0%).
    ("deepseek-v3", 671.0, 37.0, "compute", 0.015),
    ("deepseek-r1", 671.0, 37.0, "compute", 0.015),
    # Llama 4: 109B / 400B total (with the 0.87B vision tower), 17B active: we count 17.17-17.18B.
    ("llama-4-scout", 109.0, 17.0, "all", 0.015),
    ("llama-4-maverick", 400.0, 17.0, "all", 0.015),
]


@pytest.mark.parametrize(("key", "total", "active", "convention", "tol"), PUBLISHED + ROUNDED)
def test_parameter_counts_match_published(
    key: str, total: float, active: float | None, convention: str, tol: float
) -> None:
    m = MODELS[key]
    assert m.total_params / B == pytest.approx(total, rel=0.01)
    if active is not None:
        ours = m.active_params if convention == "all" else m.active_compute_params
        assert ours / B == pytest.approx(active, rel=tol)


def test_non_embedding_counts_match_qwen_cards() -> None:
    for key, published in (("qwen3-32b", 31.2), ("qwen3-30b-a3b", 29.9), ("qwen3-235b-a22b", 234.0)):
        m = MODELS[key]
        assert (m.total_params - m.embedding_params - m.lm_head_params) / B == pytest.approx(
            published, rel=0.005
        )


def test_exact_llama_3_1_8b_count() -> None:
    # 2·128256·4096 + 32·(2·4096² + 2·4096·1024 + 3·4096·14336 + 2·4096) + 4096
    assert MODELS["llama-3.1-8b"].total_params == 8_030_261_248


def test_dense_models_are_fully_active() -> None:
    for m in MODELS.values():
        if m.moe is None:
            assert m.active_params == m.total_params - m.vision_params  # text tokens skip the vision tower


# ---- KV cache bytes ----
def kv_bytes_per_token(m: ModelConfig, precision: str) -> float:
    return float(m.kv_elements_per_token_per_layer * m.num_layers * bytes_per_element(precision))


def test_kv_bytes_gqa_llama3_70b_int8() -> None:
    m = get_model("llama-3-70b")
    assert m.attention_kind is AttentionKind.GQA
    assert kv_bytes_per_token(m, "int8") == 2 * 8 * 128 * 80 * 1 == 163_840
    # 32K context: 5.4 GB per sequence.
    assert m.kv_elements(32768) * bytes_per_element("int8") == pytest.approx(5.37e9, rel=0.001)


def test_kv_bytes_mla_deepseek_v3() -> None:
    m = get_model("deepseek-v3")
    assert kv_bytes_per_token(m, "bf16") == (512 + 64) * 61 * 2 == 70_272


def test_kv_bytes_study_variants() -> None:
    mha, gqa, mla = MODELS["study-mha"], MODELS["study-gqa"], MODELS["study-mla"]
    assert (mha.attention_kind, gqa.attention_kind, mla.attention_kind) == (
        AttentionKind.MHA,
        AttentionKind.GQA,
        AttentionKind.MLA,
    )
    assert kv_bytes_per_token(mha, "bf16") == 2 * 32 * 64 * 48 * 2 == 393_216
    assert kv_bytes_per_token(gqa, "bf16") == 2 * 8 * 64 * 48 * 2 == 98_304
    assert kv_bytes_per_token(mla, "bf16") == (512 + 64) * 48 * 2 == 55_296


def test_study_variants_share_everything_but_attention() -> None:
    dumps = [
        MODELS[k].model_dump(exclude={"name", "num_kv_heads", "mla"})
        for k in ("study-mha", "study-gqa", "study-mla")
    ]
    assert dumps[0] == dumps[1] == dumps[2]
    m = MODELS["study-mha"]
    assert (m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size) == (48, 2048, 32, 8192)


def test_sliding_window_caps_gpt_oss_kv() -> None:
    m = get_model("gpt-oss-120b")
    per_layer = m.kv_elements_per_token_per_layer
    assert m.kv_elements(100_000) == (18 * 100_000 + 18 * 128) * per_layer
    assert m.kv_elements(100) == 36 * 100 * per_layer


def test_chunked_attention_caps_llama4_kv() -> None:
    m = get_model("llama-4-scout")
    assert m.kv_elements(1_000_000) == (12 * 1_000_000 + 36 * 8192) * 2 * 8 * 128


# ---- model lookup ----
@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("LLAMA-3.1-8B", "llama-3.1-8b"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("nvidia/Llama-3.1-8B-Instruct-FP8", "llama-3.1-8b"),
        ("meta-llama/Llama-3.1-70B", "llama-3.1-70b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),
        ("meta-llama/Meta-Llama-3-70B-Instruct", "llama-3-70b"),
        ("Qwen/Qwen3-32B", "qwen3-32b"),
        ("Qwen/Qwen3-235B-A22B-FP8", "qwen3-235b-a22b"),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b"),
        ("deepseek-ai/DeepSeek-R1", "deepseek-r1"),
        ("deepseek-ai/DeepSeek-R1-0528", "deepseek-r1"),
        ("deepseek-ai/DeepSeek-V3-0324", "deepseek-v3"),
        ("openai/gpt-oss-120b", "gpt-oss-120b"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout"),
        ("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "llama-4-maverick"),
        ("study_mla", "study-mla"),
    ],
)
def test_get_model_by_key_or_hf_id(name: str, key: str) -> None:
    assert get_model(name) is MODELS[key]


def test_unknown_model_error_lists_close_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("llama-3.1-7b")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "llama-3.1-8b" in str(info.value) and "did you mean" in str(info.value)
    with pytest.raises(ValueError, match="unknown model 'deepseek-ai/DeepSeek-V2'"):
        get_model("deepseek-ai/DeepSeek-V2")


def test_every_model_is_sourced() -> None:
    for key, m in MODELS.items():
        assert m.name == key and m.source
        if not key.startswith("study-"):
            assert m.hf_id and m.source.startswith(f"https://huggingface.co/{m.hf_id}/blob/main/config.json")


def test_model_rows() -> None:
    rows = model_catalog.list_rows()
    assert [r["name"] for r in rows] == list(MODELS)
    row = next(r for r in rows if r["name"] == "deepseek-v3")
    assert row["attention"] == "mla" and row["kv_bytes_per_token_bf16"] == 70_272
    assert row["experts"] == "8/256"


def test_native_precisions() -> None:
    assert get_model("gpt-oss-20b").native_expert_precision == "mxfp4"
    assert get_model("deepseek-r1").native_weight_precision == "fp8"
    assert get_model("llama-3.1-405b").native_weight_precision == "bf16"


# ---- parameter-count properties ----
dense_configs: st.SearchStrategy[dict[str, int | bool]] = st.builds(
    dict,
    num_layers=st.integers(1, 128),
    hidden_size=st.sampled_from([256, 512, 1024, 2048, 4096, 8192]),
    heads=st.sampled_from([4, 8, 16, 32]),
    kv_div=st.sampled_from([1, 2, 4]),
    ffn_mult=st.integers(1, 8),
    vocab_size=st.integers(1000, 260_000),
    tie=st.booleans(),
    gated=st.booleans(),
    bias=st.booleans(),
)


def _dense(c: dict[str, int | bool], layers: int | None = None) -> ModelConfig:
    heads = int(c["heads"])
    return ModelConfig(
        name="h",
        source="hypothesis",
        num_layers=layers or int(c["num_layers"]),
        hidden_size=int(c["hidden_size"]),
        num_heads=heads,
        num_kv_heads=heads // int(c["kv_div"]),
        head_dim=int(c["hidden_size"]) // heads,
        intermediate_size=int(c["hidden_size"]) * int(c["ffn_mult"]),
        vocab_size=int(c["vocab_size"]),
        tie_embeddings=bool(c["tie"]),
        gated_ffn=bool(c["gated"]),
        attention_bias=bool(c["bias"]),
    )


@settings(max_examples=60, deadline=None)
@given(dense_configs, st.integers(1, 16))
def test_dense_params_positive_and_monotone_in_layers(c: dict[str, int | bool], extra: int) -> None:
    m = _dense(c)
    deeper = _dense(c, layers=m.num_layers + extra)
    assert 0 < m.total_params < deeper.total_params
    per_layer = m.attention_params_per_layer + m.dense_ffn_params + 2 * m.hidden_size
    assert deeper.total_params - m.total_params == extra * per_layer
    assert m.active_compute_params <= m.active_params == m.total_params


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 256),
    st.integers(1, 8),
    st.integers(0, 4),
    st.integers(1, 3),
    st.integers(8, 64),
    st.integers(0, 100_000),
)
def test_moe_active_between_dense_part_and_total(
    experts: int, k: int, first_dense: int, interval: int, layers: int, context: int
) -> None:
    k = min(k, experts)
    m = ModelConfig(
        name="m",
        source="hypothesis",
        num_layers=layers,
        hidden_size=512,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        intermediate_size=1024,
        vocab_size=32000,
        moe=MoEConfig(
            num_experts=experts,
            experts_per_token=k,
            expert_intermediate_size=256,
            first_dense_layers=first_dense,
            layer_interval=interval,
        ),
    )
    assert m.moe_layers + m.dense_layers == layers
    assert m.active_params <= m.total_params
    assert (m.active_params == m.total_params) == (k == experts or m.moe_layers == 0)
    assert m.kv_elements(context) == layers * context * 2 * 2 * 64


def test_mla_attention_params_formula() -> None:
    mla = MLAConfig(
        kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128
    )
    m = get_model("deepseek-v3")
    assert m.mla == mla
    h = 7168
    expected = (h * 1536 + 1536 + 1536 * 128 * 192) + (h * 576 + 512) + 512 * 128 * 256 + 128 * 128 * h
    assert m.attention_params_per_layer == expected


# ---- hardware ----
REQUIRED_HW = [
    "h100-sxm",
    "h100-pcie",
    "h200",
    "b200",
    "a100-80gb",
    "a100-40gb",
    "l40s",
    "l4",
    "a10g",
    "t4",
    "v100",
    "mi300x",
    "xeon-6980p",
    "epyc-9654",
]


def test_required_hardware_present_and_sourced() -> None:
    assert set(REQUIRED_HW) <= set(HARDWARE)
    for key, hw in HARDWARE.items():
        assert hw.name == key and hw.source and hw.price_source and hw.price_per_hour > 0
        assert "bf16" in hw.peak_flops and "fp32" in hw.peak_flops
        # Every entry carries the calibrated efficiency and says how it was fitted (docs/calibration.md).
        assert 0 < hw.efficiency.bandwidth <= 1 and 0 < hw.efficiency.compute <= 1
        assert hw.efficiency.fitted_by.startswith("least squares")
        # dense, not sparse: fp8 is at most ~2x bf16 (L40S datasheet: 733 vs 362.05), fp4 at most 4x
        assert hw.peak_flops.get("fp8", 0) <= 2.05 * hw.peak_flops["bf16"]
        assert hw.peak_flops.get("fp4", 0) <= 4.0 * hw.peak_flops["bf16"]


def test_dense_datasheet_figures() -> None:
    h100 = get_hardware("h100-sxm")
    assert h100.peak_flops["bf16"] == pytest.approx(989.4e12)  # not the 1979 sparse figure
    assert h100.memory_bandwidth == 3.35e12 and h100.memory_bytes == 80e9
    assert h100.intra_node_bandwidth == 450e9  # NVLink 4: 900 GB/s bidirectional
    assert h100.ridge_point("bf16") == pytest.approx(295.3, abs=0.1)
    b200 = get_hardware("b200")
    assert (b200.peak_flops["fp4"], b200.peak_flops["fp8"], b200.peak_flops["bf16"]) == (
        9e15,
        4.5e15,
        2.25e15,
    )
    assert get_hardware("h200").memory_bytes == 141e9
    assert get_hardware("a100-40gb").memory_bandwidth == 1.555e12
    assert get_hardware("t4").peak_for("fp8") == 65e12  # no fp8 on Turing: fp16 rate
    assert get_hardware("a100-80gb").peak_for("fp8") == 312e12


def test_cpu_peaks_are_derived() -> None:
    xeon, epyc = get_hardware("xeon-6980p"), get_hardware("epyc-9654")
    assert xeon.kind is DeviceKind.CPU and epyc.kind is DeviceKind.CPU
    assert xeon.peak_flops["bf16"] == 1024 * 128 * 2.0e9  # AMX: 262 TFLOP/s
    assert xeon.peak_flops["int8"] == 2 * xeon.peak_flops["bf16"]
    assert xeon.memory_bandwidth == pytest.approx(614.4e9)
    assert epyc.peak_flops["bf16"] == 64 * 96 * 2.4e9  # AVX-512 BF16: 14.7 TFLOP/s
    assert epyc.memory_bandwidth == pytest.approx(460.8e9)
    assert xeon.memory_bytes == epyc.memory_bytes == 768 * 2**30


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("h100", "h100-sxm"),
        ("H100_SXM", "h100-sxm"),
        ("h200_sxm", "h200"),
        ("b200_sxm", "b200"),
        ("a100_sxm", "a100-80gb"),
        ("a100", "a100-80gb"),
        ("L40S", "l40s"),
        ("Xeon-6980P", "xeon-6980p"),
    ],
)
def test_get_hardware_aliases(name: str, key: str) -> None:
    assert get_hardware(name) is HARDWARE[key]


def test_unknown_hardware_suggests() -> None:
    with pytest.raises(UnknownHardwareError) as info:
        get_hardware("h101")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "did you mean" in str(info.value) and "h100" in str(info.value)


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("NVIDIA-H100-80GB-HBM3", "h100-sxm"),
        ("nvidia-h100-80gb-hbm3", "h100-sxm"),
        ("NVIDIA-H100-SXM5-80GB", "h100-sxm"),
        ("NVIDIA-H100-PCIe", "h100-pcie"),
        ("NVIDIA-H200", "h200"),
        ("NVIDIA-H200-141GB-HBM3e", "h200"),
        ("NVIDIA-B200", "b200"),
        ("NVIDIA-A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA-A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA-A100-PCIE-40GB", "a100-40gb-pcie"),
        ("NVIDIA-A100-80GB-PCIe", "a100-80gb-pcie"),
        ("NVIDIA-L40S", "l40s"),
        ("NVIDIA-L4", "l4"),
        ("NVIDIA-A10G", "a10g"),
        ("NVIDIA-A10", "a10"),
        ("Tesla-T4", "t4"),
        ("Tesla-T4-SHARED", "t4"),
        ("Tesla-V100-SXM2-16GB", "v100"),
        ("Tesla-V100-SXM2-32GB", "v100-32gb"),
        ("NVIDIA-A100-SXM-80GB", "a100-80gb"),
    ],
)
def test_gfd_product_labels(label: str, key: str) -> None:
    hw = hardware_for_gfd_product(label)
    assert hw is not None and hw.name == key


@pytest.mark.parametrize(
    "label",
    [
        "NVIDIA-H100-NVL",  # 94 GB variant: not in the catalog, must not map to SXM or PCIe
        "NVIDIA-H200-NVL",
        "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",  # a MIG slice is not the whole GPU
        "Tesla-V100-PCIE-16GB",
        "NVIDIA-GH200-480GB",
        "NVIDIA-L40",
        "",
    ],
)
def test_gfd_labels_without_a_safe_match(label: str) -> None:
    assert hardware_for_gfd_product(label) is None


def test_hardware_rows() -> None:
    rows = hardware_catalog.list_rows()
    assert {r["name"] for r in rows} == set(HARDWARE)
    h100 = next(r for r in rows if r["name"] == "h100-sxm")
    assert h100["bf16_tflops"] == 989.4 and h100["memory_gb"] == 80.0


# ---- custom hardware YAML ----
def test_yaml_with_human_units() -> None:
    (hw,) = load_hardware_yaml(
        """
hardware:
  - name: my-accel
    kind: accelerator
    memory: 96GiB
    bandwidth: 4TB/s
    peakTflops: {bf16: 1000, fp8: "2PFLOPS"}
    intraNodeBandwidth: 400GB/s
    networkBandwidth: 400Gb/s
    power: 800W
    pricePerHour: 3.5
    gfdProducts: NVIDIA-Foo
"""
    )
    assert hw.name == "my-accel" and hw.kind is DeviceKind.ACCELERATOR
    assert hw.memory_bytes == 96 * 2**30 and hw.memory_bandwidth == 4e12
    assert hw.peak_flops == {"bf16": 1e15, "fp8": 2e15}
    assert hw.intra_node_bandwidth == 400e9 and hw.network_bandwidth == 50e9
    assert hw.power_watts == 800 and hw.price_per_hour == 3.5 and hw.gfd_products == ("NVIDIA-Foo",)
    assert hw.price_source == "user-provided"


def test_yaml_based_on_catalog_entry(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text("- name: cheap-h100\n  basedOn: h100_sxm\n  price_per_hour: 2.0\n  memory: 80GB\n")
    (hw,) = load_hardware_yaml(path)
    base = HARDWARE["h100-sxm"]
    assert hw.name == "cheap-h100" and hw.price_per_hour == 2.0
    assert hw.peak_flops == base.peak_flops and hw.memory_bandwidth == base.memory_bandwidth
    assert load_hardware_yaml(str(path))[0] == hw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: x\nmemory: 80XB\nbandwidth: 1TB/s\npeakTflops: {bf16: 1}\npower: 1",
            r"hardware\[0\]\.memory: cannot read '80XB'",
        ),
        (
            "name: x\nmemory: 80GB\nbandwidth: fast\npeakTflops: {bf16: 1}\npower: 1",
            r"hardware\[0\]\.bandwidth: cannot read",
        ),
        ("name: x\nmemroy: 80GB", r"hardware\[0\]\.memroy: unknown field"),
        ("name: x\nmemory: 80GB", r"hardware\[0\]: missing fields bandwidth, peakTflops, power"),
        ("- name: x\n  basedOn: h999", r"hardware\[0\]\.basedOn: unknown hardware 'h999'"),
        (
            "name: x\nmemory: 8GB\nbandwidth: 1TB/s\npeakTflops: {bf15: 1}\npower: 1",
            r"peakTflops\.bf15: unknown compute class",
        ),
        (
            "name: x\nmemory: -8\nbandwidth: 1TB/s\npeakTflops: {bf16: 1}\npower: 1",
            r"hardware\[0\]: memory_bytes",
        ),
        ("a: [1,", r"malformed YAML at line"),
        ("42", r"expected a hardware entry"),
    ],
)
def test_yaml_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_hardware_yaml(text)


# ---- agents ----
def test_agent_profiles_present_and_sourced() -> None:
    assert {"chatbot", "coding", "web-use", "computer-use", "code-completion", "coding-long"} <= set(AGENTS)
    for a in AGENTS.values():
        assert a.source


def test_chatbot_matches_azure_trace() -> None:
    chat = get_agent("chatbot")
    assert (chat.prompt_tokens, chat.output_tokens, chat.turns_per_task) == (1155, 211, 1)
    assert chat.final_context_tokens == 1155 + 211


def test_coding_matches_swe_effi_totals() -> None:
    coding = get_agent("coding")
    turns = coding.turns_per_task
    total_input = sum(coding.context_at_turn(t) for t in range(1, turns + 1))
    assert total_input == pytest.approx(193_749, rel=0.01)
    assert coding.output_tokens * turns == pytest.approx(3_240, rel=0.01)
    assert total_input / turns == pytest.approx(6_653, rel=0.01)
    assert coding.final_context_tokens > 1.5 * total_input / turns  # snowballing


def test_coding_long_reaches_the_papers_300k() -> None:
    assert get_agent("coding-long").final_context_tokens == pytest.approx(300_000, rel=0.01)


def test_agents_prefill_far_more_than_chat() -> None:
    rows = {r["name"]: r for r in agent_catalog.list_rows()}

    def ratio(name: str) -> float:
        return float(rows[name]["input_tokens_per_task"]) / float(rows[name]["output_tokens_per_task"])

    assert ratio("chatbot") == pytest.approx(1155 / 211)
    for agent in ("coding", "web-use", "computer-use", "coding-long"):
        assert ratio(agent) > 10 * ratio("chatbot")
    for agent in ("web-use", "computer-use"):
        assert 20 <= get_agent(agent).turns_per_task <= 30


def test_get_agent_names() -> None:
    assert get_agent("Web_Use") is AGENTS["web-use"]
    assert get_agent("chat") is AGENTS["chatbot"]
    with pytest.raises(UnknownAgentError, match="unknown agent profile 'robot'") as info:
        get_agent("robot")
    assert isinstance(info.value, KeyError)


def test_apply_overrides() -> None:
    coding = get_agent("coding")
    changed = apply_overrides(coding, {"turns_per_task": 40, "initialContextTokens": 8000})
    assert (changed.turns_per_task, changed.initial_context_tokens) == (40, 8000)
    assert changed.output_tokens == coding.output_tokens
    assert coding.turns_per_task == 29  # the catalog entry is untouched


def test_apply_overrides_rejects_unknown_and_invalid() -> None:
    with pytest.raises(ValueError, match="agent override 'turns': unknown field"):
        apply_overrides(get_agent("chatbot"), {"turns": 3})
    with pytest.raises(ValueError, match="output_tokens"):
        apply_overrides(get_agent("chatbot"), {"output_tokens": 0})
