"""Estimator speed: full two-phase estimates of DeepSeek-V3 (B=16, L=128K), and a 100×100 grid.

Targets (issue 2): ≥ 10,000 two-phase estimates per second on one core; a 100 × 100
(batch × context) grid in under 1 second. Prints medians of repeated runs, timed by the process's
CPU time (what "per second on one core" means; wall time on a shared 2-core machine also counts
the other processes' turns) and by wall time.
"""

from __future__ import annotations

import statistics
import time

from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import Precisions


def main() -> None:
    model = get_model("deepseek-v3")
    hw = get_hardware("h200")
    prec = Precisions.native(model)
    scenario = Scenario(
        batch=16, prompt_tokens=4096, cached_tokens=0, decode_context=128 * 1024, output_tokens=1
    )
    n = 5000
    rates, wall_rates = [], []
    for _ in range(5):
        t0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            analyze(model, hw, scenario, precisions=prec, tp=8)
        rates.append(n / (time.process_time() - t0))
        wall_rates.append(n / (time.perf_counter() - w0))
    print(
        f"two-phase estimates/s (DeepSeek-V3, B=16, L=128K, TP=8 on H200): "
        f"median {statistics.median(rates):,.0f} per CPU-second (runs: {', '.join(f'{r:,.0f}' for r in rates)}), "
        f"{statistics.median(wall_rates):,.0f} per wall-second; target >= 10,000"
    )

    batches = [1 + i * 5 for i in range(100)]
    contexts = [1024 + i * 1300 for i in range(100)]
    times, wall = [], []
    for _ in range(5):
        t0, w0 = time.process_time(), time.perf_counter()
        for b in batches:
            for c in contexts:
                analyze(model, hw, Scenario(b, 1024, 0, c, 1), precisions=prec, tp=8)
        times.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    print(
        f"100x100 grid (batch x context) of two-phase estimates: median {statistics.median(times):.3f} s "
        f"CPU (runs: {', '.join(f'{t:.3f}' for t in times)}), {statistics.median(wall):.3f} s wall; target < 1 s"
    )


if __name__ == "__main__":
    main()
