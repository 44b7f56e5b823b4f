"""The batch × context grid as arrays (``grid.analyze_grid``) equals ``analyze`` cell by cell."""

from __future__ import annotations

import pytest
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import MODELS
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.grid import REGIMES, analyze_grid
from hetsched.scheduler.estimator.roofline import Regime


@pytest.mark.parametrize(
    ("key", "hardware", "tp"),
    [
        ("deepseek-v3", "h200", 8),  # MoE, MLA; capacity-bound at long contexts
        ("llama-3.1-70b", "a100-80gb", 4),
        ("gpt-oss-120b", "h100-sxm", 1),  # windows
        ("qwen3.5-35b-a3b", "l40s", 2),  # states; capacity-bound at long contexts
        ("deepseek-v3.2", "b200", 8),  # sparse attention
    ],
)
def test_grid_equals_analyze_in_every_cell(key: str, hardware: str, tp: int) -> None:
    model, hw = MODELS[key], get_hardware(hardware)
    prec = Precisions.native(model)
    batches, contexts = [1, 7, 64, 300], [2048, 40_000, 130_000]
    grid = analyze_grid(
        model, hw, batches=batches, contexts=contexts, prompt_tokens=1024, precisions=prec, tp=tp
    )
    regimes: set[Regime] = set()
    for i, c in enumerate(contexts):
        for j, b in enumerate(batches):
            a = analyze(model, hw, Scenario(b, 1024, 0, c, 1), precisions=prec, tp=tp)
            for g, p in ((grid.prefill, a.prefill), (grid.decode, a.decode)):
                assert REGIMES[g.regime[i, j]] is p.performance.regime
                regimes.add(p.performance.regime)
                assert g.figures_batch[i, j] == p.cost.batch
                assert g.max_batch[i] == p.performance.max_batch
                assert (g.ridge_batch[i] or None) == p.performance.ridge_batch
                assert g.step_seconds[i, j] == pytest.approx(p.performance.step_seconds, rel=1e-12)
                assert g.flops[i, j] == pytest.approx(p.cost.flops, rel=1e-12)
                assert g.dram_bytes[i, j] == pytest.approx(p.cost.dram_bytes, rel=1e-12)
                assert g.capacity_footprint_bytes[i, j] == pytest.approx(
                    p.capacity_footprint_bytes, rel=1e-12
                )
                assert g.mfu[i, j] == pytest.approx(p.performance.mfu, rel=1e-12)
    assert len(regimes) >= 2
