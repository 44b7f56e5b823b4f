"""Read a Hugging Face ``config.json`` into a :class:`ModelConfig`.

One code path serves both the built-in catalog (``model_catalog`` passes copies of the published
config.json files through :func:`load_hf_config`) and user-supplied configs.

* The family comes from ``model_type`` (the text model's, for multimodal wrappers); an unknown
  ``model_type`` whose ``architectures`` names a modelled class is read as that class, and the
  model's ``notes`` say so. Anything else is refused ("unsupported architecture ...").
* Multimodal wrappers (``gemma3``, ``gemma4``, ``qwen3_5``, ``qwen3_5_moe``, ``mistral3``,
  ``kimi_k25``, ``llama4``) keep the text model under ``text_config``: it serves the tokens; the
  vision tower under ``vision_config`` is counted in memory (``vision_params``).
* Weights: ``torch_dtype``/``dtype`` (missing or ``auto``: bf16; an unknown name is an error) and
  ``quantization_config`` (top level, else ``text_config``, else a sidecar file beside the
  config: ``hf_quant_config.json``, ``quant_config.json``, ``quantize_config.json``); see
  :mod:`.quantization`.
* Context: ``max_position_embeddings`` (and the RoPE factor where vLLM applies it) is the model's
  limit (``ModelConfig.context_limit``).

Readers per family: :mod:`.families` (layers all alike), :mod:`.mla` (DeepSeek, Kimi K2, GLM-5),
:mod:`.hybrid` (Qwen3-Next, Qwen3.5, Nemotron-H, Gemma 3/4, MiMo-V2-Flash). A layer type, vision
tower or quantization method the estimator does not model is refused by name, never skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetsched.scheduler.catalog.hf_config import families, hybrid, mla, quantization, vision
from hetsched.scheduler.catalog.hf_config.fields import (
    MAX_INTEGER,
    MAX_LAYERS,
    Fields,
    Unsupported,
    read_json,
)
from hetsched.scheduler.catalog.models import ModelConfig
from pydantic import ValidationError

Reader = Callable[[Fields, Fields], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    reader: Reader
    architecture: str  # the Hugging Face class of a text-only checkpoint


#: Text model_type → its reader and architecture class.
FAMILIES: dict[str, Family] = {
    "llama": Family(families.llama, "LlamaForCausalLM"),
    "mistral": Family(families.mistral, "MistralForCausalLM"),
    "ministral3": Family(families.mistral, "Ministral3ForCausalLM"),
    "mixtral": Family(families.mixtral, "MixtralForCausalLM"),
    "qwen2": Family(families.qwen2, "Qwen2ForCausalLM"),
    "qwen3": Family(families.qwen3, "Qwen3ForCausalLM"),
    "qwen3_moe": Family(families.qwen3_moe, "Qwen3MoeForCausalLM"),
    "qwen3_next": Family(hybrid.qwen3_next, "Qwen3NextForCausalLM"),
    "qwen3_5_text": Family(hybrid.qwen3_5, "Qwen3_5ForCausalLM"),
    "qwen3_5_moe_text": Family(hybrid.qwen3_5, "Qwen3_5MoeForCausalLM"),
    "phi3": Family(families.phi3, "Phi3ForCausalLM"),
    "deepseek_v2": Family(mla.deepseek_v2, "DeepseekV2ForCausalLM"),
    "deepseek_v3": Family(mla.deepseek_v3, "DeepseekV3ForCausalLM"),
    "kimi_k2": Family(mla.deepseek_v3, "DeepseekV3ForCausalLM"),
    "deepseek_v32": Family(mla.sparse_mla, "DeepseekV32ForCausalLM"),
    "glm_moe_dsa": Family(mla.sparse_mla, "GlmMoeDsaForCausalLM"),
    "glm4_moe": Family(families.glm4_moe, "Glm4MoeForCausalLM"),
    "minimax_m2": Family(families.minimax_m2, "MiniMaxM2ForCausalLM"),
    "mimo_v2_flash": Family(hybrid.mimo_v2_flash, "MiMoV2FlashForCausalLM"),
    "mimo_v2": Family(hybrid.mimo_v2_flash, "MiMoV2ForCausalLM"),
    "gemma3_text": Family(hybrid.gemma3, "Gemma3ForCausalLM"),
    "gemma4_text": Family(hybrid.gemma4, "Gemma4ForCausalLM"),
    "nemotron_h": Family(hybrid.nemotron_h, "NemotronHForCausalLM"),
    "gpt_oss": Family(families.gpt_oss, "GptOssForCausalLM"),
    "llama4_text": Family(families.llama4, "Llama4ForCausalLM"),
}


@dataclass(frozen=True)
class Wrapper:
    architecture: str
    text_type: str  # the text model_type when text_config does not say
    tower: str  # the vision tower when vision_config does not say


#: Multimodal model_type → its class, text model and vision tower.
WRAPPERS: dict[str, Wrapper] = {
    "llama4": Wrapper("Llama4ForConditionalGeneration", "llama4_text", "llama4_vision_model"),
    "gemma3": Wrapper("Gemma3ForConditionalGeneration", "gemma3_text", "siglip_vision_model"),
    "gemma4": Wrapper("Gemma4ForConditionalGeneration", "gemma4_text", "gemma4_vision"),
    "qwen3_5": Wrapper("Qwen3_5ForConditionalGeneration", "qwen3_5_text", "qwen3_5"),
    "qwen3_5_moe": Wrapper("Qwen3_5MoeForConditionalGeneration", "qwen3_5_moe_text", "qwen3_5_moe"),
    "mistral3": Wrapper("Mistral3ForConditionalGeneration", "mistral", "pixtral"),
    "kimi_k25": Wrapper("KimiK25ForConditionalGeneration", "kimi_k2", "moonvit"),
}

#: model_type → the architecture class name of that family (text-only and multimodal).
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    **{t: f.architecture for t, f in FAMILIES.items()},
    **{t: w.architecture for t, w in WRAPPERS.items()},
}
_ARCH_TO_TYPE: dict[str, str] = {}
for _type, _arch in SUPPORTED_ARCHITECTURES.items():
    _ARCH_TO_TYPE.setdefault(_arch, _type)
_ARCH_TO_TYPE["Kimi_K25ForConditionalGeneration"] = "kimi_k25"

#: ``torch_dtype``/``dtype`` → weight precision: torch's names (with or without ``torch.``) and
#: the short ones. Missing or ``auto`` (from_pretrained's "as stored") reads as bf16; anything
#: else is an error naming the field, not a silent bf16.
_DTYPES = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "fp32": "fp32",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}
DEFAULT_DTYPE = "bf16"
#: Sidecar files that carry a checkpoint's quantization when config.json does not (vLLM reads these).
QUANT_SIDECARS = ("hf_quant_config.json", "quant_config.json", "quantize_config.json")
#: RoPE types whose ``factor`` vLLM multiplies into max_position_embeddings (the others, YaRN,
#: LLaMA-3 and LongRoPE, already count the scaling in it).
_NOT_MULTIPLIED = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling", "default")

__all__ = ["MAX_INTEGER", "MAX_LAYERS", "SUPPORTED_ARCHITECTURES", "Unsupported", "load_hf_config"]


def load_hf_config(
    path_or_mapping: str | os.PathLike[str] | Mapping[str, Any],
    name: str | None = None,
    *,
    hf_id: str | None = None,
    source: str | None = None,
    quantization_config: Mapping[str, Any] | None = None,
) -> ModelConfig:
    """Build a ModelConfig from a Hugging Face ``config.json`` (a path, a directory holding one, or
    the parsed mapping).

    ``name`` defaults to the last part of ``_name_or_path``, else the directory of a
    ``config.json`` (or the stem of another file name); ``source`` to the file path.
    ``quantization_config``: a sidecar's content when config.json has none (read automatically
    from the config's directory for a path). Raises ``ValueError`` naming the file and the missing
    or malformed field, or (:class:`Unsupported`) what is not modelled.
    """
    sidecar: Mapping[str, Any] | None = quantization_config
    if isinstance(path_or_mapping, Mapping):
        data: Mapping[str, Any] = path_or_mapping
        origin = "config.json"
        default_source = "config.json mapping"
        default_name = None
    else:
        data, origin = read_json(path_or_mapping)
        default_source = origin
        path = Path(origin)
        stem = path.parent.name if path.name == "config.json" else path.stem
        default_name = stem.lower() if stem not in ("", ".") else None
        if sidecar is None:
            for candidate in QUANT_SIDECARS:
                if (path.parent / candidate).is_file():
                    sidecar, _ = read_json(path.parent / candidate)
                    break
    top = Fields(data, origin)
    model_type, text, notes = _family(top)
    name_or_path = data.get("_name_or_path")
    if name is None:
        if isinstance(name_or_path, str) and name_or_path.strip("/"):
            name = name_or_path.rstrip("/").rsplit("/", 1)[-1].lower()
        else:
            name = default_name or model_type.replace("_", "-")
    fields = FAMILIES[model_type].reader(text, top)
    mixers = fields.pop("_mixers", None)
    ffn = fields.pop("_ffn", None)
    moe_layers = fields.pop("_moe_layers", None)
    wrapper = WRAPPERS.get(str(data.get("model_type")))
    if wrapper is not None and text is not top:
        fields["vision_params"] = vision.vision_params(
            top, str(data.get("model_type")), wrapper.tower, fields["hidden_size"]
        )
        if top.has("audio_config"):
            raise top.unsupported("an audio tower (audio_config) is not modelled")
    fields["max_context_tokens"] = _context_limit(
        text, str(data.get("model_type")), fields.get("max_position_embeddings")
    )
    dtype = _dtype(top)
    fields["native_weight_precision"] = dtype
    if notes:
        fields["notes"] = tuple(notes)
    common = {
        "name": name,
        "source": source or default_source,
        "hf_id": hf_id if hf_id is not None else (name_or_path if isinstance(name_or_path, str) else None),
    }
    model = _build(origin, common, fields)
    quant = _quantization(top, text, sidecar, origin)
    if quant is None:
        return model
    roles = quantization.default_roles(model, moe_layers)
    if mixers is not None or ffn is not None:
        roles = quantization.Roles(
            tuple(mixers) if mixers is not None else roles.mixers,
            tuple(ffn) if ffn is not None else roles.ffn,
        )
    return _build(origin, common, {**fields, **quantization.quantization_fields(model, quant, dtype, roles)})


def _build(origin: str, common: dict[str, Any], fields: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig(**common, **fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{origin}: {problems}") from None


def _family(top: Fields) -> tuple[str, Fields, list[str]]:
    """The text model's family, its fields, and notes on how it was identified."""
    archs = top.data.get("architectures")
    arch = archs[0] if isinstance(archs, Sequence) and not isinstance(archs, str) and archs else None
    mtype = top.data.get("model_type")
    notes: list[str] = []
    if not (isinstance(mtype, str) and mtype in SUPPORTED_ARCHITECTURES):
        if isinstance(arch, str) and arch in _ARCH_TO_TYPE:
            known = _ARCH_TO_TYPE[arch]
            if mtype is not None:
                notes.append(
                    f"model_type {mtype!r} is not modelled; read as {arch} ({known}), its architectures entry"
                )
            mtype = known
        elif mtype is None and arch is None:
            raise top.error("missing field 'model_type' (and no 'architectures' to infer it from)")
        else:
            supported = ", ".join(f"{a} ({t})" for t, a in SUPPORTED_ARCHITECTURES.items())
            raise Unsupported(
                f"{top.origin}: unsupported architecture {arch!r} (model_type {mtype!r}); supported: {supported}"
            )
    assert isinstance(mtype, str)
    wrapper = WRAPPERS.get(mtype)
    if wrapper is None:
        return mtype, top, notes
    if not top.has("text_config"):
        if mtype == "llama4":  # a Llama 4 text config saved under the wrapper's type
            return "llama4_text", top, notes
        raise top.error(f"missing field 'text_config' (a {mtype} config keeps its text model there)")
    text = top.sub("text_config")
    text_type = text.text("model_type", wrapper.text_type)
    if text_type not in FAMILIES:
        raise text.unsupported(
            f"text model {text_type!r} (field '{text.name('model_type')}') of a {mtype} config is not modelled"
        )
    return text_type, text, notes


