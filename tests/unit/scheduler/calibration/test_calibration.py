"""Calibration: deterministic fit, the calibrated table, physical floors, consistency with the roofline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hetsched.scheduler.calibration import design, fit
from hetsched.scheduler.calibration.cli import fitted_document, lookup_for, write_fitted
from hetsched.scheduler.calibration.dataset import Plan, predict, read_measurements, resolve_all
from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.engines import engine_of_backend
from hetsched.scheduler.estimator import efficiency
from hetsched.scheduler.estimator.cost import (
    Phase,
    Precisions,
    estimate_phase,
    matmul_operational_intensity,
)
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.roofline import evaluate
from hetsched.scheduler.estimator.serving import (
    Parallel,
    RequestShape,
    ServingPrediction,
    closed_loop_response,
    predict_colocated,
    predict_disaggregated,
)
from hetsched.scheduler.estimator.steps import EfficiencyTerms, floor_seconds, step_seconds, step_terms
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REPO

DATA = REPO / "benchmarks" / "data" / "serving-measurements.csv"
CPU_DATA = REPO / "benchmarks" / "data" / "cpu" / "measurements.csv"
CPU_HARDWARE = REPO / "benchmarks" / "data" / "cpu" / "hardware.yaml"
FP8 = Precisions(weights=Precision.FP8, kv_cache=Precision.FP8, activations=Precision.FP8)


@pytest.fixture(scope="module")
def plans() -> list[Plan]:
    return [p for p in resolve_all(read_measurements(DATA)) if isinstance(p, Plan)]


@pytest.fixture(scope="module")
def small(plans: list[Plan]) -> design.Dataset:
    """Every 12th predictable row: both families, both serving modes, a second to fit."""
    return design.build_dataset(plans[::12])


# ---- the fit ---------------------------------------------------------------------------------------


def test_vendored_data_is_the_reference_file() -> None:
    rows = read_measurements(DATA)
    assert len(rows) == 2117
    assert {r.mode for r in rows} == {"agg", "disagg"}


def test_fit_is_deterministic(small: design.Dataset) -> None:
    a = fit.fit(small)
    b = fit.fit(small)
    assert a.families == b.families == ("nvidia-blackwell", "nvidia-hopper")
    assert np.array_equal(a.params, b.params)
    # Shared parameters are equal across families; the interconnect ones may differ.
    for name in design.PARAMETERS:
        column = a.params[:, design.PARAMETERS.index(name)]
        if name not in fit.PER_FAMILY:
            assert np.all(column == column[0])
    assert np.all(a.params >= design.LOWER) and np.all(a.params <= design.UPPER)
    # Parameters the fit holds (FIT_FIXED) keep their value in every family.
    for name, value in fit.FIT_FIXED.items():
        assert np.all(a.params[:, design.PARAMETERS.index(name)] == value)


def test_fit_improves_on_the_start_and_on_ideal(small: design.Dataset) -> None:
    result = fit.fit(small)
    every = np.ones(len(small.plans), dtype=bool)

    def median_tpot_error(params: np.ndarray) -> float:
        _, tpot = design.predict_all(small, params)
        return float(np.median(np.abs(tpot[every] / small.tpot[every] - 1)))

    start = np.tile(design.START, (len(result.families), 1))
    ideal = np.tile(design.NEUTRAL, (len(result.families), 1))
    fitted = median_tpot_error(result.params)
    assert fitted < median_tpot_error(start)
    assert fitted < median_tpot_error(ideal)
    assert fitted < 0.3


def test_vectorised_fit_predictions_equal_the_public_serving_api(small: design.Dataset) -> None:
    result = fit.fit(small)
    ttft, tpot = fit.predict_with(small, result)
    for i in range(0, len(small.plans), 7):
        plan = small.plans[i]
        engine = engine_of_backend(plan.row.backend)  # each row with its serving engine's terms
        pred = predict(plan, lambda hw, e=engine: result.efficiency(efficiency.family_of(hw), "test", e))
        assert pred.tpot_seconds == pytest.approx(tpot[i], rel=1e-9)
        assert pred.ttft_seconds == pytest.approx(ttft[i], rel=1e-9)


def test_fit_holds_the_fixed_parameters_and_frees_them_on_request(small: design.Dataset) -> None:
    column = design.PARAMETERS.index("layer_overhead_seconds")
    held = fit.fit(small, fixed={**fit.FIT_FIXED, "layer_overhead_seconds": 0.0})
    assert np.all(held.params[:, column] == 0.0)
    free = fit.fit(small, fixed={})  # nothing held: the per-step cost is fitted too
    assert np.all(free.params >= design.LOWER) and np.all(free.params <= design.UPPER)
    with pytest.raises(ValueError, match="unknown parameter"):
        fit.fit(small, fixed={"no_such_term": 1.0})


def test_relative_residuals_trade_the_bias_for_the_reported_error(small: design.Dataset) -> None:
    """The ``--residual`` ablation: fitting predicted/measured − 1 caps an optimistic row's error at
    1, so the fit leans fast; the default log error is symmetric and keeps the bias near 0."""
    every = np.ones(len(small.plans), dtype=bool)

    def signed_median_tpot(result: fit.FitResult) -> float:
        _, tpot = fit.predict_with(small, result)
        return float(np.median(tpot[every] / small.tpot[every] - 1))

    log = fit.fit(small)
    relative = fit.fit(small, residual="relative")
    assert not np.array_equal(log.params, relative.params)
    assert signed_median_tpot(relative) < signed_median_tpot(log)
    assert abs(signed_median_tpot(log)) < 0.05
    assert fit.fit(small, residual="log").params.tolist() == log.params.tolist()
    with pytest.raises(ValueError, match="residual"):
        fit.fit(small, residual="squared")


def cpu_dataset() -> design.Dataset:
    lookup = lookup_for(CPU_DATA, CPU_HARDWARE)
    return design.build_dataset(
        [p for p in resolve_all(read_measurements(CPU_DATA), lookup) if isinstance(p, Plan)]
    )


def test_committed_table_is_what_make_calibrate_writes(plans: list[Plan]) -> None:
    """``estimator/data/efficiency.json`` holds the fit of the vendored data (GPU families, generic,
    and the CPU family of the CPU campaign), to the digits it is written with."""
    ds = design.build_dataset(plans)
    family_fit = fit.fit(ds)
    generic_fit = fit.fit(ds, shared=True)
    cpu_fit = fit.fit_cpu(cpu_dataset())
    entries = [(family_fit, family) for family in family_fit.families] + [(generic_fit, "generic")]
    assert {name for _, name in entries} | {"cpu"} == set(efficiency.FAMILY_EFFICIENCY)
    fitted_cpu = cpu_fit.efficiency("generic", "test")
    for parameter in design.PARAMETERS:
        assert getattr(efficiency.FAMILY_EFFICIENCY["cpu"], parameter) == pytest.approx(
            getattr(fitted_cpu, parameter), rel=1e-3
        ), parameter
    for result, name in entries:
        fitted = result.efficiency(name, "test")
        committed = efficiency.FAMILY_EFFICIENCY[name]
        for parameter in design.PARAMETERS:
            assert getattr(committed, parameter) == pytest.approx(getattr(fitted, parameter), rel=1e-3), (
                name,
                parameter,
            )
    for engine in family_fit.engines:
        values = family_fit.engine_values(engine)
        assert efficiency.ENGINE_EFFICIENCY[engine] == pytest.approx(values, rel=1e-3)


def test_cross_validation_predicts_every_group(small: design.Dataset) -> None:
    cv = fit.cross_validate(small)
    logo = cv["leave_one_group_out"]
    assert set(logo["groups"]) == set(small.groups)
    assert logo["pooled"]["all"]["rows"] == len(small.plans)
    assert set(cv["leave_one_family_out"]) == set(small.families)


def test_identical_measurements_count_once(plans: list[Plan]) -> None:
    ds = design.build_dataset([p for p in plans if p.model_key in ("deepseek-v3", "deepseek-r1")][:300])
    # DeepSeek-V3 and -R1 rows are the same runs listed twice: same architecture, one group.
    assert all(g.startswith("deepseek-r1=deepseek-v3") for g in ds.groups)
    assert ds.weight.min() < 1.0


def test_write_and_load_the_fitted_table(small: design.Dataset, tmp_path: Path) -> None:
    """What ``hetsched calibrate --write`` writes is what the estimator loads."""
    family_fit = fit.fit(small)
    generic_fit = fit.fit(small, shared=True)
    doc = fitted_document(family_fit, generic_fit, {"rows": 3}, "data.csv", "2026-01-01")
    target = tmp_path / "efficiency.json"
    write_fitted(doc, target)
    loaded = efficiency.load_fitted(target)
    table = loaded.families
    assert isinstance(table, dict)
    assert set(table) == {"nvidia-blackwell", "nvidia-hopper", "generic"}
    hopper = table["nvidia-hopper"]
    assert isinstance(hopper, Efficiency)
    assert hopper.bandwidth == pytest.approx(family_fit.params[1][0], rel=1e-3)
    assert loaded.fit_date == "2026-01-01"
    assert loaded.statistics == {"rows": 3} and loaded.source == "data.csv"
    engines = loaded.engines
    assert isinstance(engines, dict) and set(engines) == set(family_fit.engines)
    for engine, values in engines.items():
        for name, value in family_fit.engine_values(engine).items():
            assert values[name] == pytest.approx(value, rel=1e-3)


def test_the_committed_table_loads_to_the_module_constants() -> None:
    """``efficiency.json`` is read once, into the tables the estimator uses."""
    loaded = efficiency.load_fitted()
    assert loaded.families == efficiency.FAMILY_EFFICIENCY
    assert loaded.engines == efficiency.ENGINE_EFFICIENCY
    assert loaded.fit_date == efficiency.FIT_DATE and loaded.source == efficiency.FIT_SOURCE
    assert loaded.statistics == efficiency.FIT_STATISTICS and loaded.statistics["rows"] > 0


# ---- the calibrated table and the hook -----------------------------------------------------------


def test_calibrated_table_per_family_with_generic_fallback() -> None:
    assert efficiency.family_of("h200") == "nvidia-hopper"
    assert efficiency.family_of("h100-sxm") == "nvidia-hopper"
    assert efficiency.family_of("b200") == "nvidia-blackwell"
    assert efficiency.family_of("a100-80gb") == "nvidia-ampere"
    assert efficiency.family_of("l40s") == "nvidia-ada"
    assert efficiency.family_of("xeon-6980p") == "cpu"
    assert efficiency.family_of("mystery") == "generic"
    hopper = efficiency.efficiency_for(get_hardware("h200"))
    assert hopper == efficiency.FAMILY_EFFICIENCY["nvidia-hopper"]
    assert 0 < hopper.bandwidth <= 1 and 0 < hopper.compute <= 1 and hopper.layer_overhead_seconds > 0
    assert 0 < hopper.experts_bandwidth <= 1 and 0 < hopper.experts_compute <= 1
    ampere = efficiency.efficiency_for(get_hardware("a100-80gb"))
    assert "extrapolated to nvidia-ampere" in ampere.fitted_by
    assert ampere.bandwidth == efficiency.FAMILY_EFFICIENCY["generic"].bandwidth


def test_device_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    special = Efficiency(bandwidth=0.5, fitted_by="test override")
    monkeypatch.setitem(efficiency.DEVICE_OVERRIDES, "h100-sxm", special)
    assert efficiency.efficiency_for("h100-sxm") is special
    assert efficiency.efficiency_for("h200") == efficiency.FAMILY_EFFICIENCY["nvidia-hopper"]


def test_calibrate_hook_and_ideal_still_pure_roofline() -> None:
    raw = get_hardware("h200")
    hw = efficiency.calibrate(raw)
    assert hw.efficiency == efficiency.efficiency_for(raw)
    assert hw.name == raw.name and hw.memory_bandwidth == raw.memory_bandwidth
    model = get_model("llama-3.1-8b")
    length = 1024
    cost = estimate_phase(
        model, Phase.PREFILL, batch=1, new_tokens=length, context_tokens=0, precisions=Precisions()
    )
    # The estimator's OI is untouched by calibration: the paper's 2mdL / (md + dL + mL), in FLOP/B.
    qkv = next(op for op in cost.operators if op.name == "qkv_proj")
    m, d = model.q_width + 2 * model.num_kv_heads * model.head_dim, model.hidden_size
    assert qkv.operational_intensity == pytest.approx(
        matmul_operational_intensity(m, d, length, 2.0), rel=1e-12
    )
    # IDEAL on the calibrated device is the pure roofline; the calibrated efficiency is slower.
    ideal = evaluate(cost, hw, efficiency=IDEAL)
    pure = sum(
        max(op.flops / hw.peak_for("bf16"), op.dram_bytes / hw.memory_bandwidth) for op in cost.operators
    )
    assert ideal.step_seconds == pytest.approx(pure, rel=1e-12)
    assert ideal.attainable_flops == pytest.approx(
        min(hw.peak_for("bf16"), cost.operational_intensity * 4.8e12)
    )
    assert evaluate(cost, hw).step_seconds > ideal.step_seconds


# ---- the serving model: consistency with the roofline, physical floors ---------------------------


NVFP4 = Precisions(weights=Precision.NVFP4, kv_cache=Precision.FP8, activations=Precision.NVFP4)
#: Every term away from its neutral value (and different from the calibrated table).
HARSH = Efficiency(
    bandwidth=0.7,
    compute=0.6,
    step_overhead_seconds=0.4e-3,
    collective_latency_seconds=9e-6,
    link_efficiency=0.5,
    layer_overhead_seconds=40e-6,
    experts_bandwidth=0.8,
    experts_compute=0.3,
    request_overhead_seconds=0.05,
    overlap=0.4,
    fitted_by="test",
)


@pytest.mark.parametrize(
    ("model_name", "prec", "tp", "batch", "phase"),
    [
        ("llama-3.1-70b", FP8, 1, 1, Phase.DECODE),
        ("llama-3.1-70b", FP8, 4, 64, Phase.DECODE),
        ("llama-3.1-70b", FP8, 8, 1, Phase.PREFILL),
        ("qwen3-235b-a22b", FP8, 8, 32, Phase.DECODE),
        ("deepseek-v3", NVFP4, 8, 2, Phase.PREFILL),
        ("gpt-oss-120b", NVFP4, 2, 16, Phase.DECODE),
    ],
)
@pytest.mark.parametrize("source", ["calibrated", "harsh"])
def test_step_terms_reproduce_roofline_evaluate(
    model_name: str, prec: Precisions, tp: int, batch: int, phase: Phase, source: str
) -> None:
    model = get_model(model_name)
    hw = get_hardware("b200")
    eff = efficiency.efficiency_for(hw) if source == "calibrated" else HARSH
    new = 1 if phase is Phase.DECODE else 2048
    terms, cost = step_terms(
        model, hw, phase, batch=batch, new_tokens=new, context_tokens=3000, precisions=prec, tp=tp
    )
    expected = evaluate(cost, hw, compute_class=prec.compute_class, efficiency=eff).step_seconds
    assert float(step_seconds(terms, EfficiencyTerms.of(eff))) == pytest.approx(expected, rel=1e-12)


# ---- the fitted terms, one at a time ---------------------------------------------------------------


def test_efficiency_defaults_are_the_pure_roofline() -> None:
    assert Efficiency() == IDEAL
    assert IDEAL.layer_overhead_seconds == 0 and IDEAL.request_overhead_seconds == 0
    assert IDEAL.experts_bandwidth == 1 and IDEAL.experts_compute == 1
    terms = EfficiencyTerms.of(IDEAL)
    assert terms == EfficiencyTerms(1.0, 1.0, 0.0, 0.0, 1.0)


def test_overlap_turns_each_operators_max_into_a_partial_sum() -> None:
    """``overlap`` 1 is the roofline's max of compute and memory per operator, 0 their sum."""
    model, hw = get_model("llama-3.1-8b"), get_hardware("epyc-9654")
    bf16 = Precisions(weights=Precision.BF16, kv_cache=Precision.BF16, activations=Precision.BF16)
    cost = estimate_phase(model, Phase.DECODE, batch=8, new_tokens=1, context_tokens=500, precisions=bf16)
    sides = [
        (op.flops / hw.peak_for(op.compute_class or "bf16"), op.dram_bytes / hw.memory_bandwidth)
        for op in cost.operators
    ]
    assert any(c > 0 and m > 0 for c, m in sides)
    for overlap in (1.0, 0.5, 0.0):
        perf = evaluate(cost, hw, compute_class="bf16", efficiency=Efficiency(overlap=overlap))
        expected = sum(max(c, m) + (1 - overlap) * min(c, m) for c, m in sides)
        assert perf.step_seconds == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="overlap"):
        Efficiency(overlap=1.5)


