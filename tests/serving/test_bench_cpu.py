"""The CPU serving benchmark's quick variant (``benchmarks/cpu_serving.py --quick``) runs end to end:
probe, a tiny random-weight model, a real vLLM CPU engine, one fixed-concurrency run of vLLM's load
generator, a CSV row that ``hetsched validate`` predicts; nothing left running.

Needs the vLLM CPU engine environment (the project's ``engine-env.sh``; its path is what
``engine-env.sh --print`` says, or ``HETSCHED_ENGINE_DIR``). Not skipped when it is missing: it
fails and says how to install it. Takes minutes (the engine's start-up); the full campaign is
``make bench-cpu``, never part of the tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hetsched.operator.cli import main as hetsched_main
from support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import cpu_serving

pytestmark = [pytest.mark.engines, pytest.mark.timeout(2400)]


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            out.append(f"{entry.name}: {cmdline[:200]}")
    return out


def test_quick_cpu_benchmark_measures_a_row_that_validate_predicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = cpu_serving.engine_dir(None)
    if not (engine / "bin" / "python").exists():
        pytest.fail(
            f"no vLLM CPU engine environment at {engine}: install it with the project's engine-env.sh "
            "(or set HETSCHED_ENGINE_DIR); this test starts a real engine"
        )
    out = tmp_path / "cpu"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cpu_serving.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=2300,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The probed entry describes the engine's cores and loads as a hardware file.
    hardware = yaml.safe_load((out / "hardware.yaml").read_text())
    entry = hardware["hardware"][0]
    assert entry["kind"] == "cpu" and hardware["probe"]["engine_cpus"]
    assert hardware["probe"]["available"]["cores"] == len(hardware["probe"]["engine_cpus"])

    # One run of the one point: every request completed with exactly the requested output length.
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 1
    run = runs[0]
    assert run["completed"] == run["num_requests"] == cpu_serving.REQUESTS_PER_SLOT * run["concurrency"]
    assert run["output_lens"] == [run["osl"]] * run["num_requests"]
    # vLLM's random prompts are token ids decoded and re-encoded: a prompt may come back a token or
    # two longer (the campaign: 24 of 772 requests, at most 2 tokens; benchmarks/data/cpu/README.md).
    assert len(run["input_lens"]) == run["num_requests"]
    assert all(run["isl"] <= n <= run["isl"] + 2 for n in run["input_lens"]), run["input_lens"]
    assert 0 < run["mean_ttft_ms"] < 600_000 and 0 < run["mean_tpot_ms"] < 60_000

    # The CSV row is in the validate format, names the probed entry, and is predicted.
    with (out / "measurements.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["system"] == entry["name"]
    # The dtype the cores compute natively (this machine's ISA), and the runs' synchronized waves.
    native_bf16 = cpu_serving.auto_dtype(hardware["probe"]["cpu"]["isa"]) == "bfloat16"
    assert rows[0]["precision"] == ("bf16" if native_bf16 else "fp32")
    assert run["dtype"] == ("bfloat16" if native_bf16 else "float32")
    assert rows[0]["arrivals"] == "waves"
    assert float(rows[0]["silicon_tpot_ms"]) == pytest.approx(run["mean_tpot_ms"], rel=1e-3)
    assert (out / rows[0]["model_path"]).is_file()
    code = hetsched_main(
        [
            "validate",
            "--measurements",
            str(out / "measurements.csv"),
            "--hardware-file",
            str(out / "hardware.yaml"),
            "-o",
            "json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"][0]["status"] == "predicted", result["rows"][0]["reason"]
    assert result["rows"][0]["predicted_tpot_ms"] > 0

    # Every process the benchmark started is gone.
    assert _processes_mentioning(str(out)) == []
    assert _processes_mentioning("bench-cpu/tiny-") == []
