"""Serving engines: image/backend → engine, the per-engine calibrated terms, and their plumbing
into the serving formulas, ``hetsched validate`` and the placement engine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hetsched.scheduler.calibration import design, fit
from hetsched.scheduler.calibration.cli import efficiency_source, validate_rows
from hetsched.scheduler.calibration.dataset import Plan, parse_measurements, read_measurements, resolve_all
from hetsched.scheduler.catalog.hardware import IDEAL
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.engines import engine_of_backend, engine_of_image, engine_of_images
from hetsched.scheduler.estimator import efficiency
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.serving import (
    Parallel,
    RequestShape,
    predict_colocated,
    predict_disaggregated,
)
from hetsched.scheduler.placement import PlanOptions, resolve_workload
from hetsched.scheduler.placement.candidates import CandidateGenerator
from hetsched.scheduler.placement.estimates import EstimateCache
from support import REPO

DATA = REPO / "benchmarks" / "data" / "serving-measurements.csv"
FP8 = Precisions(weights=Precision.FP8, kv_cache=Precision.FP8, activations=Precision.FP8)


@pytest.mark.parametrize(
    ("image", "engine"),
    [
        ("vllm/vllm-openai:v0.11.0", "vllm"),
        ("docker.io/vllm/vllm-openai@sha256:0123abcd", "vllm"),
        ("rocm/vllm:latest", "vllm"),
        ("lmsysorg/sglang:v0.5.9-cu129", "sglang"),
        ("docker.io/lmsysorg/sglang:latest", "sglang"),
        ("nvcr.io/nvidia/tensorrt-llm/release:1.2.0rc6", "trtllm"),
        ("nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3", "trtllm"),
        ("registry.local:5000/team/trtllm-serve:1.0", "trtllm"),
        ("nvcr.io/nvidia/tritonserver:25.01-py3", None),  # Triton without the TensorRT-LLM backend
        ("registry.local:5000/vllm-fork", "vllm"),  # the registry port is not a tag
        ("ghcr.io/acme/myvllmfork:1.0", None),  # no component names the engine
        ("ghcr.io/acme/server:vllm", None),  # a tag alone does not make an image vLLM
        ("", None),
        (None, None),
    ],
)
def test_engine_of_image(image: str | None, engine: str | None) -> None:
    assert engine_of_image(image) == engine


def test_engine_of_backend_and_of_several_images() -> None:
    assert engine_of_backend("vllm") == "vllm"
    assert engine_of_backend("TensorRT-LLM") == engine_of_backend("trtllm") == "trtllm"
    assert engine_of_backend("SGLang") == "sglang"
    assert engine_of_backend("") is None and engine_of_backend("llama.cpp") is None
    assert engine_of_images(["lmsysorg/sglang:v1", "lmsysorg/sglang:v2"]) == "sglang"
    assert engine_of_images(["lmsysorg/sglang:v1", "vllm/vllm-openai:v1"]) is None  # mixed
    assert engine_of_images(["lmsysorg/sglang:v1", "acme/server:1"]) is None  # one unknown
    assert engine_of_images([]) is None


# ---- the calibrated table ----------------------------------------------------------------------------


def test_with_engine_replaces_only_the_engine_terms() -> None:
    hw = get_hardware("h200")
    shared = efficiency.efficiency_for(hw)
    assert efficiency.ENGINE_EFFICIENCY, "make calibrate writes per-engine terms"
    for engine, values in efficiency.ENGINE_EFFICIENCY.items():
        eff = efficiency.efficiency_for(hw, engine)
        assert eff == efficiency.with_engine(shared, engine)
        for name, value in values.items():
            assert getattr(eff, name) == value
        untouched = set(type(eff).model_fields) - set(values) - {"fitted_by"}
        assert all(getattr(eff, n) == getattr(shared, n) for n in untouched)
        assert engine in eff.fitted_by
    # Unknown / no engine: the shared values; the pure roofline stays pure whatever the engine.
    assert efficiency.efficiency_for(hw, None) == shared
    assert efficiency.efficiency_for(hw, "llama.cpp") == shared
    assert efficiency.with_engine(IDEAL, "vllm") is IDEAL
    # The generic extrapolation gets the engine's terms too.
    ampere = efficiency.efficiency_for("a100-80gb", "vllm")
    assert "extrapolated" in ampere.fitted_by
    assert ampere.request_overhead_seconds == efficiency.ENGINE_EFFICIENCY["vllm"]["request_overhead_seconds"]


def test_engines_differ_in_request_overhead() -> None:
    t_req = {e: v["request_overhead_seconds"] for e, v in efficiency.ENGINE_EFFICIENCY.items()}
    assert set(t_req) == {"sglang", "trtllm", "vllm"}
    shared = efficiency.efficiency_for("h200").request_overhead_seconds
    # vLLM's fixed cost per request is below the average, SGLang's (DeepSeek runs) above it.
    assert t_req["vllm"] < shared < t_req["sglang"]


# ---- the serving formulas ------------------------------------------------------------------------------


def _colocated(engine: str | None, **kw: object) -> object:
    hw = get_hardware("h200")  # the catalog applies the calibration
    return predict_colocated(
        get_model("llama-3.1-70b"),
        hw,
        RequestShape(2048, 0, 256, FP8),
        Parallel(tp=4),
        concurrency=16,
        engine=engine,
        **kw,  # type: ignore[arg-type]
    )


def test_serving_formulas_use_the_engine() -> None:
    hw = get_hardware("h200")
    shared = _colocated(None)
    for engine in ("vllm", "sglang", "trtllm"):
        mine = _colocated(engine)
        same = _colocated(None, efficiency=efficiency.efficiency_for(hw, engine))
        assert mine == same  # the engine is exactly its efficiency entry
        assert mine.ttft_seconds != shared.ttft_seconds  # type: ignore[attr-defined]
    # An explicit efficiency is used as given: IDEAL stays the pure roofline.
    assert _colocated("vllm", efficiency=IDEAL) == _colocated(None, efficiency=IDEAL)
    dis = {
        e: predict_disaggregated(
            get_model("llama-3.1-70b"),
            hw,
            hw,
            RequestShape(2048, 0, 256, FP8),
            prefill=Parallel(tp=4),
            decode=Parallel(tp=4),
            prefill_batch=1,
            decode_batch=32,
            kv_transfer_bandwidth=50e9,
            engine=e,
        )
        for e in (None, "vllm")
    }
    t_req = efficiency.ENGINE_EFFICIENCY["vllm"]["request_overhead_seconds"]
    t_layer = efficiency.ENGINE_EFFICIENCY["vllm"]["layer_overhead_seconds"]
    eff = hw.efficiency
    # Open loop: TTFT = prefill step + KV transfer + t_req; the layer cost moves the prefill step.
    expected = (
        dis[None].ttft_seconds
        + (t_req - eff.request_overhead_seconds)
        + 80 * (t_layer - eff.layer_overhead_seconds)
    )
    assert dis["vllm"].ttft_seconds == pytest.approx(expected, rel=1e-9)
    assert dis["vllm"].tpot_seconds == pytest.approx(
        dis[None].tpot_seconds + 80 * (t_layer - eff.layer_overhead_seconds), rel=1e-9
    )


# ---- the fit ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> design.Dataset:
    plans = [p for p in resolve_all(read_measurements(DATA)) if isinstance(p, Plan)]
    return design.build_dataset(plans[::12])


def test_fit_has_engine_terms_and_unknown_engines_get_the_shared_values(small: design.Dataset) -> None:
    result = fit.fit(small)
    assert result.engines == ("sglang", "trtllm", "vllm") == small.engines
    assert result.engine_names == fit.PER_ENGINE
    again = fit.fit(small)
    assert np.array_equal(result.engine_params, again.engine_params)  # deterministic
    for name, column in zip(result.engine_names, result.engine_params.T, strict=True):
        i = design.PARAMETERS.index(name)
        assert np.all(column >= design.LOWER[i]) and np.all(column <= design.UPPER[i])
    assert len(set(result.engine_params[:, 0].tolist())) == 3  # the engines differ
    # Every row with its engine hidden: predicted with the shared (family) values.
    hidden = dataclasses.replace(small, engine=np.full(len(small.plans), -1, dtype=np.int64))
    ttft, tpot = fit.predict_with(hidden, result)
    ref_ttft, ref_tpot = design.predict_all(small, result.params)
    assert np.array_equal(ttft, ref_ttft) and np.array_equal(tpot, ref_tpot)
    # With the engines, predictions change (TTFT through t_req at least).
    with_engine, _ = fit.predict_with(small, result)
    assert not np.allclose(with_engine, ttft)
    # An engine the fit has not seen (held out) also falls back to the shared values.
    no_vllm = small.engine != small.engines.index("vllm")
    partial = fit.fit(small, no_vllm)
    assert "vllm" not in partial.engines
    t, _ = fit.predict_with(small, partial)
    s, _ = design.predict_all(small, partial.params)
    assert np.array_equal(t[~no_vllm], s[~no_vllm])


def test_vectorised_fit_with_engines_equals_the_public_serving_api(small: design.Dataset) -> None:
    from hetsched.scheduler.calibration.dataset import predict

    result = fit.fit(small)
    ttft, tpot = fit.predict_with(small, result)
    for i in range(0, len(small.plans), 5):
        plan = small.plans[i]
        engine = engine_of_backend(plan.row.backend)
        pred = predict(plan, lambda hw, e=engine: result.efficiency(efficiency.family_of(hw), "t", e))
        assert pred.tpot_seconds == pytest.approx(tpot[i], rel=1e-9)
        assert pred.ttft_seconds == pytest.approx(ttft[i], rel=1e-9)


def test_engine_terms_ablation_and_errors(small: design.Dataset) -> None:
    none = fit.fit(small, per_engine=())
    assert none.engines == () and none.engine_params.size == 0
    refine = fit.fit(small, engine_stage="refine")
    # refine: the shared values are the engine-agnostic fit's, unchanged.
    assert np.array_equal(refine.params, none.params)
    with pytest.raises(ValueError, match="per family and per engine"):
        fit.fit(small, per_engine=("link_efficiency",))
    with pytest.raises(ValueError, match="engine_stage"):
        fit.fit(small, engine_stage="magic")


# ---- validate and placement --------------------------------------------------------------------------


def test_validate_uses_the_rows_backend() -> None:
    header = (
        "model_path,system,backend,backend_version,mode,isl,osl,batch_size,tp_size,"
        "silicon_ttft_ms,silicon_tpot_ms"
    )
    rows = [
        f"meta-llama/Llama-3.1-70B-Instruct,h200_sxm,{b},,agg,1024,1024,8,4,200,20"
        for b in ("vllm", "sglang", "some-engine")
    ]
    entries = validate_rows(parse_measurements("\n".join([header, *rows])), efficiency_source("calibrated"))
    assert [e["engine"] for e in entries] == ["vllm", "sglang", None]
    ttft = [e["predicted_ttft_ms"] for e in entries]
    assert ttft[0] < ttft[2] < ttft[1]  # vLLM's t_req < shared < SGLang's
    ideal = validate_rows(parse_measurements("\n".join([header, *rows])), efficiency_source("ideal"))
    assert len({e["predicted_ttft_ms"] for e in ideal}) == 1  # the roofline knows no engine


SPEC = {
    "model": {"name": "meta-llama/Llama-3.1-70B-Instruct"},
    "agent": {"profile": "coding"},
    "demand": {"concurrentSessions": 8},
    "slo": {"ttftSeconds": 5, "tpotSeconds": 0.1},
    "disaggregation": "never",
}


def test_placement_takes_the_engine_from_the_serving_image() -> None:
    from support.placement import cluster, pool

    plain = resolve_workload(SPEC, name="w")
    assert plain.engine is None
    req = resolve_workload({**SPEC, "serving": {"prefill": {"image": "lmsysorg/sglang:v0.5.9"}}}, name="w")
    assert req.engine == "sglang"
    mixed = {"prefill": {"image": "lmsysorg/sglang:v0.5.9"}, "decode": {"image": "vllm/vllm-openai:v1"}}
    assert resolve_workload({**SPEC, "serving": mixed}, name="w").engine is None

    hw = get_hardware("h200")
    cl = cluster(pool("h200", hw, 1))
    gen = CandidateGenerator(cl, PlanOptions(), EstimateCache())
    mine, shared = gen.generate(req).all_options, gen.generate(plain).all_options
    assert mine and shared
    for o in mine:
        ref = predict_colocated(
            req.model,
            hw,
            req.shape,
            Parallel(tp=o.decode.tp),
            concurrency=o.decode.batch,
            engine="sglang",
        )
        assert o.ttft_seconds == ref.ttft_seconds and o.tpot_seconds == ref.tpot_seconds
    assert mine[0].ttft_seconds != shared[0].ttft_seconds
    # --efficiency ideal: the engine changes nothing.
    ideal = CandidateGenerator(cl, PlanOptions(efficiency=IDEAL), EstimateCache())
    a, b = ideal.generate(req).all_options, ideal.generate(plain).all_options
    assert [(o.ttft_seconds, o.tpot_seconds) for o in a] == [(o.ttft_seconds, o.tpot_seconds) for o in b]