def test_layer_overhead_scales_with_the_layer_count() -> None:
    hw = get_hardware("h200")
    t_layer = 50e-6
    eff = Efficiency(layer_overhead_seconds=t_layer)
    for name in ("llama-3.1-8b", "llama-3.1-70b", "deepseek-v3"):
        model = get_model(name)
        cost = estimate_phase(model, Phase.DECODE, batch=8, new_tokens=1, context_tokens=500, precisions=FP8)
        ideal = evaluate(cost, hw, compute_class="fp8", efficiency=IDEAL)
        with_layers = evaluate(cost, hw, compute_class="fp8", efficiency=eff)
        assert with_layers.overhead_seconds == pytest.approx(model.num_layers * t_layer, rel=1e-12)
        assert with_layers.step_seconds - ideal.step_seconds == pytest.approx(model.num_layers * t_layer)
    # Fixed per step and per layer add up.
    both = Efficiency(layer_overhead_seconds=t_layer, step_overhead_seconds=1e-3)
    model = get_model("llama-3.1-70b")
    cost = estimate_phase(model, Phase.DECODE, batch=1, new_tokens=1, context_tokens=0, precisions=FP8)
    assert evaluate(cost, hw, efficiency=both).overhead_seconds == pytest.approx(1e-3 + 80 * t_layer)


