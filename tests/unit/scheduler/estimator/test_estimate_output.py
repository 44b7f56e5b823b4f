"""What ``hetsched estimate`` tells the user: KV growth and the windowed layers' cap, the state
layers' fixed state, both active-parameter conventions, a context beyond the model's limit, and
which batch the figures are for when the requested one does not fit."""

from __future__ import annotations

import json

import pytest
from hetsched.operator.cli import main


def estimate_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["estimate", *args, "-o", "json"]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def test_windowed_kv_shows_growth_and_cap(capsys: pytest.CaptureFixture[str]) -> None:
    """gpt-oss-120b: 18 full layers grow 2·8·64·2·18 = 36 KiB per token; the 18 sliding layers add
    as much per token up to their 128-token window (4.5 MiB)."""
    doc = estimate_json(capsys, "--model", "gpt-oss-120b", "--hardware", "h100-sxm")
    m = doc["model"]
    assert isinstance(m, dict)
    assert m["kv_bytes_per_token"] == 18 * 2 * 8 * 64 * 2 == 36 * 1024
    assert m["kv_window_bytes_per_token"] == 36 * 1024 and m["kv_window_cap_bytes"] == 36 * 1024 * 128
    assert m["active_params"] == 5_711_982_912  # with the embedding table (Qwen's convention)
    assert m["active_params_excluding_embedding"] == 5_711_982_912 - 201_088 * 2880  # OpenAI's 5.13B
    main(["estimate", "--model", "gpt-oss-120b", "--hardware", "h100-sxm"])
    line = capsys.readouterr().out.splitlines()[0]
    assert "KV 36.0 KiB/token + 36.0 KiB/token in windowed layers up to 4.50 MiB" in line
    assert "5.71B active (5.13B without the embedding table)" in line


def test_state_per_request_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    main(["estimate", "--model", "qwen3.5-27b", "--hardware", "h200", "--context", "8192"])
    out = capsys.readouterr().out
    assert "16 full attention + 48 Gated DeltaNet" in out
    assert "KV 64.0 KiB/token + 146.8 MiB state/request" in out
    assert "of which state" in out


def test_context_beyond_the_model_limit_warns(capsys: pytest.CaptureFixture[str]) -> None:
    doc = estimate_json(
        capsys, "--model", "qwen3-235b-a22b", "--hardware", "h200", "--tp", "8", "--context", "131072"
    )
    warnings = doc["warnings"]
    assert isinstance(warnings, list) and any("limit of 40,960" in w for w in warnings)
    assert (
        estimate_json(
            capsys, "--model", "qwen3-235b-a22b", "--hardware", "h200", "--tp", "8", "--context", "32000"
        )["warnings"]
        == []
    )


def test_batch_that_does_not_fit_says_which_batch_the_figures_are_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = estimate_json(
        capsys,
        "--model",
        "llama-3.1-70b",
        "--agent",
        "coding",
        "--context",
        "300000",
        "--hardware",
        "b200",
        "--tp",
        "8",
        "--batch",
        "64",
        "--efficiency",
        "ideal",
    )
    decode = doc["phases"]["decode"]  # type: ignore[index]
    assert decode["batch"] == 64 and decode["figures_batch"] == decode["max_batch"] == 11
    assert any("decode: batch 64 does not fit (11 requests do)" in w for w in doc["warnings"])  # type: ignore[union-attr]
