"""Estimator speed: full two-phase estimates of DeepSeek-V3 (B=16, L=128K), and a 100×100 grid.

Targets (issue 2): ≥ 10,000 two-phase estimates per second on one core; a 100 × 100
(batch × context) grid in under 1 second — as 10,000 ``analyze`` calls, and as arrays
(``grid.analyze_grid``, issue 15: ≤ 0.1 s). Prints medians of repeated runs, timed by the process's
CPU time (what "per second on one core" means; wall time on a shared 2-core machine also counts
the other processes' turns) and by wall time.

``--baseline REF`` measures the estimator of a git revision (``main``, a commit) side by side in the
same process, alternating runs, so that a noisy machine slows both alike: the scheduler package of
``REF`` is extracted to a temporary directory under another package name and imported beside this
one.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
BATCHES = [1 + i * 5 for i in range(100)]
CONTEXTS = [1024 + i * 1300 for i in range(100)]


def _baseline(ref: str, into: Path) -> str:
    """Extract ``scheduler/`` at ``ref`` as package ``hetsched_baseline.scheduler``; its name."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "scheduler"],
        check=True,
        capture_output=True,
    ).stdout
    package = into / "hetsched_baseline"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(package, filter="data")
    (package / "__init__.py").write_text("")
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("hetsched.scheduler", "hetsched_baseline.scheduler"), encoding="utf-8")
    sys.path.insert(0, str(into))
    return "hetsched_baseline.scheduler"


class Estimator:
    """One estimator (this checkout's, or a baseline's), its DeepSeek-V3 workload ready to run."""

    def __init__(self, package: str) -> None:
        def mod(name: str) -> ModuleType:
            return importlib.import_module(f"{package}.{name}")

        analysis = mod("estimator.analysis")
        self.analysis = analysis
        self.model = mod("catalog.model_catalog").get_model("deepseek-v3")
        self.hw = mod("catalog.hardware_catalog").get_hardware("h200")
        self.prec = mod("estimator.cost").Precisions.native(self.model)
        self.scenario = analysis.Scenario(
            batch=16, prompt_tokens=4096, cached_tokens=0, decode_context=128 * 1024, output_tokens=1
        )
        try:
            self.grid: ModuleType | None = mod("estimator.grid")
        except ImportError:
            self.grid = None

    def one(self) -> None:
        self.analysis.analyze(self.model, self.hw, self.scenario, precisions=self.prec, tp=8)

    def grid_loop(self) -> None:
        for b in BATCHES:
            for c in CONTEXTS:
                self.analysis.analyze(
                    self.model, self.hw, self.analysis.Scenario(b, 1024, 0, c, 1), precisions=self.prec, tp=8
                )

    def grid_arrays(self) -> None:
        assert self.grid is not None
        self.grid.analyze_grid(
            self.model,
            self.hw,
            batches=BATCHES,
            contexts=CONTEXTS,
            prompt_tokens=1024,
            precisions=self.prec,
            tp=8,
        )


def _time(f: Callable[[], None], repeat: int = 1) -> tuple[float, float]:
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        f()
    return time.process_time() - t0, time.perf_counter() - w0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REF", help="also measure the estimator of this git revision")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        estimators = {"this checkout": Estimator("hetsched.scheduler")}
        if args.baseline:
            estimators[f"baseline {args.baseline}"] = Estimator(_baseline(args.baseline, Path(tmp)))
        n = 5000
        rates: dict[str, list[float]] = {k: [] for k in estimators}
        wall_rates: dict[str, list[float]] = {k: [] for k in estimators}
        grid: dict[str, list[float]] = {k: [] for k in estimators}
        arrays: dict[str, list[float]] = {k: [] for k in estimators}
        for _ in range(args.runs):  # alternate, so that both see the same machine
            for name, est in estimators.items():
                cpu, wall = _time(est.one, n)
                rates[name].append(n / cpu)
                wall_rates[name].append(n / wall)
                grid[name].append(_time(est.grid_loop)[0])
                if est.grid is not None:
                    arrays[name].append(_time(est.grid_arrays)[0])
        for name in estimators:
            print(
                f"[{name}] two-phase estimates/s (DeepSeek-V3, B=16, L=128K, TP=8 on H200): "
                f"median {statistics.median(rates[name]):,.0f} per CPU-second "
                f"(runs: {', '.join(f'{r:,.0f}' for r in rates[name])}), "
                f"{statistics.median(wall_rates[name]):,.0f} per wall-second; target >= 10,000"
            )
            print(
                f"[{name}] 100x100 grid (batch x context) of two-phase estimates: "
                f"median {statistics.median(grid[name]):.3f} s CPU (runs: "
                f"{', '.join(f'{t:.3f}' for t in grid[name])}); target < 1 s"
            )
            if arrays[name]:
                print(
                    f"[{name}] the same grid as arrays (analyze_grid): median {statistics.median(arrays[name]):.4f} s "
                    f"CPU (runs: {', '.join(f'{t:.4f}' for t in arrays[name])}); target <= 0.1 s"
                )


if __name__ == "__main__":
    main()
