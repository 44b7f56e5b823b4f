"""Figures: each is produced as a valid PNG and SVG, and what it plots is the estimator's output."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hetsched.operator.cli import main
from hetsched.scheduler.catalog import agent_catalog, hardware_catalog, model_catalog
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.estimator.roofline import evaluate
from hetsched.scheduler.plots._figure import figure_bytes
from hetsched.scheduler.plots.agents import agents_series
from hetsched.scheduler.plots.attention import attention_series, render_attention
from hetsched.scheduler.plots.moe import moe_series
from hetsched.scheduler.plots.regime_map import regime_map_series
from hetsched.scheduler.plots.roofline import block_operational_intensity, roofline_series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ESTIMATOR_PLOTS = ("roofline", "regime-map", "agents", "attention", "moe")


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 10_000, f"{path}: suspiciously small ({len(data)} bytes)"
    # IHDR: width and height (big-endian) right after the signature and chunk header.
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 300, (width, height)


def assert_svg(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag
    assert len(list(root.iter())) > 50  # axes, ticks, markers, text


# ---- every figure is written, as PNG and SVG --------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATOR_PLOTS)
def test_plot_command_writes_png_and_svg(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plot", name, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}.svg")]
    assert_png(tmp_path / f"{name}.png")
    assert_svg(tmp_path / f"{name}.svg")


def test_plot_options_as_estimate(tmp_path: Path) -> None:
    # Several roofs by repetition and by comma list; estimate's model/agent/batch/context options.
    argv = [
        "plot",
        "roofline",
        "--out",
        str(tmp_path),
        "--model",
        "llama-3.1-8b",
        "--agent",
        "coding",
        "--batch",
        "8",
        "--context",
        "32768",
        "--hardware",
        "b200,h100-sxm",
        "--hardware",
        "l4",
        "--format",
        "png",
    ]
    assert main(argv) == 0
    assert_png(tmp_path / "roofline.png")
    assert not (tmp_path / "roofline.svg").exists()


def test_plot_errors_are_reported_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "placement", "--out", str(tmp_path)]) == 2
    assert "--pools" in capsys.readouterr().err
    assert main(["plot", "regime-map", "--out", str(tmp_path), "--batches", "1,2,3"]) == 2
    assert main(["plot", "roofline", "--out", str(tmp_path), "--format", "jpg"]) == 2
    with pytest.raises(SystemExit):
        main(["plot", "no-such-figure"])


def test_cli_starts_without_matplotlib() -> None:
    code = (
        "import sys; from hetsched.operator.cli import build_parser; build_parser(); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_figures_are_reproducible() -> None:
    series = attention_series(
        [model_catalog.get_model("study-mha")],
        [hardware_catalog.get_hardware("h100-sxm")],
        contexts=[1024, 4096, 16384],
    )
    a, b = render_attention(series), render_attention(series)
    assert figure_bytes(a, "svg") == figure_bytes(b, "svg")
    assert figure_bytes(a, "png") == figure_bytes(b, "png")


# ---- the data plotted is the estimator's ------------------------------------------------------


def test_roofline_points_are_the_estimate() -> None:
    model = model_catalog.get_model("llama-3.1-8b")
    hws = [hardware_catalog.get_hardware(n) for n in ("b200", "h100-sxm", "l4")]
    scenario = Scenario.from_agent(agent_catalog.get_agent("chatbot"), batch=4)
    series = roofline_series(model, hws, scenario, agent="chatbot")
    assert [r.hardware for r in series.roofs] == ["b200", "h100-sxm", "l4"]
    for hw, roof in zip(hws, series.roofs, strict=True):
        assert roof.ridge_point == pytest.approx(hw.ridge_point("bf16"))
        assert roof.peak_flops == hw.peak_for("bf16")
        result = analyze(model, hw, scenario)
        for pa in (result.prefill, result.decode):
            (point,) = [p for p in series.points if p.hardware == hw.name and p.phase == pa.phase.value]
            assert point.operational_intensity == pa.cost.operational_intensity
            assert point.attainable_flops == pytest.approx(
                min(roof.peak_flops, point.operational_intensity * roof.memory_bandwidth)
            )
            assert point.regime == pa.performance.regime.value
    # Prefill far right of every ridge, decode far left.
    for p in series.points:
        roof = next(r for r in series.roofs if r.hardware == p.hardware)
        assert (p.operational_intensity > roof.ridge_point) == (p.phase == "prefill")


def test_regime_map_points_are_the_estimate_and_regions_match_evaluate() -> None:
    model = model_catalog.get_model("llama-3.1-8b")
    hw = hardware_catalog.get_hardware("h100-sxm")
    series = regime_map_series(
        model, hw, batches=(1, 128), contexts=(2048, 131072), blocks=("step", "ffn", "attention")
    )
    assert len(series.points) == 2 * 2 * 2 * 3
    prec = Precisions.native(model)
    for p in series.points:
        phase = Phase(p.phase)
        shape = (
            dict(new_tokens=p.context, context_tokens=0)
            if phase is Phase.PREFILL
            else dict(new_tokens=1, context_tokens=p.context - 1)
        )
        cost = estimate_phase(model, phase, batch=p.batch, precisions=prec, **shape)  # type: ignore[arg-type]
        perf = evaluate(cost, hw)
        assert p.regime == perf.regime.value
        assert p.operating_batch == perf.operating_batch
        assert p.capacity_footprint_bytes == cost.capacity_footprint_bytes
        assert p.memory_per_device_bytes == pytest.approx(
            cost.weight_resident_bytes + p.batch * cost.kv_bytes_per_request_per_device
        )
        at_op = estimate_phase(model, phase, batch=p.operating_batch, precisions=prec, **shape)  # type: ignore[arg-type]
        assert p.operational_intensity == pytest.approx(block_operational_intensity(at_op, p.block))
        if p.block == "step":
            # The shaded region a whole-step point falls in is the regime roofline.evaluate gives.
            assert series.region(p.memory_per_device_bytes, p.operational_intensity) == p.regime
    step = {(p.phase, p.batch, p.context): p.regime for p in series.points if p.block == "step"}
    assert step[("prefill", 1, 2048)] == "compute-bound"
    assert step[("decode", 1, 131072)] == "bandwidth-bound"  # Decode (low B, high L): fits, low OI
    assert step[("decode", 128, 131072)] == "capacity-bound"  # memory caps the batch below the ridge
    ffn = {(p.phase, p.batch, p.context): p.operational_intensity for p in series.points if p.block == "ffn"}
    assert ffn[("decode", 1, 131072)] == pytest.approx(1.0, rel=0.01)  # batch-1 GEMV at 16 bits: 1 FLOP/B


def test_agents_series_is_the_estimate_and_coding_long_context_exceeds_b200() -> None:
    model = model_catalog.get_model("llama-3-70b")
    b200 = hardware_catalog.get_hardware("b200")
    names = ("chatbot", "coding", "coding-long", "web-use", "computer-use")
    agents = [agent_catalog.get_agent(n) for n in names]
    series = agents_series(model, b200, agents)
    assert [a.agent for a in series.agents] == list(names)
    assert series.capacity_bytes == b200.memory_bytes
    for agent, bar in zip(agents, series.agents, strict=True):
        sc = Scenario.from_agent(agent)
        cost = estimate_phase(
            model,
            Phase.DECODE,
            batch=1,
            new_tokens=1,
            context_tokens=sc.decode_context - 1,
            precisions=Precisions.native(model),
        )
        assert bar.capacity_footprint_bytes == cost.capacity_footprint_bytes
        assert bar.weight_bytes_per_request + bar.kv_cache_bytes == pytest.approx(
            bar.capacity_footprint_bytes
        )
        assert bar.decode_oi == cost.operational_intensity
        assert bar.decode_oi < series.ridge_point < bar.prefill_oi or agent.name == "coding"
        t, c0, d = agent.turns_per_task, agent.initial_context_tokens, agent.context_growth_per_turn
        assert bar.prefill_tokens_per_task == t * c0 + d * t * (t - 1) // 2  # the snowball sum
        assert bar.decode_tokens_per_task == t * agent.output_tokens
    cf = {a.agent: a.capacity_footprint_bytes for a in series.agents}
    assert cf["chatbot"] < b200.memory_bytes
    assert cf["coding-long"] > b200.memory_bytes  # the paper's 300K-token coding context
    # The plain coding agent at a long context (the paper's 300K tokens) exceeds one B200 too.
    long = agents_series(model, b200, [agent_catalog.get_agent("coding")], context=300_000)
    assert long.agents[0].capacity_footprint_bytes > b200.memory_bytes
    # Agents prefill far more than they decode (Fig. 2 left).
    for a in series.agents:
        assert a.prefill_tokens_per_task > a.decode_tokens_per_task


def test_attention_ordering_mla_below_gqa_below_mha_at_every_context() -> None:
    models = [model_catalog.get_model(n) for n in ("study-mha", "study-gqa", "study-mla")]
    hws = [hardware_catalog.get_hardware(n) for n in ("h100-sxm", "b200")]
    series = attention_series(models, hws)
    assert series.contexts[0] == 1024 and series.contexts[-1] == 1 << 20
    mha, gqa, mla = series.lines
    assert (mha.attention, gqa.attention, mla.attention) == ("mha", "gqa", "mla")
    # KV per token: MHA 2·48·2048·2 B, GQA a quarter of it, MLA 48·(512+64)·2 B.
    assert mha.kv_bytes_per_token == pytest.approx(2 * 48 * 2048 * 2)
    assert mla.kv_bytes_per_token == pytest.approx(48 * 576 * 2)
    for i, ctx in enumerate(series.contexts):
        # Above a few thousand tokens the cache dominates; below it the variants' weights differ.
        kv = [line.capacity_footprint_bytes[i] - line.weight_bytes for line in series.lines]
        assert kv[2] < kv[1] < kv[0], ctx
        if ctx >= 16384:
            assert (
                mla.capacity_footprint_bytes[i]
                < gqa.capacity_footprint_bytes[i]
                < mha.capacity_footprint_bytes[i]
            )
        for model, line in zip(models, series.lines, strict=True):
            cost = estimate_phase(
                model,
                Phase.DECODE,
                batch=1,
                new_tokens=1,
                context_tokens=ctx - 1,
                precisions=Precisions.native(model),
            )
            assert line.capacity_footprint_bytes[i] == cost.capacity_footprint_bytes
    h100 = dict(series.capacities)["h100-sxm"]
    assert mha.capacity_footprint_bytes[-1] > h100 > mla.capacity_footprint_bytes[-1]


def test_moe_series_is_the_estimate() -> None:
    names = ("llama-3.1-70b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b", "deepseek-v3")
    models = [model_catalog.get_model(n) for n in names]
    series = moe_series(models, context=32768, batches=(1, 16))
    for model, bar in zip(models, series.models, strict=True):
        assert bar.moe == (model.moe is not None)
        for j, b in enumerate(series.batches):
            cost = estimate_phase(
                model,
                Phase.DECODE,
                batch=b,
                new_tokens=1,
                context_tokens=32767,
                precisions=Precisions.native(model),
            )
            assert bar.capacity_footprint_bytes[j] == cost.capacity_footprint_bytes
            assert bar.decode_oi[j] == cost.operational_intensity
            assert bar.weight_bytes / b + bar.kv_cache_bytes == pytest.approx(bar.capacity_footprint_bytes[j])
        assert bar.capacity_footprint_bytes[1] < bar.capacity_footprint_bytes[0]
    by = {m.model: m for m in series.models}
    # Batching raises a dense model's decode OI ~B-fold; an MoE's much less (more experts are read).
    for dense in ("llama-3.1-70b", "qwen3-32b"):
        for moe in ("qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b"):
            assert by[moe].decode_oi[1] < by[dense].decode_oi[1]
            assert by[moe].active_params < by[moe].total_params