@pytest.mark.parametrize(("factor", "field"), [(0.5, "experts_bandwidth"), (0.25, "experts_compute")])
def test_experts_factors_touch_only_the_routed_experts(factor: float, field: str) -> None:
    hw = get_hardware("h200")
    changed = Efficiency(**{field: factor})
    # A dense model has no routed experts: no change at all.
    dense_cost = estimate_phase(
        get_model("llama-3.1-70b"), Phase.DECODE, batch=8, new_tokens=1, context_tokens=500, precisions=FP8
    )
    assert (
        evaluate(dense_cost, hw, efficiency=changed).step_seconds
        == evaluate(dense_cost, hw, efficiency=IDEAL).step_seconds
    )
    # An MoE model: decode (experts bandwidth-bound) for the bandwidth factor, a long prefill
    # (experts compute-bound) for the compute factor; every other operator is priced as before.
    model = get_model("qwen3-235b-a22b")
    phase, new = (Phase.DECODE, 1) if field == "experts_bandwidth" else (Phase.PREFILL, 8192)
    cost = estimate_phase(model, phase, batch=16, new_tokens=new, context_tokens=1000, precisions=FP8)
    peak = hw.peak_for("fp8")

    def op_time(op_name: str, flops_scale: float, bytes_scale: float) -> float:
        op = next(o for o in cost.operators if o.name == op_name)
        p = hw.peak_for(op.compute_class) if op.compute_class else peak
        return max(op.flops / (p * flops_scale), op.dram_bytes / (hw.memory_bandwidth * bytes_scale))

    f_scale, b_scale = (1.0, factor) if field == "experts_bandwidth" else (factor, 1.0)
    delta = op_time("experts", f_scale, b_scale) - op_time("experts", 1.0, 1.0)
    assert delta > 0
    diff = (
        evaluate(cost, hw, compute_class="fp8", efficiency=changed).step_seconds
        - evaluate(cost, hw, compute_class="fp8", efficiency=IDEAL).step_seconds
    )
    assert diff == pytest.approx(delta, rel=1e-9)


