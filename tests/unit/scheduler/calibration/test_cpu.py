"""CPUs: their own family and fit (never the GPU engines' terms), the transfer to catalog CPUs, the
CPU fit's determinism and leave-one-shape-out, and the GPU fit left as it was."""

from __future__ import annotations

import numpy as np
import pytest
from hetsched.scheduler.calibration import design, fit
from hetsched.scheduler.calibration.cli import calibrate, lookup_for
from hetsched.scheduler.calibration.dataset import Plan, predict, read_measurements, resolve_all
from hetsched.scheduler.catalog.hardware import DeviceKind, Efficiency
from hetsched.scheduler.catalog.hardware_catalog import get_hardware, load_hardware_yaml
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.estimator import efficiency
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.serving import Parallel, RequestShape, predict_colocated
from support import REPO

CPU_DIR = REPO / "benchmarks" / "data" / "cpu"
CPU_DATA = CPU_DIR / "measurements.csv"
CPU_HARDWARE = CPU_DIR / "hardware.yaml"
GPU_DATA = REPO / "benchmarks" / "data" / "serving-measurements.csv"


@pytest.fixture(scope="module")
def cpu() -> design.Dataset:
    plans = resolve_all(read_measurements(CPU_DATA), lookup_for(CPU_DATA, CPU_HARDWARE))
    return design.build_dataset([p for p in plans if isinstance(p, Plan)])


