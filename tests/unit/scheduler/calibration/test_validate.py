"""``hetsched validate``: per-row predictions, skipped rows with reasons, malformed CSVs, output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hetsched.operator.cli import main as hetsched_main
from hetsched.scheduler.calibration.cli import efficiency_source, summarize, validate_rows
from hetsched.scheduler.calibration.dataset import (
    BENCHMARK_WARMUP_FRACTION,
    MeasurementsError,
    Plan,
    parse_measurements,
    read_measurements,
    resolve,
)
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.estimator.cost import Phase, PhaseCost, Precisions, estimate_phase

HEADER = (
    "model_path,system,backend,backend_version,precision,gemm_quant_mode,moe_quant_mode,mode,isl,osl,batch_size,"
    "tp_size,pp_size,attention_dp_size,moe_tp_size,moe_ep_size,prefill_batch_size,prefill_num_workers,"
    "prefill_tp_size,prefill_pp_size,prefill_attention_dp_size,prefill_moe_tp_size,prefill_moe_ep_size,"
    "decode_batch_size,decode_num_workers,decode_tp_size,decode_pp_size,decode_attention_dp_size,"
    "decode_moe_tp_size,decode_moe_ep_size,silicon_ttft_ms,silicon_tpot_ms"
)
EMPTY_DISAGG = ",,,,,,,,,,,,,"  # the 14 prefill_*/decode_* columns


def agg_row(
    model: str,
    system: str,
    quant: str,
    isl: int,
    osl: int,
    batch: int,
    tp: int,
    *,
    pp: int = 1,
    dp: str = "",
    moe_tp: int = 1,
    moe_ep: int = 1,
    ttft: float = 100.0,
    tpot: float = 10.0,
) -> str:
    return (
        f"{model},{system},vllm,0.0,{quant or 'bf16'},{quant},{quant},agg,{isl},{osl},{batch},{tp},{pp},{dp},"
        f"{moe_tp},{moe_ep},{EMPTY_DISAGG},{ttft},{tpot}"
    )


def disagg_row(
    model: str,
    system: str,
    isl: int,
    osl: int,
    *,
    pb: str,
    pw: str,
    db: str,
    dw: str,
    ptp: int = 1,
    dtp: int = 1,
    ttft: float = 100.0,
    tpot: float = 10.0,
) -> str:
    return (
        f"{model},{system},trtllm,0.0,bf16,,,disagg,{isl},{osl},,,,,,,"
        f"{pb},{pw},{ptp},1,1,1,1,{db},{dw},{dtp},1,1,1,1,{ttft},{tpot}"
    )


LLAMA8 = "meta-llama/Llama-3.1-8B-Instruct"
KNOWN = [
    agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1, ttft=80.0, tpot=7.0),  # 0 predicted
    disagg_row(LLAMA8, "h200_sxm", 2048, 128, pb="1", pw="1", db="8", dw="1", ttft=150.0, tpot=6.0),  # 1
    agg_row("acme/unknown-model-7b", "h200_sxm", "", 1024, 256, 4, 1),  # 2 unknown model
    agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1, pp=2),  # 3 pipeline parallel
    agg_row(
        "deepseek-ai/DeepSeek-V3", "b200_sxm", "fp8", 1024, 1024, 4, 64, moe_tp=8, moe_ep=8
    ),  # 4 multi-node
    disagg_row(LLAMA8, "h200_sxm", 1024, 1024, pb="", pw="", db="", dw=""),  # 5 no concurrency
    agg_row(LLAMA8, "h200_sxm", "int3_magic", 1024, 256, 4, 1),  # 6 unknown quantization
    agg_row(LLAMA8, "tpu_v99", "", 1024, 256, 4, 1),  # 7 unknown hardware
    agg_row(
        "deepseek-ai/DeepSeek-V3", "h200_sxm", "fp8", 1024, 1024, 4, 2, moe_tp=3, moe_ep=1
    ),  # 8 inconsistent
]


def write_csv(tmp_path: Path, rows: list[str], name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


# ---- the expected predictions, from the estimator and the documented formulas ------------------


def roofline(cost: PhaseCost, peak: float, bw: float, weights: bool = True) -> float:
    """Pure roofline (ideal efficiency, one device): Σ_ops max(FLOPs/peak, bytes/bandwidth)."""
    return sum(
        max(op.flops / peak, (op.dram_bytes - (0.0 if weights else op.weight_bytes)) / bw)
        for op in cost.operators
    )


def closed_loop(n: float, s: float, z: float) -> float:
    x = n * s - z
    return (x + math.sqrt(x * x + 4 * s * z)) / 2


def test_known_rows_match_the_estimator_and_the_serving_formulas() -> None:
    rows = parse_measurements("\n".join([HEADER, *KNOWN[:2]]))
    entries = validate_rows(rows, efficiency_source("ideal"))
    model = get_model(LLAMA8)
    hw = get_hardware("h200")
    bf16 = Precisions()
    peak, bw = hw.peak_for("bf16"), hw.memory_bandwidth
    w = BENCHMARK_WARMUP_FRACTION

    # Row 0, colocated: 4 requests of 1024 prompt + 256 output tokens on one H200.
    b, isl, osl = 4, 1024, 256
    dec = estimate_phase(
        model, Phase.DECODE, batch=b, new_tokens=1, context_tokens=isl + osl // 2, precisions=bf16
    )
    pre = estimate_phase(model, Phase.PREFILL, batch=1, new_tokens=isl, context_tokens=0, precisions=bf16)
    t_dec, t_pre = roofline(dec, peak, bw), roofline(pre, peak, bw)
    tpot = t_dec + b / osl * roofline(pre, peak, bw, weights=False)
    service = t_pre + t_dec
    ttft = closed_loop(b, service, osl * tpot) + w * service * (b - 1) / 2
    assert entries[0]["status"] == "predicted"
    assert entries[0]["predicted_tpot_ms"] == pytest.approx(tpot * 1e3, rel=1e-9)
    assert entries[0]["predicted_ttft_ms"] == pytest.approx(ttft * 1e3, rel=1e-9)
    assert entries[0]["measured_tpot_ms"] == 7.0 and entries[0]["measured_ttft_ms"] == 80.0

    # Row 1, disaggregated: one prefill worker (1 prompt per step), one decode worker of 8 requests.
    isl, osl, n = 2048, 128, 8
    dec = estimate_phase(
        model, Phase.DECODE, batch=n, new_tokens=1, context_tokens=isl + osl // 2, precisions=bf16
    )
    pre = estimate_phase(model, Phase.PREFILL, batch=1, new_tokens=isl, context_tokens=0, precisions=bf16)
    t_dec, t_pre = roofline(dec, peak, bw), roofline(pre, peak, bw)
    kv = pre.kv_bytes_per_request / hw.network_bandwidth
    ttft = closed_loop(n, t_pre, osl * t_dec + kv) + kv + w * t_pre * (n - 1) / 2
    assert entries[1]["status"] == "predicted"
    assert entries[1]["predicted_tpot_ms"] == pytest.approx(t_dec * 1e3, rel=1e-9)
    assert entries[1]["predicted_ttft_ms"] == pytest.approx(ttft * 1e3, rel=1e-9)


def test_calibrated_is_slower_than_ideal_and_above_it() -> None:
    rows = parse_measurements("\n".join([HEADER, *KNOWN[:2]]))
    ideal = validate_rows(rows, efficiency_source("ideal"))
    calibrated = validate_rows(rows, efficiency_source("calibrated"))
    for i, c in zip(ideal, calibrated, strict=True):
        assert c["predicted_tpot_ms"] > i["predicted_tpot_ms"]
        assert c["predicted_ttft_ms"] > i["predicted_ttft_ms"]


def test_skipped_rows_carry_their_reasons_and_are_never_dropped() -> None:
    rows = parse_measurements("\n".join([HEADER, *KNOWN]))
    entries = validate_rows(rows, efficiency_source("calibrated"))
    assert [e["index"] for e in entries] == list(range(len(KNOWN)))
    status = [e["status"] for e in entries]
    assert status == ["predicted", "predicted"] + ["skipped"] * 7
    reasons = {e["index"]: e["reason"] for e in entries}
    assert reasons[0] is None and reasons[1] is None
    assert "unknown model" in reasons[2] and "acme/unknown-model-7b" in reasons[2]
    assert "pipeline parallelism" in reasons[3]
    assert "multi-node" in reasons[4] and "64 devices" in reasons[4]
    assert "concurrency is unknown" in reasons[5]
    assert "unknown gemm_quant_mode 'int3_magic'" in reasons[6]
    assert "unknown hardware 'tpu_v99'" in reasons[7]
    assert "inconsistent parallelism" in reasons[8]
    for e in entries[2:]:
        assert e["predicted_tpot_ms"] is None and e["measured_tpot_ms"] is not None
    summary = summarize(entries, "calibrated")
    assert summary["overall"]["rows"] == 2 and summary["overall"]["skipped"] == 7
    assert sum(summary["skip_reasons"].values()) == 7


def test_batch_size_is_per_attention_dp_rank() -> None:
    row = agg_row("deepseek-ai/DeepSeek-V3", "b200_sxm", "fp8", 1024, 1024, 16, 1, dp="8", moe_tp=1, moe_ep=8)
    plan = resolve(parse_measurements("\n".join([HEADER, row]))[0])
    assert isinstance(plan, Plan)
    assert (plan.parallel.tp, plan.parallel.dp, plan.concurrency) == (1, 8, 128)
    # vLLM-style: no attention_dp_size, MoE over 2 devices with TP 1 → 2 data-parallel ranks.
    row = agg_row("Qwen/Qwen3-235B-A22B-FP8", "h200_sxm", "fp8", 1000, 100, 4, 1, moe_tp=2, moe_ep=1)
    plan = resolve(parse_measurements("\n".join([HEADER, row]))[0])
    assert isinstance(plan, Plan)
    assert (plan.parallel.tp, plan.parallel.dp, plan.concurrency) == (1, 2, 8)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1).replace(",1024,256,", ",abc,256,"), "column 'isl'"),
        (
            agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1).replace(",1024,256,4,", ",1024,-5,4,"),
            "column 'osl'",
        ),
        (agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1, tpot=float("nan")), "column 'silicon_tpot_ms'"),
        (agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1).replace(",agg,", ",mixed,"), "column 'mode'"),
        (
            agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1).replace(",256,4,1,", ",256,,1,"),
            "column 'batch_size'",
        ),
        (
            agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1).replace(",256,4,1,", ",256,0,1,"),
            "column 'batch_size'",
        ),
        (agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1, moe_tp=-1), "column 'moe_tp_size'"),
        (agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1) + ",extra", "more fields than the header"),
    ],
)
def test_bad_rows_are_skipped_with_reasons_naming_row_and_column(row: str, needle: str) -> None:
    """A row with a bad value is a skipped row (its reason names the row, line and column); the
    rows around it are still predicted."""
    good = agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1)
    rows = parse_measurements("\n".join([HEADER, good, row, good]), "x.csv")
    assert len(rows) == 3
    entries = validate_rows(rows, efficiency_source("calibrated"))
    assert [e["status"] for e in entries] == ["predicted", "skipped", "predicted"]
    reason = entries[1]["reason"]
    assert "x.csv: row 1 (line 3)" in reason
    assert needle in reason
    json.dumps(entries, allow_nan=False)  # no NaN leaks into the JSON output


def test_zero_in_the_moe_and_parallel_columns_means_not_applicable() -> None:
    """Real benchmark files write 0 in moe_tp_size/moe_ep_size for dense models (and in pp/DP
    columns): read as "not applicable", the row is predicted (it used to stop the whole file)."""
    dense = agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1, moe_tp=0, moe_ep=0)
    zeros = dense.replace(",4,1,1,,0,0,", ",4,1,0,0,0,0,")
    moe = agg_row("Qwen/Qwen3-235B-A22B-FP8", "h200_sxm", "fp8", 1000, 100, 4, 2, moe_tp=0, moe_ep=0)
    rows = parse_measurements("\n".join([HEADER, dense, zeros, moe]))
    assert all(r.problem is None for r in rows)
    assert rows[1].agg.pp_size is None and rows[1].agg.attention_dp_size is None
    entries = validate_rows(rows, efficiency_source("calibrated"))
    assert [e["status"] for e in entries] == ["predicted"] * 3
    plan = resolve(rows[2])
    assert isinstance(plan, Plan) and (plan.parallel.tp, plan.parallel.dp) == (2, 1)
    reference = validate_rows(
        parse_measurements("\n".join([HEADER, agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1)])),
        efficiency_source("calibrated"),
    )
    assert entries[0]["predicted_tpot_ms"] == reference[0]["predicted_tpot_ms"]


def test_missing_column_is_reported() -> None:
    with pytest.raises(MeasurementsError, match=r"missing column.*'silicon_ttft_ms'"):
        parse_measurements("model_path,system,mode,isl,osl,silicon_tpot_ms\n")


def test_a_file_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MeasurementsError, match="missing column"):
        parse_measurements("")
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MeasurementsError, match="not UTF-8"):
        read_measurements(binary)
    with pytest.raises(MeasurementsError, match="cannot read"):
        read_measurements(tmp_path / "absent.csv")


def test_cli_json_output_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path, KNOWN)
    plots = tmp_path / "plots"
    code = hetsched_main(["validate", "--measurements", str(csv), "-o", "json", "--plot", str(plots)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in out["rows"]] == list(range(len(KNOWN)))
    first = out["rows"][0]
    assert set(first) >= {
        "index",
        "status",
        "reason",
        "predicted_tpot_ms",
        "measured_tpot_ms",
        "predicted_ttft_ms",
        "measured_ttft_ms",
    }
    assert out["summary"]["efficiency"] == "calibrated"
    assert out["summary"]["overall"]["rows"] == 2
    overall = out["summary"]["overall"]["tpot"]
    assert {"median_abs_rel_error", "p90_abs_rel_error", "median_rel_error", "spearman"} <= set(overall)
    # The bias is the signed median of the rows' own predicted/measured − 1.
    done = [r for r in out["rows"] if r["status"] == "predicted"]
    signed = sorted(r["predicted_tpot_ms"] / r["measured_tpot_ms"] - 1 for r in done)
    assert overall["median_rel_error"] == pytest.approx(float(np.median(signed)))
    assert (plots / "validate-tpot.png").stat().st_size > 0
    assert (plots / "validate-ttft.png").stat().st_size > 0


def test_cli_table_and_ideal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path, KNOWN)
    assert hetsched_main(["validate", "--measurements", str(csv), "--efficiency", "ideal"]) == 0
    text = capsys.readouterr().out
    assert "efficiency ideal" in text
    assert "bias" in text
    assert "meta-llama/Llama-3.1-8B-Instruct / h200_sxm / vllm" in text
    assert "unknown model 'acme/unknown-model-7b'" in text


def test_cli_bad_row_is_a_skipped_row_and_a_bad_file_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = agg_row(LLAMA8, "h200_sxm", "", 1024, 256, 4, 1).replace(",1024,256,", ",1024,lots,")
    csv = write_csv(tmp_path, [bad, KNOWN[0]])
    assert hetsched_main(["validate", "--measurements", str(csv), "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in out["rows"]] == ["skipped", "predicted"]
    assert "row 0 (line 2), column 'osl'" in out["rows"][0]["reason"]
    headless = tmp_path / "headless.csv"
    headless.write_text("model_path,system\nx,y\n")
    assert hetsched_main(["validate", "--measurements", str(headless)]) == 2
    assert "missing column" in capsys.readouterr().err