def test_request_overhead_adds_to_ttft_only() -> None:
    model = get_model("llama-3.1-70b")
    hw = get_hardware("h200")
    base, plus = HARSH.model_copy(update={"request_overhead_seconds": 0.0}), HARSH

    def colocated(eff: Efficiency) -> ServingPrediction:
        return predict_colocated(
            model,
            hw,
            RequestShape(2048, 0, 256, FP8),
            Parallel(tp=4),
            concurrency=16,
            efficiency=eff,
            warmup_fraction=0.1,
        )

    def disaggregated(eff: Efficiency, concurrency: int | None) -> ServingPrediction:
        return predict_disaggregated(
            model,
            hw,
            hw,
            RequestShape(2048, 0, 256, FP8),
            prefill=Parallel(tp=4),
            decode=Parallel(tp=4),
            prefill_batch=1,
            decode_batch=32,
            kv_transfer_bandwidth=50e9,
            prefill_efficiency=eff,
            decode_efficiency=eff,
            concurrency=concurrency,
        )

    pairs = [(colocated(base), colocated(plus))]
    pairs += [(disaggregated(base, c), disaggregated(plus, c)) for c in (None, 64)]
    for a, b in pairs:
        assert b.ttft_seconds - a.ttft_seconds == pytest.approx(plus.request_overhead_seconds, rel=1e-9)
        assert b.tpot_seconds == a.tpot_seconds


