"""Model configs are untrusted input: bounded JSON, and every reader failure is a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hetsched.scheduler.catalog import config_input
from hetsched.scheduler.catalog.config_input import loads_bounded, read_model_config, read_model_config_file

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 16,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested 100,000 levels deep"),
        ('{"a": ' + "9" * 5000 + "}", "an integer of 5,000 digits"),
        ('{"a": -' + "9" * 40 + "}", "an integer of 40 digits"),
        ("{a: 1,", "malformed JSON at line 1 column 2"),
        (b"\xff\xfe", "not UTF-8"),
        ("x" * (config_input.MAX_CONFIG_BYTES + 1), "more than the 524,288"),
    ],
)
def test_hostile_json_is_a_value_error(text: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=r"^cm\[config.json\]") as exc:
        loads_bounded(text, what="cm[config.json]")
    assert message in str(exc.value)


def test_strings_do_not_count_as_nesting() -> None:
    assert loads_bounded(json.dumps({"s": "[" * 1000, "n": [[[1]]]})) == {"s": "[" * 1000, "n": [[[1]]]}


def test_any_reader_failure_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from hetsched.scheduler.catalog import hf_config

    assert read_model_config(json.dumps(LLAMA), what="ns/cm[config.json]").num_layers == 16

    def boom(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(hf_config, "load_hf_config", boom)
    with pytest.raises(
        ValueError, match=r"ns/cm\[config.json\]: cannot read the model config \(ZeroDivisionError"
    ):
        read_model_config(json.dumps(LLAMA), what="ns/cm[config.json]")


def test_the_cli_reads_files_within_the_bounds(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA))
    assert read_model_config_file(path).num_layers == 16
    assert read_model_config_file(tmp_path).num_layers == 16
    path.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ValueError, match="nested 50,000 levels deep"):
        read_model_config_file(path)
    path.write_bytes(b" " * (config_input.MAX_CONFIG_BYTES + 10))
    with pytest.raises(ValueError, match="more than the 524,288 bytes"):
        read_model_config_file(path)