def _dtype(f: Fields) -> str:
    """The weight precision ``torch_dtype``/``dtype`` (top level, else ``text_config``) declares."""
    field, dtype = None, None
    text = f.data.get("text_config")
    for prefix, data in (("", f.data), ("text_config.", text if isinstance(text, Mapping) else {})):
        for key in ("torch_dtype", "dtype"):
            if data.get(key) is not None:
                field, dtype = f"{prefix}{key}", data[key]
                break
        if field is not None:
            break
    if field is None:
        return DEFAULT_DTYPE
    name = dtype.lower().removeprefix("torch.") if isinstance(dtype, str) else None
    if name == "auto":
        return DEFAULT_DTYPE
    if name not in _DTYPES:
        accepted = ", ".join(sorted(_DTYPES))
        raise f.error(f"field '{field}' is {dtype!r}: unknown dtype; accepted: {accepted} (or auto, or none)")
    return _DTYPES[name]


def _quantization(top: Fields, text: Fields, sidecar: Mapping[str, Any] | None, origin: str) -> Fields | None:
    """The quantization block: config.json's (top level, else the text config's), else a sidecar."""
    for f in (top, text):
        if f.has("quantization_config"):
            return f.sub("quantization_config")
    if sidecar is not None:
        return Fields(quantization.sidecar(sidecar), f"{origin} (quantization sidecar)")
    return None