def test_every_cpu_row_is_predictable_and_names_the_probed_entry(cpu: design.Dataset) -> None:
    rows = read_measurements(CPU_DATA)
    [probed] = load_hardware_yaml(CPU_HARDWARE)
    assert len(cpu.plans) == len(rows) >= 12
    assert {p.hardware.name for p in cpu.plans} == {probed.name}
    assert probed.kind is DeviceKind.CPU
    assert cpu.families == ("cpu",)
    assert len(cpu.groups) >= 6  # model shapes: dense of 0.1-1.4B parameters and two MoEs
    assert len({p.model_key for p in cpu.plans if p.model.moe is not None}) >= 2
    assert len({p.model.num_kv_heads * 1000 // p.model.num_heads for p in cpu.plans}) >= 3


def test_cpu_fit_is_deterministic_and_beats_the_generic_gpu_set(cpu: design.Dataset) -> None:
    a, b = fit.fit_cpu(cpu), fit.fit_cpu(cpu)
    assert a.params.tolist() == b.params.tolist()
    _, tpot = fit.predict_with(cpu, a)
    fitted = np.median(np.abs(tpot / cpu.tpot - 1))
    gpu_set = efficiency.FAMILY_EFFICIENCY["generic"]
    table = np.array([[getattr(gpu_set, name) for name in design.PARAMETERS]])
    _, g_tpot = design.predict_all(cpu, table, np.zeros(len(cpu.plans), dtype=np.int64))
    assert fitted < np.median(np.abs(g_tpot / cpu.tpot - 1)) / 2
    # The CPU terms are held where the data says nothing: no collectives at TP 1.
    values = dict(zip(design.PARAMETERS, a.params[0], strict=True))
    assert values["link_efficiency"] == 1.0 and values["collective_latency_seconds"] == 0.0


def test_the_campaign_runs_in_waves_and_the_fit_predicts_them_as_validate_does(cpu: design.Dataset) -> None:
    """The CPU rows are synchronized waves (serving.wave_times): the vectorised fit and the public
    ``predict`` (what ``validate`` prints) agree on every row."""
    assert {p.row.arrivals for p in cpu.plans} == {"waves"}
    assert cpu.agg is not None and cpu.agg.waves.all()
    result = fit.fit_cpu(cpu)
    ttft, tpot = fit.predict_with(cpu, result)
    for i, plan in enumerate(cpu.plans):
        pred = predict(plan, lambda hw: result.efficiency(result.families[0], "test"))
        assert pred.tpot_seconds == pytest.approx(tpot[i], rel=1e-9)
        assert pred.ttft_seconds == pytest.approx(ttft[i], rel=1e-9)


def test_leave_one_shape_out_predicts_every_shape(cpu: design.Dataset) -> None:
    cv = fit.cross_validate_cpu(cpu)
    assert set(cv["groups"]) == set(cpu.groups)
    assert cv["pooled"]["all"]["rows"] == len(cpu.plans)
    # The targets for shapes the fit has not seen: TPOT median ≤ 15 %, TTFT median ≤ 25 %.
    pooled = cv["pooled"]["all"]
    assert pooled["tpot"]["median_abs_rel_error"] <= 0.15
    assert pooled["ttft"]["median_abs_rel_error"] <= 0.25


def test_a_cpu_core_does_not_overlap_streaming_and_compute_and_gpus_keep_the_roofline(
    cpu: design.Dataset,
) -> None:
    """The CPU fit frees ``overlap`` (one core both streams the weights and computes); the GPU
    fits hold it at 1, the roofline's max, so the GPU figures are what they were."""
    values = dict(zip(design.PARAMETERS, fit.fit_cpu(cpu).params[0], strict=True))
    assert values["overlap"] < 0.9
    held = fit.fit_cpu(cpu, fixed={**fit.CPU_FIXED, "overlap": 1.0})
    _, free_tpot = fit.predict_with(cpu, fit.fit_cpu(cpu))
    _, held_tpot = fit.predict_with(cpu, held)
    assert np.median(np.abs(free_tpot / cpu.tpot - 1)) < np.median(np.abs(held_tpot / cpu.tpot - 1))
    assert fit.FIT_FIXED["overlap"] == 1.0
    for family, eff in efficiency.FAMILY_EFFICIENCY.items():
        if family != "cpu":
            assert eff.overlap == 1.0, family
    # Without the MoE shape nothing is known of routed experts: their factors stay neutral.
    dense = np.array([p.model.moe is None for p in cpu.plans])
    held = fit.fit_cpu(cpu, dense)
    values = dict(zip(design.PARAMETERS, held.params[0], strict=True))
    assert values["experts_bandwidth"] == 1.0 and values["experts_compute"] == 1.0


def test_the_cpu_fit_has_its_own_bounds_and_the_gpu_fit_keeps_its_own(cpu: design.Dataset) -> None:
    """CPU_BOUNDS widen only the CPU fit: the experts' factors may exceed 1 there (vLLM CPU's MoE
    kernels against a slow dense BF16 fallback); every fitted value lies within the bounds."""
    result = fit.fit_cpu(cpu)
    values = dict(zip(design.PARAMETERS, result.params[0], strict=True))
    for name, (lo, hi) in fit.CPU_BOUNDS.items():
        assert lo <= values[name] <= hi, name
    assert fit.CPU_BOUNDS["experts_compute"][1] > 1
    # A bound that excludes its parameter's start is refused, naming the parameter.
    with pytest.raises(ValueError, match="compute"):
        fit.fit(cpu, shared=True, fixed=fit.CPU_FIXED, per_engine=(), bounds={"compute": (0.6, 0.9)})
    # The same rows under the GPUs' bounds: the experts' factor stays ≤ 1.
    gpu_bounds = fit.fit(cpu, shared=True, fixed=fit.CPU_FIXED, per_engine=())
    assert dict(zip(design.PARAMETERS, gpu_bounds.params[0], strict=True))["experts_compute"] <= 1.0
    # The fitted CPU set is a valid Efficiency (its experts' factors within the model's limits).
    assert efficiency.FAMILY_EFFICIENCY["cpu"].experts_compute <= fit.CPU_BOUNDS["experts_compute"][1]


def test_the_cpu_data_does_not_move_the_gpu_fit() -> None:
    with_cpu = calibrate(
        GPU_DATA, cross_validation=False, cpu_measurements=CPU_DATA, cpu_hardware=CPU_HARDWARE
    )
    without = calibrate(GPU_DATA, cross_validation=False)
    assert with_cpu["families"] == without["families"]
    assert with_cpu["generic"] == without["generic"] and with_cpu["engines"] == without["engines"]
    assert with_cpu["in_sample"] == without["in_sample"]
    assert with_cpu["cpu"]["fitted_rows"] >= 12 and "cpu" not in without


def test_cpus_are_their_own_family_whatever_their_name() -> None:
    [probed] = load_hardware_yaml(CPU_HARDWARE)
    renamed = probed.model_copy(update={"name": "h100-lookalike"})
    assert efficiency.family_of(renamed) == "cpu"
    assert efficiency.family_of("xeon-6980p") == efficiency.family_of("epyc-9654") == "cpu"
    cpu_eff = efficiency.FAMILY_EFFICIENCY["cpu"]
    assert efficiency.efficiency_for(renamed) == cpu_eff
    assert probed.efficiency == cpu_eff  # a hardware file's CPU entry is calibrated on load


@pytest.mark.parametrize("name", ["xeon-6980p", "epyc-9654"])
def test_catalog_cpus_get_the_cpu_fit_on_their_sustained_bandwidth(name: str) -> None:
    cpu_eff = efficiency.FAMILY_EFFICIENCY["cpu"]
    hw = get_hardware(name)
    share = efficiency.CPU_SUSTAINED_BANDWIDTH[name]
    assert 0.5 < share < 1
    assert hw.efficiency.bandwidth == pytest.approx(cpu_eff.bandwidth * share)
    for field in ("compute", "layer_overhead_seconds", "step_overhead_seconds", "request_overhead_seconds"):
        assert getattr(hw.efficiency, field) == getattr(cpu_eff, field)
    assert "sustained share" in hw.efficiency.fitted_by


def test_gpu_engine_terms_never_apply_to_a_cpu() -> None:
    cpu_eff = efficiency.FAMILY_EFFICIENCY["cpu"]
    gpu_eff = efficiency.FAMILY_EFFICIENCY["nvidia-hopper"]
    for engine in ("vllm", "sglang", "trtllm"):
        assert efficiency.with_engine(cpu_eff, engine, DeviceKind.CPU) is cpu_eff
        assert efficiency.efficiency_for(get_hardware("epyc-9654"), engine) == efficiency.efficiency_for(
            get_hardware("epyc-9654")
        )
    assert efficiency.with_engine(gpu_eff, "sglang", DeviceKind.GPU) != gpu_eff
    model, hw = get_model("llama-3.1-8b"), get_hardware("xeon-6980p")
    shape = RequestShape(512, 0, 128, Precisions(Precision.BF16, Precision.BF16, Precision.BF16))
    base = predict_colocated(model, hw, shape, Parallel(1), concurrency=4)
    for engine in ("vllm", "sglang"):
        assert predict_colocated(model, hw, shape, Parallel(1), concurrency=4, engine=engine) == base


def test_the_error_band_comes_from_the_committed_leave_one_shape_out() -> None:
    band = efficiency.CPU_ERROR_BAND
    assert band is not None
    pooled = efficiency.FIT_STATISTICS["cpu"]["leave_one_shape_out"]["all"]
    assert band.tpot == pooled["tpot"]["median_abs_rel_error"]
    assert band.ttft == pooled["ttft"]["median_abs_rel_error"]
    assert 0 < band.tpot < 1 and 0 < band.ttft < 1
    assert efficiency.cpu_error_band({}) is None
    assert isinstance(efficiency.FAMILY_EFFICIENCY["cpu"], Efficiency)
