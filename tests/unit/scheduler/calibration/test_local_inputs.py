"""``validate`` on user hardware and local models: ``--hardware-file`` entries as ``system``,
``model_path`` as a path to a ``config.json`` (or its folder), and the ``num_requests`` column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hetsched.operator.cli import main as hetsched_main
from hetsched.scheduler.calibration.cli import efficiency_source, lookup_for, validate_rows
from hetsched.scheduler.calibration.dataset import Lookup, Plan, parse_measurements, resolve
from hetsched.scheduler.catalog.hardware import DeviceKind
from hetsched.scheduler.catalog.model_catalog import get_model
from hetsched.scheduler.estimator import efficiency
from support import REPO

LLAMA8_CONFIG = REPO / "tests" / "data" / "hf_configs" / "llama-3.1-8b.json"
HEADER = (
    "model_path,system,backend,backend_version,precision,gemm_quant_mode,moe_quant_mode,mode,isl,osl,"
    "batch_size,tp_size,pp_size,attention_dp_size,moe_tp_size,moe_ep_size,num_requests,silicon_ttft_ms,"
    "silicon_tpot_ms"
)
HARDWARE = """
hardware:
  - name: My-CPU
    kind: cpu
    vendor: AMD
    memory: 64GiB
    bandwidth: 40GB/s
    peakTflops: {bf16: 1.0, fp32: 1.0}
    power: 100W
    source: test
probe: {ignored: by the loader}
"""


def row(model: str, system: str, *, batch: int = 2, requests: str = "", isl: int = 128, osl: int = 32) -> str:
    return f"{model},{system},vllm,0.32.0,bf16,,,agg,{isl},{osl},{batch},1,1,0,0,0,{requests},900.0,120.0"


@pytest.fixture
def campaign(tmp_path: Path) -> Path:
    """A CSV beside a models/ folder and a hardware file, as ``make bench-cpu`` writes them."""
    (tmp_path / "models" / "llama8").mkdir(parents=True)
    shutil.copy(LLAMA8_CONFIG, tmp_path / "models" / "llama8" / "config.json")
    (tmp_path / "hardware.yaml").write_text(HARDWARE)
    return tmp_path


def test_model_paths_relative_absolute_folder_or_file(campaign: Path) -> None:
    absolute = campaign / "models" / "llama8" / "config.json"
    rows = parse_measurements(
        "\n".join(
            [
                HEADER,
                row("models/llama8", "My-CPU"),  # a folder that holds a config.json
                row("models/llama8/config.json", "my-cpu"),  # the file; names are case-insensitive
                row(str(absolute), "MY-CPU"),  # absolute
                row("./models/absent/config.json", "my-cpu"),  # a path that does not exist
                row("meta-llama/Llama-3.1-8B-Instruct", "h200_sxm"),  # catalog model and hardware
                row("models/llama8", "no-such-box"),
            ]
        ),
        "runs.csv",
    )
    lookup = lookup_for(campaign / "runs.csv", campaign / "hardware.yaml")
    entries = validate_rows(rows, efficiency_source("calibrated"), lookup=lookup)
    assert [e["status"] for e in entries] == ["predicted"] * 3 + ["skipped", "predicted", "skipped"]
    assert (
        entries[0]["predicted_tpot_ms"] == entries[1]["predicted_tpot_ms"] == entries[2]["predicted_tpot_ms"]
    )
    assert "not found" in entries[3]["reason"] and "absent" in entries[3]["reason"]
    assert "nor in the hardware file" in entries[5]["reason"]
    plan = resolve(rows[0], lookup=lookup)
    assert isinstance(plan, Plan)
    # The local config is the catalog's Llama-3.1-8B, on the file's CPU entry.
    assert plan.model.model_dump(exclude={"name", "source", "hf_id"}) == get_model("llama-3.1-8b").model_dump(
        exclude={"name", "source", "hf_id"}
    )
    assert plan.hardware.name == "My-CPU" and plan.hardware.kind is DeviceKind.CPU
    # The file's CPU entry carries the CPU family's calibration, not the GPU fit or the pure roofline.
    assert plan.hardware.efficiency == efficiency.efficiency_for(plan.hardware)
    assert efficiency.family_of(plan.hardware) == "cpu"


def test_without_the_file_the_entry_is_unknown(campaign: Path) -> None:
    rows = parse_measurements("\n".join([HEADER, row("models/llama8", "my-cpu")]))
    entries = validate_rows(rows, efficiency_source("ideal"), lookup=Lookup(base_dir=campaign))
    assert entries[0]["status"] == "skipped" and "unknown hardware 'my-cpu'" in entries[0]["reason"]
    # Without a base folder a relative folder name is a catalog name, and unknown.
    entries = validate_rows(
        rows, efficiency_source("ideal"), lookup=lookup_for(Path("/nonexistent/x.csv"), None)
    )
    assert "unknown model 'models/llama8'" in entries[0]["reason"]


def test_num_requests_sets_the_first_wave(campaign: Path) -> None:
    """``num_requests`` = 2 × batch: half the requests arrive in the first wave (w = 0.5, not the
    default 0.1): the prediction's TTFT grows, TPOT does not change."""
    rows = parse_measurements(
        "\n".join(
            [
                HEADER,
                row("models/llama8", "my-cpu", batch=8),
                row("models/llama8", "my-cpu", batch=8, requests="16"),
            ]
        )
    )
    lookup = lookup_for(campaign / "runs.csv", campaign / "hardware.yaml")
    plans = [resolve(r, lookup=lookup) for r in rows]
    assert isinstance(plans[0], Plan) and isinstance(plans[1], Plan)
    assert plans[0].warmup_fraction() == pytest.approx(0.1) and plans[1].warmup_fraction() == pytest.approx(
        0.5
    )
    default, half = validate_rows(rows, efficiency_source("calibrated"), lookup=lookup)
    assert half["predicted_ttft_ms"] > default["predicted_ttft_ms"]
    assert half["predicted_tpot_ms"] == default["predicted_tpot_ms"]


def test_cli_validate_with_a_hardware_file(campaign: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = campaign / "runs.csv"
    csv.write_text("\n".join([HEADER, row("models/llama8", "my-cpu"), row("models/llama8", "other")]) + "\n")
    args = [
        "validate",
        "--measurements",
        str(csv),
        "--hardware-file",
        str(campaign / "hardware.yaml"),
        "-o",
        "json",
    ]
    assert hetsched_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in out["rows"]] == ["predicted", "skipped"]
    assert out["rows"][0]["system"] == "my-cpu"
    bad = campaign / "bad.yaml"
    bad.write_text("hardware:\n  - name: x\n    memory: lots\n")
    assert hetsched_main(["validate", "--measurements", str(csv), "--hardware-file", str(bad)]) == 2
    assert "memory" in capsys.readouterr().err
