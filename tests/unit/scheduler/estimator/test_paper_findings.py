"""The paper's qualitative findings, reproduced from the catalogs and the estimator."""

from __future__ import annotations

import json

import pytest
from hetsched.operator.cli import main
from hetsched.scheduler.catalog.agent_catalog import get_agent
from hetsched.scheduler.catalog.hardware import IDEAL
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.estimator.roofline import Regime

AGENTS = ("chatbot", "coding", "web-use", "computer-use")


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("hardware", ["h100-sxm", "b200", "a100-80gb", "l40s"])
def test_decode_is_memory_bound(agent: str, hardware: str) -> None:
    model = get_model("llama-3.1-8b")
    scenario = Scenario.from_agent(get_agent(agent), batch=1)
    result = analyze(model, get_hardware(hardware), scenario, efficiency=IDEAL)
    assert result.decode.performance.regime in (Regime.BANDWIDTH_BOUND, Regime.CAPACITY_BOUND)
    assert result.decode.cost.operational_intensity < result.decode.performance.ridge_point / 10


@pytest.mark.parametrize("agent", ["chatbot", "web-use", "computer-use"])
@pytest.mark.parametrize("hardware", ["h100-sxm", "b200", "a100-80gb", "l40s"])
def test_prefill_of_a_full_prompt_is_compute_bound(agent: str, hardware: str) -> None:
    scenario = Scenario.from_agent(get_agent(agent), batch=1)
    result = analyze(get_model("llama-3.1-8b"), get_hardware(hardware), scenario, efficiency=IDEAL)
    assert result.prefill.performance.regime is Regime.COMPUTE_BOUND


def test_short_incremental_prefill_over_a_cached_prefix_is_not_compute_bound() -> None:
    # A coding turn adds ~200 tokens to a cached history: too few tokens to amortise the weights,
    # so even "prefill" sits below an H100's ridge point.
    scenario = Scenario.from_agent(get_agent("coding"), batch=1)
    assert scenario.prompt_tokens < 300 and scenario.cached_tokens > 5000
    result = analyze(get_model("llama-3.1-8b"), get_hardware("h100-sxm"), scenario, efficiency=IDEAL)
    assert result.prefill.performance.regime is Regime.BANDWIDTH_BOUND


def test_prefill_oi_far_above_decode_oi_for_every_agent() -> None:
    model = get_model("llama-3-70b")
    for agent in AGENTS:
        result = analyze(model, get_hardware("b200"), Scenario.from_agent(get_agent(agent)), efficiency=IDEAL)
        assert result.prefill.cost.operational_intensity > 50 * result.decode.cost.operational_intensity


def test_coding_agent_cf_on_llama3_70b_exceeds_one_b200_at_long_context() -> None:
    b200 = get_hardware("b200")
    model = get_model("llama-3-70b")
    long = analyze(model, b200, Scenario.from_agent(get_agent("coding"), context=300_000), efficiency=IDEAL)
    assert long.decode.cost.capacity_footprint_bytes > b200.memory_bytes
    assert long.decode.performance.regime is Regime.DOES_NOT_FIT
    # ...whereas a chatbot turn fits with room for a batch.
    chat = analyze(model, b200, Scenario.from_agent(get_agent("chatbot")), efficiency=IDEAL)
    assert chat.decode.cost.capacity_footprint_bytes < b200.memory_bytes
    assert chat.decode.performance.max_batch > 10


def test_long_context_decode_is_capacity_bound_on_tp8() -> None:
    # More cards are needed for the CF, but OI stays far below the ridge: both MFU and MBU are low.
    model = get_model("llama-3-70b")
    scenario = Scenario.from_agent(get_agent("coding"), batch=64, context=300_000)
    result = analyze(model, get_hardware("b200"), scenario, tp=8, efficiency=IDEAL)
    perf = result.decode.performance
    assert perf.regime is Regime.CAPACITY_BOUND
    assert perf.operating_batch == perf.max_batch < 64
    assert perf.ridge_batch is None or perf.ridge_batch > perf.max_batch
    # The step that runs is the one at B_max; CF stays per request at the requested batch.
    assert result.decode.cost.batch == perf.max_batch and result.decode.batch == 64
    cost = result.decode.cost
    assert (
        result.decode.capacity_footprint_bytes == cost.weight_resident_bytes / 64 + cost.kv_bytes_per_request
    )