def _context_limit(f: Fields, model_type: str, max_positions: int | None) -> int | None:
    """The longest context served when RoPE scaling extends ``max_position_embeddings`` (None: it
    does not). vLLM multiplies the ``factor`` of linear / dynamic scaling into it; YaRN (and
    DeepSeek's YaRN) extend the model to ``original_max_position_embeddings × factor`` (Qwen3 with
    YaRN factor 4 from 32768: 131072; configs that ship YaRN already say so in
    max_position_embeddings); Gemma 3's 128K already counts its scaling; LLaMA-3 and LongRoPE
    scaling stay within max_position_embeddings."""
    if max_positions is None or "gemma3" in model_type or "gemma3" in f.text("model_type", ""):
        return None
    for key in ("rope_scaling", "rope_parameters"):
        rope = f.opt_sub(key)
        if rope is None or not rope.has("factor"):
            continue
        kind = rope.text("rope_type", rope.text("type", "default"))
        factor = rope.number("factor")
        if not 1.0 <= factor <= 1024.0:
            raise rope.error(f"field '{rope.name('factor')}' must be between 1 and 1024, got {factor}")
        if kind in ("yarn", "deepseek_yarn"):
            original = rope.positive("original_max_position_embeddings", max_positions)
            longer = int(original * factor)
            return longer if longer > max_positions else None
        if kind not in _NOT_MULTIPLIED:
            return int(max_positions * factor)
    return None