def test_closed_loop_response_limits() -> None:
    s, z = 0.2, 50.0
    assert float(closed_loop_response(1, s, z, 1)) == pytest.approx(s, rel=1e-12)
    assert float(closed_loop_response(2000, s, z, 1)) == pytest.approx(2000 * s - z, rel=1e-3)
    assert float(closed_loop_response(1, s, z, 4)) == pytest.approx(s, rel=1e-9)
    many = [float(closed_loop_response(n, s, z, 2)) for n in (1, 10, 100, 400, 1000)]
    assert many == sorted(many)
    assert many[-1] == pytest.approx(1000 * s / 2 - z, rel=0.02)


CASES = [
    ("llama-3.1-8b", "h200", Precisions(), 1, 1),
    ("llama-3.1-70b", "b200", FP8, 4, 1),
    ("deepseek-v3", "h200", FP8, 8, 1),
    ("deepseek-v3", "b200", FP8, 1, 8),
    ("qwen3-235b-a22b", "h200", FP8, 4, 1),
    ("gpt-oss-120b", "a100-80gb", Precisions(weights=Precision.BF16, experts=Precision.MXFP4), 2, 1),
    ("llama-3.1-8b", "l40s", Precisions(), 1, 1),
]


@pytest.mark.parametrize(("model_name", "hw_name", "prec", "tp", "dp"), CASES)
@pytest.mark.parametrize("ideal", [False, True])
def test_predictions_never_below_the_physical_floor(
    model_name: str, hw_name: str, prec: Precisions, tp: int, dp: int, ideal: bool
) -> None:
    model = get_model(model_name)
    hw = efficiency.calibrate(get_hardware(hw_name))
    eff = IDEAL if ideal else None
    for batch, prompt, out in ((1, 128, 64), (16, 4096, 512), (256, 8192, 1024)):
        pred = predict_colocated(
            model,
            hw,
            RequestShape(prompt, 0, out, prec),
            Parallel(tp=tp, dp=dp),
            concurrency=batch,
            efficiency=eff,
            warmup_fraction=0.1,
        )
        if not pred.fits:
            assert math.isinf(pred.tpot_seconds)
            continue
        dec, _ = step_terms(
            model,
            hw,
            Phase.DECODE,
            batch=pred.running_batch,
            new_tokens=1,
            context_tokens=prompt + out // 2,
            precisions=prec,
            tp=tp,
            dp=dp,
        )
        pre, _ = step_terms(
            model,
            hw,
            Phase.PREFILL,
            batch=1,
            new_tokens=prompt,
            context_tokens=0,
            precisions=prec,
            tp=tp,
            dp=dp,
        )
        # Bytes at peak bandwidth, FLOPs at peak FLOP/s: no prediction beats them.
        assert pred.tpot_seconds >= float(floor_seconds(dec)) * (1 - 1e-12)
        assert pred.ttft_seconds >= float(floor_seconds(pre)) * (1 - 1e-12)
        assert pred.decode_step_seconds >= float(floor_seconds(dec)) * (1 - 1e-12)
        dis = predict_disaggregated(
            model,
            hw,
            hw,
            RequestShape(prompt, 0, out, prec),
            prefill=Parallel(tp=tp, dp=dp),
            decode=Parallel(tp=tp, dp=dp),
            prefill_batch=1,
            decode_batch=batch,
            kv_transfer_bandwidth=50e9,
            prefill_efficiency=eff,
            decode_efficiency=eff,
            concurrency=batch,
        )
        dec_d, _ = step_terms(
            model,
            hw,
            Phase.DECODE,
            batch=max(1, math.ceil(batch / dp)),
            new_tokens=1,
            context_tokens=prompt + out // 2,
            precisions=prec,
            tp=tp,
            dp=dp,
        )
        assert dis.tpot_seconds >= float(floor_seconds(dec_d)) * (1 - 1e-12)
        assert dis.ttft_seconds >= float(floor_seconds(pre)) * (1 - 1e-12) + dis.kv_transfer_seconds