@pytest.mark.parametrize("context", [1024, 8192, 32_768, 131_072, 1_000_000])
def test_mla_has_the_smallest_cf_of_the_three_attention_kinds(context: int) -> None:
    cf = {}
    for kind in ("mha", "gqa", "mla"):
        cost = estimate_phase(
            get_model(f"study-{kind}"),
            Phase.DECODE,
            batch=1,
            new_tokens=1,
            context_tokens=context,
            precisions=Precisions(),
        )
        cf[kind] = cost.kv_bytes_per_request
    assert cf["mla"] < cf["gqa"] < cf["mha"]


def test_moe_decode_oi_below_dense_and_cf_dominated_by_weights() -> None:
    dense = get_model("qwen3-32b")
    moe = get_model("qwen3-30b-a3b")
    # At batch 1 each reads about its active weights once (OI ≈ 1 for both); from a few requests on,
    # the batch's tokens touch ever more experts, so MoE OI falls far behind dense.
    one = estimate_phase(moe, Phase.DECODE, batch=1, new_tokens=1, context_tokens=4096)
    assert one.weight_bytes < 0.25 * one.weight_resident_bytes
    for batch in (4, 16, 64, 256):
        d = estimate_phase(dense, Phase.DECODE, batch=batch, new_tokens=1, context_tokens=4096)
        m = estimate_phase(moe, Phase.DECODE, batch=batch, new_tokens=1, context_tokens=4096)
        assert m.operational_intensity < 0.6 * d.operational_intensity


# ---- the CLI's stable JSON interface ---------------------------------------------------------------


def test_estimate_json_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "estimate",
            "--model",
            "deepseek-v3",
            "--hardware",
            "h200",
            "--tp",
            "8",
            "--batch",
            "16",
            "--context",
            "131072",
            "-o",
            "json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    model = get_model("deepseek-v3")
    assert doc["model"]["total_params"] == model.total_params
    assert doc["model"]["active_params"] == model.active_params
    assert doc["model"]["kv_bytes_per_token"] == 61 * (512 + 64) * 2
    for phase in ("prefill", "decode"):
        p = doc["phases"][phase]
        for key in (
            "flops",
            "dram_bytes",
            "operational_intensity",
            "capacity_footprint_bytes",
            "weight_bytes",
            "kv_cache_bytes",
            "regime",
            "step_seconds",
            "tokens_per_second",
        ):
            assert key in p, key
        assert p["operational_intensity"] == pytest.approx(p["flops"] / p["dram_bytes"])
    decode = doc["phases"]["decode"]
    # With --context, decode is at that context and CF is per request at batch --batch.
    assert decode["kv_cache_bytes"] == 61 * (512 + 64) * 2 * 131072
    assert decode["capacity_footprint_bytes"] == pytest.approx(
        decode["weight_resident_bytes"] / 16 + decode["kv_cache_bytes"]
    )


def test_estimate_table_and_catalog_listings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--model", "llama-3.1-8b", "--agent", "chatbot", "--hardware", "l4"]) == 0
    out = capsys.readouterr().out
    assert "regime" in out and "bandwidth-bound" in out
    for listing, expected in (
        ("models", "deepseek-v3"),
        ("hardware", "h100-sxm"),
        ("agents", "computer-use"),
    ):
        assert main([listing]) == 0
        assert expected in capsys.readouterr().out
    assert main(["models", "-o", "json"]) == 0
    assert any(row for row in json.loads(capsys.readouterr().out))


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["estimate", "--model", "no-such-model"], "no-such-model"),
        (["estimate", "--hardware", "no-such-gpu"], "no-such-gpu"),
        (["estimate", "--agent", "no-such-agent"], "no-such-agent"),
        (["estimate", "--kv-dtype", "fp7"], "--kv-dtype"),
        (["estimate", "--batch", "0"], "--batch"),
        (["estimate", "--model-config", "/nonexistent/config.json"], "config.json"),
    ],
)
def test_estimate_bad_input_names_the_field(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert field in capsys.readouterr().err
