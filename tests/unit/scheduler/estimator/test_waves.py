"""Synchronized waves (``arrivals="waves"``): a benchmark's equal requests sent all at once are
prefilled leader first, the others together in the next step, then decode in lockstep."""

from __future__ import annotations

import pytest
from hetsched.scheduler.calibration.dataset import parse_measurements
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.estimator.cost import Phase, Precisions
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.serving import Parallel, RequestShape, colocated_setup, predict_colocated
from hetsched.scheduler.estimator.steps import EfficiencyTerms, step_seconds, step_terms

FP32 = Precisions(Precision.FP32, Precision.FP32, Precision.FP32)
MODEL = get_model("llama-3.1-8b")
CPU = get_hardware("epyc-9654")
SHAPE = RequestShape(256, 0, 16, FP32)


def _prefill_step(batch: int) -> float:
    terms, _ = step_terms(
        MODEL, CPU, Phase.PREFILL, batch=batch, new_tokens=256, context_tokens=0, precisions=FP32
    )
    return float(step_seconds(terms, EfficiencyTerms.of(CPU.efficiency)))


def test_one_request_per_wave_is_a_prefill_then_plain_decode_steps() -> None:
    p = predict_colocated(MODEL, CPU, SHAPE, Parallel(1), concurrency=1, arrivals="waves")
    assert p.ttft_seconds == pytest.approx(_prefill_step(1) + CPU.efficiency.request_overhead_seconds)
    assert p.tpot_seconds == pytest.approx(p.decode_step_seconds)
    # Steady state charges each token with a share of the next prompt's prefill: slower.
    steady = predict_colocated(MODEL, CPU, SHAPE, Parallel(1), concurrency=1)
    assert steady.tpot_seconds > p.tpot_seconds


def test_the_leader_is_prefilled_alone_and_the_others_together() -> None:
    b = 8
    p = predict_colocated(MODEL, CPU, SHAPE, Parallel(1), concurrency=b, arrivals="waves")
    one, rest = _prefill_step(1), _prefill_step(b - 1)
    assert rest > 3 * one  # the others' prompts in one step: several times one prompt's
    expected_ttft = one + (b - 1) / b * rest + CPU.efficiency.request_overhead_seconds
    assert p.ttft_seconds == pytest.approx(expected_ttft)
    decode = p.decode_step_seconds
    assert p.tpot_seconds == pytest.approx(decode + (rest - decode) / (b * (SHAPE.output_tokens - 1)))
    # Steady state staggers the prompts: on average a prompt waits for fewer others.
    steady = predict_colocated(MODEL, CPU, SHAPE, Parallel(1), concurrency=b)
    assert p.ttft_seconds > steady.ttft_seconds


def test_only_waves_compute_the_others_step_and_unknown_arrivals_are_refused() -> None:
    assert colocated_setup(MODEL, CPU, SHAPE, concurrency=4).prefill_rest is None
    assert colocated_setup(MODEL, CPU, SHAPE, concurrency=4, arrivals="waves").prefill_rest is not None
    with pytest.raises(ValueError, match="arrivals"):
        colocated_setup(MODEL, CPU, SHAPE, concurrency=4, arrivals="bursts")


HEADER = "model_path,system,mode,isl,osl,batch_size,tp_size,arrivals,silicon_ttft_ms,silicon_tpot_ms"


def test_the_arrivals_column() -> None:
    rows = parse_measurements(
        "\n".join(
            [
                HEADER,
                "llama-3.1-8b,epyc-9654,agg,256,16,4,1,waves,900,120",
                "llama-3.1-8b,epyc-9654,agg,256,16,4,1,,900,120",
                "llama-3.1-8b,epyc-9654,agg,256,16,4,1,Bursts,900,120",
                "llama-3.1-8b,epyc-9654,disagg,256,16,,,waves,900,120",
            ]
        ),
        "runs.csv",
    )
    assert [r.arrivals for r in rows[:2]] == ["waves", "staggered"]
    assert rows[0].problem is None and rows[1].problem is None
    assert rows[2].problem is not None and "arrivals" in rows[2].problem and "'Bursts'" in rows[2].problem
    assert rows[3].problem is not None and "agg rows only" in rows[3].problem