def test_open_loop_disaggregated_is_prefill_plus_kv_transfer() -> None:
    """Without a concurrency (the planner's open-loop use), TTFT = prefill step + KV transfer + the
    per-request overhead and TPOT = the decode step, exactly as ``analyze_phase`` evaluates them."""
    model = get_model("llama-3.1-70b")
    hw = efficiency.calibrate(get_hardware("h200"))
    pred = predict_disaggregated(
        model,
        hw,
        hw,
        RequestShape(4096, 1024, 512, FP8),
        prefill=Parallel(tp=4),
        decode=Parallel(tp=8),
        prefill_batch=2,
        decode_batch=32,
        kv_transfer_bandwidth=100e9,
    )
    assert pred.ttft_seconds == pytest.approx(
        pred.prefill.performance.step_seconds
        + pred.kv_transfer_seconds
        + hw.efficiency.request_overhead_seconds
    )
    assert pred.tpot_seconds == pytest.approx(pred.decode.performance.step_seconds)
    assert pred.kv_transfer_seconds == pytest.approx(pred.prefill.cost.kv_bytes_per_request / 100e9)


def test_colocated_queueing_grows_with_concurrency() -> None:
    model = get_model("llama-3.1-70b")
    hw = efficiency.calibrate(get_hardware("h200"))
    preds = [
        predict_colocated(model, hw, RequestShape(8192, 0, 1024, FP8), Parallel(tp=8), concurrency=b)
        for b in (1, 8, 64, 256)
    ]
    assert [p.tpot_seconds for p in preds] == sorted(p.tpot_seconds for p in preds)
    assert [p.ttft_seconds for p in preds] == sorted(p.ttft_seconds for p in preds)
    assert preds[0].ttft_seconds == pytest.approx(
        preds[0].prefill_seconds + preds[0].decode_step_seconds + hw.efficiency.request_overhead_seconds
    )
    # Beyond the KV capacity, requests wait for a slot: the running batch is capped.
    huge = predict_colocated(model, hw, RequestShape(8192, 0, 1024, FP8), Parallel(tp=8), concurrency=5000)
    assert huge.running_batch == huge.max_running_batch < 5000
    assert huge.ttft_seconds > 10 * preds[-1].ttft_seconds


@settings(max_examples=25, deadline=None)
@given(
    fractions=st.tuples(*[st.floats(0.05, 1.0)] * 5),
    costs=st.tuples(st.floats(0, 5e-3), st.floats(0, 1e-4), st.floats(0, 2e-4), st.floats(0, 0.2)),
    model_name=st.sampled_from(["llama-3.1-70b", "qwen3-235b-a22b", "deepseek-v3"]),
    batch=st.integers(1, 256),
)
def test_no_efficiency_predicts_below_the_physical_floor(
    fractions: tuple[float, ...], costs: tuple[float, ...], model_name: str, batch: int
) -> None:
    """Whatever the (valid) efficiency, TPOT and TTFT stay above bytes/peak bandwidth and FLOPs/peak."""
    bw, comp, link, experts_bw, experts_c = fractions
    step, coll, layer, request = costs
    eff = Efficiency(
        bandwidth=bw,
        compute=comp,
        link_efficiency=link,
        experts_bandwidth=experts_bw,
        experts_compute=experts_c,
        step_overhead_seconds=step,
        collective_latency_seconds=coll,
        layer_overhead_seconds=layer,
        request_overhead_seconds=request,
    )
    model = get_model(model_name)
    hw = get_hardware("b200")
    pred = predict_colocated(
        model,
        hw,
        RequestShape(2048, 0, 512, NVFP4),
        Parallel(tp=8),
        concurrency=batch,
        efficiency=eff,
        warmup_fraction=0.1,
    )
    assert pred.fits
    dec, _ = step_terms(
        model,
        hw,
        Phase.DECODE,
        batch=pred.running_batch,
        new_tokens=1,
        precisions=NVFP4,
        tp=8,
        context_tokens=2048 + 256,
    )
    pre, _ = step_terms(
        model, hw, Phase.PREFILL, batch=1, new_tokens=2048, precisions=NVFP4, tp=8, context_tokens=0
    )
    assert pred.tpot_seconds >= float(floor_seconds(dec)) * (1 - 1e-12)
    assert pred.ttft_seconds >= float(floor_seconds(pre)) + request - 1e-12
